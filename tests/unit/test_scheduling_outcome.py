"""The outcome guard (elis.scheduling.outcome): the FCFS counterfactual against hand-computed schedules, the
guard's trip, retry and backoff, and the scheduler acting on it. Pure: no broker, no database, no engine."""

from __future__ import annotations

import heapq
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elis.scheduling.levels import PriorityLevels
from elis.scheduling.outcome import (
    Cohort,
    JobOutcome,
    OutcomeCheck,
    OutcomeGuard,
    fcfs_counterfactual,
    mean_residual_tokens,
    measure_outcome,
    peak_concurrency,
)
from elis.scheduling.policy import FCFS, JobView
from elis.scheduling.scheduler import Scheduler


def job(arrival: float, start: float, finish: float, judged: bool = True) -> JobOutcome:
    """A job that held one slot from `start` to `finish`."""
    return JobOutcome(arrival, finish, ((start, finish),), judged)


def test_counterfactual_on_one_slot_serves_in_arrival_order():
    # Realized: the long job (arrived second) ran first. FCFS: the short one at 0-1, the long one at 1-11.
    short, long_ = job(0.0, 10.1, 11.1), job(0.1, 0.1, 10.1)
    assert fcfs_counterfactual([short, long_], slots=1) == pytest.approx([1.0, 10.9])
    check = measure_outcome([short, long_], slots=1)
    assert check.realized_mean_s == pytest.approx((11.1 + 10.0) / 2)
    assert check.fcfs_mean_s == pytest.approx((1.0 + 10.9) / 2)
    assert check.ratio == pytest.approx(10.55 / 5.95)


def test_counterfactual_uses_every_slot_and_waits_only_when_all_are_busy():
    jobs = [job(0, 0, 4), job(0, 0, 2), job(1, 2, 3), job(1, 3, 6)]
    # two slots: 0-4, 0-2; the third starts at 2 (ends 3), the fourth at 3 (ends 6)
    assert fcfs_counterfactual(jobs, slots=2) == pytest.approx([4, 2, 2, 5])
    assert fcfs_counterfactual(jobs, slots=4) == pytest.approx([4, 2, 1, 3])  # nobody waits


def test_the_backlog_goes_first_with_only_what_it_had_left():
    # An earlier job ran 0-10 on the only slot; the cohort starts at 6, when 4 s of it were left.
    earlier = job(0.0, 0.0, 10.0, judged=False)
    cohort = [job(6.0, 10.0, 12.0)]
    assert earlier.slot_s_after(6.0) == pytest.approx(4.0)
    assert fcfs_counterfactual(cohort, 1, backlog=[earlier]) == pytest.approx([6.0])
    assert fcfs_counterfactual(cohort, 1) == pytest.approx([2.0])  # without it: replayed into an idle slot


def test_only_judged_jobs_are_compared_but_every_job_holds_a_slot():
    unjudged, judged = job(0, 0, 5, judged=False), job(0, 5, 6)
    check = measure_outcome([unjudged, judged], slots=1)
    assert check.num_judged == 1 and check.num_jobs == 2
    assert check.realized_mean_s == pytest.approx(6.0) and check.fcfs_mean_s == pytest.approx(6.0)
    assert measure_outcome([unjudged], slots=1) is None


def test_peak_concurrency_counts_overlaps_not_back_to_back_windows():
    assert peak_concurrency([(0, 1), (1, 2), (2, 3)]) == 1
    assert peak_concurrency([(0, 3), (1, 2), (1.5, 4), (3, 5)]) == 3
    assert peak_concurrency([]) == 0


def test_peak_concurrency_ignores_millisecond_overlaps_of_a_slot_handing_over():
    # Run 39's windows at the instant that counted a 5th slot on a 4-slot worker: a job continuing on its slot
    # started its next window 1 ms before its last window's end work was measured to end.
    windows = [(38.856, 41.080), (39.027, 41.179), (39.537, 41.658), (39.816, 41.833), (41.079, 43.431)]
    assert peak_concurrency(windows) == 4
    assert peak_concurrency(windows, min_overlap_s=0.0) == 5
    # a fifth window that really overlaps the other four for a while is a fifth slot
    assert peak_concurrency(windows[:4] + [(40.0, 42.0)]) == 5


