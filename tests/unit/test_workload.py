"""Arrival generators and the Azure trace reader."""

from __future__ import annotations

import numpy as np
import pytest

from elis.replay.workload import (
    TraceJob,
    arrival_times,
    gamma_shape_scale,
    read_azure_trace,
    rescale_to_rate,
    synthetic_workload,
    take_cycled,
)


def cv(values: np.ndarray) -> float:
    return float(np.std(values) / np.mean(values))


def test_the_embedded_azure_trace_reads_with_arrivals_from_zero():
    trace = read_azure_trace()
    assert len(trace) == 19366  # the file has no final newline; `wc -l` shows 19366 with the header
    assert trace[0].arrival == 0.0 and trace[0].num_prompt_tokens == 374 and trace[0].num_output_tokens == 44
    assert trace[1].arrival == pytest.approx(50.9951690 - 46.6805900)
    assert all(b.arrival >= a.arrival for a, b in zip(trace, trace[1:]))


def test_gamma_arrivals_default_to_the_elis_fit():
    gaps = np.diff(arrival_times(50_000, "gamma", seed=0))
    assert np.mean(gaps) == pytest.approx(0.73 * 10.41, rel=0.03)
    assert cv(gaps) == pytest.approx(1 / np.sqrt(0.73), rel=0.03)


def test_gamma_arrivals_hit_a_target_rate_and_cv():
    assert gamma_shape_scale(2.0, 0.5) == pytest.approx((4.0, 0.125))
    gaps = np.diff(arrival_times(50_000, "gamma", rate=4.0, cv=2.0, seed=1))
    assert 1 / np.mean(gaps) == pytest.approx(4.0, rel=0.05)
    assert cv(gaps) == pytest.approx(2.0, rel=0.05)


def test_poisson_arrivals_have_exponential_gaps():
    gaps = np.diff(arrival_times(50_000, "poisson", rate=3.0, seed=2))
    assert 1 / np.mean(gaps) == pytest.approx(3.0, rel=0.03)
    assert cv(gaps) == pytest.approx(1.0, rel=0.03)
    with pytest.raises(ValueError):
        arrival_times(10, "poisson")


def test_synthetic_workloads_are_seeded_and_take_lengths_from_the_pool():
    pool = read_azure_trace(limit=50)
    first = synthetic_workload(100, "poisson", 1.0, seed=3, pool=pool)
    assert first == synthetic_workload(100, "poisson", 1.0, seed=3, pool=pool)
    pairs = {(j.num_prompt_tokens, j.num_output_tokens) for j in pool}
    assert all((j.num_prompt_tokens, j.num_output_tokens) in pairs for j in first)


def test_a_synthetic_workload_keeps_each_jobs_loop_point_with_its_lengths():
    pool = [TraceJob("loops", 0.0, 10, 512, loop_at=150), TraceJob("ends", 0.0, 20, 80)]
    jobs = synthetic_workload(200, "poisson", 1.0, seed=1, pool=pool)
    assert {(j.num_prompt_tokens, j.num_output_tokens, j.loop_at) for j in jobs} == {(10, 512, 150), (20, 80, None)}


def test_a_trace_rescales_to_a_rate_and_repeats_when_too_short():
    trace = read_azure_trace(limit=101)
    fast = rescale_to_rate(trace, 10.0)
    assert fast[-1].arrival == pytest.approx(10.0)
    cycled = take_cycled(fast, 250)
    assert len({j.job_id for j in cycled}) == 250
    assert all(b.arrival >= a.arrival for a, b in zip(cycled, cycled[1:]))
