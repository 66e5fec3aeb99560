"""The only functions that read or write files and batches (OpenAI's Files and Batch APIs).

A batch's requests are ordinary jobs carrying its id; its counts are read from them. Finalization (writing
the output and error files) is claimed with a compare-and-set on `finalizing_at`, so two API processes
polling the same batch write its files once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from elis.storage import jobs as job_store
from elis.storage.models import Batch, BatchStatus, Job, JobStatus, StoredFile

COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}


class FileNotFound(LookupError):
    """No file with that id."""


class BatchNotFound(LookupError):
    """No batch with that id."""


def create_file(
    session: Session, *, purpose: str, filename: str, content: bytes, now: datetime, tenant: str = "local"
) -> StoredFile:
    stored = StoredFile(
        tenant=tenant,
        id=f"file-{uuid.uuid4().hex}",
        purpose=purpose,
        filename=filename,
        num_bytes=len(content),
        content=content,
        created_at=now,
    )
    session.add(stored)
    session.flush()
    return stored


def get_file(session: Session, *, file_id: str, tenant: str | None = None) -> StoredFile:
    """The file; another tenant's file is not found (`tenant` None: an admin sees all)."""
    stored = session.get(StoredFile, file_id)
    if stored is None or (tenant is not None and stored.tenant != tenant):
        raise FileNotFound(file_id)
    return stored


def create_batch(
    session: Session,
    *,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict | None,
    now: datetime,
    tenant: str = "local",
    api_key_id: str | None = None,
) -> Batch:
    batch = Batch(
        tenant=tenant,
        api_key_id=api_key_id,
        id=f"batch_{uuid.uuid4().hex}",
        status=BatchStatus.VALIDATING.value,
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window=completion_window,
        line_errors=[],
        num_requests=0,
        batch_metadata=metadata,
        created_at=now,
        expires_at=now + COMPLETION_WINDOWS.get(completion_window, timedelta()),
    )
    session.add(batch)
    session.flush()
    return batch


def get_batch(session: Session, *, batch_id: str, tenant: str | None = None) -> Batch:
    """The batch; another tenant's batch is not found (`tenant` None: an admin sees all)."""
    batch = session.get(Batch, batch_id)
    if batch is None or (tenant is not None and batch.tenant != tenant):
        raise BatchNotFound(batch_id)
    return batch


def list_batches(session: Session, *, limit: int = 20, after: str | None = None,
                 tenant: str | None = None) -> tuple[list[Batch], bool]:
    """Newest first; `after` is the id of the last batch of the previous page. Returns (page, has_more)."""
    query = select(Batch).order_by(Batch.created_at.desc(), Batch.id.desc())
    if tenant is not None:
        query = query.where(Batch.tenant == tenant)
    if after is not None:
        cursor = get_batch(session, batch_id=after, tenant=tenant)
        query = query.where(
            (Batch.created_at < cursor.created_at)
            | ((Batch.created_at == cursor.created_at) & (Batch.id < cursor.id))
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def is_cancelling(session: Session, *, batch_id: str) -> bool:
    return session.scalar(select(Batch.cancelling_at).where(Batch.id == batch_id)) is not None


def claim_admission(session: Session, *, batch_id: str, now: datetime, stale_before: datetime) -> bool:
    """True for the one caller that gets to validate and queue the batch's requests: the admission has not
    finished (no in_progress_at) and nobody's heartbeat is newer than `stale_before` (a process that died
    mid-way leaves a stale one, and its requests already queued are skipped by the next)."""
    free = Batch.admission_heartbeat_at.is_(None) | (Batch.admission_heartbeat_at < stale_before)
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, free, Batch.in_progress_at.is_(None),
               Batch.status.in_((BatchStatus.VALIDATING.value, BatchStatus.CANCELLING.value)))
        .values(admission_heartbeat_at=now)
    )
    return result.rowcount == 1


