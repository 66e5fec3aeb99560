"""A stored job as the scheduler sees it, and its broker level: the one place the API and the reconciler turn a
stored job into a priority (through the process's Scheduler)."""

from __future__ import annotations

from datetime import datetime

from elis.scheduling.policy import JobView
from elis.scheduling.scheduler import Scheduler
from elis.storage.models import Job


def stored_view(job: Job) -> JobView:
    """The policy's view of a stored (queued) job."""
    from elis.tasks.windows import JobSnapshot, job_view

    snapshot = JobSnapshot.of(job)
    return job_view(snapshot, len(snapshot.generated_ids), job.latest_prediction, job.service_s or 0.0, job.enqueued_at)


def stored_job_priority(job: Job, scheduler: Scheduler, now: datetime) -> int:
    """Broker level of a queued job as stored (admission, or a re-publish by the reconciler)."""
    return scheduler.admit(stored_view(job), now.timestamp(), job.policy)[1]
