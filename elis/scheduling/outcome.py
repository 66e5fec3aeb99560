"""The outcome guard: did the length-aware order actually finish jobs sooner than FCFS would have? If not, stop.

The quality guard (`guard.py`) judges the predictions: do they rank? A predictor can rank fairly and the order
still lose, because it is wrong in exactly the pairs that pre-empt, or because a switch costs more than the
margin expects. So the service also judges the outcome, from its own finished jobs:

1. take the last jobs that arrived at least a horizon ago (the aging bound: a job still in the system after it
   waits longer than aging allows), finished or not: an order that starves long jobs cannot look good by
   leaving them out. A job not finished yet is **censored**: what it likely still needs is the mean residual
   length of the finished jobs longer than what it has generated (`mean_residual_tokens`, at most its tokens
   left under max_tokens) at the cohort's time per token; its slot time is what it has held plus that, and its
   JCT is its time in the system so far plus that (it cannot finish sooner than if it held a slot from now on:
   counting only its wait so far hid a starving order until its starving jobs finished);
2. replay that cohort under FCFS on the same number of slots, each job holding a slot for as long as it did in
   reality minus what only the length-aware order pays (its re-predictions): the **counterfactual** FCFS
   completion times of the very same jobs, on the very same engine speed (so the engine's drift, which swamps
   run-to-run comparisons on a shared machine, cancels out). The work still in the system when the cohort's
   first job arrived (the backlog: earlier jobs, what they had left to run then) goes first, as FCFS would
   serve it: without it a cohort cut from a long queue would be replayed into idle slots;
3. compare the realized mean JCT of the jobs the policy ordered with their counterfactual FCFS mean JCT.

Above `1 + tolerance`, `OutcomeGuard` trips: the order falls back to FCFS. It tries the policy again after
`retry_jobs` jobs have finished in FCFS order, doubling that each time it trips again (up to the guard's window of
jobs), as a circuit breaker does. It does not see a loss of engine throughput (a slower engine makes the
counterfactual slower too): that is what the margin and re-predicting only where it matters keep small.

Checked (docs/scheduling.md, "The outcome guard"): on FCFS runs the counterfactual reproduces the realized mean
JCT at 0.997-1.000 in the simulator and at 1.005 live (exact window spans from the database); on the recorded
live runs, given each FCFS job's true time in the system, at 1.004-1.022.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class JobOutcome:
    """One job of a cohort: when it arrived and finished (seconds, any common clock), the spans it held a slot for
    work FCFS would also have paid (`spans`: each window and its window-end work, minus re-predictions), and
    whether the outcome guard judges it (it was ordered by the length-aware policy; FCFS jobs and jobs from an
    FCFS period still share the slots, so they are replayed)."""

    arrival_s: float
    finish_s: float  # a job not finished yet: the time of the reading (censored)
    spans: tuple[tuple[float, float], ...]
    judged: bool = True
    # A job not finished yet: the slot time it likely still needs (0 for a finished job).
    remaining_s: float = 0.0
    policy: str = ""  # the policy it was admitted under ("": the service's default)

    @property
    def jct_s(self) -> float:
        """Time in the system; a censored job's at the earliest: its wait so far plus what it still needs."""
        return self.finish_s + self.remaining_s - self.arrival_s

    @property
    def slot_s(self) -> float:
        return sum(max(end - start, 0.0) for start, end in self.spans) + self.remaining_s

    def slot_s_after(self, t: float) -> float:
        """The slot time this job still had ahead of it at time `t`."""
        return sum(max(end - max(start, t), 0.0) for start, end in self.spans) + self.remaining_s