def test_peak_concurrency_counts_short_windows_and_not_an_overlap_of_exactly_the_tolerance():
    assert peak_concurrency([(0.0, 0.05)]) == 1  # shorter than the tolerance, alone: still one slot
    assert peak_concurrency([(0.0, 0.05), (0.01, 0.06)]) == 2  # two short windows that overlap for most of it
    assert peak_concurrency([(0.0, 0.0), (1.0, 1.0)]) == 0  # zero-length spans hold no slot
    assert peak_concurrency([(0.0, 1.0), (0.9, 2.0)]) == 1  # overlap of exactly 0.1 s: not a slot
    assert peak_concurrency([(0.0, 1.0), (0.85, 2.0)]) == 2


def _fcfs_realized(arrivals_and_slots: list[tuple[float, float]], slots: int) -> list[JobOutcome]:
    """Jobs served FCFS on `slots` slots, one window each, by an independent event loop."""
    free = [0.0] * slots
    out = []
    for arrival, slot_s in sorted(arrivals_and_slots):
        start = max(heapq.heappop(free), arrival)
        heapq.heappush(free, start + slot_s)
        out.append(job(arrival, start, start + slot_s))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0.1, 20)), min_size=1, max_size=40), st.integers(1, 5))
def test_a_realized_fcfs_run_is_its_own_counterfactual(jobs, slots):
    check = measure_outcome(_fcfs_realized(jobs, slots), slots)
    assert check.ratio == pytest.approx(1.0)


def _check(ratio: float, judged: int = 60) -> OutcomeCheck:
    return OutcomeCheck(judged, judged, 4, ratio * 10.0, 10.0)


def test_guard_trips_above_the_tolerance_and_not_before_min_jobs():
    guard = OutcomeGuard(tolerance=0.05, min_jobs=50)
    assert guard.update(_check(1.5, judged=49), 0) is False and not guard.tripped
    assert guard.update(_check(1.04), 0) is False and not guard.tripped
    assert guard.update(_check(1.06), 0) is True and guard.tripped and guard.trips == 1
    assert "1.060x" in guard.reason


def test_guard_retries_after_retry_jobs_and_doubles_the_wait_on_every_trip():
    guard = OutcomeGuard(min_jobs=2, retry_jobs=10, max_retry_jobs=30)
    guard.update(_check(2.0), 0)
    assert guard.retry_after == 10
    assert guard.update(None, 9) is False and guard.tripped
    assert guard.update(None, 10) is True and not guard.tripped
    guard.update(_check(2.0), 0)
    assert guard.trips == 2 and guard.retry_after == 20
    guard.update(_check(1.0), 0)  # ignored while tripped
    assert guard.tripped
    guard.update(None, 20)
    guard.update(_check(2.0), 0)
    assert guard.retry_after == 30  # 40, capped


def test_a_disabled_guard_never_trips():
    guard = OutcomeGuard(enabled=False, min_jobs=2)
    assert guard.update(_check(5.0), 0) is False and not guard.tripped


def _scheduler(policy: str = "mlfq", **guard) -> Scheduler:
    from elis.scheduling.guard import QualityGuard

    return Scheduler(policy, PriorityLevels.log_spaced(10), guard=QualityGuard(start_in_fallback=False),
                     outcome=OutcomeGuard(min_jobs=2, retry_jobs=3, **guard))


def _bad_cohort(start: float = 0.0) -> Cohort:
    # One slot; the long job (arrived second) was served first: 1.77x the FCFS counterfactual.
    return Cohort((job(start, start + 10.1, start + 11.1), job(start + 0.1, start + 0.1, start + 10.1)), 1)


def test_a_tripped_outcome_guard_turns_every_policy_to_fcfs_and_says_so():
    scheduler = _scheduler("mlfq")
    assert scheduler.ordering() == "mlfq"
    running = JobView("a", 0.0, 500, None, None, 0.0, 20.0)
    newcomer = JobView("b", 1.0, 0, None, None, 1.0, 0.0)
    assert scheduler.decide(running, newcomer, 2.0).yields  # MLFQ: the job with more service yields
    assert scheduler.observe([], cohort=_bad_cohort(), now=20.0) is True
    assert scheduler.ordering() == "fcfs (outcome guard)"
    policy = scheduler.policy()
    assert isinstance(getattr(policy, "inner", policy), FCFS)
    assert not scheduler.decide(running, newcomer, 2.0).yields  # FCFS: the earlier arrival keeps its slot
    assert "outcome guard" in scheduler.guard_reason()
    snapshot = scheduler.snapshot()
    assert snapshot["outcome"]["tripped"] is True and snapshot["outcome"]["check"]["ratio"] > 1.7
    assert snapshot["outcome"]["judging_since"] is None  # FCFS order now: nothing of the policy's to judge


