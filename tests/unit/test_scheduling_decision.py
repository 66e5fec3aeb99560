"""The one window-end decision, the rank-quality guard and the Scheduler: pure, no broker, no engine."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elis.scheduling.decision import NO_MARGIN, SwitchCost, YieldMargin, decide, estimate_switch_cost
from elis.scheduling.guard import (
    FinishedJob,
    QualityGuard,
    RankQuality,
    StepCalibration,
    YieldCheck,
    aging_bound,
    check_yield_rule,
    kendall_tau,
    measure_rank_quality,
    rank_tau,
    step_predictions,
)
from elis.scheduling.levels import PriorityLevels
from elis.scheduling.outcome import Cohort, JobOutcome, fcfs_mean_jct
from elis.scheduling.policy import AGED_SCORE, Aging, JobView, LoopsLast, make_policy
from elis.scheduling.scheduler import AgingRule, Scheduler
from elis.scheduling.work import bundled_prefill_weight, prefill_weight, profile_prefill_weight

LEVELS = PriorityLevels.log_spaced(10)


def job(job_id: str, predicted: float | None, generated: int = 0, arrival: float = 0.0,
        enqueued: float | None = None) -> JobView:
    return JobView(job_id, arrival, generated, predicted, predicted, enqueued, 0.0, None)


# --- decide -------------------------------------------------------------------------------------------------
def test_isrtf_yields_to_a_clearly_shorter_head_and_waits_at_its_own_level():
    running, head = job("a", 400.0, generated=100, enqueued=10.0), job("b", 40.0, arrival=5.0, enqueued=5.0)
    decision = decide(make_policy("isrtf"), running, head, 10.0, LEVELS, YieldMargin.of(0.3), SwitchCost(1.0, 0.05))
    assert decision.yields and decision.score == 400.0 and decision.level == LEVELS.level(400.0)


def test_a_head_sooner_only_within_the_margin_does_not_take_the_slot():
    running, head = job("a", 100.0, generated=50, enqueued=10.0), job("b", 80.0, arrival=5.0, enqueued=5.0)
    policy = make_policy("isrtf")
    assert decide(policy, running, head, 10.0, LEVELS, NO_MARGIN).yields  # plain SRTF order: yield
    kept = decide(policy, running, head, 10.0, LEVELS, YieldMargin.of(0.3))  # needs head < 70
    assert not kept.yields and "within the margin" in kept.reason


def test_the_switch_cost_counts_in_decode_steps_of_the_yielding_job():
    running, head = job("a", 100.0, generated=50, enqueued=10.0), job("b", 70.0, arrival=5.0, enqueued=5.0)
    policy = make_policy("isrtf")
    cheap = SwitchCost(seconds=0.2, step_s=0.02)  # 10 tokens: 70 + 10 < 100
    dear = SwitchCost(seconds=1.0, step_s=0.02)  # 50 tokens: 70 + 50 > 100
    assert decide(policy, running, head, 10.0, LEVELS, YieldMargin.of(0.0), cheap).yields
    assert not decide(policy, running, head, 10.0, LEVELS, YieldMargin.of(0.0), dear).yields


def test_a_prompt_still_to_prefill_counts_as_remaining_work_under_length_aware_policies():
    scheduler = Scheduler("srtf-oracle", LEVELS, margin=YieldMargin.of(0.0), guard=QualityGuard(enabled=False),
                          prefill_weight=0.2)
    running = JobView("a", 0.0, 50, None, None, 10.0, 0.0, true_remaining=100)
    newcomer = JobView("b", 5.0, 0, None, None, 5.0, 0.0, true_remaining=70, prefill_tokens=100)  # 70 + 20
    assert scheduler.decide(running, newcomer, 10.0).yields
    long_prompt = replace(newcomer, prefill_tokens=200)  # 70 + 40 > 100: the running job finishes sooner
    kept = scheduler.decide(running, long_prompt, 10.0)
    assert not kept.yields and "not sooner" in kept.reason
    assert scheduler.admit(long_prompt, 10.0) == (110.0, LEVELS.level(110.0))
    # Predictions (SJF's admission one, ISRTF's latest) carry the same prefill; a job that has run pays none.
    predicted = JobView("c", 5.0, 0, 40.0, 30.0, 5.0, 0.0, prefill_tokens=100)
    assert scheduler.admit(predicted, 10.0, "sjf")[0] == pytest.approx(50.0)
    assert scheduler.admit(predicted, 10.0, "isrtf")[0] == pytest.approx(60.0)
    assert scheduler.calibrated(running) == running
    # FCFS and MLFQ do not order by length: the prefill changes nothing there.
    assert scheduler.admit(long_prompt, 10.0, "fcfs")[0] == 0.0
    # Weight 0: output tokens alone, as the papers order.
    assert Scheduler("srtf-oracle", LEVELS, margin=YieldMargin.of(0.0)).decide(running, long_prompt, 10.0).yields


def test_a_profiles_prefill_weight_takes_the_decode_step_at_the_slots(tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text('{"decode_step_s": {"1": 0.02, "4": 0.05}, "prefill_s_per_token": 0.001}')
    assert profile_prefill_weight(profile, 4) == pytest.approx(0.001 * 4 / 0.05)
    assert profile_prefill_weight(profile, 2) == pytest.approx(0.001 * 2 / 0.03)  # step interpolated: 0.03
    assert profile_prefill_weight(profile, 8) == pytest.approx(0.001 * 8 / 0.05)  # past the last size: clamped


def test_the_prefill_weight_comes_from_the_settings_or_the_bundled_engine_profile():
    assert prefill_weight(0.002, 0.04, 4) == pytest.approx(0.2) and prefill_weight(0.002, 0.0, 4) == 0.0
    bundled = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "prefill_weight": None, "slots": 4}),
                                      LEVELS)
    assert bundled.prefill_weight == pytest.approx(bundled_prefill_weight(4)) and 0.1 < bundled.prefill_weight < 0.5
    assert bundled_prefill_weight(8) > bundled_prefill_weight(4) > bundled_prefill_weight(1)  # more slots stall
    chosen = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "prefill_weight": 0.0}), LEVELS)
    assert chosen.prefill_weight == 0.0 and chosen.snapshot()["prefill_weight"] == 0.0
    from elis.api.schemas import SchedulerStats  # what /v1/stats shows

    assert SchedulerStats(**bundled.snapshot()).prefill_weight == pytest.approx(0.2481, abs=1e-4)


def test_the_workers_measured_prefill_weight_replaces_the_bundled_one_but_never_a_set_one():
    bundled = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "prefill_weight": None, "slots": 4,
                                                         "fallback_by_prefill": True}), LEVELS)
    assert bundled.follows_measured_prefill_weight and bundled.prefill_weight_source.startswith("bundled")
    bundled.guard.fallback = True
    before = bundled.policy()
    assert before.name.startswith(bundled.fallback_order().name) and bundled.fallback_order().name != "fcfs"
    assert bundled.use_measured_prefill_weight(0.07, 3)
    assert bundled.prefill_weight == 0.07 and bundled.prefill_weight_source == "measured by 3 live workers"
    assert bundled.policy() is not before  # the cached fallback order held the old weight
    assert not bundled.use_measured_prefill_weight(0.07, 3)  # no change
    assert bundled.use_measured_prefill_weight(0.0, 1) and bundled.prefill_weight == 0.0  # a GPU: too fast to time
    assert not bundled.orders_fallback_by_prefill  # nothing to order the fallback by: arrival
    assert bundled.ordering() == "fcfs (guard fallback)"
    bundled.use_measured_prefill_weight(0.09, 0)
    assert bundled.snapshot()["prefill_weight_source"] == "measured by the last worker seen"
    newcomer = replace(job("n", 100.0), prefill_tokens=1000)
    assert bundled.calibrated(newcomer).predicted_remaining == pytest.approx(100.0 + 0.09 * 1000)
    chosen = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "prefill_weight": 0.2}), LEVELS)
    assert not chosen.follows_measured_prefill_weight and not chosen.use_measured_prefill_weight(0.07, 3)
    assert chosen.prefill_weight == 0.2 and chosen.snapshot()["prefill_weight_source"] == "settings"


def test_an_exact_policy_pays_the_switch_cost_but_no_prediction_uncertainty():
    running = JobView("a", 0.0, 50, None, None, 10.0, 0.0, true_remaining=100)
    head = JobView("b", 5.0, 0, None, None, 5.0, 0.0, true_remaining=80)
    decision = decide(make_policy("srtf-oracle"), running, head, 10.0, LEVELS, YieldMargin.of(0.5))
    assert decision.yields  # 80 < 100 and the oracle's lengths are not uncertain


def test_non_preemptive_policies_run_to_completion_even_when_the_head_starves():
    # Aging reorders a non-preemptive policy's queue; it does not pre-empt (run 21: pre-empted SJF jobs went
    # back behind every starving job and waited 20-40 s), and FCFS must stay the FCFS it is compared with.
    running = job("a", 400.0, generated=50, arrival=90.0, enqueued=100.0)
    head = job("b", 10.0, arrival=1.0, enqueued=1.0)
    assert not decide(make_policy("sjf"), running, head, 100.0, LEVELS).yields
    for name in ("sjf", "fcfs"):
        aged = Aging(make_policy(name), 30.0, since_arrival=True)
        assert aged.is_starving(head, 100.0) and not aged.is_starving(running, 100.0)
        decision = decide(aged, running, head, 100.0, LEVELS, YieldMargin.of(0.9))
        assert not decision.yields and decision.reason.startswith("runs to completion")
        assert not aged.should_yield(running, 100.0, head)


def test_preemptive_policies_yield_to_a_starving_head_whatever_the_margin():
    running, head = job("a", 400.0, generated=50, enqueued=100.0), job("b", 500.0, arrival=1.0, enqueued=1.0)
    aged = Aging(make_policy("isrtf"), 30.0)
    decision = decide(aged, running, head, 100.0, LEVELS, YieldMargin.of(0.9))
    assert decision.yields and decision.reason == "the head starves"  # the margin never blocks a starving head


def test_with_aging_not_pre_empting_a_starving_head_waits_for_a_free_slot_under_isrtf_too():
    # ELIS_AGING_PREEMPTS=false: aging only reorders the queue, whatever the policy; a head that is merely
    # shorter (not starving) still takes the slot by the margin rule.
    aged = Aging(make_policy("isrtf"), 30.0, since_arrival=True, preempts=False)
    running = job("a", 400.0, generated=50, arrival=90.0, enqueued=90.0)
    starving = job("b", 500.0, arrival=1.0, enqueued=1.0)
    kept = decide(aged, running, starving, 100.0, LEVELS, YieldMargin.of(0.9))
    assert not kept.yields and kept.reason.startswith("aging does not pre-empt")
    assert not aged.should_yield(running, 100.0, starving)
    shorter = job("c", 10.0, arrival=95.0, enqueued=95.0)
    assert decide(aged, running, shorter, 100.0, LEVELS, YieldMargin.of(0.3)).yields
    assert decide(Aging(make_policy("isrtf"), 30.0, since_arrival=True), running, starving, 100.0, LEVELS).yields


def test_the_scheduler_builds_aging_that_pre_empts_or_not_from_the_settings():
    for preempts in (True, False):
        settings = SimpleNamespace(**{**vars(SETTINGS), "policy": "isrtf", "aging_preempts": preempts})
        scheduler = Scheduler.from_settings(settings, LEVELS)
        policy = scheduler.policy()
        assert isinstance(policy, Aging) and policy.preempts is preempts
        assert scheduler.snapshot()["aging"]["preempts"] is preempts


def test_a_starving_running_job_keeps_its_slot_against_a_later_starving_head():
    # Counted from arrival, both have been in the system past the 10 s bound: arrival order decides, and the
    # worker must not swap the old running job out for a newer one (the decision the worker acts on).
    aged = Aging(make_policy("isrtf"), 10.0, since_arrival=True)
    running = job("old", 400.0, generated=300, arrival=1.0, enqueued=1.0)
    newer, older = job("newer", 10.0, arrival=3.0, enqueued=3.0), job("older", 10.0, arrival=0.5, enqueued=14.0)
    kept = decide(aged, running, newer, 15.0, LEVELS)
    assert not kept.yields and kept.reason == "starving too, and arrived before the head"
    assert decide(aged, running, older, 15.0, LEVELS).reason == "the head starves"


def test_nothing_waiting_means_no_yield():
    assert not decide(make_policy("isrtf"), job("a", 400.0, 50, enqueued=1.0), None, 1.0, LEVELS).yields


def test_switch_cost_is_cheap_when_the_prefix_cache_holds_the_context():
    hit = estimate_switch_cost(1000, overhead_s=0.05, prefill_s_per_token=1e-3, cached_prefill_s_per_token=1e-5,
                               cache_hit_rate=1.0, step_s=0.01)
    miss = estimate_switch_cost(1000, overhead_s=0.05, prefill_s_per_token=1e-3, cached_prefill_s_per_token=1e-5,
                                cache_hit_rate=0.0, step_s=0.01)
    assert hit.seconds == pytest.approx(0.06) and miss.seconds == pytest.approx(1.05)
    assert miss.tokens == pytest.approx(105.0) and SwitchCost(1.0, 0.0).tokens == 0.0


def test_the_margin_uses_the_uncertainty_of_the_jobs_step():
    margin = YieldMargin.of(0.5, [(0, 0.8), (100, 0.4), (300, 0.2)])
    assert [margin.uncertainty(n) for n in (0, 99, 100, 299, 5000)] == [0.8, 0.8, 0.4, 0.4, 0.2]
    assert margin.tokens(200.0, 150, SwitchCost(), predicted=True) == pytest.approx(80.0)
    assert margin.tokens(200.0, 150, SwitchCost(), predicted=False) == 0.0


@given(st.floats(0, 2000), st.floats(0, 2000), st.floats(0, 1), st.floats(0, 5))
def test_a_larger_margin_never_makes_a_job_yield_that_a_smaller_one_kept(job_score, head_score, u, extra):
    running, head = job("a", job_score, 50, enqueued=10.0), job("b", head_score, arrival=1.0, enqueued=9.0)
    policy = make_policy("isrtf")
    small = decide(policy, running, head, 10.0, LEVELS, YieldMargin.of(u))
    large = decide(policy, running, head, 10.0, LEVELS, YieldMargin.of(u + extra))
    assert small.yields or not large.yields


# --- the guard --------------------------------------------------------------------------------------------
def test_kendall_tau_matches_hand_counted_pairs_and_handles_ties():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    # pairs: (1,2) c, (1,3) c, (2,3) d -> (2-1)/3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # tau-b with a tie in y: pairs c=2, d=0, ties_y=1 -> 2/sqrt(3*2)
    assert kendall_tau([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / 6 ** 0.5)
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None and kendall_tau([1], [2]) is None


def test_kendall_tau_agrees_with_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    xs = [5, 1, 4, 4, 2, 9, 7, 3, 3, 8]
    ys = [50, 12, 30, 41, 41, 60, 90, 10, 25, 55]
    assert kendall_tau(xs, ys) == pytest.approx(scipy_stats.kendalltau(xs, ys).statistic)


def test_rank_quality_pools_re_predictions_against_the_true_remaining_length_and_reports_bias():
    jobs = [FinishedJob("a", 300, 1.0, initial_prediction=150.0, step_predictions=((50, 125.0), (100, 100.0))),
            FinishedJob("b", 100, 1.0, initial_prediction=50.0, step_predictions=((50, 25.0),))]
    quality = measure_rank_quality(jobs)
    assert quality.admission_tau == 1.0 and quality.admission_bias == pytest.approx(200 / 400)
    assert quality.pooled_num == 3  # remaining: a@50 250, a@100 200, b@50 50
    assert quality.pooled_bias == pytest.approx(250 / 500)
    assert [(s.step, s.num) for s in quality.per_step] == [(50, 2), (100, 1)]


def ranked(tau_sign: int, count: int) -> list[FinishedJob]:
    return [FinishedJob(str(i), 100 + 10 * i, 2.0, initial_prediction=float(100 + tau_sign * 10 * i))
            for i in range(count)]


def test_the_guard_falls_back_below_the_threshold_and_recovers_only_above_the_hysteresis():
    guard = QualityGuard(threshold=0.2, hysteresis=0.1, min_jobs=5, start_in_fallback=False)
    assert not guard.update(measure_rank_quality(ranked(1, 4)))  # too few to judge
    assert guard.update(measure_rank_quality(ranked(-1, 6))) and guard.fallback
    # tau (190 - 2 x 75) / 190 = 0.21: above the threshold but below threshold + hysteresis: stays in fallback
    assert measure_rank_quality(rotated(5)).admission_tau == pytest.approx(40 / 190)
    assert not guard.update(measure_rank_quality(rotated(5))) and guard.fallback
    assert guard.update(measure_rank_quality(ranked(1, 6))) and not guard.fallback


def rotated(shift: int, count: int = 20) -> list[FinishedJob]:
    """Predictions that rank the lengths rotated by `shift`: shift x (count - shift) discordant pairs."""
    lengths = [100 + 10 * k for k in range(count)]
    predictions = lengths[shift:] + lengths[:shift]
    return [FinishedJob(str(k), lengths[k], 1.0, float(predictions[k])) for k in range(count)]


def test_a_guard_that_starts_in_fallback_needs_evidence_before_trusting_predictions():
    guard = QualityGuard(min_jobs=5)
    assert guard.fallback
    guard.update(measure_rank_quality(ranked(1, 3)))
    assert guard.fallback
    guard.update(measure_rank_quality(ranked(1, 6)))
    assert not guard.fallback


def test_many_re_predictions_of_a_few_jobs_do_not_earn_trust_before_the_jobs_do():
    # Six jobs, each re-predicted exactly at five steps (30 points ranking perfectly), admission at chance.
    def jobs(count: int) -> list[FinishedJob]:
        return [FinishedJob(str(i), 300 + 7 * i, 2.0, initial_prediction=float((i * 7919) % count),
                            step_predictions=tuple((50 * k, float(300 + 7 * i - 50 * k)) for k in range(1, 6)))
                for i in range(count)]

    guard = QualityGuard(min_jobs=20)
    early = measure_rank_quality(jobs(6))
    assert early.pooled_num == 30 and early.pooled_tau >= guard.threshold + guard.hysteresis  # would trust
    guard.update(early)
    assert guard.fallback and guard.judged_tau is None
    later = measure_rank_quality(jobs(24))
    guard.update(later)
    assert guard.judged_tau == later.admission_tau < 0.2 and guard.fallback


def test_a_constant_predictor_never_earns_trust_even_through_the_step_calibration():
    # Heavy-tailed lengths: the jobs that survive to a later step have more left on average, so the per-step
    # calibration turns constant re-predictions into the mean remaining length at each step, which ranks
    # when pooled over steps. Admission predictions that do not vary rank nothing: tau 0, not undefined.
    lengths = [30 + (i * 37) % 60 if i % 3 else 400 + (i * 53) % 400 for i in range(60)]
    jobs = [FinishedJob(str(i), n, 1.0, initial_prediction=200.0,
                        step_predictions=step_predictions([(50, 200.0)] * (n // 50 + 1), n))
            for i, n in enumerate(lengths)]
    calibration = StepCalibration.fit(jobs, min_points=5)
    pooled = measure_rank_quality(jobs, scale=calibration.factor).pooled_tau
    assert pooled is not None and pooled >= 0.25  # the leak: this alone would trust a constant
    quality = measure_rank_quality(jobs, scale=calibration.factor)
    assert quality.admission_tau == 0.0 and all(s.tau in (0.0, None) for s in quality.per_step)
    scheduler = Scheduler.from_settings(SETTINGS, LEVELS)
    scheduler.observe(jobs)
    assert scheduler.guard.fallback and scheduler.guard.judged_tau == 0.0


def test_rank_tau_scores_constant_predictions_zero_and_is_undefined_only_when_nothing_varies():
    assert rank_tau([5.0, 5.0, 5.0], [1, 2, 3]) == 0.0
    assert rank_tau([1.0, 2.0, 3.0], [4, 4, 4]) is None
    assert rank_tau([5.0, 5.0], [4, 4]) is None and rank_tau([5.0], [1]) is None
    assert rank_tau([1.0, 2.0, 3.0], [1, 2, 3]) == kendall_tau([1.0, 2.0, 3.0], [1, 2, 3]) == 1.0


def test_the_aging_bound_follows_the_mean_service_time_above_a_floor():
    assert aging_bound([], 3.0, 10.0) == 10.0
    assert aging_bound([2.0, 4.0], 3.0, 10.0) == 10.0
    assert aging_bound([10.0, 20.0], 3.0, 10.0) == 45.0


# --- the scheduler ----------------------------------------------------------------------------------------
SETTINGS = SimpleNamespace(policy="isrtf", yield_uncertainty=0.3, yield_margin_per_step=False, yield_margin=True,
                           guard_threshold=0.2, guard_hysteresis=0.05, guard_min_jobs=5, guard=True,
                           guard_start_in_fallback=False, guard_preempt_precision=0.9, max_wait_s=0.0, aging=True,
                           aging_factor=3.0, aging_floor_s=10.0, calibrate_steps=True)


def test_in_fallback_a_prediction_policy_orders_as_fcfs_and_stops_re_predicting():
    scheduler = Scheduler.from_settings(SETTINGS, LEVELS)
    assert scheduler.repredicts() and scheduler.ordering() == "isrtf"
    scheduler.observe(ranked(-1, 8))
    assert scheduler.guard.fallback and not scheduler.repredicts()
    assert scheduler.ordering("isrtf") == "fcfs (guard fallback)" and scheduler.ordering("mlfq") == "mlfq"
    short, long_ = job("s", 10.0, arrival=2.0), job("l", 900.0, arrival=1.0)
    assert scheduler.admit(short, 3.0)[1] == scheduler.admit(long_, 3.0)[1]  # one level: arrival order
    running = job("r", 900.0, generated=50, enqueued=3.0)
    assert not scheduler.decide(running, short, 3.0).yields


def test_the_order_reads_predictions_only_under_a_trusted_length_aware_policy():
    """What admission defers a job's prediction by (elis.api.admission): whether the order in force reads it."""
    scheduler = Scheduler.from_settings(SETTINGS, LEVELS)
    assert scheduler.orders_by_prediction("isrtf") and scheduler.orders_by_prediction("sjf")
    assert not any(scheduler.orders_by_prediction(name) for name in ("fcfs", "srtf-oracle", "mlfq"))
    assert scheduler.admission_waits_for_prediction("isrtf") and not scheduler.admission_waits_for_prediction("fcfs")
    scheduler.observe(ranked(-1, 8))  # the guard falls back: ISRTF and SJF order as FCFS
    assert scheduler.guard.fallback
    assert not scheduler.orders_by_prediction("isrtf") and not scheduler.orders_by_prediction("sjf")
    # ISRTF's worker still re-predicts (the guard's samples) from the score stored with the admission prediction
    assert scheduler.admission_waits_for_prediction("isrtf") and not scheduler.admission_waits_for_prediction("sjf")