def fcfs_counterfactual(outcomes: Sequence[JobOutcome], slots: int,
                        backlog: Sequence[JobOutcome] = ()) -> list[float]:
    """Completion times (JCT, seconds) of the jobs under FCFS on `slots` slots, each holding a slot for its
    `slot_s`, in the order of `outcomes` as given. `backlog`: earlier jobs still in the system at the first
    arrival; what they had left to run then goes first (in their arrival order)."""
    if slots < 1:
        raise ValueError("slots must be >= 1")
    free: list[float] = []  # when each busy slot frees up; fewer than `slots` entries: a slot is idle
    if outcomes:
        t0 = min(job.arrival_s for job in outcomes)
        for job in sorted(backlog, key=lambda j: j.arrival_s):
            left = job.slot_s_after(t0)
            if left > 0:
                start = t0 if len(free) < slots else max(heapq.heappop(free), t0)
                heapq.heappush(free, start + left)
    order = sorted(range(len(outcomes)), key=lambda i: (outcomes[i].arrival_s, i))
    jcts = [0.0] * len(outcomes)
    for i in order:
        job = outcomes[i]
        start = job.arrival_s if len(free) < slots else max(heapq.heappop(free), job.arrival_s)
        end = start + job.slot_s
        heapq.heappush(free, end)
        jcts[i] = end - job.arrival_s
    return jcts


# Overlaps this short or shorter do not count as another slot. A job that keeps its slot starts its next window
# just after its last window's end work, and that end is `ended_at + overhead_s`: a wall-clock time plus a
# perf_counter duration, which overshot the next start by 1 ms in run 39 (job 016d8dcd, windows 0 and 1). One such
# overlap on a 4-slot worker counted 5 slots, made the FCFS counterfactual 35% faster, and tripped the outcome
# guard on an order that took 0.69x FCFS's mean. `recent_cohort` also clips each window at the start of its
# job's next one; this covers any other hand-over. A real extra slot holds for a whole window (seconds).
MIN_SLOT_OVERLAP_S = 0.1


def peak_concurrency(intervals: Iterable[tuple[float, float]], min_overlap_s: float = MIN_SLOT_OVERLAP_S) -> int:
    """The most intervals (start, end) open together for longer than `min_overlap_s`: how many slots the jobs
    were served on."""
    events = []
    for start, end in intervals:
        if end > start:
            events.append((start, 1))
            # Ending each interval early drops the overlaps up to `min_overlap_s` and nothing else; an interval
            # shorter than twice that keeps its first half, so a lone short window still counts as a slot.
            events.append((end - min(min_overlap_s, (end - start) / 2), -1))
    events.sort()  # at a tie an end (-1) sorts first: back-to-back windows of one slot do not count twice
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def mean_residual_tokens(lengths: Sequence[int], generated: int, cap: int) -> float:
    """Tokens a job that has generated `generated` likely still needs: the mean of (length - generated) over
    the finished jobs' `lengths` longer than that, at most `cap - generated`; `cap - generated` when no
    finished job was longer."""
    left = max(cap - generated, 0)
    longer = [length for length in lengths if length > generated]
    if not longer:
        return float(left)
    return min(sum(longer) / len(longer) - generated, float(left))


@dataclass(frozen=True)
class ResidualEstimate:
    """What a censored job likely still needs, learned from the finished jobs of its cohort: their lengths
    (tokens) and the slot seconds they took per token."""

    lengths: tuple[int, ...]
    seconds_per_token: float

    @classmethod
    def of(cls, finished: Iterable[tuple[float, int]]) -> ResidualEstimate:
        """From (slot seconds, output tokens) of finished jobs."""
        pairs = list(finished)
        tokens = sum(n for _, n in pairs)
        return cls(tuple(n for _, n in pairs), sum(s for s, _ in pairs) / tokens if tokens else 0.0)

    def remaining_s(self, generated: int, cap: int) -> float:
        return mean_residual_tokens(self.lengths, generated, cap) * self.seconds_per_token


@dataclass(frozen=True)
class Cohort:
    """The jobs judged together (see the module's docstring), the slots they were served on, and the backlog:
    earlier jobs still in the system at the cohort's first arrival."""

    jobs: tuple[JobOutcome, ...]
    slots: int
    backlog: tuple[JobOutcome, ...] = ()


@dataclass(frozen=True)
class OutcomeCheck:
    """The realized mean JCT of the judged jobs against their counterfactual FCFS mean JCT."""

    num_jobs: int  # the cohort replayed
    num_judged: int
    slots: int
    realized_mean_s: float
    fcfs_mean_s: float

    @property
    def ratio(self) -> float:
        return self.realized_mean_s / self.fcfs_mean_s if self.fcfs_mean_s > 0 else 1.0

    def as_dict(self) -> dict:
        return {"num_jobs": self.num_jobs, "num_judged": self.num_judged, "slots": self.slots,
                "realized_mean_s": round(self.realized_mean_s, 3), "fcfs_mean_s": round(self.fcfs_mean_s, 3),
                "ratio": round(self.ratio, 4)}


