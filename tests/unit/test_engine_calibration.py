"""The worker's start-up measure of its engine: the decode step with every slot busy, and the prefill weight it
gives with the prefill per token (elis.workers.calibrate, elis.tasks.switch_cost)."""

from __future__ import annotations

import threading

import pytest

from elis.tasks.contracts import Engine, SamplingSettings, WindowOutput
from elis.tasks.switch_cost import SwitchCostMeter
from elis.workers import calibrate


class BatchedFakeClockEngine(Engine):
    """A deterministic batched engine on a fake clock: the `slots` calls of a batch start together (a barrier),
    and the clock moves to the batch's start plus its cost: a prefill per prompt token (paid once per prompt,
    the prefix cache serving repeats), a fixed cost and a decode step per token for the whole batch."""

    def __init__(self, slots: int, prefill_s_per_token: float, step_s: float, fixed_s: float) -> None:
        self.barrier = threading.Barrier(slots)
        self.prefill_s_per_token, self.step_s, self.fixed_s = prefill_s_per_token, step_s, fixed_s
        self.now = 100.0
        self.lock = threading.Lock()
        self.cached: set[tuple[int, ...]] = set()
        self.calls: list[tuple[tuple[int, ...], int, SamplingSettings]] = []

    def clock(self) -> float:
        return self.now

    def run_window(self, prompt_ids, generated_ids, max_new_tokens, sampling) -> WindowOutput:
        start = self.now
        with self.lock:
            self.calls.append((tuple(prompt_ids), max_new_tokens, sampling))
            hit = tuple(prompt_ids) in self.cached
            self.cached.add(tuple(prompt_ids))
        self.barrier.wait(timeout=10)  # the batch: every slot's call has started, none has moved the clock
        prefill = 0.0 if hit else self.prefill_s_per_token * len(prompt_ids)
        with self.lock:
            self.now = max(self.now, start + self.fixed_s + prefill + self.step_s * max_new_tokens)
        self.barrier.wait(timeout=10)
        return WindowOutput(new_ids=[1] * max_new_tokens, finished=False)

    def decode(self, token_ids) -> str:
        return ""


def test_the_decode_step_is_measured_with_every_slot_busy_on_prompts_no_cache_holds(monkeypatch):
    engine = BatchedFakeClockEngine(slots=4, prefill_s_per_token=0.002, step_s=0.03, fixed_s=0.01)
    monkeypatch.setattr(calibrate.time, "perf_counter", engine.clock)
    step = calibrate.measure_decode_step(engine, slots=4, tokens=32)
    # The prefill and the fixed cost cancel: every run pays them alike, on new prompts.
    assert step == pytest.approx(0.03)
    assert len(engine.calls) == 3 * 4 and len({ids for ids, _, _ in engine.calls}) == 12
    assert all(sampling.force_length and sampling.temperature == 0.0 for _, _, sampling in engine.calls)
    assert sorted({tokens for _, tokens, _ in engine.calls}) == [1, 2, 32]


def test_the_meter_turns_its_measurements_into_the_prefill_weight():
    meter = SwitchCostMeter(prefill_s_per_token=0.0015, decode_step_s=0.03)
    assert meter.prefill_weight(4) == pytest.approx(0.0015 * 4 / 0.03)
    assert meter.as_dict()["decode_step_s"] == 0.03
    assert SwitchCostMeter(prefill_s_per_token=0.0015).prefill_weight(4) == 0.0  # the step not measured
