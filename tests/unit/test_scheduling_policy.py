"""The policies: exact orders, yield decisions, aging."""

from __future__ import annotations

import pytest

from elis.scheduling import (
    AGED_SCORE,
    FCFS,
    ISRTF,
    MLFQ,
    SJF,
    Aging,
    JobView,
    SRTFOracle,
    UnknownPolicyError,
    make_policy,
    policy_names,
)

JOBS = [
    # id, arrival, generated, predicted remaining, initial prediction, true remaining
    JobView("a", 0.0, num_generated=100, predicted_remaining=300.0, initial_prediction=50.0, true_remaining=20),
    JobView("b", 1.0, num_generated=0, predicted_remaining=80.0, initial_prediction=80.0, true_remaining=400),
    JobView("c", 2.0, num_generated=50, predicted_remaining=10.0, initial_prediction=500.0, true_remaining=90),
    JobView("d", 3.0, num_generated=10, predicted_remaining=None, initial_prediction=None, true_remaining=5),
]


def order(policy, jobs=JOBS, now=10.0) -> list[str]:
    return [j.job_id for j in sorted(jobs, key=lambda j: policy.sort_key(j, now))]


def test_fcfs_orders_by_arrival_and_never_yields():
    assert order(FCFS()) == ["a", "b", "c", "d"]
    assert not FCFS().yields(JOBS[0])


def test_sjf_orders_by_the_admission_prediction_and_runs_to_completion():
    # d has no prediction: score 0, FCFS among equals (NOTE in SJF).
    assert order(SJF()) == ["d", "a", "b", "c"]
    assert not SJF().yields(JOBS[0])


def test_isrtf_orders_by_the_latest_remaining_prediction_and_yields_every_window():
    assert order(ISRTF()) == ["d", "c", "b", "a"]
    assert ISRTF().yields(JOBS[0]) and ISRTF().repredicts


def test_srtf_oracle_orders_by_the_true_remaining_length():
    assert order(SRTFOracle()) == ["d", "a", "c", "b"]


def test_mlfq_serves_the_job_with_the_least_attained_service_first():
    assert order(MLFQ()) == ["b", "d", "c", "a"]
    assert MLFQ().yields(JOBS[0]) and not MLFQ().needs_initial_prediction


def test_ties_break_by_arrival_then_id():
    jobs = [JobView("y", 1.0), JobView("x", 1.0), JobView("w", 0.5)]
    assert order(ISRTF(), jobs) == ["w", "x", "y"]


def test_aging_puts_a_job_that_waited_past_the_bound_first():
    policy = Aging(ISRTF(), max_wait_s=5.0)
    jobs = [replace_enqueued(j, 4.0) for j in JOBS[:3]] + [replace_enqueued(JOBS[3], 9.0)]
    # At t=9.5, a, b, c waited 5.5 s > 5: all aged (arrival order), d waited 0.5 s.
    assert order(policy, jobs, now=9.5) == ["a", "b", "c", "d"]
    assert policy.score(jobs[0], 9.5) == AGED_SCORE
    # At t=8.9 no one has waited more than 5 s: the ISRTF order.
    assert order(policy, jobs, now=8.9) == ["d", "c", "b", "a"]


def test_relative_aging_lets_jobs_with_more_service_wait_longer():
    policy = Aging(SJF(), max_wait_s=1.0, service_factor=2.0)
    fresh = JobView("fresh", 0.0, enqueued_at=0.0, service_time=0.0)
    served = JobView("served", 0.0, enqueued_at=0.0, service_time=10.0)
    assert policy.is_starving(fresh, 1.5)
    assert not policy.is_starving(served, 20.0)
    assert policy.is_starving(served, 21.5)
    assert policy.starve_time(served) == 21.0


def test_aging_since_arrival_counts_a_pre_empted_jobs_whole_time_in_the_system():
    # Arrived at 0, pre-empted and re-queued at 8: each of its waits is under 10 s, its time in the system not.
    requeued = JobView("requeued", 0.0, enqueued_at=8.0)
    per_wait, since_arrival = Aging(ISRTF(), max_wait_s=10.0), Aging(ISRTF(), max_wait_s=10.0, since_arrival=True)
    assert not per_wait.is_starving(requeued, 12.0) and per_wait.starve_time(requeued) == 18.0
    assert since_arrival.is_starving(requeued, 12.0) and since_arrival.starve_time(requeued) == 10.0
    # among starving jobs, arrival order: an old running job yields to an older starving head, not a newer one
    running_old, older, newer = JobView("run", 2.0), JobView("older", 1.0, enqueued_at=14.0), JobView("newer", 3.0)
    assert since_arrival.should_yield(running_old, 15.0, head=older)
    assert not since_arrival.should_yield(running_old, 15.0, head=newer)
    assert per_wait.should_yield(running_old, 15.0, head=newer)  # per wait: newer waited 12 s, older just came


