"""The only functions that read or write jobs and windows. Keyword-only, the session first.

Every state change that a duplicate message could repeat is a compare-and-set on `next_window`, so a
redelivered or re-published window message cannot append tokens twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from elis import clock
from elis.clock import seconds_between
from elis.scheduling.guard import FinishedJob, step_predictions
from elis.scheduling.outcome import Cohort, JobOutcome, ResidualEstimate, peak_concurrency
from elis.storage.models import Job, JobStatus, Window, WorkerProfile


class JobNotFound(LookupError):
    """No job with that id (or not in the caller's tenant)."""


# A claimed job's first lease; the worker's heartbeat (elis.tasks.recovery.LeaseKeeper) renews it.
DEFAULT_LEASE_S = 120.0


@dataclass(frozen=True)
class NewJob:
    """What admission stores for a new job."""

    policy: str
    prompt: str
    messages: list
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    stop_token_ids: list[int]
    true_output_tokens: int | None = None
    force_length: bool = False
    workload: str | None = None
    tenant: str = "local"
    batch_id: str | None = None  # a request of an OpenAI-style batch, and its line's custom_id
    custom_id: str | None = None
    # When the API received the request, where the JCT counts from (None: when the job is stored).
    received_at: datetime | None = None


def create_job(session: Session, *, new: NewJob, now: datetime, initial_prediction: float | None = None,
               prior_score: float | None = None, prior_fingerprint: str | None = None) -> Job:
    """A new queued job; `prior_score` is the prompt prior's admission score, `prior_fingerprint` that prior's."""
    job = Job(
        policy=new.policy,
        workload=new.workload,
        tenant=new.tenant,
        batch_id=new.batch_id,
        custom_id=new.custom_id,
        prompt=new.prompt,
        messages=new.messages,
        prompt_ids=new.prompt_ids,
        generated_ids=[],
        output_text="",
        max_tokens=new.max_tokens,
        temperature=new.temperature,
        top_p=new.top_p,
        stop=new.stop,
        stop_token_ids=new.stop_token_ids,
        true_output_tokens=new.true_output_tokens,
        force_length=new.force_length,
        num_prompt_tokens=len(new.prompt_ids),
        initial_prediction=initial_prediction,
        latest_prediction=initial_prediction,
        prior_score=prior_score,
        prior_fingerprint=prior_fingerprint,
        received_at=now if new.received_at is None else min(new.received_at, now),
        arrival_at=now,
        enqueued_at=now,
        progress_at=now,
        status=JobStatus.QUEUED.value,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, *, job_id: str, tenant: str | None = None, for_update: bool = False) -> Job:
    """The job; JobNotFound when missing or, given a tenant, another tenant's (it must not learn it exists)."""
    job = session.get(Job, job_id, with_for_update=for_update)
    if job is None or (tenant is not None and job.tenant != tenant):
        raise JobNotFound(job_id)
    return job


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    policy: str | None = None,
    workload: str | None = None,
    tenant: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """Jobs in arrival order, and how many match; `tenant` None lists every tenant's (an admin)."""
    query = select(Job)
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    if status is not None:
        query = query.where(Job.status == status.value)
    if policy is not None:
        query = query.where(Job.policy == policy)
    if workload is not None:
        query = query.where(Job.workload == workload)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.arrival_at, Job.id).limit(limit).offset(offset)).all()
    return list(rows), total