def admission_heartbeat(session: Session, *, batch_id: str, now: datetime) -> bool:
    """Refresh the admission's heartbeat; True when the batch has since been cancelled."""
    session.execute(update(Batch).where(Batch.id == batch_id).values(admission_heartbeat_at=now))
    return is_cancelling(session, batch_id=batch_id)


def stalled_admissions(session: Session, *, stale_before: datetime) -> list[str]:
    """Batches whose admission started and has not finished, with a heartbeat older than `stale_before`."""
    return list(session.scalars(
        select(Batch.id).where(
            Batch.in_progress_at.is_(None),
            Batch.status.in_((BatchStatus.VALIDATING.value, BatchStatus.CANCELLING.value)),
            Batch.admission_heartbeat_at.is_not(None),
            Batch.admission_heartbeat_at < stale_before,
        )
    ))


def queued_custom_ids(session: Session, *, batch_id: str) -> set[str]:
    """The custom_ids of the batch's requests that are already jobs."""
    return set(session.scalars(select(Job.custom_id).where(Job.batch_id == batch_id)))


def start_batch(
    session: Session, *, batch_id: str, num_requests: int, line_errors: list[dict], now: datetime
) -> None:
    """Validation passed: record the request count and the malformed lines; validating -> in_progress."""
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(num_requests=num_requests, line_errors=line_errors, in_progress_at=now)
    )
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.VALIDATING.value)
        .values(status=BatchStatus.IN_PROGRESS.value)
    )


def fail_batch(session: Session, *, batch_id: str, errors: list[dict], now: datetime) -> None:
    """Validation failed (the file is not JSONL, or is missing): no job was created."""
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(status=BatchStatus.FAILED.value, errors=errors, failed_at=now)
    )


def request_cancel(session: Session, *, batch_id: str, now: datetime) -> Batch:
    """Cancel every request not yet finished (queued ones at once, running ones at their next window)."""
    batch = get_batch(session, batch_id=batch_id)
    if batch.status in (BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value):
        batch.status = BatchStatus.CANCELLING.value
        batch.cancelling_at = now
        session.flush()
    if batch.status == BatchStatus.CANCELLING.value:
        for job_id in session.scalars(
            select(Job.id).where(Job.batch_id == batch_id, Job.status.in_(_NOT_FINAL))
        ):
            job_store.request_cancel(session, job_id=job_id, now=now)
    return batch


_NOT_FINAL = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def job_counts(session: Session, *, batch_id: str) -> dict[str, int]:
    """The batch's jobs by status."""
    rows = session.execute(
        select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
    )
    return {status: count for status, count in rows}


def batch_jobs(session: Session, *, batch_id: str) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.arrival_at, Job.id)))


def claim_finalization(session: Session, *, batch_id: str, now: datetime, stale_before: datetime) -> bool:
    """True for the one caller that gets to write the batch's files (every job of it has ended). A claim
    older than `stale_before` whose files were never written (its process died) can be taken again."""
    unclaimed = Batch.finalizing_at.is_(None) | (Batch.finalizing_at < stale_before)
    result = session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            unclaimed,
            Batch.in_progress_at.is_not(None),
            Batch.status.in_(
                (BatchStatus.IN_PROGRESS.value, BatchStatus.FINALIZING.value, BatchStatus.CANCELLING.value)
            ),
        )
        .values(finalizing_at=now)
    )
    if result.rowcount != 1:
        return False
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.IN_PROGRESS.value)
        .values(status=BatchStatus.FINALIZING.value)
    )
    return True


def finish_batch(
    session: Session, *, batch_id: str, output_file_id: str | None, error_file_id: str | None, now: datetime
) -> None:
    """Files written: finalizing -> completed, or cancelling -> cancelled."""
    batch = get_batch(session, batch_id=batch_id)
    batch.output_file_id = output_file_id
    batch.error_file_id = error_file_id
    if batch.status == BatchStatus.CANCELLING.value:
        batch.status, batch.cancelled_at = BatchStatus.CANCELLED.value, now
    else:
        batch.status, batch.completed_at = BatchStatus.COMPLETED.value, now
    session.flush()
