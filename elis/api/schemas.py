"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class JobCreate(BaseModel):
    """A generation job: a prompt or chat messages, plus sampling settings."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, description="Plain prompt (sent as one user message).")
    messages: list[ChatMessage] | None = Field(default=None, description="Chat messages, instead of a prompt.")
    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens to generate.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=8, description="Stop strings.")
    stop_token_ids: list[int] = Field(default_factory=list, max_length=16)
    target_output_tokens: int | None = Field(
        default=None, ge=1, description="Trace replay: generate exactly this many tokens (the job's known length)."
    )
    workload: str | None = Field(default=None, max_length=64, description="A label to group a replay run.")

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> JobCreate:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("the prompt is empty")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")
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
    # The order the job actually gets: its policy, or "fcfs (guard fallback)" while predictions rank badly.
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
    jct_s: float | None = Field(description="Job completion time: finish - arrival.")
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
    arrival_at: datetime
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
    # The order jobs get now, and the quality guard's reason (e.g. an FCFS fallback and the tau behind it).
    ordering: str
    guard: str
    model: str


class SchedulerStats(BaseModel):
    """The scheduler's state: the order in force, the quality guard, the rank quality of recent predictions,
    the aging bound, the yield margin and the level edges."""

    policy: str
    ordering: str
    guard: dict
    rank_quality: dict | None
    aging: dict
    margin: dict
    levels: dict
    calibration: dict
