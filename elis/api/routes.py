"""The /v1/jobs routes and /healthz."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator
from sqlalchemy import text

from elis import clock
from elis.api.admission import AdmissionRefused, admit
from elis.api.auth import CallerDep
from elis.api.deps import SessionDep, SettingsDep
from elis.api.errors import CANCEL_ERRORS, LIST_ERRORS, READ_ERRORS, SUBMIT_ERRORS
from elis.api.schemas import (
    MAX_WORKLOAD_CHARS,
    Health,
    JobAccepted,
    JobCreate,
    JobDetail,
    JobList,
    JobMetrics,
    JobSummary,
    SchedulerStats,
    WindowOut,
    clean_text,
)
from elis.clock import seconds_between
from elis.models_prepare import BUNDLED_MODEL_NAME
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.models import Job, JobStatus

router = APIRouter()

# Job ids are 32 hex characters; anything else cannot name a job (and NUL or control bytes never reach SQL).
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
QueryText = Annotated[str | None, Query(max_length=MAX_WORKLOAD_CHARS), AfterValidator(
    lambda v: None if v is None else clean_text(v))]
MAX_OFFSET = 1_000_000_000


def _summary_fields(job: Job) -> dict:
    return dict(
        id=job.id,
        status=job.status,
        policy=job.policy,
        workload=job.workload,
        num_prompt_tokens=job.num_prompt_tokens,
        num_output_tokens=job.num_output_tokens,
        num_windows=job.num_windows,
        received_at=job.received_at,
        arrival_at=job.arrival_at,
        first_started_at=job.first_started_at,
        finished_at=job.finished_at,
        finish_reason=job.finish_reason,
        initial_prediction=job.initial_prediction,
        latest_prediction=job.latest_prediction,
        metrics=JobMetrics(jct_s=job.jct_s, queuing_delay_s=job.queuing_delay_s or 0.0, service_s=job.service_s or 0.0,
                           admission_s=None if job.received_at is None
                           else max(0.0, seconds_between(job.received_at, job.arrival_at) or 0.0)),
    )


def _detail(job: Job) -> JobDetail:
    return JobDetail(
        **_summary_fields(job),
        text=job.output_text,
        max_tokens=job.max_tokens,
        error=job.error,
        cancel_requested=job.cancel_requested,
        priority=job.priority,
        windows=[WindowOut.model_validate(w, from_attributes=True) for w in job.windows],
    )


@router.post("/v1/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, responses=SUBMIT_ERRORS)
async def submit_job(body: JobCreate, request: Request, settings: SettingsDep, caller: CallerDep) -> JobAccepted:
    try:
        # The receipt, as the outermost middleware took it: the waits for a free thread (the caller's key lookup,
        # then admission) are part of the admission wait.
        received_at = getattr(request.state, "received_at", None) or clock.now()
        return await run_in_threadpool(admit, request.app.state, settings, caller, body, received_at=received_at)
    except AdmissionRefused as exc:
        headers = None if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
        raise HTTPException(exc.status, exc.message, headers=headers) from None


@router.get("/v1/jobs/{job_id}", response_model=JobDetail, responses=READ_ERRORS)
def get_job(job_id: JobId, session: SessionDep, caller: CallerDep) -> JobDetail:
    try:
        return _detail(store.get_job(session, job_id=job_id, tenant=caller.visible_tenant))
    except store.JobNotFound:
        raise HTTPException(404, f"no job with id {job_id!r}") from None


@router.get("/v1/jobs", response_model=JobList, responses=LIST_ERRORS)
def list_jobs(
    session: SessionDep,
    caller: CallerDep,
    status_filter: JobStatus | None = Query(default=None, alias="status"),
    policy: QueryText = None,
    workload: QueryText = None,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET),
) -> JobList:
    jobs, total = store.list_jobs(session, status=status_filter, policy=policy, workload=workload,
                                  tenant=caller.visible_tenant, limit=limit, offset=offset)
    return JobList(total=total, items=[JobSummary(**_summary_fields(j)) for j in jobs])


@router.delete("/v1/jobs/{job_id}", response_model=JobDetail, status_code=status.HTTP_202_ACCEPTED,
               responses=CANCEL_ERRORS)
def cancel_job(job_id: JobId, session: SessionDep, caller: CallerDep) -> JobDetail:
    """Cancel: a queued job at once; a running one at its next window boundary."""
    try:
        job = store.request_cancel(session, job_id=job_id, now=clock.now(), tenant=caller.visible_tenant)
    except store.JobNotFound:
        raise HTTPException(404, f"no job with id {job_id!r}") from None
    if job.job_status in (JobStatus.DONE, JobStatus.FAILED):
        raise HTTPException(409, f"job {job_id} already ended ({job.status}); nothing to cancel")
    return _detail(job)


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "A dependency is away."}})
def healthz(request: Request, response: Response, settings: SettingsDep) -> Health:
    database = broker = "ok"
    try:
        with session_scope(settings.resolved_database_url) as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        database = f"unreachable: {type(exc).__name__}: {exc}"[:300]
    try:
        from kombu import Connection

        with Connection(settings.broker_url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        broker = f"unreachable: {type(exc).__name__}: {exc}"[:300]
    healthy = database == "ok" and broker == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    scheduler = request.app.state.scheduler
    return Health(
        status="ok" if healthy else "degraded", database=database, broker=broker,
        policy=scheduler.default_policy, ordering=scheduler.ordering(), guard=scheduler.guard_reason(),
        model=settings.model or BUNDLED_MODEL_NAME, max_model_len=settings.max_model_len,
        max_tokens_limit=settings.max_tokens_limit,
    )


@router.get("/v1/stats", response_model=SchedulerStats)
def scheduler_stats(request: Request) -> SchedulerStats:
    """The scheduler's live state: the order in force, the quality guard and the rank quality it judges by
    (Kendall tau of predictions vs true lengths over the last finished jobs), the outcome guard (the policy's
    jobs' mean JCT against their FCFS counterfactual), the aging bound."""
    return SchedulerStats(**request.app.state.scheduler.snapshot())
