"""Scheduling policies: each turns a job's state into an ordering score (lower = sooner) and a yield decision.

Scores are in tokens, so one level mapping (`PriorityLevels`) serves every policy. Ties are broken by
arrival time, then job id (`sort_key`), so two runs of the same input order jobs the same way.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar

# An aged job's score: below every real score (scores are token counts >= 0), so it goes first.
AGED_SCORE = -1.0


class UnknownPolicyError(ValueError):
    """The configured policy name is not one of `policy_names()`."""


@dataclass(frozen=True)
class JobView:
    """What a policy may know about a job. Times are seconds on the service's one clock."""

    job_id: str
    arrival_time: float
    num_generated: int = 0
    # Latest predicted remaining tokens (None: no prediction available).
    predicted_remaining: float | None = None
    # Prediction made at admission from the prompt alone (SJF/SSJF).
    initial_prediction: float | None = None
    # When the job last entered the queue (arrival, or its last yield).
    enqueued_at: float | None = None
    # Seconds the job has spent running so far (attained service in time).
    service_time: float = 0.0
    # True remaining tokens, when a trace knows them (the oracle).
    true_remaining: int | None = None
    # Remaining tokens a fact of decoding fixes, not a prediction: a greedy output caught in a loop runs to its
    # token limit (elis.predictor.loops), so it has max_tokens minus what it generated left. None: not known.
    known_remaining: int | None = None
    # Context tokens the job's next start must prefill that no prefix cache holds: its prompt, before it first
    # runs. Length-aware policies count them as work (Scheduler.calibrated, elis.scheduling.work).
    prefill_tokens: int = 0

    def waited(self, now: float) -> float:
        """Seconds since the job last entered the queue."""
        since = self.arrival_time if self.enqueued_at is None else self.enqueued_at
        return max(0.0, now - since)


class Policy(ABC):
    """A scheduling policy. Subclasses set `name` and implement `score` and `yields`."""

    name: ClassVar[str]
    # Whether admission needs an initial length prediction.
    needs_initial_prediction: ClassVar[bool] = False
    # Whether the predictor re-estimates the remaining length after every window.
    repredicts: ClassVar[bool] = False
    # Whether the order comes from length predictions (so it is only as good as they rank).
    uses_predictions: ClassVar[bool] = False

    @abstractmethod
    def score(self, job: JobView, now: float) -> float:
        """Ordering score in tokens: lower runs sooner."""

    @abstractmethod
    def yields(self, job: JobView) -> bool:
        """Whether an unfinished job gives up its slot at the end of a window."""

    def sort_key(self, job: JobView, now: float) -> tuple[float, float, str]:
        """A total order: score, then arrival, then id."""
        return (self.score(job, now), job.arrival_time, job.job_id)

    def should_yield(self, job: JobView, now: float, head: JobView | None = None) -> bool:
        """Whether a job at a window end gives up its slot to `head`, the job that would run next (None:
        nothing waits).

        NOTE: a preemptive policy (`yields`) gives way only to a waiting job that goes before it, as SRTF
        does; yielding to nothing, or to a job that sorts after it, would hand the slot straight back and pay
        a re-prefill and a broker round trip for no change in order. `Aging` also makes a non-yielding job
        give way to a starving head.
        """
        return self.yields(job) and head is not None and self.sort_key(head, now) < self.sort_key(job, now)

    def starve_time(self, job: JobView) -> float:
        """When a queued job starts starving (goes first); infinity for policies without aging."""
        return math.inf

    def aging_key(self, job: JobView) -> float:
        """`starve_time` minus the part of the bound every job shares (which may change while jobs wait):
        queued jobs starve in this order whatever that part is. Infinity for policies without aging."""
        return math.inf

    def base_key(self, job: JobView, now: float) -> tuple[float, float, str]:
        """The sort key before aging: fixed while a job waits for every built-in policy."""
        return self.sort_key(job, now)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FCFS(Policy):
    """First come, first served: one level for all, so arrival order decides; runs to completion."""

    name = "fcfs"

    def score(self, job: JobView, now: float) -> float:
        return 0.0

    def yields(self, job: JobView) -> bool:
        return False


