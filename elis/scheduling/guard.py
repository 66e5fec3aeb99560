"""The live quality guard: how well do the predictions rank the jobs that finished? Fall back when not (to
FCFS, or opt-in the known prefill first: `Scheduler.fallback_order`).

A length-aware order is only as good as the predictions behind it. On traffic the predictor never saw, it can
rank no better than chance, and then SSJF and ISRTF reorder jobs for nothing (and pay for every switch). The
service measures, from its own finished jobs, the Kendall tau between predictions and true lengths:

- at admission (the prompt alone: what SSJF orders by, and what a newcomer is compared on);
- pooled over every re-prediction after a window, against the true remaining length then (what ISRTF
  compares: predictions made at different steps, so a bias between steps shows up here);
- per step, for the operator.

`QualityGuard` turns the measure into a decision with hysteresis: below `threshold` the order falls back to
FCFS; it comes back at `threshold + hysteresis`. Until `min_jobs` jobs have finished, it keeps its start state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# Pooled predictions beyond this many are subsampled evenly (keeps a refresh cheap on a busy worker).
MAX_POOLED_POINTS = 5000
# What the pre-emption gate bars (QualityGuard.preempt_measure).
PREEMPT_MEASURES = ("sign", "gain")
# The yield precision looks at every pair of this many pooled predictions (O(n^2)).
MAX_PRECISION_POINTS = 400


def _tie_pairs(values: Sequence) -> int:
    """Pairs of equal values in an already sorted sequence."""
    total, run = 0, 1
    for previous, current in zip(values, values[1:]):
        if current == previous:
            run += 1
        else:
            total += run * (run - 1) // 2
            run = 1
    return total + run * (run - 1) // 2


def _inversions(values: list) -> int:
    """Strict inversions (i < j, values[i] > values[j]) by a bottom-up merge sort: O(n log n)."""
    count, width, n = 0, 1, len(values)
    source = list(values)
    while width < n:
        target = []
        for start in range(0, n, 2 * width):
            left, right = source[start:start + width], source[start + width:start + 2 * width]
            i = j = 0
            while i < len(left) and j < len(right):
                if right[j] < left[i]:
                    target.append(right[j])
                    count += len(left) - i
                    j += 1
                else:
                    target.append(left[i])
                    i += 1
            target.extend(left[i:])
            target.extend(right[j:])
        source, width = target, 2 * width
    return count


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties in either variable handled), in O(n log n) (Knight's method); None when undefined
    (fewer than 2 points, or one variable constant)."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("xs and ys differ in length")
    if n < 2:
        return None
    pairs = sorted(zip(xs, ys))
    total = n * (n - 1) // 2
    ties_x = _tie_pairs([x for x, _ in pairs])
    ties_xy = _tie_pairs(pairs)
    discordant = _inversions([y for _, y in pairs])
    ties_y = _tie_pairs(sorted(ys))
    denominator = math.sqrt((total - ties_x) * (total - ties_y))
    if denominator == 0:
        return None
    return (total - ties_x - ties_y + ties_xy - 2 * discordant) / denominator


def rank_tau(predicted: Sequence[float], true: Sequence[float]) -> float | None:
    """The guard's Kendall tau of predictions against true lengths: tau-b, except that predictions that do not
    vary rank nothing and score 0.0 where the true lengths vary (tau-b is undefined there). Without this, a
    constant predictor's admission tau was undefined, the guard judged its pooled re-prediction tau alone, and
    the per-step calibration (one factor per step) turned the constants into the mean remaining length at each
    step, which ranks when pooled over steps: a predictor that knows nothing of the prompt earned trust.
    None when the true lengths do not vary either (nothing to rank) or fewer than 2 points."""
    tau = kendall_tau(predicted, true)
    if tau is None and len(predicted) >= 2 and len(set(predicted)) == 1 and len(set(true)) > 1:
        return 0.0
    return tau


@dataclass(frozen=True)
class YieldCheck:
    """How the yield rule fares on finished jobs' predictions, over every ordered pair of (predicted, true
    remaining) points where b is predicted sooner than a by the margin (pred_b < (1 - uncertainty) x pred_a):

    - `precision`: the share of such pairs where b is truly shorter (the sign only);
    - `gain_share`: the tokens the right yields save, as a share of the tokens all of them move (sum of
      true_a - true_b where b is truly shorter, over the sum of |true_a - true_b|). Above 0.5 the yields the
      rule would make gain more than they lose, before the switch cost; a predictor right in the many pairs
      that differ little and wrong in the few that differ a lot has a fair precision and a poor gain share.

    Rank correlation is not enough to preempt on: a predictor with a fair tau can still be wrong in exactly
    the extreme pairs that trigger a yield, and a wrong yield delays a job by the whole of another's work.
    """

    precision: float | None = None
    gain_share: float | None = None
    pairs: int = 0


def check_yield_rule(points: Sequence[tuple[float, float]], uncertainty: float) -> YieldCheck:
    """The yield rule's precision and gain share on these (predicted, true remaining) points (see YieldCheck)."""
    factor = 1.0 - min(max(uncertainty, 0.0), 1.0)
    ordered = sorted(points)  # by prediction: only pairs with pred_b < factor * pred_a count
    hits = total = 0
    gained = moved = 0.0
    for i, (pred_a, true_a) in enumerate(ordered):
        limit = factor * pred_a
        for pred_b, true_b in ordered[:i]:
            if pred_b >= limit:
                break
            total += 1
            hits += true_b < true_a
            gained += max(true_a - true_b, 0.0)
            moved += abs(true_a - true_b)
    if not total:
        return YieldCheck()
    return YieldCheck(hits / total, gained / moved if moved > 0 else None, total)