def looping(job_id: str, known: int | None, generated: int = 100, arrival: float = 0.0) -> JobView:
    return replace(job(job_id, 50.0, generated=generated, arrival=arrival, enqueued=arrival), known_remaining=known)


def test_loops_last_moves_a_loop_with_more_than_the_typical_length_left_behind_a_waiting_job():
    policy, head = LoopsLast(typical_tokens=200.0), job("h", None, arrival=5.0, enqueued=5.0)
    assert decide(policy, looping("a", 400), head, 10.0, LEVELS, YieldMargin.of(0.3), SwitchCost(1.0, 0.05)).yields
    assert policy.score(looping("a", 400), 10.0) == 400.0 and policy.score(head, 10.0) == 0.0
    assert not decide(policy, looping("a", 150), head, 10.0, LEVELS).yields  # less than typical left: runs on
    assert not decide(policy, looping("a", None), head, 10.0, LEVELS).yields  # no loop: FCFS
    assert not decide(policy, looping("a", 400), None, 10.0, LEVELS).yields  # nothing waits
    # A demoted loop at the head takes the slot only from a loop with clearly more left (no ping-pong).
    assert not decide(policy, looping("a", 400), looping("b", 390, arrival=5.0), 10.0, LEVELS,
                      YieldMargin.of(0.0), SwitchCost(1.0, 0.05)).yields
    assert decide(policy, looping("a", 400), looping("b", 300, arrival=5.0), 10.0, LEVELS,
                  YieldMargin.of(0.0), SwitchCost(1.0, 0.05)).yields


