"""The one window-end decision: does a running job give up its slot, and at what score and level does it wait?

The live worker (`elis.tasks.windows`) and the simulator (`elis.simulator.core`) both call `decide`, so what
the simulator predicts is what the service does.

A preemptive policy says *whether the order changed* (the waiting head sorts before the running job). That
alone is not enough to pay for a switch: the yielding job loses its slot, its context must be prefilled again
(nearly free when this worker's prefix cache still holds it), and a window end costs a broker round trip. And
when the order comes from a predictor, a small difference in predicted remaining length is mostly noise. So a
job yields only when the head is sooner by a margin that covers both (`YieldMargin`), or when the head starves
(under a preemptive policy; a non-preemptive one runs its jobs to completion, and aging only reorders its queue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from elis.scheduling.levels import PriorityLevels
from elis.scheduling.policy import Aging, JobView, Policy


@dataclass(frozen=True)
class SwitchCost:
    """What yielding costs the job that gives up its slot, in seconds, plus the seconds of one of its decode
    steps on this worker, which expresses the cost on the score scale (tokens of remaining output)."""

    seconds: float = 0.0
    step_s: float = 0.0

    @property
    def tokens(self) -> float:
        """The cost in decode steps of the yielding job (0 when the step time is not known yet)."""
        return self.seconds / self.step_s if self.step_s > 0 else 0.0


def estimate_switch_cost(context_tokens: int, *, overhead_s: float, prefill_s_per_token: float,
                         cached_prefill_s_per_token: float, cache_hit_rate: float, step_s: float) -> SwitchCost:
    """Expected cost of a switch: the window-end round trip plus the re-prefill of the job's context, which
    is cheap when the worker that resumes it still holds it in its prefix cache (probability `cache_hit_rate`,
    measured by the worker as the share of resumed windows whose previous window ran on it)."""
    hit = min(max(cache_hit_rate, 0.0), 1.0)
    per_token = hit * cached_prefill_s_per_token + (1.0 - hit) * prefill_s_per_token
    return SwitchCost(seconds=max(0.0, overhead_s) + max(0, context_tokens) * max(0.0, per_token), step_s=step_s)


@dataclass(frozen=True)
class YieldMargin:
    """How much sooner, in tokens, the waiting head must be for a running job to yield.

    margin = switch cost in tokens + uncertainty(step) x the running job's score, where `uncertainty` is the
    predictor's relative error at the job's step (tokens generated so far). It applies only to policies whose
    order comes from predictions; an exact policy (SRTF-oracle, MLFQ) pays only the switch cost.
    """

    # (tokens generated so far, relative error), ascending by step; the last entry at or below a step applies.
    uncertainty_by_step: tuple[tuple[int, float], ...] = ()
    default_uncertainty: float = 0.0
    enabled: bool = True

    def uncertainty(self, num_generated: int) -> float:
        value = self.default_uncertainty
        for step, error in self.uncertainty_by_step:
            if step > num_generated:
                break
            value = error
        return max(0.0, value)

    def tokens(self, job_score: float, num_generated: int, cost: SwitchCost, predicted: bool) -> float:
        if not self.enabled:
            return 0.0
        uncertain = self.uncertainty(num_generated) * max(job_score, 0.0) if predicted else 0.0
        return cost.tokens + uncertain

    @classmethod
    def of(cls, default_uncertainty: float, by_step: Sequence[tuple[int, float]] = (),
           enabled: bool = True) -> YieldMargin:
        return cls(tuple(sorted((int(s), float(e)) for s, e in by_step)), float(default_uncertainty), enabled)


NO_MARGIN = YieldMargin(enabled=False)


@dataclass(frozen=True)
class Decision:
    """A window end's outcome for an unfinished job: whether it yields, its score (lower = sooner) and the
    broker level it would wait at, and why (for logs and the window record)."""

    yields: bool
    score: float
    level: int
    reason: str


def decide(policy: Policy, job: JobView, head: JobView | None, now: float, levels: PriorityLevels,
           margin: YieldMargin = NO_MARGIN, cost: SwitchCost = SwitchCost(),
           predicted_preemption: bool = True) -> Decision:
    """Whether `job`, at the end of a window at time `now`, gives its slot to `head` (the job that would run
    next; None when nothing waits). Pure: the same inputs give the same decision in the worker and the
    simulator. `predicted_preemption=False` (the guard found the yield rule unreliable) keeps a policy that
    orders by predictions from pre-empting on them; a starving head still gets the slot."""
    score = policy.score(job, now)
    level = levels.level(score)
    if head is None:
        return Decision(False, score, level, "nothing waits")
    if isinstance(policy, Aging) and policy.is_starving(head, now):
        if policy.keeps_slot_against_starving(job, head, now):
            if not policy.yields(job):
                reason = "runs to completion; the starving head takes the next free slot"
            elif not policy.preempts:
                reason = "aging does not pre-empt; the starving head takes the next free slot"
            else:
                reason = "starving too, and arrived before the head"
            return Decision(False, score, level, reason)
        return Decision(True, score, level, "the head starves")
    if not policy.should_yield(job, now, head):
        reason = "runs to completion" if not policy.yields(job) else "the head is not sooner"
        return Decision(False, score, level, reason)
    if policy.uses_predictions and not predicted_preemption:
        return Decision(False, score, level, "pre-emption on predictions is off (guard)")
    head_score = policy.score(head, now)
    need = margin.tokens(score, job.num_generated, cost, policy.uses_predictions)
    if head_score + need < score:
        return Decision(True, score, level, "the head is sooner by the margin")
    return Decision(False, score, level, "the head is sooner, but within the margin")
