"""The simulator's engine cost model, read from a profile the worker benchmark writes on a real engine."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path


def default_profile_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "engine_profile_default.json"


@dataclass(frozen=True)
class EngineProfile:
    """Costs of one engine (one worker).

    `decode_step_s` maps a batch size to the seconds one decode step takes (linear interpolation between
    points, linear extrapolation past the last two). A job joining a batch stalls the whole batch for its
    prefill (`prefill_s_per_token` x prompt and tokens so far, unless the worker's prefix cache still holds
    them: `prefix_cache_tokens` per worker, LRU). Every window end costs `window_overhead_s` (database, publish,
    policy) during which the job's slot is idle. A re-prediction stalls the whole batch for `predict_s`: on a
    CPU worker the predictor shares the cores with the engine (about 0.018 s per re-prediction measured live,
    run 15 of docs/scheduling.md; the embedded profile leaves it at 0, as for a predictor beside a GPU).
    """

    decode_step_s: dict[int, float]
    prefill_s_per_token: float = 0.0
    window_overhead_s: float = 0.0
    prefix_cache_tokens: int = 0
    predict_s: float = 0.0
    source: str = ""
    _points: tuple[tuple[int, ...], tuple[float, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.decode_step_s:
            raise ValueError("decode_step_s needs at least one batch size")
        sizes = tuple(sorted(int(b) for b in self.decode_step_s))
        if sizes[0] < 1 or any(self.decode_step_s[b] <= 0 for b in sizes):
            raise ValueError("batch sizes must be >= 1 and step times > 0")
        object.__setattr__(self, "_points", (sizes, tuple(self.decode_step_s[b] for b in sizes)))

    def decode_step(self, batch: int) -> float:
        """Seconds per decode step with `batch` running jobs (>= 1)."""
        sizes, times = self._points
        if len(sizes) == 1 or batch <= sizes[0]:
            return times[0]
        index = min(max(bisect.bisect_left(sizes, batch), 1), len(sizes) - 1)
        b0, b1, t0, t1 = sizes[index - 1], sizes[index], times[index - 1], times[index]
        return max(times[0] * 0.5, t0 + (t1 - t0) * (batch - b0) / (b1 - b0))

    def step_table(self, max_batch: int) -> list[float]:
        """`decode_step(b)` for b = 0 .. max_batch (index 0 unused)."""
        return [0.0] + [self.decode_step(b) for b in range(1, max_batch + 1)]

    @classmethod
    def from_dict(cls, data: dict) -> EngineProfile:
        return cls(
            decode_step_s={int(k): float(v) for k, v in data["decode_step_s"].items()},
            prefill_s_per_token=float(data.get("prefill_s_per_token", 0.0)),
            window_overhead_s=float(data.get("window_overhead_s", 0.0)),
            prefix_cache_tokens=int(data.get("prefix_cache_tokens", 0)),
            predict_s=float(data.get("predict_s", 0.0)),
            source=str(data.get("source", "")),
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> EngineProfile:
        """A profile from JSON; without a path, the embedded default estimate."""
        return cls.from_dict(json.loads(Path(path or default_profile_path()).read_text()))

    @classmethod
    def constant(cls, step_s: float) -> EngineProfile:
        """A deterministic, overhead-free engine: every decode step takes `step_s` (for queueing theory)."""
        return cls(decode_step_s={1: step_s}, source=f"constant {step_s} s per step, no prefill, no overhead")

    def at_measured_speed(self, *, slots: int, decode_step_s: float, prefill_s_per_token: float,
                          source: str) -> EngineProfile:
        """This profile's shape at the speed a worker measured: every decode step scaled so that `slots`
        sequences take `decode_step_s`, and the measured prefill cost per token (kept when not measured)."""
        if slots < 1 or decode_step_s <= 0:
            raise ValueError("a measured speed needs slots >= 1 and a decode step > 0")
        factor = decode_step_s / self.decode_step(slots)
        return EngineProfile(
            decode_step_s={batch: step * factor for batch, step in self.decode_step_s.items()},
            prefill_s_per_token=prefill_s_per_token if prefill_s_per_token > 0 else self.prefill_s_per_token,
            window_overhead_s=self.window_overhead_s,
            prefix_cache_tokens=self.prefix_cache_tokens,
            predict_s=self.predict_s,
            source=source,
        )

    def capacity_rps(self, num_workers: int, num_slots: int, window_tokens: int, mean_prompt: float,
                     mean_output: float) -> float:
        """Estimated requests/s the workers sustain with full batches and no re-prefill (defines load 1.0)."""
        windows = max(1.0, mean_output / window_tokens)
        per_job = (mean_output * self.decode_step(num_slots) + windows * self.window_overhead_s) / num_slots
        per_job += mean_prompt * self.prefill_s_per_token
        return num_workers / per_job