def test_the_scheduler_moves_loops_last_only_in_a_quality_fallback_of_a_re_predicting_policy_once_on():
    on = SimpleNamespace(**{**vars(SETTINGS), "fallback_loops_last": True})
    scheduler = Scheduler.from_settings(on, LEVELS)
    assert not scheduler.moves_loops_last()  # trusted: ISRTF's own order
    scheduler.observe(ranked(-1, 4))
    assert scheduler.guard.fallback is False and scheduler.typical_tokens is None  # too few jobs to judge
    scheduler.observe(ranked(-1, 8))
    assert scheduler.guard.fallback and scheduler.typical_tokens == 135.0  # the mean of 100 .. 170
    assert scheduler.moves_loops_last("isrtf") and not scheduler.moves_loops_last("sjf")  # SJF never pre-empts
    assert scheduler.ordering("isrtf") == "fcfs, loops last (guard fallback)"
    assert scheduler.ordering("sjf") == "fcfs (guard fallback)"
    assert scheduler.judging_since("isrtf") < math.inf  # an order of its own: the outcome guard judges it
    assert scheduler.decide(looping("r", 400), job("h", None, arrival=5.0), 10.0).yields
    scheduler.outcome.tripped = True  # a trip means plain FCFS
    assert not scheduler.moves_loops_last() and not scheduler.decide(looping("r", 400), job("h", None), 10.0).yields
    off = Scheduler.from_settings(SETTINGS, LEVELS)  # the default: off
    off.observe(ranked(-1, 8))
    assert off.guard.fallback and not off.moves_loops_last() and off.ordering() == "fcfs (guard fallback)"
    assert off.judging_since("isrtf") == math.inf


