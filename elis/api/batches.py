"""OpenAI-compatible Files and Batch APIs: /v1/files and /v1/batches.

A batch's input file is validated in the background after `POST /v1/batches` answers (status `validating`);
each runnable line becomes one ordinary job (so it is scheduled by the service's policy like any other), a
malformed line becomes a line of the error file. When every job has ended, the next read of the batch writes
its output and error files (JSONL in OpenAI's batch output format) and the batch is `completed` (or
`cancelled`, keeping the requests that finished).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, StringConstraints, ValidationError

from elis import clock
from elis.api import openai_format as fmt
from elis.api.admission import AdmissionRefused, Origin, admit
from elis.api.auth import Caller, CallerDep, creator_caller
from elis.api.deps import SessionDep, SettingsDep
from elis.api.errors import INVALID, NOT_FOUND, UNAUTHORIZED, UNAVAILABLE, _doc
from elis.api.schemas import JobCreate
from elis.config import Settings
from elis.replay.openai_batch import (
    SUPPORTED_URLS,
    BatchFileError,
    BatchLineError,
    BatchRequest,
    parse_batch,
)
from elis.storage import batches as store
from elis.storage.db import session_scope
from elis.storage.models import BatchStatus, JobStatus

log = logging.getLogger(__name__)
# Every status the Batch and Files routes answer, with the one error body.
BATCH_ERRORS = {
    **UNAUTHORIZED, **NOT_FOUND, **INVALID, **UNAVAILABLE,
    400: _doc("The request names an unsupported endpoint, purpose or completion window, or an empty file."),
    409: _doc("The batch already ended."),
    413: _doc("The file is larger than ELIS_MAX_BATCH_FILE_MB."),
}
router = APIRouter(tags=["openai batch"], responses=BATCH_ERRORS)

UPLOAD_PURPOSES = ("batch",)
# A finalization that has not finished after this long (its API process died) may be claimed again.
STALE_FINALIZATION_S = 300.0
# The error line of each request not yet queued when the key that created its batch is revoked.
KEY_REVOKED_MESSAGE = "the API key that created this batch was revoked"
# How often a batch request held back by its tenant's limit checks again for room.
BATCH_LIMIT_POLL_S = 1.0
# A batch admission whose heartbeat is older than this is taken over (its process stopped); the heartbeat is
# refreshed before every request and every second while one waits for room.
STALE_ADMISSION_S = 60.0


class BatchCancelled(Exception):
    """The batch was cancelled while one of its requests waited for room under its tenant's limit."""


