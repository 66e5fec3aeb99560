"""What a switch costs on this worker, measured, not guessed.

The worker measures at start-up how long a prefill takes per token, cold and from its prefix cache, and its
decode step with every slot busy (`elis.workers.calibrate`), and then, while serving: the window-end overhead
(commit, publish, claim), the seconds per decode step, and how often a resumed job lands back on this worker
(its prefix cache may still hold the context). `estimate(context_tokens)` turns these into the `SwitchCost` the
yield decision uses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from elis.scheduling.decision import SwitchCost, estimate_switch_cost
from elis.scheduling.work import prefill_weight


@dataclass
class Ewma:
    """An exponentially weighted moving average; `value` is None until the first sample."""

    alpha: float = 0.1
    value: float | None = None

    def add(self, sample: float) -> None:
        self.value = sample if self.value is None else (1 - self.alpha) * self.value + self.alpha * sample


@dataclass
class SwitchCostMeter:
    """Per-worker measurements behind the switch cost. Thread-safe (Celery threads share it)."""

    prefill_s_per_token: float = 0.0
    cached_prefill_s_per_token: float = 0.0
    # Seconds per decode step with every slot busy, measured at start-up (0: not measured).
    decode_step_s: float = 0.0
    overhead_s: Ewma = field(default_factory=Ewma)
    step_s: Ewma = field(default_factory=Ewma)
    resumed: int = 0
    resumed_here: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def window_done(self, compute_s: float, num_tokens: int, overhead_s: float | None) -> None:
        with self._lock:
            if num_tokens > 0 and compute_s > 0:
                self.step_s.add(compute_s / num_tokens)
            if overhead_s is not None:
                self.overhead_s.add(overhead_s)

    def resumed_on(self, same_worker: bool) -> None:
        with self._lock:
            self.resumed += 1
            self.resumed_here += int(same_worker)

    @property
    def cache_hit_rate(self) -> float:
        # Until a job has resumed, assume the cache holds it: one worker is the common case.
        return self.resumed_here / self.resumed if self.resumed else 1.0

    def estimate(self, context_tokens: int) -> SwitchCost:
        with self._lock:
            return estimate_switch_cost(
                context_tokens, overhead_s=self.overhead_s.value or 0.0,
                prefill_s_per_token=self.prefill_s_per_token,
                cached_prefill_s_per_token=self.cached_prefill_s_per_token,
                cache_hit_rate=self.cache_hit_rate, step_s=self.step_s.value or 0.0)

    def prefill_weight(self, slots: int) -> float:
        """Decode steps of one job that a prompt token's prefill costs this worker (0 until both are measured)."""
        return prefill_weight(self.prefill_s_per_token, self.decode_step_s, slots)

    def as_dict(self) -> dict:
        return {"prefill_s_per_token": self.prefill_s_per_token,
                "cached_prefill_s_per_token": self.cached_prefill_s_per_token,
                "decode_step_s": self.decode_step_s,
                "overhead_s": self.overhead_s.value, "step_s": self.step_s.value,
                "cache_hit_rate": self.cache_hit_rate, "resumed": self.resumed}