def test_the_exact_length_bound_is_neither_judged_nor_turned_to_fcfs():
    # A comparison measures every policy against SRTF on exact lengths; in run 25 the guard, judging the bound's
    # own pre-emptions, turned 26 of its 60 jobs to FCFS order. The bound must stay the bound.
    scheduler = _scheduler("isrtf")
    assert scheduler.judging_since("srtf-oracle") == float("inf") and scheduler.judging_since() < float("inf")
    scheduler.observe([], cohort=_bad_cohort(), now=20.0)
    assert scheduler.ordering() == "fcfs (outcome guard)" and scheduler.ordering("srtf-oracle") == "srtf-oracle"
    oracle = scheduler.policy("srtf-oracle")
    assert getattr(oracle, "inner", oracle).name == "srtf-oracle"
    longer = JobView("a", 0.0, 50, None, None, 0.0, 5.0, true_remaining=400)
    shorter = JobView("b", 1.0, 0, None, None, 1.0, 0.0, true_remaining=10)
    assert scheduler.decide(longer, shorter, 2.0, policy_name="srtf-oracle").yields


def test_after_a_trip_only_jobs_that_arrived_since_count_and_fcfs_jobs_are_never_judged():
    scheduler = _scheduler("isrtf")
    scheduler.observe([], cohort=_bad_cohort(), now=20.0)
    old_and_new = _bad_cohort().jobs + tuple(job(21.0 + i, 21.0 + i, 21.5 + i) for i in range(3))
    assert scheduler.observe([], cohort=Cohort(old_and_new, 1), now=30.0) is True  # 3 jobs since the trip: retry
    assert scheduler.ordering() == "isrtf" and scheduler.judging_since() == 30.0
    # The bad cohort arrived before the policy came back on: not judged again.
    assert scheduler.observe([], cohort=_bad_cohort(), now=31.0) is False and not scheduler.outcome.tripped
    fcfs_only = Cohort(tuple(JobOutcome(j.arrival_s + 40, j.finish_s + 40, tuple((a + 40, b + 40) for a, b in j.spans),
                                        judged=False) for j in _bad_cohort().jobs), 1)
    assert scheduler.observe([], cohort=fcfs_only, now=60.0) is False and not scheduler.outcome.tripped


def test_while_the_quality_guard_holds_fcfs_no_job_of_a_prediction_policy_is_judged_but_mlfq_jobs_are():
    # A worker whose default is ISRTF serves jobs of every policy: the quality guard's fallback holds ISRTF's
    # jobs in FCFS order, not MLFQ's.
    scheduler = Scheduler("isrtf", PriorityLevels.log_spaced(10), outcome=OutcomeGuard(min_jobs=2))
    assert scheduler.ordering() == "fcfs (guard fallback)"  # the quality guard starts in fallback
    assert scheduler.observe([], cohort=_bad_cohort(), now=20.0) is False
    assert not scheduler.outcome.tripped and scheduler.outcome.last is None  # no job judged
    assert scheduler.judging_since("isrtf") == float("inf") and scheduler.judging_since("mlfq") == 0.0
    mlfq_jobs = Cohort(tuple(replace(j, policy="mlfq") for j in _bad_cohort().jobs), 1)
    assert scheduler.observe([], cohort=mlfq_jobs, now=21.0) is True and scheduler.outcome.tripped


def test_a_censored_job_counts_its_wait_so_far_plus_what_it_still_needs():
    # A job still waiting at t=30 (arrived at 0, never ran, 5 s of work left) and one that ran 1-2.
    waiting = JobOutcome(0.0, 30.0, (), remaining_s=5.0)
    ran = job(1.0, 1.0, 2.0)
    # It cannot finish before 35 s: even given a slot at the reading it still needs its 5 s.
    assert waiting.slot_s == 5.0 and waiting.slot_s_after(10.0) == 5.0 and waiting.jct_s == 35.0
    check = measure_outcome([waiting, ran], slots=1)
    # FCFS would have served the waiting job first (0-5) and the other at 5-6.
    assert check.fcfs_mean_s == pytest.approx((5.0 + 5.0) / 2)
    assert check.realized_mean_s == pytest.approx((35.0 + 1.0) / 2)


