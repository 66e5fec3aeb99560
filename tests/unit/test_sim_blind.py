"""The blind Gittins index against hand-computed values."""

import math

import pytest

from elis.scheduling.policy import JobView
from elis.simulator.blind import GittinsPolicy, GittinsTable


def test_a_heavy_tail_makes_the_index_fall_with_attained_service_so_newcomers_go_first():
    table = GittinsTable([1, 10], step=1)
    # a=0: quantum 1 -> P 1/2 over E[min(S,1)] = 1 -> 0.5; quantum 10 -> 1 / 5.5. Max 0.5.
    assert table.index(0) == pytest.approx(0.5)
    # a=1: only the 10 is left, 9 to go: 1/9.
    assert table.index(1) == pytest.approx(1 / 9)
    assert table.index(10) == math.inf


def test_bunched_lengths_make_the_index_grow_so_a_started_job_finishes_first():
    table = GittinsTable([10, 10, 10], step=5)
    assert table.index(0) == pytest.approx(1 / 10)
    assert table.index(7) == pytest.approx(1 / 5)  # decisions at multiples of the step: a=5
    policy = GittinsPolicy(table)
    started, newcomer = JobView("a", 0.0, num_generated=5), JobView("b", 1.0, num_generated=0)
    assert policy.score(started, 2.0) < policy.score(newcomer, 2.0)


def test_an_empty_sample_is_refused():
    with pytest.raises(ValueError):
        GittinsTable([])


def test_the_study_finds_blind_gittins_equal_to_fcfs_when_every_job_has_the_same_length():
    from elis.replay.workload import TraceJob
    from elis.simulator.blind import BLIND_HEADER, blind_study
    from elis.simulator.core import SimConfig
    from elis.simulator.engine_profile import EngineProfile

    pool = [TraceJob(f"p{i}", 0.0, 20, 100) for i in range(10)]
    rows = blind_study({"same": pool}, [0.8], num_jobs=30, seeds=[0], profile=EngineProfile.load(),
                       config=SimConfig(1, 2, 50))
    row = dict(zip(BLIND_HEADER, rows[0]))
    assert row["mean output"] == "100" and row["at the cap"] == "100%"
    assert row["blind Gittins / FCFS"] == "1.00"  # the index grows with attained service: never pre-empts
    assert float(row["MLFQ / FCFS"]) > 1.0  # round-robin over equal jobs delays them all
