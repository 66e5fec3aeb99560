"""Recovery from outages and lost messages: a job submitted is a job finished.

- A window whose database or broker is away waits with back-off until both answer, then hands its message
  back to the queue (`outage_reject`); it never consumes the message.
- Each worker renews the lease of the jobs it runs (`LeaseKeeper`); a running job whose lease ran out has no
  live worker and goes back to the queue.
- A queued job whose message is gone (a purged queue, a lost message) is re-published once the queue holds
  fewer messages than queued jobs and its message is older than `lost_after_s`.
- A job that makes no progress for `stuck_after_s` is failed with the reason, logged and counted.

All of it only ever adds messages; the window compare-and-set (storage.claim_window / commit_window) makes
a duplicate a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from celery.exceptions import Reject

from elis import clock
from elis.config import Settings
from elis.storage import jobs as store
from elis.storage import recovery as recovery_store
from elis.storage.db import session_scope
from elis.storage.models import Job
from elis.storage.profiles import log_profile_error, mark_seen
from elis.tasks.publish import publish_window

log = logging.getLogger(__name__)

# Totals for this process (windows that waited out an outage, jobs released, re-published, failed as stuck).
COUNTS: Counter[str] = Counter()

PriorityOf = Callable[[Job, datetime], int]


def is_outage(exc: BaseException) -> bool:
    """The database or the broker is away (refused, dropped, timed out), as opposed to a bug."""
    from amqp.exceptions import ConnectionError as AmqpConnectionError
    from kombu.exceptions import OperationalError as KombuOperationalError
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout, KombuOperationalError,
                        AmqpConnectionError, ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def database_up(settings: Settings) -> bool:
    from sqlalchemy import text

    try:
        with session_scope(settings.resolved_database_url) as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not yet"
        return False


def broker_up(settings: Settings) -> bool:
    from kombu import Connection

    try:
        with Connection(settings.broker_url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
        return True
    except Exception:  # any failure means "not yet"
        return False


def wait_for_dependencies(settings: Settings, max_wait_s: float, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Wait with exponential back-off (0.5 s doubling to 10 s) until database and broker answer.
    Returns False when they are still away after `max_wait_s`."""
    deadline = time.monotonic() + max_wait_s
    delay = 0.5
    while True:
        if database_up(settings) and broker_up(settings):
            return True
        if time.monotonic() + delay > deadline:
            return False
        sleep(delay)
        delay = min(delay * 2.0, 10.0)


def outage_reject(settings: Settings, job_id: str, window_index: int, exc: BaseException) -> Reject:
    """The Reject to raise for a window that failed because a dependency is away, after waiting for it.

    The message goes back to the queue (requeue) whatever happens: the job resumes from its last committed
    window on the redelivery. If the broker itself dropped the connection, RabbitMQ requeues the unacked
    message on its own. Waiting here (rather than rejecting at once) keeps a worker from spinning through
    every queued message while the database is away.
    """
    COUNTS["windows_outage"] += 1
    # The message's window: a job that keeps its slot runs later windows under the same message, and resumes
    # from its last committed one on the redelivery.
    log.warning("job %s (its message from window %d): %s is away (%s); waiting for it before handing the message "
                "back", job_id, window_index, "a dependency", type(exc).__name__)
    back = wait_for_dependencies(settings, settings.outage_wait_s)
    log.warning("job %s (its message from window %d): %s; message requeued", job_id, window_index,
                "dependencies answer again" if back else f"still away after {settings.outage_wait_s:.0f} s")
    return Reject(f"dependency away: {type(exc).__name__}", requeue=True)


class LeaseKeeper(threading.Thread):
    """A worker's heartbeat in the database: renews the lease of the jobs it runs every lease_s / 4, and marks its
    measured engine profile seen (`storage.profiles`)."""

    def __init__(self, settings: Settings, worker_name: str) -> None:
        super().__init__(name="elis-lease-keeper", daemon=True)
        self.settings = settings
        self.worker_name = worker_name
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.lease_s / 4.0):
            try:
                renew(self.settings, self.worker_name)
            except Exception as exc:  # the database away: the next beat tries again
                log.warning("lease renewal failed: %s", type(exc).__name__)


def renew(settings: Settings, worker_name: str) -> int:
    now = clock.now()
    until = now + timedelta(seconds=settings.lease_s)
    with session_scope(settings.resolved_database_url) as session:
        renewed = recovery_store.renew_leases(session, worker=worker_name, until=until)
    try:  # apart from the lease: a schema without worker_profiles (workers do not migrate) must not cost the leases
        with session_scope(settings.resolved_database_url) as session:
            mark_seen(session, worker=worker_name, now=now)  # its measured engine profile still counts
    except Exception as exc:
        log_profile_error("engine profile not marked seen", exc)
    return renewed