def test_the_scheduler_ages_with_the_bound_it_derives_from_finished_jobs():
    scheduler = Scheduler.from_settings(SETTINGS, LEVELS)
    scheduler.observe([FinishedJob(str(i), 100, 20.0, float(100 + i)) for i in range(6)])
    assert scheduler.aging_bound_s == 60.0
    waiting = job("w", 500.0, arrival=0.0, enqueued=0.0)
    assert not scheduler.is_starving(waiting, 59.0) and scheduler.is_starving(waiting, 61.0)
    assert scheduler.admit(waiting, 61.0) == (AGED_SCORE, LEVELS.num_levels - 1)
    # Service times of more jobs than the guard judges (forced replays too) set the bound when given.
    scheduler.observe([FinishedJob(str(i), 100, 20.0, float(100 + i)) for i in range(6)], service_times=[4.0, 6.0])
    assert scheduler.aging_bound_s == 15.0  # 3 x 5 s is above the 10 s floor


def cohort_of(*slot_times: float, slots: int = 1) -> Cohort:
    """Jobs that all arrived at 0 and held a slot for these seconds each."""
    return Cohort(tuple(JobOutcome(0.0, t, ((0.0, t),)) for t in slot_times), slots)


def test_fcfs_mean_jct_replays_the_cohort_in_arrival_order_on_its_slots():
    assert fcfs_mean_jct(cohort_of(10.0, 10.0)) == 15.0  # one slot: 10 s, then 20 s
    assert fcfs_mean_jct(cohort_of(10.0, 10.0, slots=2)) == 10.0
    assert fcfs_mean_jct(Cohort((), 1)) == 0.0