def mark_published(session: Session, *, job_id: str, window_index: int, priority: int) -> None:
    """Record that the message for `window_index` is in the broker (the reconciler skips such jobs)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.next_window == window_index)
        .values(published_window=window_index, priority=priority, published_at=clock.now())
    )


def request_cancel(session: Session, *, job_id: str, now: datetime, tenant: str | None = None) -> Job:
    """A queued job is cancelled at once; a running one stops at its next window boundary."""
    job = get_job(session, job_id=job_id, tenant=tenant, for_update=True)
    if job.job_status.is_final:
        return job
    if job.job_status is JobStatus.QUEUED:
        _finish(job, JobStatus.CANCELLED, "cancelled", now)
    else:
        job.cancel_requested = True
    session.flush()
    return job


def claim_window(
    session: Session, *, job_id: str, window_index: int, worker: str, redelivered: bool, now: datetime,
    lease_s: float = DEFAULT_LEASE_S,
) -> Job | None:
    """Take a queued job for its next window. None: the message is stale or a duplicate (ack and drop).

    A redelivered message (its worker died mid-window) may resume a job left RUNNING, from the job's own
    `next_window` (a non-yielding job may have committed several windows under one message).
    """
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return None
    queued = job.status == JobStatus.QUEUED.value and job.next_window == window_index
    orphaned = redelivered and job.status == JobStatus.RUNNING.value and job.next_window >= window_index
    if not (queued or orphaned):
        return None
    if job.cancel_requested:
        _finish(job, JobStatus.CANCELLED, "cancelled", now)
        return None
    if queued:
        job.queuing_delay_s = (job.queuing_delay_s or 0.0) + max(0.0, seconds_between(job.enqueued_at, now) or 0.0)
    job.status = JobStatus.RUNNING.value
    job.worker = worker
    job.lease_until = now + timedelta(seconds=lease_s)
    if job.first_started_at is None:
        job.first_started_at = now
    session.flush()
    return job


@dataclass(frozen=True)
class WindowCommit:
    """A finished window, as the worker reports it."""

    job_id: str
    window_index: int
    worker: str
    new_ids: list[int]
    output_text: str
    started_at: datetime
    ended_at: datetime
    compute_s: float
    predict_s: float | None
    enqueued_at: datetime | None
    prediction_before: float | None
    prediction_after: float | None
    prediction_failed: bool = False
    finish_reason: str | None = None  # None: the job goes on
    yielded: bool = False
    priority: int | None = None


def commit_window(session: Session, *, commit: WindowCommit) -> Job | None:
    """Append a window's tokens and its record in one transaction, guarded by the expected window index.

    Returns the updated job, or None when another delivery already committed this window.
    """
    job = session.get(Job, commit.job_id, with_for_update=True)
    if job is None or job.next_window != commit.window_index or job.job_status.is_final:
        return None
    generated = list(job.generated_ids) + list(commit.new_ids)
    values: dict = {
        "generated_ids": generated,
        "output_text": commit.output_text,
        "num_output_tokens": len(generated),
        "num_windows": job.num_windows + 1,
        "next_window": commit.window_index + 1,
        "service_s": (job.service_s or 0.0) + max(0.0, (commit.ended_at - commit.started_at).total_seconds()),
        "num_prediction_failures": job.num_prediction_failures + (1 if commit.prediction_failed else 0),
        "progress_at": commit.ended_at,
    }
    if commit.prediction_after is not None:
        values["latest_prediction"] = commit.prediction_after
    if commit.finish_reason is not None:
        values["status"] = JobStatus.DONE.value
    elif job.cancel_requested:
        values["status"] = JobStatus.CANCELLED.value
    elif commit.yielded:
        values.update(status=JobStatus.QUEUED.value, enqueued_at=commit.ended_at, published_window=None,
                      promoted=False, priority=commit.priority)
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.next_window == commit.window_index).values(**values)
    )
    if result.rowcount != 1:
        return None
    session.add(
        Window(
            job_id=job.id,
            index=commit.window_index,
            worker=commit.worker,
            enqueued_at=commit.enqueued_at,
            started_at=commit.started_at,
            ended_at=commit.ended_at,
            num_tokens=len(commit.new_ids),
            compute_s=commit.compute_s,
            predict_s=commit.predict_s,
            prediction_before=commit.prediction_before,
            prediction_after=commit.prediction_after,
            priority=commit.priority,
        )
    )
    session.flush()
    session.refresh(job)
    if commit.finish_reason is not None:
        _finish(job, JobStatus.DONE, commit.finish_reason, commit.ended_at)
    elif job.status == JobStatus.CANCELLED.value:
        _finish(job, JobStatus.CANCELLED, "cancelled", commit.ended_at)
    session.flush()
    return job


def fail_job(session: Session, *, job_id: str, error: str, now: datetime) -> None:
    job = session.get(Job, job_id, with_for_update=True)
    if job is not None and not job.job_status.is_final:
        job.error = error[:4000]
        _finish(job, JobStatus.FAILED, "error", now)
        session.flush()


def _finish(job: Job, status: JobStatus, reason: str, now: datetime) -> None:
    job.status = status.value
    job.finish_reason = reason
    job.finished_at = now
    # From the request's receipt: the admission wait (tokenizing, the admission prediction) is the user's too.
    job.jct_s = seconds_between(job.received_at or job.arrival_at, now)


def jobs_to_republish(session: Session, *, older_than: datetime, limit: int = 500) -> list[Job]:
    """Queued jobs whose current window message was never confirmed in the broker (crash before publish)."""
    rows = session.scalars(
        select(Job)
        .where(
            Job.status == JobStatus.QUEUED.value,
            Job.enqueued_at < older_than,
            (Job.published_window.is_(None)) | (Job.published_window != Job.next_window),
        )
        .limit(limit)
    )
    return list(rows)


def starving_jobs(session: Session, *, waiting_since_before: datetime, since_arrival: bool = False,
                  limit: int = 500) -> list[Job]:
    """Queued jobs not yet promoted that may starve (aging): waiting since before the cut-off, or, `since_arrival`,
    in the system since before it (a job pre-empted again and again starves by its whole time, each wait short).
    The candidates the caller checks against the policy's own rule."""
    since = Job.arrival_at if since_arrival else Job.enqueued_at
    rows = session.scalars(
        select(Job)
        .where(Job.status == JobStatus.QUEUED.value, since < waiting_since_before, Job.promoted.is_(False))
        .order_by(since)
        .limit(limit)
    )
    return list(rows)


