"""Measure this worker's prefill cost at start-up, cold and from its prefix cache (the yield margin's switch
cost is measured per worker, not guessed)."""

from __future__ import annotations

import time

from elis.tasks.contracts import Engine, SamplingSettings

_GREEDY = SamplingSettings(temperature=0.0)


def _one_token(engine: Engine, prompt_ids: list[int]) -> float:
    started = time.perf_counter()
    engine.run_window(prompt_ids, [], 1, _GREEDY)
    return time.perf_counter() - started


def measure_prefill(engine: Engine, context_tokens: int = 384, base_token: int = 1000) -> tuple[float, float]:
    """Seconds per prefilled token (cold, cached): one token generated after a short prompt, after a long
    new one, and after the same long one again (now in the prefix cache). Differences cancel the fixed cost.

    NOTE: plain token ids, not text: the measure is of the engine, and ids in a mid-vocabulary range are
    valid for any tokenizer of a few thousand entries or more.
    """
    short = [base_token + i % 97 for i in range(16)]
    long_ids = [base_token + (i * 7) % 997 for i in range(context_tokens)]
    _one_token(engine, short)  # warm up the engine's step loop
    fixed = _one_token(engine, [t + 1 for t in short])
    cold = _one_token(engine, long_ids)
    cached = _one_token(engine, long_ids)
    extra = context_tokens - len(short)
    return max(0.0, (cold - fixed) / extra), max(0.0, (cached - fixed) / extra)