def fcfs_mean_jct(cohort: Cohort) -> float:
    """The mean JCT FCFS would have given every job of the cohort (after its backlog), on its slots."""
    jcts = fcfs_counterfactual(cohort.jobs, cohort.slots, cohort.backlog)
    return sum(jcts) / len(jcts) if jcts else 0.0


def measure_outcome(outcomes: Sequence[JobOutcome], slots: int,
                    backlog: Sequence[JobOutcome] = ()) -> OutcomeCheck | None:
    """Replay the cohort (after its backlog) under FCFS and compare the judged jobs; None when none is judged."""
    judged = [i for i, job in enumerate(outcomes) if job.judged]
    if not judged or slots < 1:
        return None
    counterfactual = fcfs_counterfactual(outcomes, slots, backlog)
    realized = sum(outcomes[i].jct_s for i in judged) / len(judged)
    fcfs = sum(counterfactual[i] for i in judged) / len(judged)
    return OutcomeCheck(len(outcomes), len(judged), slots, realized, fcfs)


@dataclass
class OutcomeGuard:
    """Falls back to FCFS when the judged jobs finished later than FCFS would have finished them, by more than
    `tolerance` (a ratio), over at least `min_jobs` judged jobs; tries again after `retry_jobs` jobs finished
    in FCFS order, doubling on every further trip, never past `max_retry_jobs` (the window the service reads)."""

    enabled: bool = True
    tolerance: float = 0.05
    min_jobs: int = 50
    retry_jobs: int = 100
    max_retry_jobs: int = 200
    tripped: bool = False
    trips: int = 0
    last: OutcomeCheck | None = None
    reason: str = "not judged yet"

    @property
    def retry_after(self) -> int:
        """Jobs to serve in FCFS order before the policy is tried again."""
        return min(self.retry_jobs * 2 ** max(self.trips - 1, 0), self.max_retry_jobs)

    def update(self, check: OutcomeCheck | None, jobs_since_change: int) -> bool:
        """Take a new check (of the jobs ordered by the policy since it was last switched on) or, while tripped,
        the count of jobs finished since the trip. Returns True when the state changed."""
        if not self.enabled:
            changed, self.tripped = self.tripped, False
            self.reason = "outcome guard off"
            return changed
        if self.tripped:
            if jobs_since_change >= self.retry_after:
                self.tripped = False
                self.last = None
                self.reason = f"trying the policy again after {jobs_since_change} jobs in FCFS order"
                return True
            self.reason = (f"FCFS order: the policy's jobs took {self._ratio_text()} their FCFS counterfactual; "
                           f"retry after {self.retry_after} jobs ({jobs_since_change} so far)")
            return False
        self.last = check
        if check is None or check.num_judged < self.min_jobs:
            judged = 0 if check is None else check.num_judged
            self.reason = f"judging: {judged} of {self.min_jobs} jobs ordered by the policy so far"
            return False
        if check.ratio > 1.0 + self.tolerance:
            self.tripped = True
            self.trips += 1
            self.reason = (f"tripped: the policy's {check.num_judged} jobs took {check.ratio:.3f}x their FCFS "
                           f"counterfactual (tolerance {self.tolerance:.2f}); FCFS for {self.retry_after} jobs")
            return True
        self.reason = f"ok: {check.ratio:.3f}x the FCFS counterfactual over {check.num_judged} jobs"
        return False

    def _ratio_text(self) -> str:
        return "more than" if self.last is None else f"{self.last.ratio:.3f}x"

    def as_dict(self) -> dict:
        return {"enabled": self.enabled, "tripped": self.tripped, "trips": self.trips, "reason": self.reason,
                "tolerance": self.tolerance, "min_jobs": self.min_jobs, "retry_after_jobs": self.retry_after,
                "check": None if self.last is None else self.last.as_dict()}