def record_window_overhead(session: Session, *, job_id: str, window_index: int, overhead_s: float) -> None:
    """Store the window's time outside the engine, known only after its commit and publish."""
    session.execute(
        update(Window).where(Window.job_id == job_id, Window.index == window_index).values(overhead_s=overhead_s)
    )


def starts_at_once(session: Session, *, live_since: datetime) -> bool:
    """Whether a job admitted now would start at once whatever its score: the workers seen since `live_since` have
    more slots (from their profiles) than there are jobs running or queued, so every queued job and this one get a
    slot. False when no live worker is known."""
    slots = session.scalar(select(func.coalesce(func.sum(WorkerProfile.slots), 0))
                           .where(WorkerProfile.seen_at >= live_since)) or 0
    if slots <= 0:
        return False
    active = session.scalar(select(func.count()).select_from(Job)
                            .where(Job.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value))))
    return (active or 0) < slots


def record_admission_prediction(session: Session, *, job_id: str, tokens: float, prior_score: float | None,
                                prior_fingerprint: str | None) -> bool:
    """Store an admission prediction made after the job was queued (`elis.api.deferred`): its initial
    prediction, its latest where the worker has made none yet, and the prompt prior's score. False when the
    job already has an initial prediction or is gone."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.initial_prediction.is_(None))
        .values(initial_prediction=tokens, latest_prediction=func.coalesce(Job.latest_prediction, tokens),
                prior_score=func.coalesce(Job.prior_score, prior_score),
                prior_fingerprint=func.coalesce(Job.prior_fingerprint, prior_fingerprint))
    )
    return bool(result.rowcount)


def stored_admission(session: Session, *, job_id: str) -> tuple[float | None, float | None, float | None, str | None]:
    """A job's (initial prediction, latest prediction, prior score, prior fingerprint) as stored now."""
    row = session.execute(select(Job.initial_prediction, Job.latest_prediction, Job.prior_score,
                                 Job.prior_fingerprint).where(Job.id == job_id)).first()
    return (None, None, None, None) if row is None else tuple(row)  # type: ignore[return-value]


def queue_head(session: Session) -> Job | None:
    """The queued job the broker would deliver next: the highest level, then the longest waiting."""
    return session.scalars(
        select(Job)
        .where(Job.status == JobStatus.QUEUED.value)
        .order_by(Job.priority.desc().nulls_last(), Job.enqueued_at, Job.id)
        .limit(1)
    ).first()


def mark_promoted(session: Session, *, job_id: str, window_index: int, priority: int) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.next_window == window_index, Job.status == JobStatus.QUEUED.value)
        .values(promoted=True, priority=priority)
    )


def seconds_ago(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)


def recent_costs(session: Session, *, limit: int) -> list[tuple[float, int]]:
    """(service seconds, output tokens) of the last `limit` done jobs, forced lengths included: what a job costs
    the engine is real whether its length was forced or not. The aging bound is derived from the service times,
    and what a job still in the system likely needs (`ResidualEstimate.of`) from both."""
    rows = session.execute(select(Job.service_s, Job.num_output_tokens).where(Job.status == JobStatus.DONE.value)
                           .order_by(Job.finished_at.desc(), Job.id).limit(limit))
    return [(float(seconds or 0.0), int(tokens or 0)) for seconds, tokens in rows]


