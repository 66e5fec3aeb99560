"""What the workers measured of their engines, shared through the database: each worker writes its own row at
start-up and marks it seen with every lease heartbeat; the API, the workers and the reconciler read the prefill
weight of the live ones."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from statistics import median

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from elis.storage.models import WorkerProfile

log = logging.getLogger(__name__)


def record_worker_profile(session: Session, *, worker: str, slots: int, prefill_s_per_token: float,
                          cached_prefill_s_per_token: float, decode_step_s: float, prefill_weight: float,
                          now: datetime) -> None:
    """Write (or overwrite) this worker's measurements. Two workers under one name (same host, no --name) share
    a row: the later start's measurement wins, or, both inserting at once, the loser logs and keeps serving."""
    row = session.get(WorkerProfile, worker)
    if row is None:
        row = WorkerProfile(worker=worker)
        session.add(row)
    row.slots = slots
    row.prefill_s_per_token = prefill_s_per_token
    row.cached_prefill_s_per_token = cached_prefill_s_per_token
    row.decode_step_s = decode_step_s
    row.prefill_weight = prefill_weight
    row.measured_at = row.seen_at = now


def forget_worker_profile(session: Session, *, worker: str) -> None:
    """Drop this worker's row (its measurement failed this start: an earlier start's must not count as live)."""
    session.execute(delete(WorkerProfile).where(WorkerProfile.worker == worker))


def mark_seen(session: Session, *, worker: str, now: datetime) -> None:
    """The worker is alive: its measurements still count."""
    session.execute(update(WorkerProfile).where(WorkerProfile.worker == worker).values(seen_at=now))


# A stopped worker's heartbeat: older than any live window, so its weight no longer counts as live, while its
# measurement still counts as the last one measured (`measured_prefill_weight` orders those by measured_at).
STOPPED = datetime(1970, 1, 1, tzinfo=UTC)


def mark_stopped(session: Session, *, worker: str) -> None:
    """The worker stopped cleanly: its weight leaves the live median at once, not when its last heartbeat ages
    out (up to 2 x lease_s: run 43 of docs/scheduling.md saw the next stack's API take the median of the stopped
    worker and the new one for 143-163 s)."""
    session.execute(update(WorkerProfile).where(WorkerProfile.worker == worker).values(seen_at=STOPPED))


def measured_prefill_weight(session: Session, *, seen_since: datetime) -> tuple[float, int] | None:
    """The median prefill weight of the workers seen since `seen_since`, and how many; when none was, the last
    measured one's (the workers are down, but the jobs queued meanwhile will run on the same machines), with
    count 0; None when no worker ever measured one. The median: one worker measured on a busy machine must not
    move the order of every job."""
    measured = WorkerProfile.decode_step_s > 0
    weights = session.scalars(
        select(WorkerProfile.prefill_weight).where(WorkerProfile.seen_at >= seen_since, measured)
    ).all()
    if weights:
        return float(median(weights)), len(weights)
    last = session.scalars(
        select(WorkerProfile.prefill_weight).where(measured).order_by(WorkerProfile.measured_at.desc()).limit(1)
    ).first()
    return (float(last), 0) if last is not None else None


def last_measured_profile(session: Session) -> WorkerProfile | None:
    """The latest start-up measurement of any worker on this database (live or not); None when none measured."""
    return session.scalars(
        select(WorkerProfile)
        .where(WorkerProfile.decode_step_s > 0, WorkerProfile.slots >= 1)
        .order_by(WorkerProfile.measured_at.desc())
        .limit(1)
    ).first()


def log_profile_error(what: str, exc: BaseException) -> None:
    """A schema without worker_profiles (a worker newer than the database: workers do not migrate) is expected
    during an upgrade and logged at DEBUG; anything else at WARNING."""
    expected = "worker_profiles" in str(exc)
    log.log(logging.DEBUG if expected else logging.WARNING, "%s: %s", what, type(exc).__name__)