def queue_depth(settings: Settings) -> int:
    """Messages ready in the window queue (not counting those delivered and unacked)."""
    from kombu import Connection

    with Connection(settings.broker_url, connect_timeout=5) as connection:
        return _ready_messages(connection, settings)


def _ready_messages(connection, settings: Settings) -> int:
    """Messages ready in the window queue, asked on `connection` (a passive declare: the queue is not created)."""
    from elis.tasks.app import window_queue

    _, num_messages, _ = window_queue(settings)(connection.default_channel).queue_declare(passive=True)
    return int(num_messages)


class QueueDepthProbe:
    """`queue_depth` on a connection kept between calls (the consumer watchdog asks every few seconds: one
    connection per ask would fill RabbitMQ's log). When the kept connection fails (it died in a broker restart:
    kombu notices only on use) the same call asks once more on a fresh one, so the first check after a restart
    still counts; None when that fails too (the broker is away)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection = None

    def __call__(self) -> int | None:
        for _ in range(2):
            try:
                return self._ask()
            except Exception:  # a dead kept connection, or the broker away: drop it and try a fresh one
                self.close()
        return None

    def _ask(self) -> int:
        from kombu import Connection

        if self._connection is None:
            self._connection = Connection(self.settings.broker_url, connect_timeout=5)
        return _ready_messages(self._connection, self.settings)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception:  # already broken: nothing to release
                pass


def release_orphans(settings: Settings, priority_of: PriorityOf, now: datetime) -> int:
    """Running jobs whose lease ran out go back to the queue; their next window is published at once."""
    with session_scope(settings.resolved_database_url) as session:
        released = recovery_store.release_orphans(session, now=now)
    for job_id in released:
        log.warning("job %s: its worker's lease ran out; re-queued from its last committed window", job_id)
        _republish(settings, priority_of, job_id, now)
    COUNTS["jobs_released"] += len(released)
    return len(released)


def republish_lost(settings: Settings, priority_of: PriorityOf, now: datetime) -> int:
    """Queued jobs whose message is gone. The gate: the queue holds fewer ready messages than queued jobs
    with a published message (a long but healthy backlog re-publishes nothing). Then the jobs whose message
    is older than `lost_after_s` are re-published, oldest first, at most as many as are missing."""
    with session_scope(settings.resolved_database_url) as session:
        expected = recovery_store.num_queued_with_message(session)
    if expected == 0:
        return 0
    missing = expected - queue_depth(settings)
    if missing <= 0:
        return 0
    cutoff = now - timedelta(seconds=settings.lost_after_s)
    with session_scope(settings.resolved_database_url) as session:
        lost = [job.id for job in recovery_store.jobs_published_before(session, cutoff=cutoff, limit=missing)]
    for job_id in lost:
        _republish(settings, priority_of, job_id, now)
    if lost:
        log.warning("re-published %d queued jobs whose message was gone (%d missing from the queue)",
                    len(lost), missing)
    COUNTS["jobs_republished_lost"] += len(lost)
    return len(lost)


def fail_stuck(settings: Settings, now: datetime) -> int:
    """Fail jobs with no progress for `stuck_after_s`, with the reason (0 turns this off)."""
    if settings.stuck_after_s <= 0:
        return 0
    cutoff = now - timedelta(seconds=settings.stuck_after_s)
    url = settings.resolved_database_url
    with session_scope(url) as session:
        stuck = [(job.id, job.status, job.next_window) for job in
                 recovery_store.stuck_jobs(session, no_progress_since=cutoff)]
    for job_id, status, next_window in stuck:
        reason = (f"no progress for {settings.stuck_after_s:.0f} s (ELIS_STUCK_AFTER_S) while {status} "
                  f"at window {next_window}")
        with session_scope(url) as session:
            store.fail_job(session, job_id=job_id, error=reason, now=now)
        log.warning("job %s failed: %s", job_id, reason)
    COUNTS["jobs_failed_stuck"] += len(stuck)
    return len(stuck)


def recover_once(settings: Settings, priority_of: PriorityOf) -> dict[str, int]:
    """One recovery pass (the reconciler runs it with its own)."""
    now = clock.now()
    return {
        "released": release_orphans(settings, priority_of, now),
        "republished_lost": republish_lost(settings, priority_of, now),
        "failed_stuck": fail_stuck(settings, now),
    }


def _republish(settings: Settings, priority_of: PriorityOf, job_id: str, now: datetime) -> None:
    url = settings.resolved_database_url
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        if job is None or job.status != "queued":
            return
        window_index, priority = job.next_window, priority_of(job, now)
    publish_window(settings, job_id=job_id, window_index=window_index, priority=priority)
    with session_scope(url) as session:
        store.mark_published(session, job_id=job_id, window_index=window_index, priority=priority)