def _bias(predicted: Sequence[float], true: Sequence[float]) -> float | None:
    total_true = sum(true)
    return sum(predicted) / total_true if total_true > 0 else None


def step_predictions(windows: Iterable[tuple[int, float | None]], output_tokens: int) -> tuple[tuple[int, float], ...]:
    """A finished job's re-predictions as the guard judges them: from (tokens the window generated, prediction
    after it) in window order, (tokens generated so far, prediction) for each window that left tokens to rank
    (a prediction made once the job is done has nothing left to rank). Missing predictions (None or NaN) are
    skipped."""
    generated, steps = 0, []
    for num_tokens, prediction in windows:
        generated += num_tokens
        if prediction is not None and not math.isnan(prediction) and generated < output_tokens:
            steps.append((generated, float(prediction)))
    return tuple(steps)


@dataclass(frozen=True)
class FinishedJob:
    """What the guard and the aging bound learn from one finished job."""

    job_id: str
    output_tokens: int
    service_s: float
    initial_prediction: float | None = None
    # (tokens generated when predicted, predicted remaining tokens), one per window re-prediction.
    step_predictions: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class StepQuality:
    """Rank quality of the predictions made after `step` tokens."""

    step: int
    num: int
    tau: float | None
    bias: float | None


@dataclass(frozen=True)
class RankQuality:
    """How well predictions ranked the last `num_jobs` finished jobs (tau: Kendall tau-b; bias: mean
    predicted / mean true remaining tokens)."""

    num_jobs: int
    admission_num: int = 0
    admission_tau: float | None = None
    admission_bias: float | None = None
    pooled_num: int = 0
    pooled_tau: float | None = None
    pooled_bias: float | None = None
    # Of the prediction pairs that would trigger a yield at the scheduler's margin, the share truly ordered.
    yield_precision: float | None = None
    yield_pairs: int = 0
    # Of the tokens those yields would move, the share that the right ones save (YieldCheck.gain_share).
    yield_gain_share: float | None = None
    per_step: tuple[StepQuality, ...] = ()

    def as_dict(self) -> dict:
        return {
            "num_jobs": self.num_jobs,
            "admission": {"n": self.admission_num, "tau": round_or_none(self.admission_tau),
                          "bias": round_or_none(self.admission_bias)},
            "pooled": {"n": self.pooled_num, "tau": round_or_none(self.pooled_tau),
                       "bias": round_or_none(self.pooled_bias)},
            "yield_precision": {"pairs": self.yield_pairs, "precision": round_or_none(self.yield_precision),
                                "gain_share": round_or_none(self.yield_gain_share)},
            "per_step": [{"step": s.step, "n": s.num, "tau": round_or_none(s.tau), "bias": round_or_none(s.bias)}
                         for s in self.per_step],
        }


def round_or_none(value: float | None) -> float | None:
    """A measure rounded to 4 places for JSON and logs (None stays None)."""
    return None if value is None else round(value, 4)


def _evenly(points: list, limit: int) -> list:
    if len(points) <= limit:
        return points
    stride = len(points) / limit
    return [points[int(i * stride)] for i in range(limit)]


