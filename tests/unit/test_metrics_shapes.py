"""Metric helpers that need no server: the rank-quality snapshot reader and the worker observers."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY

from elis import metrics
from elis.api.metrics import rank_quality_values


@dataclass
class Snapshot:
    spearman: float
    num_pairs: int
    tripped: bool
    policy: str


def test_rank_quality_reads_the_numbers_of_a_mapping_a_dataclass_or_a_number():
    assert rank_quality_values({"kendall_tau": 0.4, "note": "x"}) == {"kendall_tau": 0.4}
    assert rank_quality_values(Snapshot(0.6, 120, True, "isrtf")) == {
        "spearman": 0.6,
        "num_pairs": 120.0,
        "tripped": 1.0,
    }
    assert rank_quality_values(0.5) == {"value": 0.5}


def test_a_nested_scheduler_snapshot_is_flattened_by_path():
    snapshot = {"policy": "isrtf", "guard": {"fallback": False, "judged_tau": 0.41, "reason": "ok"},
                "rank_quality": None, "aging": {"bound_s": 12.5}}
    assert rank_quality_values(snapshot) == {"guard_fallback": 0.0, "guard_judged_tau": 0.41, "aging_bound_s": 12.5}


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_window_observation_moves_latency_tokens_yields_and_reprediction():
    before = (
        sample("elis_worker_window_seconds_count"),
        sample("elis_worker_output_tokens_total"),
        sample("elis_worker_yields_total"),
        sample("elis_worker_reprediction_seconds_count"),
    )
    metrics.observe_window(compute_s=0.5, num_tokens=50, predict_s=0.02, yielded=True)
    metrics.observe_window(compute_s=0.25, num_tokens=10, predict_s=None, yielded=False)
    after = (
        sample("elis_worker_window_seconds_count"),
        sample("elis_worker_output_tokens_total"),
        sample("elis_worker_yields_total"),
        sample("elis_worker_reprediction_seconds_count"),
    )
    assert [a - b for a, b in zip(after, before)] == [2, 60, 1, 1]
    assert sample("elis_worker_output_tokens_per_second") == 40.0


def test_deliveries_are_counted_by_redelivery_and_outcomes_by_name():
    redelivered = sample("elis_worker_deliveries_total", redelivered="true")
    skipped = sample("elis_worker_windows_total", outcome="skipped")
    metrics.observe_delivery(True)
    metrics.observe_outcome("windows_skipped")
    assert sample("elis_worker_deliveries_total", redelivered="true") == redelivered + 1
    assert sample("elis_worker_windows_total", outcome="skipped") == skipped + 1


def test_a_window_counts_as_in_the_engine_while_it_runs_there_even_when_the_engine_raises():
    before = sample("elis_worker_windows_in_engine")
    with metrics.window_in_engine():
        assert sample("elis_worker_windows_in_engine") == before + 1
        with metrics.window_in_engine():
            assert sample("elis_worker_windows_in_engine") == before + 2
    assert sample("elis_worker_windows_in_engine") == before
    try:
        with metrics.window_in_engine():
            raise RuntimeError("the engine failed")
    except RuntimeError:
        pass
    assert sample("elis_worker_windows_in_engine") == before


def test_only_an_engine_step_beyond_the_slow_bound_is_reported(caplog):
    from elis.workers.vllm_engine import SLOW_STEP_S, warn_if_slow_step

    with caplog.at_level("WARNING", logger="elis.workers.vllm_engine"):
        assert not warn_if_slow_step(0.2, 2)
        assert not warn_if_slow_step(SLOW_STEP_S, 2)
        assert warn_if_slow_step(SLOW_STEP_S + 35.0, 2)
    assert [r.getMessage() for r in caplog.records] == [
        "vLLM step took 45.0 s with 2 windows in the batch: the engine core was starved of CPU or stuck "
        "(a step takes well under a second)"]