def _finished_query() -> Select:
    # Jobs with a forced length are left out: their length says nothing about the predictor.
    return select(Job).where(Job.status == JobStatus.DONE.value, Job.force_length.is_(False))


def _repredicted_query() -> Select:
    has_reprediction = select(Window.job_id).where(Window.job_id == Job.id, Window.prediction_after.is_not(None))
    return _finished_query().where(has_reprediction.exists())


def recent_finished(session: Session, *, limit: int) -> list[FinishedJob]:
    """The last `limit` jobs that ran to their end (EOS, stop or max_tokens), newest first. Jobs with a
    forced length are left out: their length says nothing about the predictor."""
    return _finished_facts(session, [_finished_query()], limit)[0]


def recent_repredicted(session: Session, *, limit: int) -> list[FinishedJob]:
    """As `recent_finished`, but only jobs with at least one re-prediction after a window, however far back:
    what the pre-emption verdict and the step calibration learn from when the last jobs ran under a policy
    that makes none (FCFS, SJF)."""
    return _finished_facts(session, [_repredicted_query()], limit)[0]


def recent_guard_evidence(session: Session, *, limit: int) -> tuple[list[FinishedJob], list[FinishedJob]]:
    """`recent_finished` and `recent_repredicted` together, reading the windows of a job in both once (under
    ISRTF the two lists are mostly the same jobs)."""
    finished, repredicted = _finished_facts(session, [_finished_query(), _repredicted_query()], limit)
    return finished, repredicted


def _finished_facts(session: Session, queries: Sequence[Select], limit: int) -> list[list[FinishedJob]]:
    job_lists = [list(session.scalars(query.order_by(Job.finished_at.desc(), Job.id).limit(limit)))
                 for query in queries]
    ids = sorted({job.id for jobs in job_lists for job in jobs})
    windows: dict[str, list[tuple[int, int, float | None]]] = {}
    if ids:
        rows = session.execute(
            select(Window.job_id, Window.index, Window.num_tokens, Window.prediction_after)
            .where(Window.job_id.in_(ids))
        )
        for job_id, index, num_tokens, prediction in rows:
            windows.setdefault(job_id, []).append((index, num_tokens, prediction))
    facts: dict[str, FinishedJob] = {}
    for job in (job for jobs in job_lists for job in jobs):
        if job.id not in facts:
            steps = step_predictions(((num_tokens, prediction) for _, num_tokens, prediction in
                                      sorted(windows.get(job.id, []))), job.num_output_tokens)
            facts[job.id] = FinishedJob(job.id, job.num_output_tokens, job.service_s or 0.0,
                                         job.initial_prediction, steps)
    return [[facts[job.id] for job in jobs] for jobs in job_lists]


