"""Plain-data contracts between the window task and the engine a worker runs.

The task layer depends only on this interface; `elis.workers` provides the implementations (vLLM, trace).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum


class FinishReason(str, Enum):
    """Why a job ended."""

    EOS = "eos"  # the model's end-of-sequence token (or a stop token id)
    STOP = "stop"  # a stop string
    LENGTH = "length"  # max_tokens reached
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class SamplingSettings:
    """Per-job sampling, carried unchanged from window to window."""

    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    # Trace replay: ignore EOS and stops so the job generates exactly max_tokens (its known length).
    force_length: bool = False


@dataclass(frozen=True)
class WindowOutput:
    """What the engine reports back for one window of one job."""

    new_ids: list[int]
    # The engine ended the sequence (EOS, stop token id or stop string). Reaching the window's token budget
    # is not an ending: the caller decides about max_tokens.
    finished: bool
    reason: FinishReason | None = None
    compute_s: float = 0.0
    extra: dict = field(default_factory=dict)


class EngineError(RuntimeError):
    """The engine failed to run a window."""


class Engine(ABC):
    """Runs at most `max_new_tokens` more tokens of one job. Thread-safe: concurrent calls batch together."""

    @abstractmethod
    def run_window(
        self,
        prompt_ids: list[int],
        generated_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingSettings,
    ) -> WindowOutput:
        """Generate the next tokens after prompt + generated ids (token ids, never re-tokenized text)."""

    @abstractmethod
    def decode(self, token_ids: list[int]) -> str:
        """Text of token ids (special tokens skipped)."""

    def close(self) -> None:
        """Release the engine's resources."""
