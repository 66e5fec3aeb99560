"""Build the one Scheduler from the settings, and keep it learning from finished jobs.

`build_scheduler(settings)` is what the API, every worker and the reconciler call (once per process); the
simulator calls `Scheduler.from_settings` with the same settings. `QualityMonitor` refreshes the scheduler's
rank-quality guard, aging bound and (unless set) prefill weight from the database every `guard_refresh_s`, and
logs the guard's verdict.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

from elis import clock
from elis.config import Settings
from elis.scheduling.levels import LevelFile, PriorityLevels, load_level_file
from elis.scheduling.outcome import ResidualEstimate
from elis.scheduling.scheduler import Scheduler

log = logging.getLogger(__name__)

DEFAULT_LEVEL_FILE = Path(__file__).resolve().parent.parent / "data" / "level_edges.json"


def load_levels(settings: Settings) -> LevelFile:
    """The level edges from the level file when they fit the queue's level count, else log-spaced edges.

    NOTE: the file is small JSON on purpose: the API maps scores to levels without importing torch.
    """
    path = Path(settings.level_edges) if settings.level_edges else DEFAULT_LEVEL_FILE
    try:
        level_file = load_level_file(path)
    except (OSError, ValueError) as exc:
        log.warning("level edges unreadable (%s): using log-spaced edges", exc)
        level_file = None
    if level_file is not None and level_file.levels.num_levels == settings.num_priority_levels:
        return level_file
    if level_file is not None:
        log.warning("%s gives %d levels but the queue has %d: using log-spaced edges", path,
                    level_file.levels.num_levels, settings.num_priority_levels)
    fallback = PriorityLevels.log_spaced(settings.num_priority_levels, high=float(settings.max_tokens_limit))
    return LevelFile(fallback, level_file.uncertainty_by_step if level_file else (), "log-spaced")


def build_scheduler(settings: Settings) -> Scheduler:
    """The process's scheduler: policy, levels, yield margin, quality guard and aging, from the settings."""
    level_file = load_levels(settings)
    return Scheduler.from_settings(settings, level_file.levels, level_file.uncertainty_by_step)


def refresh_scheduler(scheduler: Scheduler, settings: Settings) -> bool:
    """Read the last finished jobs and let the scheduler learn from them. Returns True when the guard
    changed state (logged at WARNING, since the order of every job changes)."""
    from elis.storage import jobs as store
    from elis.storage.db import session_scope
    from elis.storage.profiles import log_profile_error, measured_prefill_weight

    now = clock.now()
    measured = None
    if scheduler.follows_measured_prefill_weight:
        try:  # apart: a schema without worker_profiles (workers do not migrate) must not stop the guards
            with session_scope(settings.resolved_database_url) as session:
                measured = measured_prefill_weight(session, seen_since=now - timedelta(seconds=live_worker_s(settings)))
        except Exception as exc:
            log_profile_error("measured prefill weight unreadable", exc)
    with session_scope(settings.resolved_database_url) as session:
        finished, repredicted = store.recent_guard_evidence(session, limit=settings.guard_window_jobs)
        costs = store.recent_costs(session, limit=settings.guard_window_jobs)
        cohort = aging_cohort = None
        if scheduler.outcome.enabled:
            # Judge jobs that arrived an aging bound ago or earlier: by then a job still waiting is starving (unless
            # aging_service_factor lengthens its bound by its service).
            horizon = timedelta(seconds=scheduler.aging_bound_s)
            cohort = store.recent_cohort(session, limit=settings.guard_window_jobs, arrived_before=now - horizon,
                                         now=now)
        if scheduler.aging_cohort_jobs:
            # The latest jobs, queued ones included: what FCFS would give them grows with the queue at once. On
            # an overload few of them are done, so what the others still need is learned from the last done jobs.
            aging_cohort = store.recent_cohort(session, limit=scheduler.aging_cohort_jobs, arrived_before=now,
                                               now=now, residual=ResidualEstimate.of(costs))
    if measured is not None:
        weight_before, ordering_before = scheduler.prefill_weight, scheduler.ordering()
        if scheduler.use_measured_prefill_weight(*measured):
            log.info("prefill weight %.4f -> %.4f (%s)", weight_before, scheduler.prefill_weight,
                     scheduler.prefill_weight_source)
            if scheduler.ordering() != ordering_before:  # the opt-in prefill fallback on or off (a weight of 0)
                scheduler.quality_since = now.timestamp()  # the outcome guard judges the new order from here
                log.warning("ordering now %s (prefill weight %.4f)", scheduler.ordering(), scheduler.prefill_weight)
    elif scheduler.prefill_weight_source.startswith("measured by"):  # every row dropped: say so, keep the weight
        scheduler.prefill_weight_source = "measured by a worker no longer recorded"
    ordering_before, preempting_before = scheduler.ordering(), scheduler.guard.preempting
    changed = scheduler.observe(finished, service_times=[seconds for seconds, _ in costs], cohort=cohort,
                                now=now.timestamp(), repredicted=repredicted, aging_cohort=aging_cohort)
    if changed:
        # A guard can change state without changing the order (the quality guard under MLFQ, which orders
        # without predictions): say which.
        ordering = scheduler.ordering()
        verb = "now" if ordering != ordering_before else "still"
        log.warning("quality guard: %s; outcome guard: %s; ordering %s %s", scheduler.guard.reason,
                    scheduler.outcome.reason, verb, ordering)
    if scheduler.guard.preempting != preempting_before:
        log.warning("quality guard: %s", scheduler.guard.preempt_reason)
    return changed


def live_worker_s(settings: Settings) -> float:
    """How recently a worker's lease heartbeat (every lease_s / 4) must have been seen for it to count as live."""
    return max(60.0, 2.0 * settings.lease_s)


class QualityMonitor(threading.Thread):
    """Refreshes a scheduler from the database every `guard_refresh_s` and logs the rank quality once a
    minute (INFO) and every guard change (WARNING). Errors are logged, never raised."""

    def __init__(self, scheduler: Scheduler, settings: Settings, log_every_s: float = 60.0) -> None:
        super().__init__(name="elis-quality-monitor", daemon=True)
        self.scheduler = scheduler
        self.settings = settings
        self.log_every_s = log_every_s
        self.stopped = threading.Event()

    def run(self) -> None:
        since_log = self.log_every_s
        while True:
            try:
                refresh_scheduler(self.scheduler, self.settings)
                since_log += self.settings.guard_refresh_s
                if since_log >= self.log_every_s and self.scheduler.quality is not None:
                    since_log = 0.0
                    quality = self.scheduler.quality
                    fcfs_mean = self.scheduler.fcfs_mean_s
                    log.info("rank quality over %d finished jobs: admission tau %s (n=%d), re-predictions tau %s "
                             "(n=%d); %s; outcome guard: %s; aging bound %.1f s (FCFS's mean JCT of the latest "
                             "jobs %s s)", quality.num_jobs,
                             _fmt(quality.admission_tau), quality.admission_num, _fmt(quality.pooled_tau),
                             quality.pooled_num, self.scheduler.guard.reason, self.scheduler.outcome.reason,
                             self.scheduler.aging_bound_s, "n/a" if fcfs_mean is None else f"{fcfs_mean:.1f}")
            except Exception as exc:  # an observer's failure must not stop serving
                log.warning("quality monitor: refresh failed: %s", exc)
            if self.stopped.wait(self.settings.guard_refresh_s):
                return


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