def test_the_aging_bound_grows_with_the_mean_jct_fcfs_would_give_the_latest_jobs():
    rule = AgingRule(factor=3.0, floor_s=10.0, fcfs_factor=1.0)
    assert rule.bound([5.0]) == 15.0 and rule.bound([5.0], fcfs_mean_s=12.0) == 15.0  # service times win
    assert rule.bound([5.0], fcfs_mean_s=40.0) == 40.0  # a queue: FCFS would have kept jobs 40 s
    assert AgingRule(fcfs_factor=0.0).bound([5.0], fcfs_mean_s=40.0) == 15.0  # off
    assert AgingRule(fixed_s=7.0).bound([5.0], fcfs_mean_s=40.0) == 7.0  # a fixed bound is fixed
    scheduler = Scheduler.from_settings(SETTINGS, LEVELS)
    assert scheduler.aging_cohort_jobs == 50 and scheduler.snapshot()["aging"]["fcfs_mean_s"] is None
    finished = [FinishedJob(str(i), 100, 5.0, float(100 + i)) for i in range(6)]
    scheduler.observe(finished, aging_cohort=cohort_of(20.0, 20.0, 20.0, 20.0))  # FCFS: 20, 40, 60, 80
    assert scheduler.fcfs_mean_s == 50.0 and scheduler.aging_bound_s == 50.0
    waiting = job("w", 500.0, arrival=0.0, enqueued=0.0)
    assert not scheduler.is_starving(waiting, 49.0) and scheduler.is_starving(waiting, 51.0)
    scheduler.observe(finished)  # no new cohort: the last mean holds
    assert scheduler.aging_bound_s == 50.0
    scheduler.observe(finished, aging_cohort=cohort_of(1.0))  # the queue drained: service times again
    assert scheduler.aging_bound_s == 15.0 and scheduler.snapshot()["aging"]["fcfs_mean_s"] == 1.0
    off = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "aging_fcfs_factor": 0.0}), LEVELS)
    assert off.aging_cohort_jobs == 0
    seven = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "aging_fcfs_jobs": 7}), LEVELS)
    assert seven.aging_cohort_jobs == 7
    assert Scheduler("isrtf", LEVELS, aging=AgingRule(fixed_s=5.0)).aging_cohort_jobs == 0


