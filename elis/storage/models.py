"""Tables: one row per job, one row per window a job ran, API keys, batch files and batches, and what each
worker measured of its engine."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC timestamps on every backend (SQLite drops the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use elis.clock.now()")
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class JobStatus(str, enum.Enum):
    """A job's life: queued <-> running, then done, failed or cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


def new_job_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base of the project's tables."""


class Job(Base):
    """A generation job and everything its metrics need."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    policy: Mapped[str] = mapped_column(String(32))
    workload: Mapped[str | None] = mapped_column(String(64), index=True)  # a replay run's label
    tenant: Mapped[str] = mapped_column(String(64), default="local", server_default="local")  # its key's tenant
    # A request of an OpenAI-style batch: the batch and the line's custom_id.
    batch_id: Mapped[str | None] = mapped_column(String(40), index=True)
    custom_id: Mapped[str | None] = mapped_column(String(256))

    prompt: Mapped[str] = mapped_column(Text)
    messages: Mapped[list] = mapped_column(JSON)
    prompt_ids: Mapped[list] = mapped_column(JSON)
    generated_ids: Mapped[list] = mapped_column(JSON, default=list)
    output_text: Mapped[str] = mapped_column(Text, default="")

    max_tokens: Mapped[int] = mapped_column(Integer)
    temperature: Mapped[float] = mapped_column(Float)
    top_p: Mapped[float] = mapped_column(Float)
    stop: Mapped[list] = mapped_column(JSON, default=list)
    stop_token_ids: Mapped[list] = mapped_column(JSON, default=list)
    # Trace replay: generate exactly this many tokens; also the oracle's true length.
    true_output_tokens: Mapped[int | None] = mapped_column(Integer)
    force_length: Mapped[bool] = mapped_column(Boolean, default=False)

    num_prompt_tokens: Mapped[int] = mapped_column(Integer)
    num_output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    num_windows: Mapped[int] = mapped_column(Integer, default=0)
    # Compare-and-set guard: the index of the next window to run.
    next_window: Mapped[int] = mapped_column(Integer, default=0)
    # The window index whose message is known to be in the broker (None: not yet published).
    published_window: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[int | None] = mapped_column(Integer)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)  # aging re-published it at the top level

    initial_prediction: Mapped[float | None] = mapped_column(Float)
    latest_prediction: Mapped[float | None] = mapped_column(Float)
    # The prompt prior's score at admission and the prior's fingerprint: a worker with the same prior reuses it
    # rather than reading the prompt through the served model again.
    prior_score: Mapped[float | None] = mapped_column(Float)
    prior_fingerprint: Mapped[str | None] = mapped_column(String(64))
    num_prediction_failures: Mapped[int] = mapped_column(Integer, default=0)

    # When the API received the request (before tokenizing and the admission prediction) and when it stored the
    # job: the JCT counts from the first (the admission wait is the user's too), the order from the second (a
    # job cannot run before it is stored). None for jobs stored before migration 0009: their JCT counts from
    # arrival_at.
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    arrival_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    jct_s: Mapped[float | None] = mapped_column(Float)
    queuing_delay_s: Mapped[float] = mapped_column(Float, default=0.0)
    service_s: Mapped[float] = mapped_column(Float, default=0.0)

    worker: Mapped[str | None] = mapped_column(String(128))
    # Recovery (elis.tasks.recovery): the running job's lease, the last publish, the last progress.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)

    windows: Mapped[list[Window]] = relationship(
        back_populates="job", order_by="Window.index", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (
        Index("ix_jobs_status_enqueued", "status", "enqueued_at"),
        Index("ix_jobs_status_priority", "status", "priority"),
        Index("ix_jobs_tenant_status", "tenant", "status"),
    )

    @property
    def job_status(self) -> JobStatus:
        return JobStatus(self.status)


class Window(Base):
    """One window of one job: where and when it ran, what it produced, what the predictor said."""

    __tablename__ = "windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(128))
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    num_tokens: Mapped[int] = mapped_column(Integer)
    compute_s: Mapped[float] = mapped_column(Float, default=0.0)
    # Seconds spent outside the engine for this window: prediction, database commit, publish.
    overhead_s: Mapped[float | None] = mapped_column(Float)
    predict_s: Mapped[float | None] = mapped_column(Float)
    prediction_before: Mapped[float | None] = mapped_column(Float)
    prediction_after: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[int | None] = mapped_column(Integer)

    job: Mapped[Job] = relationship(back_populates="windows")

    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_windows_job_index"),)


class ApiKey(Base):
    """An API key: its tenant, whether it sees every tenant (admin), its limits. Only a hash of the secret
    is stored; the secret is shown once, by `elis keys create`."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the key's public part
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # None: the service's default (ELIS_TENANT_MAX_*, ELIS_MAX_TOKENS_LIMIT).
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_tokens_in_flight: Mapped[int | None] = mapped_column(Integer)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
class StoredFile(Base):
    """An uploaded batch input file, or a batch's output or error file (OpenAI's Files API)."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="local", server_default="local", index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(256))
    num_bytes: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BatchStatus(str, enum.Enum):
    """OpenAI's batch statuses (`expired` is never reached: completion windows are not enforced)."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class Batch(Base):
    """A batch of requests read from one input file; its jobs carry its id."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="local", server_default="local", index=True)
    # The key that created it: its requests are admitted with that key's limits (None: no key, ELIS_AUTH=none,
    # and the service's default limits).
    api_key_id: Mapped[str | None] = mapped_column(
        String(16), ForeignKey("api_keys.id", name="fk_batches_api_key_id")
    )
    status: Mapped[str] = mapped_column(String(16), index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(16))
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    # Why validation failed: [{code, message, line}].
    errors: Mapped[list | None] = mapped_column(JSON)
    # Requests that could not run (malformed lines): [{line, custom_id, code, message}].
    line_errors: Mapped[list] = mapped_column(JSON, default=list)
    num_requests: Mapped[int] = mapped_column(Integer, default=0)
    batch_metadata: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Refreshed while a process validates and queues the batch's requests; a stale one (the process died) lets
    # another take the admission over (storage.batches.claim_admission).
    admission_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WorkerProfile(Base):
    """What a worker measured of its engine at start-up: the prefill per token and the decode step with every
    slot busy. The API and every worker order newcomers by their prefill weight (`elis.scheduling.work`) unless
    ELIS_PREFILL_WEIGHT is set; a machine's own weight can differ several-fold from the bundled profile's."""

    __tablename__ = "worker_profiles"

    worker: Mapped[str] = mapped_column(String(128), primary_key=True)
    slots: Mapped[int] = mapped_column(Integer)
    prefill_s_per_token: Mapped[float] = mapped_column(Float)
    cached_prefill_s_per_token: Mapped[float] = mapped_column(Float)
    decode_step_s: Mapped[float] = mapped_column(Float)
    prefill_weight: Mapped[float] = mapped_column(Float)
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The worker's heartbeat (its lease keeper): the live workers' weights count, a stopped one's do not.
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