def test_the_scheduler_builds_aging_since_arrival_from_its_setting():
    from types import SimpleNamespace

    from elis.config import Settings
    from elis.scheduling.levels import PriorityLevels
    from elis.scheduling.scheduler import Scheduler

    levels = PriorityLevels.log_spaced(10)
    default = Scheduler.from_settings(Settings(policy="isrtf", max_wait_s=10.0), levels)
    assert default.policy().since_arrival and default.snapshot()["aging"]["since_arrival"]  # the default
    off = Scheduler.from_settings(Settings(policy="isrtf", aging_since_arrival=False, max_wait_s=10.0), levels)
    assert not off.policy().since_arrival and not off.snapshot()["aging"]["since_arrival"]
    # an object without the setting (older callers) gets the default
    legacy = SimpleNamespace(**{k: v for k, v in Settings(policy="isrtf", max_wait_s=10.0).model_dump().items()
                                if k != "aging_since_arrival"})
    assert Scheduler.from_settings(legacy, levels).policy().since_arrival


def test_the_scheduler_counts_only_a_jobs_waits_toward_aging_with_a_service_factor_of_one():
    """aging_service_factor 1: a long job does not starve by its own running time (and then keep its slot
    against every newcomer); its waits alone count. 0 (the default): its whole time in the system."""
    from elis.config import Settings
    from elis.scheduling.levels import PriorityLevels
    from elis.scheduling.scheduler import Scheduler

    levels = PriorityLevels.log_spaced(10)
    running = JobView("long", 0.0, num_generated=400, predicted_remaining=100.0, enqueued_at=0.0, service_time=15.0)
    newcomer = JobView("new", 19.0, predicted_remaining=10.0, enqueued_at=19.0)
    trusted = {"policy": "isrtf", "max_wait_s": 10.0, "guard_start_in_fallback": False}
    whole = Scheduler.from_settings(Settings(**trusted), levels)
    waits = Scheduler.from_settings(Settings(**trusted, aging_service_factor=1.0), levels)
    assert waits.snapshot()["aging"]["service_factor"] == 1.0 and whole.snapshot()["aging"]["service_factor"] == 0.0
    assert whole.is_starving(running, 20.0) and not waits.is_starving(running, 20.0)  # waited 5 s of its 20
    assert waits.is_starving(running, 25.5)
    assert not whole.decide(running, newcomer, 20.0).yields  # starving: it keeps its slot, the newcomer waits
    assert waits.decide(running, newcomer, 20.0).yields


def test_aging_pre_empts_only_for_a_preemptive_policy():
    # Under FCFS or SJF aging reorders the queue (the starving job takes the next free slot); under ISRTF a
    # running job also gives its slot to a starving head at its window end.
    running = JobView("run", 3.0, predicted_remaining=10.0)
    starving = JobView("old", 1.0, predicted_remaining=500.0, enqueued_at=1.0)
    for inner in (FCFS(), SJF()):
        assert not Aging(inner, max_wait_s=5.0).should_yield(running, now=6.5, head=starving)
    isrtf = Aging(ISRTF(), max_wait_s=5.0)
    assert isrtf.should_yield(running, now=6.5, head=starving)
    assert not isrtf.should_yield(running, now=5.5, head=starving)
    assert not isrtf.should_yield(running, now=6.5, head=None)
    assert not FCFS().should_yield(running, now=6.5, head=starving)


def test_the_factory_knows_every_policy_and_its_aliases():
    assert policy_names() == ["fcfs", "isrtf", "mlfq", "sjf", "srtf-oracle"]
    assert isinstance(make_policy("SSJF"), SJF)
    assert isinstance(make_policy("oracle"), SRTFOracle)
    aged = make_policy("isrtf", max_wait_s=30)
    assert isinstance(aged, Aging) and aged.name == "isrtf+aging" and aged.repredicts


def test_the_factory_fails_fast_on_an_unknown_name():
    with pytest.raises(UnknownPolicyError, match="choose one of"):
        make_policy("lottery")


def test_aging_needs_a_positive_bound():
    with pytest.raises(ValueError):
        Aging(FCFS(), max_wait_s=0.0)


def replace_enqueued(job: JobView, when: float) -> JobView:
    from dataclasses import replace

    return replace(job, enqueued_at=when)


def test_a_preemptive_policy_yields_only_to_a_waiting_job_that_goes_before_it():
    from elis.scheduling import JobView, make_policy

    isrtf = make_policy("isrtf")
    running = JobView("run", arrival_time=0.0, num_generated=50, predicted_remaining=100.0)
    shorter = JobView("short", arrival_time=5.0, predicted_remaining=20.0)
    longer = JobView("long", arrival_time=5.0, predicted_remaining=400.0)
    assert isrtf.should_yield(running, 10.0, shorter)
    assert not isrtf.should_yield(running, 10.0, longer)
    assert not isrtf.should_yield(running, 10.0, None)  # nothing waits: keep the slot, skip a re-prefill
    assert not make_policy("fcfs").should_yield(running, 10.0, shorter)