def test_aging_off_and_a_fixed_bound_are_both_honoured():
    off = Scheduler("fcfs", LEVELS, aging=AgingRule(enabled=False))
    assert not off.is_starving(job("w", None, enqueued=0.0), 1e9)
    fixed = Scheduler("fcfs", LEVELS, aging=AgingRule(fixed_s=5.0))
    fixed.observe([FinishedJob("x", 10, 100.0)])
    assert fixed.aging_bound_s == 5.0


def test_step_calibration_puts_a_low_admission_bias_on_the_scale_of_later_re_predictions():
    # Admission predictions are 0.4x the truth, re-predictions after 100 tokens are right.
    jobs = [FinishedJob(str(i), 300 + 10 * i, 1.0, initial_prediction=0.4 * (300 + 10 * i),
                        step_predictions=((100, 200.0 + 10 * i),)) for i in range(12)]
    calibration = StepCalibration.fit(jobs, min_points=10)
    assert calibration.factor(0) == pytest.approx(2.5) and calibration.factor(100) == pytest.approx(1.0)
    assert calibration.factor(50) == pytest.approx(2.5) and calibration.factor(400) == pytest.approx(1.0)
    scheduler = Scheduler.from_settings(SETTINGS, LEVELS)
    scheduler.observe(jobs)
    newcomer = job("n", 120.0, arrival=5.0, enqueued=5.0)  # predicted 120, i.e. about 300 on the common scale
    running = job("r", 250.0, generated=100, enqueued=6.0)
    assert not scheduler.decide(running, newcomer, 6.0).yields  # raw 120 < 250 would have pre-empted
    assert scheduler.snapshot()["calibration"]["factor_by_step"][0] == [0, 2.5]


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=2, max_size=60))
def test_the_fast_kendall_tau_equals_scipys_on_any_input_with_ties(points):
    scipy_stats = pytest.importorskip("scipy.stats")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ours, theirs = kendall_tau(xs, ys), scipy_stats.kendalltau(xs, ys).statistic
    assert (ours is None and math.isnan(theirs)) or ours == pytest.approx(theirs)


def test_step_predictions_skip_missing_ones_and_the_prediction_after_the_last_token():
    from elis.scheduling.guard import step_predictions

    # 120 tokens in windows of 50, 50, 20: the database stores None, a saved run NaN, for "no prediction".
    assert step_predictions([(50, 60.0), (50, None), (20, 5.0)], 120) == ((50, 60.0),)
    assert step_predictions([(50, float("nan")), (50, 30.0), (20, float("nan"))], 120) == ((100, 30.0),)
    assert step_predictions([], 0) == ()


# --- when to re-predict ------------------------------------------------------------------------------------
def trusting(policy: str = "isrtf", **kwargs) -> Scheduler:
    """A scheduler whose guard trusts the predictor (pre-emption on), with no sampled re-predictions."""
    kwargs.setdefault("repredict_sample_every", 0)
    scheduler = Scheduler(policy, LEVELS, guard=QualityGuard(start_in_fallback=False), **kwargs)
    scheduler.guard.preempt_judged = True  # as after the guard's first verdict: no dense sampling
    return scheduler


