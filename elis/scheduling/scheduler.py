"""One Scheduler for the whole service: policy, level edges, yield margin, quality and outcome guards and aging.

Built once per process from the settings (`elis.tasks.scheduling_setup.build_scheduler`, or
`Scheduler.from_settings` in the simulator) and shared by the API (admission score and level), the workers
(window-end decisions), the reconciler (starvation) and the simulator. It holds the only mutable scheduling
state: the guards' verdicts and the aging bound, all refreshed by `observe` from finished jobs (and, for the
aging bound, the latest jobs still queued or running).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from elis.scheduling.decision import Decision, SwitchCost, YieldMargin, decide
from elis.scheduling.guard import (
    FinishedJob,
    QualityGuard,
    RankQuality,
    StepCalibration,
    aging_bound,
    measure_rank_quality,
    round_or_none,
)
from elis.scheduling.levels import PriorityLevels
from elis.scheduling.outcome import Cohort, OutcomeGuard, fcfs_mean_jct, measure_outcome
from elis.scheduling.policy import FCFS, Aging, JobView, LoopsLast, Policy, PrefillFirst, make_policy
from elis.scheduling.work import bundled_prefill_weight


@dataclass(frozen=True)
class AgingRule:
    """The bounded wait: a fixed bound (`fixed_s` > 0), or `factor` x the mean service time of recently
    finished jobs, never below `floor_s`, and never below `fcfs_factor` x the mean JCT that FCFS would have
    given the recent jobs (the outcome guard's counterfactual; 0 turns this off). Off only when `enabled` is
    False.

    Why the FCFS term: a bound from service times alone stays put while the queue grows, so on an overload every
    job starves within a few service times and the order collapses to FCFS (run 34 of docs/scheduling.md:
    aging held ISRTF at 0.86x FCFS's mean where aging off gave 0.74x). A job that has been in the system as
    long as FCFS would typically have kept it has lost nothing to the length-aware order yet; after that it
    goes first, so the tail stays FCFS's (scripts/sim_aging_fcfs.py)."""

    enabled: bool = True
    fixed_s: float = 0.0
    factor: float = 3.0
    floor_s: float = 10.0
    fcfs_factor: float = 1.0
    fcfs_jobs: int = 50  # the recent jobs (by arrival, in the system or done) FCFS's mean JCT is taken over
    since_arrival: bool = True  # count the bound from the job's arrival (total time), not its last enqueue
    service_factor: float = 0.0  # the bound grows by this x the job's service so far (1: its waits alone count)
    preempts: bool = True  # a starving head takes a running job's slot under a preemptive policy

    def bound(self, service_times: Sequence[float], fcfs_mean_s: float | None = None) -> float:
        """The bound now; `fcfs_mean_s`: the counterfactual FCFS mean JCT of the recent jobs (None: unknown)."""
        if self.fixed_s > 0:
            return self.fixed_s
        bound = aging_bound(service_times, self.factor, self.floor_s)
        if self.fcfs_factor > 0 and fcfs_mean_s is not None:
            bound = max(bound, self.fcfs_factor * fcfs_mean_s)
        return bound


# Policies the outcome guard neither judges nor turns to FCFS: FCFS is its counterfactual, and SRTF-oracle is
# the exact-length bound that comparisons measure against (a trip would measure FCFS under its name, run 25).
OUTCOME_EXEMPT = ("fcfs", "srtf-oracle")


@dataclass
class Scheduler:
    """Every scheduling decision of the service. Policies are looked up by name (a job carries the policy it
    was admitted under); while the quality guard is in fallback, a policy that orders by predictions acts as
    FCFS (or, opt-in, orders by the known prefill: `PrefillFirst`); while the outcome guard is tripped, every
    policy acts as FCFS."""

    default_policy: str
    levels: PriorityLevels
    margin: YieldMargin = field(default_factory=YieldMargin)
    guard: QualityGuard = field(default_factory=QualityGuard)
    aging: AgingRule = field(default_factory=AgingRule)
    # Learn a per-step scale from finished jobs so predictions made at different steps compare fairly.
    calibrate_steps: bool = True
    calibration: StepCalibration = field(default_factory=StepCalibration)
    # Decode steps of one job that a prompt token's prefill costs (elis.scheduling.work): a job that has not run
    # yet scores its output plus this x its prompt under a length-aware policy. 0: output tokens alone.
    prefill_weight: float = 0.0
    # Where the weight comes from; "settings" keeps it, anything else lets the workers' own measurements replace it
    # (`use_measured_prefill_weight`): the bundled profile is one machine's, a GPU's weight is far smaller.
    prefill_weight_source: str = "settings"
    # Re-predict at every window end (the ELIS paper), or only where a prediction could make the job yield plus
    # one window in `repredict_sample_every` for the guard (see `should_repredict`).
    repredict_every_window: bool = False
    repredict_sample_every: int = 4
    # Judges the outcome: the policy's jobs against their FCFS counterfactual (elis.scheduling.outcome).
    outcome: OutcomeGuard = field(default_factory=OutcomeGuard)
    quality: RankQuality | None = None
    # While the quality guard holds FCFS order, a re-predicting policy still moves jobs whose remaining length
    # is a fact (greedy loops) behind the others (`LoopsLast`), once `typical_tokens` is known.
    loops_last: bool = False
    # While the quality guard falls back, order by the prefill still to pay (`PrefillFirst`) rather than by arrival,
    # when the prefill counts as work (prefill_weight > 0). The outcome guard judges that order against FCFS.
    # Off by default (run 42: the simulator's gain did not hold live).
    fallback_by_prefill: bool = False
    # The mean output length of the jobs the guard last judged (None until it has judged `guard.min_jobs`).
    typical_tokens: float | None = None
    # When each guard last changed state (seconds on the clock `observe` is given): the outcome guard judges only
    # jobs that arrived since their policy's order was last switched on (`judging_since`).
    quality_since: float = 0.0
    outcome_since: float = 0.0
    aging_bound_s: float = field(init=False)
    # The mean JCT FCFS would have given the latest jobs (`observe`'s `aging_cohort`); the aging bound grows with it.
    fcfs_mean_s: float | None = None
    _policies: dict[tuple[str, bool, bool, float, float, bool], Policy] = field(default_factory=dict, init=False,
                                                                             repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        make_policy(self.default_policy)  # fail fast on an unknown name
        self.aging_bound_s = self.aging.bound(())

    # --- policies -----------------------------------------------------------------------------------------
    def policy(self, name: str | None = None) -> Policy:
        """The policy in force for jobs admitted under `name` (default: the service's): the fallback order
        (`fallback_order`) while the quality guard falls back and the policy orders by predictions, FCFS while
        the outcome guard is tripped; wrapped in aging when aging is on."""
        name = name or self.default_policy
        fallback, tripped = self.guard.fallback, self.outcome.tripped
        bound = round(self.aging_bound_s, 1) if self.aging.enabled else 0.0
        typical = self._loops_last_tokens(name)
        key = (name, fallback, tripped, bound, typical, self.orders_fallback_by_prefill)
        with self._lock:
            policy = self._policies.get(key)
            if policy is None:
                inner = make_policy(name)
                if tripped and inner.name not in OUTCOME_EXEMPT:
                    inner = FCFS()
                elif fallback and inner.uses_predictions:
                    inner = LoopsLast(typical, self.fallback_order()) if typical > 0 else self.fallback_order()
                policy = (Aging(inner, bound, service_factor=self.aging.service_factor,
                                since_arrival=self.aging.since_arrival, preempts=self.aging.preempts)
                          if bound > 0 else inner)
                if len(self._policies) > 256:
                    self._policies.clear()
                self._policies[key] = policy
        return policy

    @property
    def follows_measured_prefill_weight(self) -> bool:
        """Whether the workers' measured prefill weight replaces this one (ELIS_PREFILL_WEIGHT unset)."""
        return self.prefill_weight_source != "settings"

    def use_measured_prefill_weight(self, weight: float, workers: int) -> bool:
        """Take the prefill weight the live workers measured (their median; `workers` 0: the last one measured,
        none being live). 0 is a measurement too (a GPU's prefill can be too fast to time against its step).
        Returns True when the weight or its source changed. A weight set in the settings is kept."""
        if not self.follows_measured_prefill_weight or weight < 0:
            return False
        source = (f"measured by {workers} live worker{'s' if workers != 1 else ''}" if workers
                  else "measured by the last worker seen")
        changed = abs(weight - self.prefill_weight) > 1e-9 or source != self.prefill_weight_source
        with self._lock:
            self.prefill_weight, self.prefill_weight_source = weight, source
            if changed:
                self._policies.clear()  # the prefill fallback's order holds the weight
        return changed

    def fallback_order(self) -> FCFS:
        """What a prediction-ordered policy orders by while the quality guard falls back: the prefill still to
        pay when it counts as work, else arrival."""
        return PrefillFirst(self.prefill_weight) if self.orders_fallback_by_prefill else FCFS()

    @property
    def orders_fallback_by_prefill(self) -> bool:
        return self.fallback_by_prefill and self.prefill_weight > 0

    def _loops_last_tokens(self, name: str) -> float:
        """The typical length `LoopsLast` compares with, rounded so the policy cache stays small; 0 when the
        policy in force for `name` does not move loops last: not in the quality guard's fallback, the outcome
        guard tripped (plain FCFS then), a policy that does not pre-empt (SJF), or no typical length yet."""
        if not (self.loops_last and self.guard.fallback) or self.outcome.tripped or self.typical_tokens is None:
            return 0.0
        if not self.base_policy(name).repredicts:
            return 0.0
        return float(max(10, 10 * round(self.typical_tokens / 10)))

    def moves_loops_last(self, name: str | None = None) -> bool:
        """Whether jobs of this policy are ordered by `LoopsLast` now (a worker then looks for loops)."""
        return self._loops_last_tokens(name or self.default_policy) > 0

    def base_policy(self, name: str | None = None) -> Policy:
        """The policy as configured, ignoring the guard (what a job asked for)."""
        return make_policy(name or self.default_policy)

    def orders_by_prediction(self, name: str | None = None) -> bool:
        """Whether the order in force for jobs of this policy reads their predictions now: ISRTF or SJF while the
        guards trust them; not FCFS, SRTF-oracle or MLFQ, nor a length-aware policy while a guard holds FCFS order
        (or its prefill fallback). When it does not, an admission prediction cannot change where a job waits."""
        return self.policy(name).uses_predictions

    def admission_waits_for_prediction(self, name: str | None = None) -> bool:
        """Whether a job of this policy is predicted before it is queued (else after: `elis.api.deferred`), unless a
        slot is free for it: when the order in force reads the prediction, or when the job's worker re-predicts
        (ISRTF, in a guard's fallback too: it reads the prompt prior's score stored with the admission prediction,
        and without it would pass the prompt through the served model itself)."""
        return self.orders_by_prediction(name) or self.base_policy(name).repredicts

    def needs_prediction(self, name: str | None = None) -> bool:
        return self.base_policy(name).needs_initial_prediction

    def repredicts(self, name: str | None = None) -> bool:
        """Whether windows of this policy re-predict now (not during the guard's fallback: nothing would use it)."""
        return self.policy(name).repredicts

    def should_repredict(self, job: JobView, most_remaining: float, head: JobView | None, now: float,
                         cost: SwitchCost = SwitchCost(), policy_name: str | None = None) -> bool:
        """Whether this window end re-predicts `job`'s remaining length before deciding.

        A re-prediction matters to the order only when the job may yield: its new score then sets its level
        in the queue, and for ISRTF it sets whether it yields at all. Every score rule is monotone in the
        predicted remaining length (so is the margin, a fixed share of it), so if the job would not yield
        even at `most_remaining` (its largest possible remaining length, max_tokens minus what it generated),
        no prediction can make it yield and this one is skipped: nothing waits, or pre-emption on predictions
        is off and the head does not starve, or the head is not sooner by the margin even then. One skipped
        window in `repredict_sample_every` re-predicts anyway (chosen by a hash of job and step, the same in
        the worker and the simulator), so the guard keeps judging re-predictions at every step; every window
        does until the guard has judged pre-emption. Sampling goes on while a guard holds FCFS order (the
        re-prediction then changes no decision)."""
        every = self.repredict_sample_every
        sampled = every > 0 and zlib.crc32(f"{job.job_id}:{job.num_generated}".encode()) % every == 0
        # Until pre-emption has been judged, every window is the guard's sample: its evidence then comes from
        # a few finished jobs instead of a few dozen (a re-prediction costs milliseconds, a window seconds).
        sampled = sampled or not self.guard.preempt_judged
        if not self.repredicts(policy_name):
            # While a guard holds FCFS order, the order needs no re-prediction, but the quality guard still
            # needs fresh re-predictions to judge (and to lift its fallback by): keep sampling them.
            return sampled and self.base_policy(policy_name).repredicts
        if self.repredict_every_window:
            return True
        if self.decide(replace(job, predicted_remaining=most_remaining), head, now, cost, policy_name).yields:
            return True
        return sampled

    def ordering(self, name: str | None = None) -> str:
        """The order jobs of this policy actually get right now, e.g. 'isrtf', 'fcfs (guard fallback)' or
        'fcfs (outcome guard)'."""
        base = self.base_policy(name)
        if self.outcome.tripped and base.name not in OUTCOME_EXEMPT:
            return "fcfs (outcome guard)"
        if self.guard.fallback and base.uses_predictions:
            if self.moves_loops_last(base.name):
                return f"{LoopsLast(0.0, self.fallback_order()).name} (guard fallback)"
            return f"{self.fallback_order().name} (guard fallback)"
        return base.name

    def guard_reason(self) -> str:
        """The quality guard's reason, and the outcome guard's while it holds FCFS order."""
        if self.outcome.tripped:
            return f"{self.guard.reason}; outcome guard: {self.outcome.reason}"
        return self.guard.reason

    def judging_since(self, name: str | None = None) -> float:
        """Jobs of this policy that arrived since then got the policy's order (infinite: none does now). The
        quality guard's state matters only to policies that order by predictions (a worker serves jobs of every
        policy, whatever its own default)."""
        base = self.base_policy(name)
        if base.name in OUTCOME_EXEMPT or self.outcome.tripped:
            return float("inf")
        if (self.guard.fallback and base.uses_predictions and not self.moves_loops_last(base.name)
                and not self.orders_fallback_by_prefill):
            return float("inf")  # FCFS order: nothing to judge
        return max(self.outcome_since, self.quality_since if base.uses_predictions else 0.0)

    # --- decisions ----------------------------------------------------------------------------------------
    def calibrated(self, job: JobView) -> JobView:
        """The job with its lengths on the common scale of remaining work: predictions by the calibration
        factor of the step they were made at (admission predictions by the step-0 factor), and, before the job
        first runs, its prompt's prefill added to each length (`prefill_weight` x `prefill_tokens`)."""
        factors = self.calibration.factors
        prefill = self.prefill_weight * job.prefill_tokens
        if not factors and prefill <= 0:
            return job
        predicted, initial, true = job.predicted_remaining, job.initial_prediction, job.true_remaining
        step_factor = self.calibration.factor(job.num_generated) if factors else 1.0
        admission_factor = self.calibration.factor(0) if factors else 1.0
        return replace(
            job,
            predicted_remaining=None if predicted is None else predicted * step_factor + prefill,
            initial_prediction=None if initial is None else initial * admission_factor + prefill,
            true_remaining=None if true is None else true + prefill,
        )

    def admit(self, job: JobView, now: float, policy_name: str | None = None) -> tuple[float, int]:
        """Score and broker level of a job entering the queue."""
        score = self.policy(policy_name).score(self.calibrated(job), now)
        return score, self.levels.level(score)

    def decide(self, job: JobView, head: JobView | None, now: float, cost: SwitchCost = SwitchCost(),
               policy_name: str | None = None) -> Decision:
        """The window-end decision for an unfinished job (see `elis.scheduling.decision.decide`)."""
        head = None if head is None else self.calibrated(head)
        return decide(self.policy(policy_name), self.calibrated(job), head, now, self.levels, self.margin, cost,
                      predicted_preemption=self.guard.preempting)

    def is_starving(self, job: JobView, now: float, policy_name: str | None = None) -> bool:
        policy = self.policy(policy_name)
        return isinstance(policy, Aging) and policy.is_starving(job, now)

    # --- learning from finished jobs ----------------------------------------------------------------------
    def observe(self, finished: Sequence[FinishedJob], service_times: Sequence[float] | None = None,
                cohort: Cohort | None = None, now: float | None = None,
                repredicted: Sequence[FinishedJob] | None = None, aging_cohort: Cohort | None = None) -> bool:
        """Refresh the rank quality, the guards and the aging bound from recently finished jobs. Returns True
        when a guard changed state. `service_times`: what the aging bound is derived from, when it should
        see more jobs than the guard judges (the service passes every done job's, forced lengths included,
        which the guard leaves out); default: the finished jobs' own. `cohort` (with `now`, on the same clock
        as its arrivals): the outcome guard's jobs (`storage.jobs.recent_cohort`); without it, the outcome
        guard keeps its state. `aging_cohort`: the last `aging_cohort_jobs` jobs by arrival up to now, in the
        system (censored) or done, whose counterfactual FCFS mean JCT the aging bound grows with; without it,
        the bound keeps the last such mean.

        `repredicted`: the last finished jobs that have re-predictions, however far back (the service passes
        `storage.jobs.recent_repredicted`). Only a policy that re-predicts (ISRTF) makes them, so after a spell
        of FCFS or SJF the last finished jobs hold none, and the step calibration and the pre-emption verdict
        would have nothing to go on until the re-predicting policy had served a few dozen jobs without them.
        Both are learned from these jobs together with `finished`; the tau guard judges `finished` alone."""
        evidence = _union(finished, repredicted or ())
        if self.calibrate_steps:
            self.calibration = StepCalibration.fit(evidence, min_points=self.guard.min_jobs)
        margin = self.margin.default_uncertainty if self.margin.enabled else 0.0
        quality = measure_rank_quality(finished, scale=self.calibration.factor, margin=margin)
        preemption = quality if len(evidence) == len(finished) else measure_rank_quality(
            evidence, scale=self.calibration.factor, margin=margin)
        changed = self.guard.update(quality, preemption=preemption)
        self.quality = quality
        if len(finished) >= self.guard.min_jobs:
            self.typical_tokens = sum(job.output_tokens for job in finished) / len(finished)
        if changed and now is not None:
            self.quality_since = now
        if cohort is not None:
            changed |= self._judge_outcome(cohort, now)
        if aging_cohort is not None and aging_cohort.jobs:
            self.fcfs_mean_s = fcfs_mean_jct(aging_cohort)
        times = [j.service_s for j in finished] if service_times is None else list(service_times)
        self.aging_bound_s = self.aging.bound(times, self.fcfs_mean_s)
        return changed

    @property
    def aging_cohort_jobs(self) -> int:
        """How many of the latest jobs `observe` wants as `aging_cohort` (0: none; the bound does not grow with
        FCFS's counterfactual JCT)."""
        grows = self.aging.enabled and self.aging.fixed_s <= 0 and self.aging.fcfs_factor > 0
        return self.aging.fcfs_jobs if grows else 0

    def _judge_outcome(self, cohort: Cohort, now: float | None) -> bool:
        """Judge the jobs that arrived since their policy's order came on (or, tripped, count the jobs served in
        FCFS order since the trip) and note when the outcome guard changes state."""
        recent = [job for job in cohort.jobs if job.arrival_s >= self.outcome_since]
        if self.outcome.tripped:
            check = None
        else:
            jobs = [replace(j, judged=j.judged and j.arrival_s >= self.judging_since(j.policy or None))
                    for j in cohort.jobs]
            check = measure_outcome(jobs, cohort.slots, cohort.backlog)
        changed = self.outcome.update(check, len(recent))
        if changed and now is not None:
            self.outcome_since = now
        return changed

    def snapshot(self) -> dict[str, Any]:
        """What the API shows in /v1/stats and /healthz."""
        return {
            "policy": self.default_policy,
            "ordering": self.ordering(),
            "guard": {
                "enabled": self.guard.enabled,
                "fallback": self.guard.fallback,
                "reason": self.guard.reason,
                "judged_tau": None if self.guard.judged_tau is None else round(self.guard.judged_tau, 4),
                "threshold": self.guard.threshold,
                "hysteresis": self.guard.hysteresis,
                "min_jobs": self.guard.min_jobs,
                "preempting": self.guard.preempting,
                "preempt_reason": self.guard.preempt_reason,
                "preempt_precision": self.guard.preempt_precision,
                "preempt_hysteresis": self.guard.preempt_hysteresis,
                "preempt_measure": self.guard.preempt_measure,
                "measured_precision": round_or_none(self.guard.measured_precision),
                "measured_gain_share": round_or_none(self.guard.measured_gain_share),
            },
            "rank_quality": None if self.quality is None else self.quality.as_dict(),
            "outcome": {**self.outcome.as_dict(), "judging_since": _finite(self.judging_since())},
            "loops_last": {"enabled": self.loops_last, "active": self.moves_loops_last(),
                           "typical_tokens": None if self.typical_tokens is None else round(self.typical_tokens, 1)},
            "aging": {"enabled": self.aging.enabled, "bound_s": round(self.aging_bound_s, 2),
                      "derived": self.aging.fixed_s <= 0, "since_arrival": self.aging.since_arrival,
                      "preempts": self.aging.preempts, "factor": self.aging.factor,
                      "service_factor": self.aging.service_factor,
                      "fcfs_factor": self.aging.fcfs_factor,
                      "fcfs_mean_s": None if self.fcfs_mean_s is None else round(self.fcfs_mean_s, 2)},
            "margin": {"enabled": self.margin.enabled, "uncertainty_default": self.margin.default_uncertainty,
                       "uncertainty_by_step": [list(p) for p in self.margin.uncertainty_by_step]},
            "levels": {"num_levels": self.levels.num_levels, "edges": list(self.levels.edges)},
            "repredict": {"every_window": self.repredict_every_window,
                          "sample_every": self.repredict_sample_every},
            "prefill_weight": round(self.prefill_weight, 4),
            "prefill_weight_source": self.prefill_weight_source,
            "calibration": {"enabled": self.calibrate_steps,
                            "factor_by_step": [[s, round(f, 4)] for s, f in self.calibration.factors]},
        }

    @classmethod
    def from_settings(cls, settings: Any, levels: PriorityLevels,
                      uncertainty_by_step: Sequence[tuple[int, float]] = ()) -> Scheduler:
        """Build from any object with the service's setting names (pure: reads attributes only)."""
        per_step = uncertainty_by_step if settings.yield_margin_per_step else ()
        margin = YieldMargin.of(settings.yield_uncertainty, per_step, enabled=settings.yield_margin)
        guard = QualityGuard(threshold=settings.guard_threshold, hysteresis=settings.guard_hysteresis,
                             min_jobs=settings.guard_min_jobs, enabled=settings.guard,
                             start_in_fallback=settings.guard_start_in_fallback,
                             preempt_precision=settings.guard_preempt_precision,
                             preempt_hysteresis=float(getattr(settings, "guard_preempt_hysteresis",
                                                              QualityGuard.preempt_hysteresis)),
                             preempt_measure=str(getattr(settings, "guard_preempt_measure",
                                                         QualityGuard.preempt_measure)))
        aging = AgingRule(enabled=settings.aging, fixed_s=settings.max_wait_s, factor=settings.aging_factor,
                          floor_s=settings.aging_floor_s,
                          fcfs_factor=float(getattr(settings, "aging_fcfs_factor", AgingRule.fcfs_factor)),
                          fcfs_jobs=int(getattr(settings, "aging_fcfs_jobs", AgingRule.fcfs_jobs)),
                          since_arrival=bool(getattr(settings, "aging_since_arrival", True)),
                          service_factor=float(getattr(settings, "aging_service_factor", 0.0)),
                          preempts=bool(getattr(settings, "aging_preempts", True)))
        outcome = OutcomeGuard(enabled=bool(getattr(settings, "outcome_guard", True)),
                               tolerance=float(getattr(settings, "outcome_tolerance", OutcomeGuard.tolerance)),
                               min_jobs=int(getattr(settings, "outcome_min_jobs", OutcomeGuard.min_jobs)),
                               retry_jobs=int(getattr(settings, "outcome_retry_jobs", OutcomeGuard.retry_jobs)),
                               max_retry_jobs=int(getattr(settings, "guard_window_jobs", OutcomeGuard.max_retry_jobs)))
        weight = getattr(settings, "prefill_weight", 0.0)
        source = "settings" if weight is not None else "bundled engine profile (until a worker measures its own)"
        weight = bundled_prefill_weight(int(getattr(settings, "slots", 4))) if weight is None else float(weight)
        return cls(settings.policy, levels, margin, guard, aging, calibrate_steps=settings.calibrate_steps,
                   prefill_weight=weight, prefill_weight_source=source,
                   repredict_every_window=bool(getattr(settings, "repredict_every_window", cls.repredict_every_window)),
                   repredict_sample_every=int(getattr(settings, "repredict_sample_every", cls.repredict_sample_every)),
                   outcome=outcome, loops_last=bool(getattr(settings, "fallback_loops_last", cls.loops_last)),
                   fallback_by_prefill=bool(getattr(settings, "fallback_by_prefill", cls.fallback_by_prefill)))


def _union(first: Sequence[FinishedJob], second: Sequence[FinishedJob]) -> list[FinishedJob]:
    """The jobs of both, each once (by job id), in the order first, then what only the second holds."""
    seen = {job.job_id for job in first}
    return list(first) + [job for job in second if job.job_id not in seen]


def _finite(value: float) -> float | None:
    """JSON has no infinity: None stands for 'never'."""
    return None if value == float("inf") else round(value, 3)


class ScheduledPolicy(Policy):
    """The scheduler's policy in force for one policy name, as a `Policy` (guard, calibration and aging
    included), for code that orders a queue by policy objects: the simulator's `PolicyQueue`. As with
    broker levels, a queued job's key is fixed when it is pushed; when it starves follows the bound in force."""

    def __init__(self, scheduler: Scheduler, name: str) -> None:
        base = scheduler.base_policy(name)
        self.scheduler = scheduler
        self.policy_name = base.name
        self.name = base.name  # type: ignore[misc]
        self.needs_initial_prediction = base.needs_initial_prediction  # type: ignore[misc]
        self.repredicts = base.repredicts  # type: ignore[misc]
        self.uses_predictions = base.uses_predictions  # type: ignore[misc]

    def _now(self) -> Policy:
        return self.scheduler.policy(self.policy_name)

    def score(self, job: JobView, now: float) -> float:
        return self._now().score(self.scheduler.calibrated(job), now)

    def yields(self, job: JobView) -> bool:
        return self._now().yields(job)

    def base_key(self, job: JobView, now: float) -> tuple[float, float, str]:
        return self._now().base_key(self.scheduler.calibrated(job), now)

    def starve_time(self, job: JobView) -> float:
        return self._now().starve_time(job)

    def aging_key(self, job: JobView) -> float:
        return self._now().aging_key(job)
