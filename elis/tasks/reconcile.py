"""The periodic reconciler: re-publish jobs whose message was lost, promote jobs that starve (aging).

Both only ever add a message; the window task's compare-and-set makes any duplicate a no-op. Starvation is
the Scheduler's own rule (the same bound the workers' yield decisions use), not a second idea of it.
"""

from __future__ import annotations

import logging
import threading

from elis import clock
from elis.config import Settings
from elis.scheduling.scheduler import Scheduler
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.tasks.priority import stored_job_priority, stored_view
from elis.tasks.publish import publish_window
from elis.tasks.recovery import recover_once

log = logging.getLogger(__name__)


def reconcile_once(settings: Settings, scheduler: Scheduler) -> dict[str, int]:
    """One pass. Returns how many jobs were re-published and promoted, and what recovery did."""
    now = clock.now()
    url = settings.resolved_database_url
    counts = {"republished": 0, "promoted": 0}
    grace = store.seconds_ago(now, max(2.0 * settings.reconcile_interval_s, 2.0))
    top = scheduler.levels.num_levels - 1

    def starving(job) -> bool:
        return scheduler.is_starving(stored_view(job), now.timestamp(), job.policy)

    with session_scope(url) as session:
        # A lost job that also starves goes straight to the top level: one message, not two.
        lost = [(j.id, j.next_window, top if starving(j) else stored_job_priority(j, scheduler, now))
                for j in store.jobs_to_republish(session, older_than=grace)]
    for job_id, window_index, priority in lost:
        publish_window(settings, job_id=job_id, window_index=window_index, priority=priority)
        with session_scope(url) as session:
            store.mark_published(session, job_id=job_id, window_index=window_index, priority=priority)
            if priority == top:
                store.mark_promoted(session, job_id=job_id, window_index=window_index, priority=priority)
        counts["republished"] += 1
    if scheduler.aging.enabled:
        republished = {job_id for job_id, _, _ in lost}
        with session_scope(url) as session:
            cut = store.seconds_ago(now, scheduler.aging_bound_s)
            candidates = store.starving_jobs(session, waiting_since_before=cut,
                                             since_arrival=scheduler.aging.since_arrival)
            # A job already waiting at the top level (a starving job that yielded to an older one is published there)
            # needs no second message.
            promote = [(j.id, j.next_window) for j in candidates
                       if j.id not in republished and j.priority != top and starving(j)]
        for job_id, window_index in promote:
            publish_window(settings, job_id=job_id, window_index=window_index, priority=top)
            with session_scope(url) as session:
                store.mark_promoted(session, job_id=job_id, window_index=window_index, priority=top)
            counts["promoted"] += 1
    counts.update(recover_once(settings, lambda job, at: stored_job_priority(job, scheduler, at)))
    if any(counts.values()):
        log.info("reconciler: %s", counts)
    return counts


class Reconciler(threading.Thread):
    """Runs `reconcile_once` every `reconcile_interval_s` in the background of a worker."""

    def __init__(self, settings: Settings, scheduler: Scheduler) -> None:
        super().__init__(name="elis-reconciler", daemon=True)
        self.settings = settings
        self.scheduler = scheduler
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.reconcile_interval_s):
            try:
                reconcile_once(self.settings, self.scheduler)
            except Exception:  # an observer's error is logged, never raised into jobs
                log.exception("reconciler pass failed")
