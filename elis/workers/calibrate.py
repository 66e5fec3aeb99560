"""Measure this worker's engine at start-up: its prefill cost, cold and from its prefix cache, and its decode
step with every slot busy. The yield margin's switch cost and the prefill weight (what a prompt token's prefill
costs in decode steps of one job) are measured per worker, not guessed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from elis.tasks.contracts import Engine, SamplingSettings

_GREEDY = SamplingSettings(temperature=0.0)
# Exactly the asked tokens (EOS ignored), so every sequence of the batch decodes to the end.
_FORCED = SamplingSettings(temperature=0.0, force_length=True)


def _one_token(engine: Engine, prompt_ids: list[int]) -> float:
    started = time.perf_counter()
    engine.run_window(prompt_ids, [], 1, _GREEDY)
    return time.perf_counter() - started


def measure_prefill(engine: Engine, context_tokens: int = 384, base_token: int = 1000,
                    salt: int = 0) -> tuple[float, float]:
    """Seconds per prefilled token (cold, cached): one token generated after a short prompt, after a long
    new one, and after the same long one again (now in the prefix cache). Differences cancel the fixed cost.
    Measuring again on the same engine needs another `salt` (other ids), or the "new" prompt is cached.

    NOTE: plain token ids, not text: the measure is of the engine, and ids in a mid-vocabulary range are
    valid for any tokenizer of a few thousand entries or more.
    """
    short = [base_token + (salt * 31 + i) % 97 for i in range(16)]
    long_ids = [base_token + (salt * 13 + i * 7) % 997 for i in range(context_tokens)]
    _one_token(engine, short)  # warm up the engine's step loop
    fixed = _one_token(engine, [t + 1 for t in short])
    cold = _one_token(engine, long_ids)
    cached = _one_token(engine, long_ids)
    extra = context_tokens - len(short)
    return max(0.0, (cold - fixed) / extra), max(0.0, (cached - fixed) / extra)


def _batch(engine: Engine, prompts: list[list[int]], tokens: int) -> float:
    """Seconds for every prompt to generate `tokens` tokens, all at once (the engine batches concurrent calls)."""
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        started = time.perf_counter()
        for _ in pool.map(lambda ids: engine.run_window(ids, [], tokens, _FORCED), prompts):
            pass
        return time.perf_counter() - started


def measure_decode_step(engine: Engine, slots: int, tokens: int = 32, base_token: int = 2000) -> float:
    """Seconds per decode step with `slots` sequences in the batch: `slots` short prompts generating `tokens`
    tokens at once, less the same with one token (which cancels the prefill and the fixed cost), per step.

    NOTE: measured here, not taken from windows while serving: a serving window's time per token also holds the
    prefills of other jobs that stalled its batch (on long prompts, most of it), which is the very cost the
    weight is to set against the decode step.
    """
    slots, tokens = max(1, slots), max(2, tokens)

    def prompts(run: int) -> list[list[int]]:
        # Every prompt of every run starts with its own id, so none finds a prefix of another in the prefix cache
        # and each run pays the same prefill (ids stay below base_token + 3 x slots + 15).
        return [[base_token + run * slots + slot] + [base_token + 3 * slots + i % 97 for i in range(15)]
                for slot in range(slots)]

    _batch(engine, prompts(0), 2)  # warm up the batched step loop
    one = _batch(engine, prompts(1), 1)
    many = _batch(engine, prompts(2), tokens)
    return max(0.0, (many - one) / (tokens - 1))