class LoopsLast(FCFS):
    """FCFS, except for jobs whose remaining length a fact of decoding fixes (`JobView.known_remaining`: a
    greedy output caught in a loop runs to its limit) and exceeds `typical_tokens`, the mean length of recently
    finished jobs: such a job gives its slot at a window end to a waiting job and then waits behind the others,
    the least known remaining first.

    It is what a re-predicting policy (ISRTF) falls back to while the quality guard finds its predictions rank
    no better than chance: the order keeps no prediction, only the one length that is certain. Swapping a job
    of known remaining R with a waiting job of expected length E shortens the pair's total completion time by
    R - E (the exchange argument of SRPT), so only jobs with more than the typical length left give way.
    """

    name = "fcfs, loops last"

    def __init__(self, typical_tokens: float, base: FCFS | None = None) -> None:
        self.typical_tokens = typical_tokens
        # The order of the jobs not demoted: arrival (FCFS), or the guard's other fallback (`PrefillFirst`).
        self.base = base or FCFS()
        if type(self.base) is not FCFS:
            self.name = f"{self.base.name}, loops last"

    def _demoted(self, job: JobView) -> bool:
        return job.known_remaining is not None and job.known_remaining > self.typical_tokens

    def score(self, job: JobView, now: float) -> float:
        return float(job.known_remaining) if self._demoted(job) else self.base.score(job, now)

    def yields(self, job: JobView) -> bool:
        return self._demoted(job)

    def __repr__(self) -> str:
        return f"LoopsLast(typical_tokens={self.typical_tokens}, base={self.base!r})"


class PrefillFirst(FCFS):
    """The least prompt prefill still to pay first, non-preemptive: what a length-aware policy falls back to
    while the quality guard finds its predictions rank no better than chance and the prefill is work
    (`Scheduler.prefill_weight` > 0). The order uses no prediction, only what the prompt's length makes certain:
    a newcomer scores `weight x prefill_tokens` decode steps (elis.scheduling.work), a job that has run scores 0.
    Output lengths unknown, that is SJF on the known part of each job's work: where output length does not
    shrink as the prompt grows, it orders by expected work. In the simulator on the Azure 2023 conversation
    lengths it gave 0.89-0.92x FCFS's mean JCT at loads 0.7-0.9, as much as the exact-length order; live on this
    project's CPU (run 42), where the prefill was a small part of the work, it lost 6-10% against FCFS order, so
    it is opt-in (`fallback_by_prefill`; docs/scheduling.md, "The fallback orders by the prefill")."""

    name = "prefill first"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def score(self, job: JobView, now: float) -> float:
        return self.weight * job.prefill_tokens

    def __repr__(self) -> str:
        return f"PrefillFirst(weight={self.weight})"


class SJF(Policy):
    """Speculative shortest job first (SSJF): the prompt-only prediction at admission; non-preemptive.

    NOTE: with no prediction (predictor down) the job scores 0 and falls back to FCFS order among equals.
    """

    name = "sjf"
    needs_initial_prediction = True
    uses_predictions = True

    def score(self, job: JobView, now: float) -> float:
        prediction = job.initial_prediction if job.initial_prediction is not None else job.predicted_remaining
        return max(0.0, prediction) if prediction is not None else 0.0

    def yields(self, job: JobView) -> bool:
        return False


class ISRTF(Policy):
    """Iterative shortest remaining time first (ELIS): re-predicted remaining length; yields every window.

    NOTE: with no prediction the job scores 0 and falls back to FCFS order among equals.
    """

    name = "isrtf"
    needs_initial_prediction = True
    repredicts = True
    uses_predictions = True

    def score(self, job: JobView, now: float) -> float:
        return max(0.0, job.predicted_remaining) if job.predicted_remaining is not None else 0.0

    def yields(self, job: JobView) -> bool:
        return True


class SRTFOracle(Policy):
    """Shortest remaining time first on the true remaining length: the bound to measure against.

    NOTE: without a known true length (live traffic) it scores 0, i.e. FCFS order.
    """

    name = "srtf-oracle"

    def score(self, job: JobView, now: float) -> float:
        return float(job.true_remaining) if job.true_remaining is not None else 0.0

    def yields(self, job: JobView) -> bool:
        return True


class MLFQ(Policy):
    """Multi-level feedback queue without a predictor: the fewer tokens received, the sooner; yields."""

    name = "mlfq"

    def score(self, job: JobView, now: float) -> float:
        return float(job.num_generated)

    def yields(self, job: JobView) -> bool:
        return True


