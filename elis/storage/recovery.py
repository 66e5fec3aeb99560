"""Database side of recovery: worker leases, jobs whose message is gone, jobs that no longer progress.

Every change is guarded (status, lease, window index) so two reconcilers, or a reconciler racing a worker,
cannot undo each other's work.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from elis.storage.models import Job, JobStatus

ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def renew_leases(session: Session, *, worker: str, until: datetime) -> int:
    """The worker's heartbeat: extend the lease of every job it is running. Returns how many."""
    result = session.execute(
        update(Job).where(Job.worker == worker, Job.status == JobStatus.RUNNING.value).values(lease_until=until)
    )
    return result.rowcount or 0


def release_orphans(session: Session, *, now: datetime, limit: int = 500) -> list[str]:
    """Running jobs whose lease ran out (no live worker holds them) go back to QUEUED, unpublished.

    They resume from their last committed window; a late commit from a worker that was only slow still
    lands (the window index guards it), and the re-published message is then stale and skipped.
    """
    expired = session.scalars(
        select(Job.id)
        .where(Job.status == JobStatus.RUNNING.value, Job.lease_until.is_not(None), Job.lease_until < now)
        .limit(limit)
    ).all()
    released = []
    for job_id in expired:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.lease_until < now)
            .values(status=JobStatus.QUEUED.value, enqueued_at=now, published_window=None, worker=None,
                    lease_until=None)
        )
        if result.rowcount == 1:
            released.append(job_id)
    return released


def num_queued_with_message(session: Session) -> int:
    """Queued jobs whose current window's message was confirmed by the broker: each should be in the queue."""
    return session.scalar(
        select(func.count()).select_from(Job).where(
            Job.status == JobStatus.QUEUED.value, Job.published_window == Job.next_window)
    ) or 0


def jobs_published_before(session: Session, *, cutoff: datetime, limit: int) -> list[Job]:
    """Queued jobs whose message was published before the cut-off and never delivered, oldest first."""
    return list(session.scalars(
        select(Job)
        .where(Job.status == JobStatus.QUEUED.value, Job.published_window == Job.next_window,
               Job.published_at.is_not(None), Job.published_at < cutoff)
        .order_by(Job.published_at, Job.id)
        .limit(limit)
    ))


def stuck_jobs(session: Session, *, no_progress_since: datetime, limit: int = 500) -> list[Job]:
    """Queued or running jobs that have not moved (admitted, or a window committed) since the cut-off."""
    last_progress = func.coalesce(Job.progress_at, Job.arrival_at)
    return list(session.scalars(
        select(Job).where(Job.status.in_(ACTIVE), last_progress < no_progress_since).order_by(last_progress)
        .limit(limit)
    ))