def test_a_window_end_re_predicts_only_where_a_prediction_could_make_the_job_yield():
    scheduler = trusting(margin=YieldMargin.of(0.9))
    running = job("r", 300.0, generated=100, arrival=0.0, enqueued=1.0)
    assert not scheduler.should_repredict(running, 400.0, None, 2.0)  # nothing waits
    # Yielding needs head < (1 - 0.9) x the job's score: with at most 400 tokens left, a head predicted 30 could
    # take the slot, one predicted 60 could not, whatever the re-prediction says.
    assert scheduler.should_repredict(running, 400.0, job("h", 30.0, arrival=1.5), 2.0)
    assert not scheduler.should_repredict(running, 400.0, job("h", 60.0, arrival=1.5), 2.0)
    assert trusting(repredict_every_window=True).should_repredict(running, 400.0, None, 2.0)
    assert not trusting("sjf").should_repredict(running, 400.0, job("h", 1.0, arrival=1.5), 2.0)


def test_with_pre_emption_off_only_a_starving_head_makes_a_re_prediction_worth_it():
    scheduler = trusting(margin=YieldMargin.of(0.3), aging=AgingRule(fixed_s=10.0))
    scheduler.guard.preempting = False
    running = job("r", 300.0, generated=100, arrival=5.0, enqueued=5.0)
    assert not scheduler.should_repredict(running, 400.0, job("h", 1.0, arrival=6.0), 12.0)
    assert scheduler.should_repredict(running, 400.0, job("h", 900.0, arrival=1.0), 12.0)  # waited 11 s > 10 s


def test_skipped_windows_are_sampled_for_the_guard_about_one_in_n_and_the_same_every_time():
    scheduler = trusting(repredict_sample_every=4)
    steps = [job(f"j{i}", 100.0, generated=50 * k) for i in range(50) for k in range(1, 9)]
    sampled = [scheduler.should_repredict(s, 500.0, None, 1.0) for s in steps]
    assert 0.15 < sum(sampled) / len(sampled) < 0.35
    assert sampled == [scheduler.should_repredict(s, 500.0, None, 1.0) for s in steps]


def test_in_fallback_isrtf_still_samples_re_predictions_for_the_guard_and_they_change_no_decision():
    scheduler = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "repredict_sample_every": 4}), LEVELS)
    scheduler.observe(ranked(-1, 8))
    assert scheduler.guard.fallback
    scheduler.guard.preempt_judged = True  # judged earlier (else every window is sampled: the next test)
    steps = [job(f"j{i}", 100.0, generated=50 * k, enqueued=1.0) for i in range(50) for k in range(1, 9)]
    head = job("h", 1.0, arrival=0.5)
    sampled = [s for s in steps if scheduler.should_repredict(s, 500.0, head, 2.0)]
    assert 0.15 < len(sampled) / len(steps) < 0.35  # the same one in four as when trusted
    assert not any(scheduler.decide(replace(s, predicted_remaining=p), head, 2.0).yields
                   for s in sampled for p in (0.0, 500.0))  # FCFS order: no prediction makes a job yield
    # A policy that never re-predicts (SJF keeps its admission order) samples nothing, in fallback or not.
    assert not any(scheduler.should_repredict(s, 500.0, head, 2.0, policy_name="sjf") for s in steps)


def test_until_pre_emption_is_judged_every_window_of_a_re_predicting_policy_re_predicts():
    scheduler = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "guard_start_in_fallback": True}), LEVELS)
    assert scheduler.guard.fallback and not scheduler.guard.preempt_judged
    steps = [job(f"j{i}", 100.0, generated=50 * k) for i in range(10) for k in range(1, 9)]
    assert all(scheduler.should_repredict(s, 500.0, None, 1.0) for s in steps)
    assert not any(scheduler.should_repredict(s, 500.0, None, 1.0, policy_name="sjf") for s in steps)
    scheduler.observe(with_repredictions(30, precise=True))  # judged: back to one window in four
    assert scheduler.guard.preempt_judged and scheduler.guard.preempting
    assert 0.1 < sum(scheduler.should_repredict(s, 500.0, None, 1.0) for s in steps) / len(steps) < 0.4


def test_pre_emption_comes_on_at_the_precision_bar_and_goes_off_only_below_it_minus_the_hysteresis():
    guard = QualityGuard(min_jobs=5, preempt_precision=0.9, preempt_hysteresis=0.02)

    def at(precision: float) -> RankQuality:
        return RankQuality(num_jobs=50, pooled_num=50, yield_precision=precision, yield_pairs=900)

    guard.update(at(0.895))
    assert guard.preempt_judged and not guard.preempting
    guard.update(at(0.90))
    assert guard.preempting and "needs 90%)" in guard.preempt_reason
    guard.update(at(0.885))  # within the band: stays on
    assert guard.preempting and "needs 88% to stay on" in guard.preempt_reason
    guard.update(at(0.879))
    assert not guard.preempting
    guard.update(at(0.899))  # off: the full bar again
    assert not guard.preempting


def test_the_yield_rule_check_weighs_each_pair_by_the_tokens_it_moves():
    # (predicted, true remaining). At uncertainty 0.5 a pair triggers when pred_b < 0.5 x pred_a: three pairs.
    points = [(10.0, 20.0), (30.0, 10.0), (100.0, 400.0)]
    check = check_yield_rule(points, 0.5)
    # (10 vs 30): wrong by 10; (10 vs 100): right by 380; (30 vs 100): right by 390.
    assert check.pairs == 3
    assert check.precision == pytest.approx(2 / 3)
    assert check.gain_share == pytest.approx((380 + 390) / (10 + 380 + 390))
    # Right in the small pair, wrong in the large one: a fair precision, a poor gain share.
    small_right_large_wrong = [(10.0, 400.0), (30.0, 50.0), (100.0, 60.0)]
    lopsided = check_yield_rule(small_right_large_wrong, 0.5)
    assert lopsided.precision == pytest.approx(1 / 3)
    assert lopsided.gain_share == pytest.approx(10 / (10 + 350 + 340))
    assert check_yield_rule([(10.0, 5.0), (12.0, 6.0)], 0.5) == YieldCheck()  # no pair differs by the margin
    assert check_yield_rule([(10.0, 5.0), (30.0, 5.0)], 0.5).gain_share is None  # one pair, moving nothing


