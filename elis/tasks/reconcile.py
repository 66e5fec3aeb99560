"""The periodic reconciler: re-publish jobs whose message was lost, promote jobs that starve (aging).

Both only ever add a message; the window task's compare-and-set makes any duplicate a no-op.
"""

from __future__ import annotations

import logging
import threading

from elis import clock
from elis.config import Settings
from elis.scheduling import PriorityLevels, make_policy
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.tasks.priority import stored_job_priority
from elis.tasks.publish import publish_window

log = logging.getLogger(__name__)


def reconcile_once(settings: Settings, levels: PriorityLevels) -> dict[str, int]:
    """One pass. Returns how many jobs were re-published and promoted."""
    now = clock.now()
    url = settings.resolved_database_url
    counts = {"republished": 0, "promoted": 0}
    grace = store.seconds_ago(now, max(2.0 * settings.reconcile_interval_s, 2.0))
    with session_scope(url) as session:
        lost = [(j.id, j.next_window, stored_job_priority(j, make_policy(j.policy), levels, now))
                for j in store.jobs_to_republish(session, older_than=grace)]
    for job_id, window_index, priority in lost:
        publish_window(settings, job_id=job_id, window_index=window_index, priority=priority)
        with session_scope(url) as session:
            store.mark_published(session, job_id=job_id, window_index=window_index, priority=priority)
        counts["republished"] += 1
    if settings.max_wait_s > 0:
        top = levels.num_levels - 1
        with session_scope(url) as session:
            starving = [(j.id, j.next_window) for j in store.starving_jobs(
                session, waiting_since_before=store.seconds_ago(now, settings.max_wait_s))]
        for job_id, window_index in starving:
            publish_window(settings, job_id=job_id, window_index=window_index, priority=top)
            with session_scope(url) as session:
                store.mark_promoted(session, job_id=job_id, window_index=window_index, priority=top)
            counts["promoted"] += 1
    if any(counts.values()):
        log.info("reconciler: %s", counts)
    return counts


class Reconciler(threading.Thread):
    """Runs `reconcile_once` every `reconcile_interval_s` in the background of a worker."""

    def __init__(self, settings: Settings, levels: PriorityLevels) -> None:
        super().__init__(name="elis-reconciler", daemon=True)
        self.settings = settings
        self.levels = levels
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.reconcile_interval_s):
            try:
                reconcile_once(self.settings, self.levels)
            except Exception:  # an observer's error is logged, never raised into jobs
                log.exception("reconciler pass failed")
