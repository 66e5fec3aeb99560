"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Input bounds (docs/robustness.md). The model's context (2,048 tokens) holds about 8,000 characters of
# English, so longer prompts could never run; the body limit (ELIS_MAX_BODY_BYTES) bounds the rest.
MAX_PROMPT_CHARS = 32_000
MAX_MESSAGES = 64
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64
MAX_STOP_TOKEN_IDS = 16
MAX_WORKLOAD_CHARS = 64


def text_problem(value: str) -> str | None:
    """Why a text cannot be stored or tokenized (NUL, a lone surrogate), or None when it is fine."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000); remove it"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains a lone surrogate (\\u{ord(value[exc.start]):04x}), which is not valid Unicode; "
                "send UTF-8 text (a surrogate pair must be complete)")
    return None


def clean_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)

    @field_validator("content")
    @classmethod
    def _clean_content(cls, value: str) -> str:
        return clean_text(value)


class JobCreate(BaseModel):
    """A generation job: a prompt or chat messages, plus sampling settings."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS,
                               description="Plain prompt (sent as one user message).")
    messages: list[ChatMessage] | None = Field(default=None, max_length=MAX_MESSAGES,
                                               description="Chat messages, instead of a prompt.")
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000, description="Most tokens to generate.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list, max_length=MAX_STOP_STRINGS, description="Stop strings.")
    stop_token_ids: list[Annotated[int, Field(ge=0, le=10_000_000)]] = Field(
        default_factory=list, max_length=MAX_STOP_TOKEN_IDS, description="Token ids of the model's vocabulary.")
    target_output_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="Trace replay: generate exactly this many tokens (the job's known length). With max_tokens "
                    "too (at least this), the job keeps max_tokens as its cap, as the natural job had: predictions "
                    "are capped at it, not at the known length.",
    )
    workload: str | None = Field(default=None, max_length=MAX_WORKLOAD_CHARS,
                                 description="A label to group a replay run.")

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("prompt", "workload")
    @classmethod
    def _clean_text(cls, value: str | None) -> str | None:
        return None if value is None else clean_text(value)

    @field_validator("stop")
    @classmethod
    def _clean_stops(cls, value: list[str]) -> list[str]:
        return [clean_text(s) for s in value]

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> JobCreate:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("the prompt is empty")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty")
        if self.messages is not None and sum(len(m.content) for m in self.messages) > MAX_PROMPT_CHARS:
            raise ValueError(f"the messages hold more than {MAX_PROMPT_CHARS} characters in all; shorten them")
        return self

    def chat(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def prompt_text(self) -> str:
        if self.prompt is not None:
            return self.prompt
        users = [m.content for m in self.messages or [] if m.role == "user"]
        return users[-1] if users else (self.messages or [])[-1].content


class JobAccepted(BaseModel):
    """Answer to a submission."""

    id: str
    status: str
    policy: str
    # The order the job actually gets: its policy, or e.g. "prefill first (guard fallback)" while predictions rank
    # badly.
    ordering: str
    initial_prediction: float | None
    priority: int | None
    url: str


class WindowOut(BaseModel):
    index: int
    worker: str | None
    enqueued_at: datetime | None
    started_at: datetime
    ended_at: datetime
    num_tokens: int
    compute_s: float
    overhead_s: float | None
    prediction_before: float | None
    prediction_after: float | None
    priority: int | None


class JobMetrics(BaseModel):
    jct_s: float | None = Field(description="Job completion time: finish - receipt of the request (the admission "
                                            "wait included; finish - arrival for jobs stored before it was kept).")
    admission_s: float | None = Field(default=None, description="Admission wait: arrival (stored and queued) - "
                                                               "receipt of the request (tokenizing, the length "
                                                               "prediction).")
    queuing_delay_s: float = Field(description="Total time spent waiting in the queue.")
    service_s: float = Field(description="Total time spent running windows.")


class JobSummary(BaseModel):
    id: str
    status: str
    policy: str
    workload: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    num_windows: int
    received_at: datetime | None = Field(default=None, description="When the API received the request.")
    arrival_at: datetime = Field(description="When the job was stored and queued: the scheduler orders from here.")
    first_started_at: datetime | None
    finished_at: datetime | None
    finish_reason: str | None
    initial_prediction: float | None
    latest_prediction: float | None
    metrics: JobMetrics


class JobDetail(JobSummary):
    text: str
    max_tokens: int
    error: str | None
    cancel_requested: bool
    priority: int | None
    windows: list[WindowOut]


class JobList(BaseModel):
    total: int
    items: list[JobSummary]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str
    policy: str
    # The order jobs get now, and the guards' reason (e.g. an FCFS fallback and the tau or the JCT ratio behind it).
    ordering: str
    guard: str
    model: str
    # The limits every job is admitted by (a replay against this API leaves out what it would refuse).
    max_model_len: int
    max_tokens_limit: int


class SchedulerStats(BaseModel):
    """The scheduler's state: the order in force, the quality guard, the rank quality of recent predictions,
    the outcome guard (the policy's jobs against their FCFS counterfactual), the aging bound, the yield margin
    and the level edges."""

    policy: str
    ordering: str
    guard: dict
    rank_quality: dict | None
    outcome: dict
    aging: dict
    margin: dict
    levels: dict
    calibration: dict
    # Decode steps of one job a prompt token's prefill counts for under length-aware policies (ELIS_PREFILL_WEIGHT,
    # else the workers' measurements).
    prefill_weight: float | None = None
    # "settings", "bundled engine profile ...", or "measured by N live workers" (each measures at start-up).
    prefill_weight_source: str | None = None