def test_a_censored_job_that_fcfs_is_serving_reads_as_its_counterfactual():
    # FCFS order, one slot, read at t=4: the first job ran 0-3 and finished, the second has held the slot since 3
    # and needs 2 s more. Its earliest finish (6) is the counterfactual's: an FCFS order reads 1.0, not below.
    first = job(0.0, 0.0, 3.0)
    running = JobOutcome(1.0, 4.0, ((3.0, 4.0),), remaining_s=2.0)
    check = measure_outcome([first, running], slots=1)
    assert running.jct_s == 5.0 and check.ratio == pytest.approx(1.0)


def test_mean_residual_tokens_is_what_longer_finished_jobs_had_left_bounded_by_the_cap():
    lengths = [10, 100, 300, 500]
    assert mean_residual_tokens(lengths, 0, 512) == pytest.approx(227.5)
    assert mean_residual_tokens(lengths, 200, 512) == pytest.approx(200.0)  # (300 + 500) / 2 - 200
    assert mean_residual_tokens(lengths, 450, 512) == pytest.approx(50.0)
    assert mean_residual_tokens(lengths, 500, 512) == 12.0  # none longer: what the cap leaves
    assert mean_residual_tokens(lengths, 0, 100) == 100.0  # never past the cap


def test_a_residual_estimate_is_the_mean_residual_length_at_the_finished_jobs_time_per_token():
    from elis.scheduling.outcome import ResidualEstimate

    estimate = ResidualEstimate.of([(10.0, 100), (30.0, 300)])  # 0.1 s per token
    assert estimate.seconds_per_token == pytest.approx(0.1)
    assert estimate.remaining_s(50, 512) == pytest.approx((200 - 50) * 0.1)  # (100 + 300) / 2 - 50 tokens
    assert ResidualEstimate.of([]).remaining_s(0, 512) == 0.0  # nothing finished: no time per token yet


def test_the_guards_fallback_orders_by_the_prefill_when_it_counts_and_the_outcome_guard_judges_it():
    from elis.scheduling.policy import PrefillFirst

    scheduler = Scheduler("isrtf", PriorityLevels.log_spaced(10), outcome=OutcomeGuard(min_jobs=2),
                          prefill_weight=0.25, fallback_by_prefill=True)
    assert scheduler.ordering() == "prefill first (guard fallback)"  # the quality guard starts in fallback
    inner = getattr(scheduler.policy(), "inner", scheduler.policy())
    assert isinstance(inner, PrefillFirst) and not inner.uses_predictions and not inner.repredicts
    long_prompt = JobView("a", 0.0, 0, 10.0, 10.0, 0.0, 0.0, prefill_tokens=2000)
    short_prompt = JobView("b", 1.0, 0, 900.0, 900.0, 1.0, 0.0, prefill_tokens=100)
    has_run = JobView("c", 2.0, 50, 900.0, 900.0, 2.0, 1.0)  # its prefill is paid
    scores = [scheduler.admit(j, 3.0)[0] for j in (long_prompt, short_prompt, has_run)]
    assert scores == [500.0, 25.0, 0.0]  # predictions ignored: the known prefill orders
    assert not scheduler.decide(long_prompt, short_prompt, 3.0).yields  # no pre-emption
    # Not FCFS order, so the outcome guard judges it from when the fallback began, and trips it to FCFS.
    assert scheduler.judging_since("isrtf") == 0.0
    assert scheduler.observe([], cohort=_bad_cohort(), now=20.0) is True and scheduler.outcome.tripped
    assert scheduler.ordering() == "fcfs (outcome guard)"


def test_by_default_without_a_prefill_weight_or_with_the_setting_off_the_fallback_is_fcfs():
    for scheduler in (Scheduler("sjf", PriorityLevels.log_spaced(10), prefill_weight=0.25),  # the default: off
                      Scheduler("sjf", PriorityLevels.log_spaced(10), prefill_weight=0.0, fallback_by_prefill=True),
                      Scheduler("sjf", PriorityLevels.log_spaced(10), prefill_weight=0.25, fallback_by_prefill=False)):
        assert scheduler.ordering() == "fcfs (guard fallback)"
        assert scheduler.admit(JobView("a", 0.0, 0, 10.0, 10.0, 0.0, 0.0, prefill_tokens=2000), 1.0)[0] == 0.0
        assert scheduler.judging_since("sjf") == float("inf")