def recent_cohort(session: Session, *, limit: int, arrived_before: datetime, now: datetime,
                  workload: str | None = None, residual: ResidualEstimate | None = None) -> Cohort:
    """The outcome guard's evidence (`elis.scheduling.outcome`): the last `limit` jobs by arrival that arrived
    before `arrived_before` and are done or still queued or running (a job still in the system is censored at
    `now`, with the slot time it likely still needs); the backlog (earlier jobs still in the system
    at the cohort's first arrival); each job's slot spans (every window and its window-end work, minus the
    re-prediction only a length-aware order makes); and the slots they ran on (the most windows ever running
    at once). Jobs admitted under FCFS share the slots but are not judged. `workload`: only that replay's jobs
    (for reading one run of a comparison). `residual`: what a censored job likely still needs (default: learned
    from the cohort's own done jobs; a cohort of the latest arrivals may hold none, so the service passes
    `ResidualEstimate.of(recent_costs(...))`)."""
    live = (JobStatus.DONE.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value)
    columns = (Job.id, Job.arrival_at, Job.finished_at, Job.policy, Job.status, Job.num_output_tokens, Job.max_tokens,
               Job.true_output_tokens, Job.force_length)
    query = select(*columns).where(Job.status.in_(live), Job.arrival_at < arrived_before)
    if workload is not None:
        query = query.where(Job.workload == workload)
    jobs = list(session.execute(query.order_by(Job.arrival_at.desc(), Job.id).limit(limit)))
    if not jobs:
        return Cohort((), 1)
    first_arrival = min(job.arrival_at for job in jobs)
    backlog_query = select(*columns).where(
        Job.status.in_(live), Job.arrival_at < first_arrival,
        (Job.finished_at > first_arrival) | Job.finished_at.is_(None))
    if workload is not None:
        backlog_query = backlog_query.where(Job.workload == workload)
    backlog = list(session.execute(backlog_query))
    spans: dict[str, list[tuple[float, float]]] = {}
    intervals: list[tuple[float, float]] = []
    rows = session.execute(
        select(Window.job_id, Window.started_at, Window.ended_at, Window.overhead_s, Window.predict_s)
        .where(Window.job_id.in_([job.id for job in jobs + backlog]))
    )
    held: dict[str, list[tuple[float, float, float]]] = {}
    for job_id, started, ended, overhead, predict in rows:
        held.setdefault(job_id, []).append((started.timestamp(), ended.timestamp() + (overhead or 0.0), predict or 0.0))
    for job_id, windows in held.items():
        windows.sort()
        for i, (start, end, predict) in enumerate(windows):
            # A job holds one slot at a time: its window's end work ends where its next window starts (the two
            # clocks the end is measured on can overshoot that by a millisecond; see `peak_concurrency`).
            if i + 1 < len(windows):
                end = max(min(end, windows[i + 1][0]), start)
            intervals.append((start, end))
            spans.setdefault(job_id, []).append((start, max(end - predict, start)))
    if residual is None:
        residual = ResidualEstimate.of((sum(end - start for start, end in spans.get(job.id, [])),
                                        job.num_output_tokens) for job in jobs if job.status == JobStatus.DONE.value)

    def outcome(job) -> JobOutcome:
        own = tuple(sorted(spans.get(job.id, [])))
        judged = job.policy != "fcfs"
        if job.status == JobStatus.DONE.value:
            return JobOutcome(job.arrival_at.timestamp(), job.finished_at.timestamp(), own, judged, policy=job.policy)
        cap = job.true_output_tokens if job.force_length and job.true_output_tokens else job.max_tokens
        return JobOutcome(job.arrival_at.timestamp(), now.timestamp(), own, judged,
                          remaining_s=residual.remaining_s(job.num_output_tokens, cap), policy=job.policy)

    return Cohort(tuple(outcome(job) for job in reversed(jobs)), max(peak_concurrency(intervals), 1),
                  tuple(outcome(job) for job in backlog))


def tenant_usage(session: Session, *, tenant: str) -> tuple[int, int]:
    """(jobs queued or running, tokens they may still generate) of one tenant: its admission load."""
    active = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
    num_jobs, tokens = session.execute(
        select(func.count(), func.coalesce(func.sum(Job.max_tokens - Job.num_output_tokens), 0))
        .where(Job.tenant == tenant, Job.status.in_(active))
    ).one()
    return int(num_jobs), int(tokens)


def lock_idle_admission(session: Session) -> None:
    """Take the service-wide lock under which an admission checks `starts_at_once` and stores the job it lets
    start at once, until this transaction ends: concurrent admissions onto an idle service would otherwise all
    see the free slot. Take it after the tenant's lock (`lock_tenant_admission`), as every admission does."""
    _advisory_xact_lock(session, "elis.idle-admission")


def lock_tenant_admission(session: Session, *, tenant: str) -> None:
    """Take the tenant's admission lock until this transaction ends, so that counting the tenant's load
    (`tenant_usage`) and inserting the job it allows cannot interleave with another admission's: two
    concurrent submissions would otherwise both count the room for one and both be stored.

    PostgreSQL: a per-tenant advisory lock. SQLite (the embedded default) has one writer at a time: the
    transaction takes the database's write lock before it counts (other writers wait, up to the connection's
    busy timeout), which serializes every admission, of every tenant; call this first in the transaction.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        # An UPDATE that matches no row still opens a write transaction (pysqlite sends BEGIN before it, and
        # SQLite takes the write lock when the statement runs): the count below then sees every committed job.
        session.execute(update(Job).where(Job.id.is_(None)).values(id=Job.id)
                        .execution_options(synchronize_session=False))
        return
    if dialect != "postgresql":
        return
    # A transaction-level advisory lock on a 64-bit key from the tenant's name: released by commit or rollback,
    # and it locks no row (the tenant has no row of its own; its key rows may be many or none).
    _advisory_xact_lock(session, f"elis.tenant-admission:{tenant}")


def _advisory_xact_lock(session: Session, name: str) -> None:
    """PostgreSQL: a transaction-level advisory lock on a 64-bit key from `name`. Elsewhere nothing: SQLite's
    admissions are serialized by its write lock (`lock_tenant_admission`)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    session.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))