def measure_rank_quality(jobs: Sequence[FinishedJob], max_steps: int = 8,
                         scale: Callable[[int], float] | None = None, margin: float = 0.0) -> RankQuality:
    """Rank quality of admission predictions, pooled re-predictions, and re-predictions per step.

    `scale(step)` multiplies each prediction made after `step` tokens before the pooled tau is taken: the
    pooled tau then judges the calibrated predictions the scheduler really compares. Per-step figures are
    those of the raw predictions (a per-step scale changes no rank within a step).
    """
    admission = [(j.initial_prediction, j.output_tokens) for j in jobs if j.initial_prediction is not None]
    pooled: list[tuple[int, float, int]] = []
    for job in jobs:
        for step, predicted in job.step_predictions:
            remaining = job.output_tokens - step
            if remaining > 0:
                pooled.append((step, predicted, remaining))
    steps: dict[int, list[tuple[float, int]]] = {}
    for step, predicted, remaining in pooled:
        steps.setdefault(step, []).append((predicted, remaining))
    per_step = tuple(
        StepQuality(step, len(pairs), rank_tau([p for p, _ in pairs], [t for _, t in pairs]),
                    _bias([p for p, _ in pairs], [t for _, t in pairs]))
        for step, pairs in sorted(steps.items())[:max_steps]
    )
    # The pooled comparison also pits newcomers (admission predictions) against running jobs.
    pooled_all = [(0, p, t) for p, t in admission] + pooled
    sample = _evenly([(s, p * (scale(s) if scale else 1.0), t) for s, p, t in pooled_all], MAX_POOLED_POINTS)
    check = check_yield_rule([(p, t) for _, p, t in _evenly(sample, MAX_PRECISION_POINTS)], margin)
    return RankQuality(
        num_jobs=len(jobs),
        admission_num=len(admission),
        admission_tau=rank_tau([p for p, _ in admission], [t for _, t in admission]),
        admission_bias=_bias([p for p, _ in admission], [t for _, t in admission]),
        pooled_num=len(pooled),
        pooled_tau=rank_tau([p for _, p, _ in sample], [t for _, _, t in sample]) if pooled else None,
        pooled_bias=_bias([p for _, p, _ in pooled], [t for _, _, t in pooled]),
        yield_precision=check.precision if pooled else None,
        yield_pairs=check.pairs if pooled else 0,
        yield_gain_share=check.gain_share if pooled else None,
        per_step=per_step,
    )


@dataclass
class QualityGuard:
    """Decides, from the measured rank quality, whether length-aware order is trusted or falls back (the
    Scheduler chooses the fallback order: FCFS, or opt-in the known prefill first).

    The judged tau is the lowest of the admission tau and the pooled re-prediction tau (each once it rests
    on `min_jobs` finished jobs). Falls back below `threshold`, recovers at `threshold + hysteresis`. Until enough
    jobs have finished it keeps the start state: `start_in_fallback=True` means a predictor must earn trust
    on this service's traffic before it reorders anything.
    """

    threshold: float = 0.2
    hysteresis: float = 0.05
    min_jobs: int = 20
    enabled: bool = True
    start_in_fallback: bool = True
    # Pre-emption on predictions needs more than a fair rank: the yield rule must be right this often (the
    # Settings default, guard_preempt_precision, chosen with the yield margin on live predictions).
    preempt_precision: float = 0.75
    # Pre-emption comes on at `preempt_precision` and, once on, goes off below `preempt_precision - this`.
    preempt_hysteresis: float = 0.02
    # What `preempt_precision` bars: "sign" (the share of the rule's yields that are right) or "gain" (the
    # share of the tokens they move that the right ones save; see YieldCheck).
    preempt_measure: str = "sign"
    fallback: bool = field(init=False)
    reason: str = field(init=False)
    judged_tau: float | None = field(init=False, default=None)
    # Whether a running job may yield to a head that predictions say is sooner (starving heads always win).
    preempting: bool = field(init=False)
    preempt_reason: str = field(init=False)
    # Whether pre-emption has been judged on evidence yet (until then the scheduler re-predicts every window
    # of a re-predicting policy, so the evidence comes in a few jobs rather than a few dozen).
    preempt_judged: bool = field(init=False)
    # The yield rule's last measured precision and gain share (None until judged).
    measured_precision: float | None = field(init=False, default=None)
    measured_gain_share: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.preempt_measure not in PREEMPT_MEASURES:
            raise ValueError(f"preempt_measure must be one of {', '.join(PREEMPT_MEASURES)}, "
                             f"not {self.preempt_measure!r}")
        # Trusting at the start (start_in_fallback=False) trusts pre-emption too, until evidence says otherwise.
        self.preempting = not (self.enabled and self.start_in_fallback)
        self.preempt_judged = not self.enabled
        self.preempt_reason = ("guard disabled" if not self.enabled else
                               f"pre-emption {'off' if not self.preempting else 'on'}: fewer than {self.min_jobs} "
                               "re-predictions of finished jobs to judge it by")
        self.fallback = self.enabled and self.start_in_fallback
        self.reason = (f"no evidence yet: fewer than {self.min_jobs} finished jobs with predictions"
                       if self.fallback else "predictions trusted (not judged yet)")
        if not self.enabled:
            self.reason = "guard disabled"

    def judged(self, quality: RankQuality) -> float | None:
        """The lowest of the admission tau and the pooled tau, each once `min_jobs` finished jobs back it. The
        pooled tau has many points per job (one per re-prediction), so it waits for the jobs, not the points: on
        a fresh service, 6 finished jobs gave 31 re-predictions ranking at tau 0.31 while their admission
        predictions ranked at 0.07, and ISRTF was trusted for two minutes, until the admission tau rested on
        20 jobs (-0.12); 43 of 80 jobs were admitted in its order (run 31 of docs/scheduling.md)."""
        candidates = []
        if quality.admission_num >= self.min_jobs and quality.admission_tau is not None:
            candidates.append(quality.admission_tau)
        if quality.num_jobs >= self.min_jobs and quality.pooled_num >= self.min_jobs and quality.pooled_tau is not None:
            candidates.append(quality.pooled_tau)
        return min(candidates) if candidates else None

    def update(self, quality: RankQuality, preemption: RankQuality | None = None) -> bool:
        """Take a new measurement; returns True when the fallback state changed. `preemption`: the measurement
        pre-emption is judged by, when it rests on more jobs than `quality` (default: `quality`)."""
        if not self.enabled:
            return False
        evidence = quality if preemption is None else preemption
        measured = evidence.yield_gain_share if self.preempt_measure == "gain" else evidence.yield_precision
        if evidence.pooled_num >= self.min_jobs and measured is not None:
            self.measured_precision, self.measured_gain_share = evidence.yield_precision, evidence.yield_gain_share
            bar = self.preempt_precision - (self.preempt_hysteresis if self.preempting and self.preempt_judged else 0.0)
            self.preempting = measured >= bar
            self.preempt_judged = True
            verdict = "on" if self.preempting else "off"
            what = ("saved {:.1f}% of the tokens they move" if self.preempt_measure == "gain"
                    else "was right in {:.1f}%").format(100 * measured)
            self.preempt_reason = (f"pre-emption {verdict}: the yield rule {what} over {evidence.yield_pairs} "
                                   f"prediction pairs of {evidence.num_jobs} finished jobs "
                                   f"(needs {100 * bar:.0f}%{' to stay on' if bar < self.preempt_precision else ''})")
        tau = self.judged(quality)
        self.judged_tau = tau
        if tau is None:
            return False
        before = self.fallback
        if self.fallback and tau >= self.threshold + self.hysteresis:
            self.fallback = False
        elif not self.fallback and tau < self.threshold:
            self.fallback = True
        if self.fallback:
            self.reason = (f"fallback order: predictions rank at tau {tau:.3f} over the last "
                           f"{quality.num_jobs} finished jobs (needs >= {self.threshold + self.hysteresis:.2f})")
        else:
            self.reason = f"predictions trusted: tau {tau:.3f} over the last {quality.num_jobs} finished jobs"
        return self.fallback != before