class Aging(Policy):
    """Any policy with a bounded wait: a job that waited longer than the bound goes first.

    The bound is absolute (`max_wait_s`) plus, optionally, relative to the service the job has had
    (`service_factor` x its running time so far), so long jobs tolerate proportionally longer waits.
    """

    def __init__(self, inner: Policy, max_wait_s: float, service_factor: float = 0.0,
                 since_arrival: bool = False, preempts: bool = True) -> None:
        if max_wait_s <= 0 and service_factor <= 0:
            raise ValueError("aging needs max_wait_s > 0 or service_factor > 0")
        self.inner = inner
        self.max_wait_s = max_wait_s
        self.service_factor = service_factor
        # Count from the job's arrival, not from when it last entered the queue: a job pre-empted again and
        # again (each wait under the bound) still goes first once its whole time in the system passes it.
        self.since_arrival = since_arrival
        # Whether a starving head may take a running job's slot at its window end (preemptive inner policies
        # only); off, aging only reorders the queue under every policy.
        self.preempts = preempts
        self.name = f"{inner.name}+aging"  # type: ignore[misc]
        self.needs_initial_prediction = inner.needs_initial_prediction  # type: ignore[misc]
        self.repredicts = inner.repredicts  # type: ignore[misc]
        self.uses_predictions = inner.uses_predictions  # type: ignore[misc]

    def wait_bound(self, job: JobView) -> float:
        bound = self.max_wait_s + self.service_factor * job.service_time
        return bound if bound > 0 else math.inf

    def is_starving(self, job: JobView, now: float) -> bool:
        """Whether the job has waited longer than its bound (since it last entered the queue, or since it
        arrived with `since_arrival`)."""
        return now > self.starve_time(job)

    def base_key(self, job: JobView, now: float) -> tuple[float, float, str]:
        return self.inner.base_key(job, now)

    def _since(self, job: JobView) -> float:
        return job.arrival_time if self.since_arrival or job.enqueued_at is None else job.enqueued_at

    def starve_time(self, job: JobView) -> float:
        return self._since(job) + self.wait_bound(job)

    def aging_key(self, job: JobView) -> float:
        if math.isinf(self.wait_bound(job)):
            return math.inf
        return self._since(job) + self.service_factor * job.service_time

    def should_yield(self, job: JobView, now: float, head: JobView | None = None) -> bool:
        """A running job of a preemptive inner policy (ISRTF, MLFQ, SRTF) yields at its window end to a
        starving head. Under a non-preemptive one (FCFS, SJF) aging only reorders the queue: the starving job
        takes the next slot that frees (see `keeps_slot_against_starving`)."""
        if self.inner.should_yield(job, now, head):
            return True
        if head is None or not self.is_starving(head, now):
            return False
        return not self.keeps_slot_against_starving(job, head, now)

    def keeps_slot_against_starving(self, job: JobView, head: JobView, now: float) -> bool:
        """Whether a running job keeps its slot although the head starves.

        - Under a non-preemptive inner policy it always does. Pre-empting it would move the starvation, not
          end it: where jobs queue long enough to starve, the yielded job went back behind every shorter or
          starving job and waited, in run 21 of docs/scheduling.md, 20-40 s to finish a job of 63-512 tokens
          (5-11 such jobs a run under SJF, 1-2 s on every job's mean JCT), while the starving head would have
          had a slot at the next job's end anyway (seconds away with several slots). FCFS never pre-empts, so
          this also keeps a guard's FCFS fallback the FCFS its outcome guard compares with.
        - Starving jobs go in arrival order: counted from arrival, a running job can be starving too, and it
          keeps its slot against a starving head that arrived after it (else two old jobs would swap every
          window, each swap a re-prefill and a broker round trip)."""
        if not self.inner.yields(job) or not self.preempts:
            return True
        return self.since_arrival and self.is_starving(job, now) and job.arrival_time <= head.arrival_time

    def score(self, job: JobView, now: float) -> float:
        return AGED_SCORE if self.is_starving(job, now) else self.inner.score(job, now)

    def yields(self, job: JobView) -> bool:
        return self.inner.yields(job)

    def __repr__(self) -> str:
        return (f"Aging({self.inner!r}, max_wait_s={self.max_wait_s}, service_factor={self.service_factor}, "
                f"since_arrival={self.since_arrival}, preempts={self.preempts})")


_POLICIES: dict[str, type[Policy]] = {cls.name: cls for cls in (FCFS, SJF, ISRTF, SRTFOracle, MLFQ)}
_ALIASES = {"ssjf": "sjf", "srtf": "srtf-oracle", "oracle": "srtf-oracle"}


def policy_names() -> list[str]:
    return sorted(_POLICIES)


def make_policy(name: str, max_wait_s: float = 0.0, service_factor: float = 0.0) -> Policy:
    """The one factory: a policy by name (case-insensitive), optionally with aging. Fails fast."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _POLICIES:
        raise UnknownPolicyError(f"unknown policy {name!r}; choose one of {', '.join(policy_names())}")
    policy = _POLICIES[key]()
    if max_wait_s > 0 or service_factor > 0:
        return Aging(policy, max_wait_s, service_factor)
    return policy


def with_prediction(job: JobView, predicted_remaining: float | None) -> JobView:
    """The same job with a new latest prediction (None keeps the last one: the predictor failed)."""
    if predicted_remaining is None:
        return job
    return replace(job, predicted_remaining=predicted_remaining)
