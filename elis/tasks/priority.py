"""Priority of a stored job under its policy, and which level mapping a deployment uses."""

from __future__ import annotations

import logging
from datetime import datetime

from elis.config import Settings
from elis.scheduling import Policy, PriorityLevels
from elis.storage.models import Job

log = logging.getLogger(__name__)


def levels_for(settings: Settings, calibrated: PriorityLevels | None) -> PriorityLevels:
    """The predictor's calibrated edges when they fit the queue's level count, else log-spaced edges."""
    if calibrated is not None and calibrated.num_levels == settings.num_priority_levels:
        return calibrated
    if calibrated is not None:
        log.warning(
            "predictor edges give %d levels but the queue has %d: using log-spaced edges",
            calibrated.num_levels, settings.num_priority_levels,
        )
    return PriorityLevels.log_spaced(settings.num_priority_levels, high=float(settings.max_tokens_limit))


def stored_job_priority(job: Job, policy: Policy, levels: PriorityLevels, now: datetime) -> int:
    """Broker level of a queued job as stored (admission, or a re-publish by the reconciler)."""
    from elis.tasks.windows import JobSnapshot, job_view

    snapshot = JobSnapshot.of(job)
    view = job_view(snapshot, len(snapshot.generated_ids), job.latest_prediction, job.service_s or 0.0, job.enqueued_at)
    return levels.level(policy.score(view, now.timestamp()))