def test_the_pre_emption_gate_bars_the_chosen_measure_and_keeps_both_measured():
    def at(precision: float, gain_share: float) -> RankQuality:
        return RankQuality(num_jobs=50, pooled_num=50, yield_precision=precision, yield_pairs=900,
                           yield_gain_share=gain_share)

    by_sign = QualityGuard(min_jobs=5, preempt_precision=0.75)
    by_gain = QualityGuard(min_jobs=5, preempt_precision=0.75, preempt_measure="gain")
    for guard in (by_sign, by_gain):
        guard.update(at(0.8, 0.6))
        assert guard.measured_precision == 0.8 and guard.measured_gain_share == 0.6
    assert by_sign.preempting and "right in 80.0%" in by_sign.preempt_reason
    assert not by_gain.preempting and "saved 60.0% of the tokens" in by_gain.preempt_reason
    by_gain.update(at(0.7, 0.9))
    assert by_gain.preempting
    with pytest.raises(ValueError, match="preempt_measure"):
        QualityGuard(preempt_measure="tau")


def test_the_scheduler_takes_the_gate_measure_from_settings_and_shows_what_it_measured():
    scheduler = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "guard_preempt_measure": "gain"}),
                                        LEVELS)
    assert scheduler.guard.preempt_measure == "gain"
    scheduler.observe(with_repredictions(30, precise=True))
    guard = scheduler.snapshot()["guard"]
    assert guard["preempt_measure"] == "gain"
    assert guard["measured_precision"] == 1.0 and guard["measured_gain_share"] == 1.0
    quality = scheduler.snapshot()["rank_quality"]["yield_precision"]
    assert quality["gain_share"] == 1.0 and quality["pairs"] > 0


def with_repredictions(count: int, precise: bool) -> list[FinishedJob]:
    """Finished ISRTF jobs whose re-predictions after 50 tokens rank the remaining lengths (or invert them)."""
    jobs = []
    for i in range(count):
        length = 100 + 20 * i
        predicted = float(length - 50) if precise else float(1000 - 20 * i)
        jobs.append(FinishedJob(f"r{i}", length, 5.0, float(length), ((50, predicted),)))
    return jobs


def test_pre_emption_is_judged_on_older_re_predicted_jobs_when_the_last_ones_have_none():
    # The last finished jobs ran under SJF (admission predictions only): alone they leave pre-emption unjudged.
    recent = [FinishedJob(f"s{i}", 100 + 10 * i, 5.0, float(100 + 10 * i)) for i in range(30)]
    alone = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "guard_start_in_fallback": True}), LEVELS)
    alone.observe(recent)
    assert not alone.guard.fallback and not alone.guard.preempting  # trusted order, no evidence to pre-empt on
    assert alone.calibration.factor(50) == alone.calibration.factor(0)  # no step-50 factor learned
    helped = Scheduler.from_settings(SimpleNamespace(**{**vars(SETTINGS), "guard_start_in_fallback": True}), LEVELS)
    helped.observe(recent, repredicted=with_repredictions(30, precise=True))
    assert helped.guard.preempting and "of 60 finished jobs" in helped.guard.preempt_reason
    assert dict(helped.calibration.factors)[50] == pytest.approx(1.0)  # re-predictions were exact
    assert helped.quality.num_jobs == 30 and helped.quality.pooled_num == 0  # the tau guard judges the last jobs
    # Bad re-predictions, however old, keep it off; a job in both lists counts once.
    wrong = Scheduler.from_settings(SETTINGS, LEVELS)
    wrong.observe(recent, repredicted=with_repredictions(30, precise=False) + recent[:5])
    assert not wrong.guard.preempting and "of 60 finished jobs" in wrong.guard.preempt_reason


@given(st.floats(1, 500), st.floats(0, 500), st.floats(0, 0.95), st.floats(0, 100), st.booleans())
def test_a_skipped_re_prediction_could_not_have_made_the_job_yield(most, head_score, u, prediction, preempting):
    scheduler = trusting(margin=YieldMargin.of(u))
    scheduler.guard.preempting = preempting
    running, head = job("r", 50.0, generated=50, enqueued=1.0), job("h", head_score, arrival=0.5)
    if not scheduler.should_repredict(running, most, head, 2.0, SwitchCost(0.1, 0.01)):
        for fraction in (0.0, 0.25, 0.5, 1.0):
            predicted = JobView(running.job_id, running.arrival_time, 50, most * fraction, 50.0, 1.0, 0.0, None)
            assert not scheduler.decide(predicted, head, 2.0, SwitchCost(0.1, 0.01)).yields


def test_loops_last_keeps_the_prefill_order_for_the_jobs_it_does_not_demote():
    from elis.scheduling.policy import PrefillFirst

    on = SimpleNamespace(**{**vars(SETTINGS), "fallback_loops_last": True, "prefill_weight": 0.25,
                            "fallback_by_prefill": True})
    scheduler = Scheduler.from_settings(on, LEVELS)
    scheduler.observe(ranked(-1, 8))
    assert scheduler.ordering("isrtf") == "prefill first, loops last (guard fallback)"
    assert scheduler.ordering("sjf") == "prefill first (guard fallback)"
    policy = scheduler.policy("isrtf")
    inner = getattr(policy, "inner", policy)
    assert isinstance(inner, LoopsLast) and isinstance(inner.base, PrefillFirst)
    newcomer = replace(job("n", None, arrival=5.0, enqueued=5.0), prefill_tokens=800)
    assert inner.score(newcomer, 10.0) == 200.0 and inner.score(looping("a", 400), 10.0) == 400.0