# File and batch ids are ours ("file-<hex>", "batch_<hex>"): anything else names nothing, and NUL or control
# bytes never reach SQL.
ObjectId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
CursorId = Annotated[str | None, Query(max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
SafeText = Annotated[str, StringConstraints(max_length=512, pattern=r"^[^\x00]*$")]


class BatchCreate(BaseModel):
    """The body of `POST /v1/batches`, as the OpenAI client sends it."""

    input_file_id: Annotated[str, StringConstraints(max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
    endpoint: SafeText
    completion_window: SafeText = "24h"
    metadata: dict[SafeText, SafeText] | None = None


def served_model_name(settings: Settings) -> str:
    return settings.model or "SmolLM2-135M-Instruct"


# -- files -----------------------------------------------------------------------------------------------


@router.post("/v1/files")
async def upload_file(settings: SettingsDep, caller: CallerDep, file: UploadFile, purpose: str = Form(...)) -> dict:
    """Upload a batch input file (multipart: `file`, `purpose=batch`)."""
    if purpose not in UPLOAD_PURPOSES:
        raise HTTPException(400, f"purpose must be 'batch', not {purpose!r}")
    max_bytes = settings.max_batch_file_mb * 1024 * 1024
    content = await file.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise HTTPException(
            413, f"the file is larger than {settings.max_batch_file_mb} MB (ELIS_MAX_BATCH_FILE_MB)"
        )
    if not content.strip():
        raise HTTPException(400, "the file is empty")

    def store_file() -> dict:
        with session_scope(settings.resolved_database_url) as session:
            stored = store.create_file(
                session,
                purpose=purpose,
                filename=file.filename or "upload.jsonl",
                content=content,
                now=clock.now(),
                tenant=caller.tenant,
            )
            return fmt.file_object(stored)

    return await run_in_threadpool(store_file)


@router.get("/v1/files/{file_id}")
def get_file(file_id: ObjectId, session: SessionDep, caller: CallerDep) -> dict:
    return fmt.file_object(_file_or_404(session, file_id, caller))


@router.get("/v1/files/{file_id}/content")
def get_file_content(file_id: ObjectId, session: SessionDep, caller: CallerDep) -> Response:
    return Response(content=_file_or_404(session, file_id, caller).content, media_type="application/octet-stream")


@contextmanager
def _or_404(kind: str, object_id: str | None, note: str = "") -> Iterator[None]:
    """A lookup inside that finds nothing (or another tenant's object) answers 404 "no <kind> with id ..."."""
    try:
        yield
    except (store.FileNotFound, store.BatchNotFound):
        raise HTTPException(404, f"no {kind} with id {object_id!r}{note}") from None


def _file_or_404(session, file_id: ObjectId, caller: Caller):
    """The file if it is the caller's tenant's (an admin sees all)."""
    with _or_404("file", file_id):
        return store.get_file(session, file_id=file_id, tenant=caller.visible_tenant)


# -- batches ---------------------------------------------------------------------------------------------


@router.post("/v1/batches")
def create_batch(
    body: BatchCreate,
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    background: BackgroundTasks,
    caller: CallerDep,
) -> dict:
    """Create a batch from an uploaded file; its lines are validated and queued in the background."""
    if body.endpoint not in SUPPORTED_URLS:
        raise HTTPException(
            400, f"endpoint must be one of {', '.join(SUPPORTED_URLS)}, not {body.endpoint!r}"
        )
    if body.completion_window not in store.COMPLETION_WINDOWS:
        raise HTTPException(400, f"completion_window must be one of {', '.join(store.COMPLETION_WINDOWS)}")
    stored = _file_or_404(session, body.input_file_id, caller)
    if stored.purpose != "batch":
        raise HTTPException(400, f"file {stored.id} has purpose {stored.purpose!r}, not 'batch'")
    batch = store.create_batch(
        session,
        input_file_id=stored.id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
        now=clock.now(),
        tenant=caller.tenant,
        api_key_id=caller.key_id,  # its requests are admitted with this key's limits, not the defaults
    )
    answer = fmt.batch_object(batch, {})
    session.commit()
    background.add_task(validate_and_queue, request.app.state, settings, batch.id)
    return answer


@router.get("/v1/batches/{batch_id}")
def get_batch(batch_id: ObjectId, settings: SettingsDep, session: SessionDep, caller: CallerDep) -> dict:
    with _or_404("batch", batch_id):  # the caller's tenant's batch only (an admin sees all)
        store.get_batch(session, batch_id=batch_id, tenant=caller.visible_tenant)
    return refresh_batch(settings, batch_id)


@router.get("/v1/batches")
def list_batches(
    settings: SettingsDep,
    session: SessionDep,
    caller: CallerDep,
    limit: int = Query(default=20, ge=1, le=100),
    after: CursorId = None,
) -> dict:
    with _or_404("batch", after, " (the 'after' cursor)"):
        page, has_more = store.list_batches(session, limit=limit, after=after, tenant=caller.visible_tenant)
    data = [refresh_batch(settings, batch.id) for batch in page]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


@router.post("/v1/batches/{batch_id}/cancel")
def cancel_batch(batch_id: ObjectId, settings: SettingsDep, caller: CallerDep) -> dict:
    """Stop the batch: requests not finished are cancelled; finished ones stay in the output file."""
    with session_scope(settings.resolved_database_url) as session:
        with _or_404("batch", batch_id):
            store.get_batch(session, batch_id=batch_id, tenant=caller.visible_tenant)
            batch = store.request_cancel(session, batch_id=batch_id, now=clock.now())
        if batch.status in (
            BatchStatus.COMPLETED.value,
            BatchStatus.FAILED.value,
            BatchStatus.FINALIZING.value,
        ):
            raise HTTPException(409, f"batch {batch_id} is {batch.status}; nothing to cancel")
    return refresh_batch(settings, batch_id)


def refresh_batch(settings: Settings, batch_id: str) -> dict:
    """The batch object; when every request has ended, write the output files first."""
    url = settings.resolved_database_url
    with session_scope(url) as session:
        with _or_404("batch", batch_id):
            batch = store.get_batch(session, batch_id=batch_id)
        counts = store.job_counts(session, batch_id=batch_id)
        ready = _ready_to_finalize(batch, counts)
        if not ready:
            return fmt.batch_object(batch, counts)
    finalize_batch(settings, batch_id)
    with session_scope(url) as session:
        return fmt.batch_object(
            store.get_batch(session, batch_id=batch_id), store.job_counts(session, batch_id=batch_id)
        )


def _ready_to_finalize(batch, counts: dict[str, int]) -> bool:
    running = counts.get(JobStatus.QUEUED.value, 0) + counts.get(JobStatus.RUNNING.value, 0)
    if running or batch.in_progress_at is None:
        return False
    if (
        batch.status in (BatchStatus.IN_PROGRESS.value, BatchStatus.CANCELLING.value)
        and batch.finalizing_at is None
    ):
        return True
    # A finalization whose process died: the files were never written.
    stale = (
        batch.finalizing_at is not None
        and clock.seconds_between(batch.finalizing_at, clock.now()) > STALE_FINALIZATION_S
    )
    return batch.status in (BatchStatus.FINALIZING.value, BatchStatus.CANCELLING.value) and stale


def finalize_batch(settings: Settings, batch_id: str) -> None:
    """Write the output file (done requests) and the error file (malformed lines, failed and cancelled
    requests), then mark the batch completed or cancelled. Only the caller that claims it does the work."""
    url = settings.resolved_database_url
    now = clock.now()
    with session_scope(url) as session:
        stale_before = now - timedelta(seconds=STALE_FINALIZATION_S)
        if not store.claim_finalization(session, batch_id=batch_id, now=now, stale_before=stale_before):
            return
    with session_scope(url) as session:
        batch = store.get_batch(session, batch_id=batch_id)
        outputs, errors = [], [fmt.line_error_line(e) for e in batch.line_errors or []]
        for job in store.batch_jobs(session, batch_id=batch_id):
            if job.status == JobStatus.DONE.value:
                outputs.append(fmt.output_line(job, batch.endpoint, served_model_name(settings)))
            else:
                errors.append(fmt.job_error_line(job))
        files = {}
        for kind, lines in (("output", outputs), ("errors", errors)):
            if lines:
                files[kind] = store.create_file(
                    session,
                    purpose="batch_output",
                    filename=f"{batch_id}_{kind}.jsonl",
                    content=fmt.to_jsonl(lines),
                    now=clock.now(),
                    tenant=batch.tenant,
                ).id
        store.finish_batch(
            session,
            batch_id=batch_id,
            output_file_id=files.get("output"),
            error_file_id=files.get("errors"),
            now=clock.now(),
        )


# -- validation and admission (background) --------------------------------------------------------------


def validate_and_queue(state, settings: Settings, batch_id: str) -> None:
    """Read the input file; fail the batch if it is not JSONL, else queue one job per runnable line.

    Resumable: it first claims the batch's admission (one process at a time, kept by a heartbeat) and skips
    the requests already queued, so when the process dies mid-way, `resume_stalled_admissions` (any API)
    takes over without queueing a request twice (custom_ids are unique in a batch: `parse_batch` fails a file
    that repeats one)."""
    url = settings.resolved_database_url
    try:
        with session_scope(url) as session:
            now = clock.now()
            stale_before = now - timedelta(seconds=STALE_ADMISSION_S)
            if not store.claim_admission(session, batch_id=batch_id, now=now, stale_before=stale_before):
                return  # another process is admitting it, or it is done
            batch = store.get_batch(session, batch_id=batch_id)
            endpoint, content = batch.endpoint, store.get_file(session, file_id=batch.input_file_id).content
            queued = store.queued_custom_ids(session, batch_id=batch_id)
        try:
            requests, bad_lines = parse_batch(content, endpoint)
        except (BatchFileError, UnicodeDecodeError) as exc:
            line = exc.line_number if isinstance(exc, BatchFileError) else None
            _fail(url, batch_id, "invalid_jsonl", f"the input file is not JSONL: {exc}", line)
            return
        num_requests = len(requests) + len(bad_lines)
        if num_requests > settings.max_batch_requests:
            _fail(
                url,
                batch_id,
                "too_many_requests",
                f"the file has {num_requests} requests; at most {settings.max_batch_requests} "
                "(ELIS_MAX_BATCH_REQUESTS)",
            )
            return
        line_errors = [_line_error(e) for e in bad_lines]
        for request in requests:
            if request.custom_id in queued:
                continue  # queued by an earlier admission of this batch, whose process stopped
            with session_scope(url) as session:
                cancelled = store.admission_heartbeat(session, batch_id=batch_id, now=clock.now())
            if cancelled:
                line_errors.append(_cancelled_line(request))
                continue
            try:
                admit_batch_request(state, settings, batch_id, request)
            except BatchLineError as exc:
                line_errors.append(_line_error(exc))
            except BatchCancelled:
                line_errors.append(_cancelled_line(request))
        line_errors.sort(key=lambda e: e["line"])
        with session_scope(url) as session:
            store.start_batch(
                session,
                batch_id=batch_id,
                num_requests=num_requests,
                line_errors=line_errors,
                now=clock.now(),
            )
    except Exception as exc:  # never leave a batch validating forever
        log.exception("validating batch %s failed", batch_id)
        _fail(url, batch_id, "internal_error", f"validation failed: {type(exc).__name__}: {exc}")


class AdmissionResumer(threading.Thread):
    """In every API process: every STALE_ADMISSION_S / 2 seconds, resume the batch admissions whose process
    stopped (the claim lets only one API take each). Errors are logged, never raised."""

    def __init__(self, state, settings: Settings) -> None:
        super().__init__(name="elis-batch-admission-resumer", daemon=True)
        self.state, self.settings = state, settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(STALE_ADMISSION_S / 2):
            try:
                resume_stalled_admissions(self.state, self.settings)
            except Exception as exc:  # noqa: BLE001 -- the database may be away: try again next round
                log.warning("resuming stalled batch admissions failed: %s", exc)


def resume_stalled_admissions(state, settings: Settings) -> list[str]:
    """Take over the admissions whose process stopped (a stale heartbeat) and finish them; their ids."""
    now = clock.now()
    with session_scope(settings.resolved_database_url) as session:
        stalled = store.stalled_admissions(session, stale_before=now - timedelta(seconds=STALE_ADMISSION_S))
    for batch_id in stalled:
        log.warning("batch %s: the process queueing its requests stopped; resuming its admission", batch_id)
        validate_and_queue(state, settings, batch_id)
    return stalled


def admit_batch_request(state, settings: Settings, batch_id: str, request: BatchRequest) -> str:
    """Admit one request as `POST /v1/jobs` would, as a job of the batch: the batch's tenant owns it, and the
    limits are those of the key that created the batch, read now (a line over them fails alone; once that key
    is revoked, every line not yet queued fails). Raises BatchLineError when it cannot run."""

    def fail(message: str, code: str = "invalid_request") -> BatchLineError:
        return BatchLineError(request.line_number, request.custom_id, message, code)

    with session_scope(settings.resolved_database_url) as session:
        batch = store.get_batch(session, batch_id=batch_id)
        caller = creator_caller(settings, session, tenant=batch.tenant, key_id=batch.api_key_id)
    if caller is None:
        raise fail(KEY_REVOKED_MESSAGE, code="api_key_revoked")
    try:
        body = JobCreate(**request.job_body(), workload=f"batch:{batch_id[-12:]}")
    except ValidationError as exc:
        raise fail("; ".join(_readable(e) for e in exc.errors())) from None
    origin = Origin(batch_id=batch_id, custom_id=request.custom_id,
                    raw_prompt=None if request.is_chat else request.prompt)
    # A tenant limit (429) is a matter of time, not of the request: wait for the tenant's jobs to free the room,
    # as a client told Retry-After would, up to batch_limit_wait_s; stop waiting when the batch is cancelled.
    deadline = time.monotonic() + settings.batch_limit_wait_s
    while True:
        try:
            return admit(state, settings, caller, body, origin).id
        except AdmissionRefused as exc:
            if exc.status != 429 or time.monotonic() >= deadline:
                waited = f" (still so after waiting {settings.batch_limit_wait_s:g} s)" if exc.status == 429 else ""
                raise fail(exc.message + waited) from None
        time.sleep(max(0.0, min(BATCH_LIMIT_POLL_S, deadline - time.monotonic())))
        with session_scope(settings.resolved_database_url) as session:
            if store.admission_heartbeat(session, batch_id=batch_id, now=clock.now()):
                raise BatchCancelled(batch_id)


def _readable(error: dict) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    return f"body.{where}: {message}" if where else message


def _cancelled_line(request: BatchRequest) -> dict:
    return {"line": request.line_number, "custom_id": request.custom_id, "code": "batch_cancelled",
            "message": "the batch was cancelled before this request ran"}


def _line_error(exc: BatchLineError) -> dict:
    return {"line": exc.line_number, "custom_id": exc.custom_id, "code": exc.code, "message": str(exc)}


def _fail(url: str, batch_id: str, code: str, message: str, line: int | None = None) -> None:
    with session_scope(url) as session:
        store.fail_batch(
            session,
            batch_id=batch_id,
            now=clock.now(),
            errors=[{"code": code, "message": message, "param": None, "line": line}],
        )