def aging_bound(service_times: Sequence[float], factor: float, floor_s: float) -> float:
    """A bounded wait derived from what jobs cost: `factor` x the mean service time of recently finished
    jobs, never below `floor_s`. A job in the system longer than this (since it arrived, by default; or since it
    last entered the queue) goes first. `scheduler.AgingRule` also keeps the bound at FCFS's recent mean JCT or
    above."""
    times = [t for t in service_times if t > 0]
    if not times:
        return floor_s
    return max(floor_s, factor * sum(times) / len(times))


@dataclass(frozen=True)
class StepCalibration:
    """Puts predictions made at different steps on one scale, learned from finished jobs.

    A predictor can be biased differently at admission than after a few windows (measured: 0.34x the true
    remaining length at admission, 0.45x after four windows, on a source it never saw). ISRTF compares a
    newcomer's admission prediction with a running job's re-prediction, so such a bias makes every newcomer
    look shorter. `factor(step)` = mean true / mean predicted remaining tokens of the predictions made at that
    step (admission is step 0), once `min_points` predictions back it, clipped to [1/max_factor, max_factor].
    """

    factors: tuple[tuple[int, float], ...] = ()

    def factor(self, step: int) -> float:
        value = 1.0
        for at, factor in self.factors:
            if at > step:
                break
            value = factor
        return value

    @classmethod
    def fit(cls, jobs: Sequence[FinishedJob], min_points: int = 10, max_factor: float = 5.0) -> StepCalibration:
        sums: dict[int, list[float]] = {}
        for job in jobs:
            if job.initial_prediction is not None:
                entry = sums.setdefault(0, [0.0, 0.0, 0])
                entry[0] += job.initial_prediction
                entry[1] += job.output_tokens
                entry[2] += 1
            for step, predicted in job.step_predictions:
                remaining = job.output_tokens - step
                if remaining > 0:
                    entry = sums.setdefault(step, [0.0, 0.0, 0])
                    entry[0] += predicted
                    entry[1] += remaining
                    entry[2] += 1
        factors = []
        for step, (predicted, true, count) in sorted(sums.items()):
            if count >= min_points and predicted > 0:
                factors.append((step, min(max(true / predicted, 1.0 / max_factor), max_factor)))
        return cls(tuple(factors))
