"""Statistics of saved runs for `elis report`: JCT by true output length, queuing delay over time, the
predictor's predicted against true remaining length at each step with Kendall's tau, and what the live quality
guard would decide from a run's predictions. Pure Python."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from elis.replay.live import LiveRecord
from elis.scheduling import guard
from elis.scheduling.levels import PriorityLevels
from elis.scheduling.scheduler import Scheduler

# Output-length buckets (tokens): edges of half-open intervals [lo, hi).
LENGTH_EDGES = (0, 32, 64, 128, 256, 512, 1024, math.inf)


def bucket_label(lo: float, hi: float) -> str:
    return f"{int(lo)}+" if math.isinf(hi) else f"{int(lo)}-{int(hi) - 1}"


def jct_by_length(records: Sequence[LiveRecord], edges: Sequence[float] = LENGTH_EDGES) -> list[tuple[str, int, float]]:
    """(bucket, jobs, mean JCT) per true output-length bucket, finished jobs only; empty buckets left out."""
    out = []
    done = [r.record for r in records if r.record.status == "done"]
    for lo, hi in itertools.pairwise(edges):
        jcts = [r.jct for r in done if lo <= r.num_output_tokens < hi]
        if jcts:
            out.append((bucket_label(lo, hi), len(jcts), sum(jcts) / len(jcts)))
    return out


def queuing_over_time(records: Sequence[LiveRecord]) -> list[tuple[float, float]]:
    """(arrival seconds from the run's first arrival, queuing delay) of each finished job, by arrival."""
    done = sorted((r.record for r in records if r.record.status == "done"), key=lambda r: r.arrival)
    if not done:
        return []
    start = min(r.record.arrival for r in records)
    return [(r.arrival - start, r.queuing_delay) for r in done]


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's tau-b as the scheduler's guard computes it (predictions that do not vary score 0, `rank_tau`);
    NaN where it is undefined."""
    tau = guard.rank_tau(xs, ys)
    return math.nan if tau is None else tau


@dataclass(frozen=True)
class PredictionPoint:
    """One prediction of one job: at `step` (0: at admission; k: after k windows) the predictor said
    `predicted` remaining tokens; `true` is what the job really generated after that point."""

    step: int
    predicted: float
    true: int


def prediction_points(records: Sequence[LiveRecord]) -> list[PredictionPoint]:
    """Every prediction of the finished jobs against the true remaining length at that point."""
    points = []
    for live in records:
        if live.record.status != "done":
            continue
        total = live.record.num_output_tokens
        if not math.isnan(live.initial_prediction):
            points.append(PredictionPoint(0, live.initial_prediction, total))
        generated = 0
        for step, (tokens, predicted) in enumerate(zip(live.window_tokens, live.predictions), start=1):
            generated += tokens
            if not math.isnan(predicted) and total - generated > 0:
                points.append(PredictionPoint(step, predicted, total - generated))
    return points


def prediction_table(points: Sequence[PredictionPoint]) -> list[tuple[str, int, float, float]]:
    """(step, predictions, mean absolute error, Kendall tau) per step, then all steps together."""
    rows = []
    for step in sorted({p.step for p in points}):
        at = [p for p in points if p.step == step]
        rows.append((str(step), len(at), _mae(at), kendall_tau([p.predicted for p in at], [p.true for p in at])))
    if points:
        rows.append(("all", len(points), _mae(points),
                     kendall_tau([p.predicted for p in points], [p.true for p in points])))
    return rows


def _mae(points: Sequence[PredictionPoint]) -> float:
    return sum(abs(p.predicted - p.true) for p in points) / len(points) if points else math.nan


def finished_jobs(records: Sequence[LiveRecord]) -> list[guard.FinishedJob]:
    """A run's finished jobs as the live guard reads them from the database (`storage.jobs.recent_finished`):
    the admission prediction and the re-predictions (`guard.step_predictions`)."""
    jobs = []
    for live in records:
        record = live.record
        if record.status != "done":
            continue
        steps = guard.step_predictions(zip(live.window_tokens, live.predictions), record.num_output_tokens)
        initial = None if math.isnan(live.initial_prediction) else float(live.initial_prediction)
        service_s = record.jct - record.admission - record.queuing_delay
        jobs.append(guard.FinishedJob(record.job_id, record.num_output_tokens, service_s, initial, steps))
    return jobs


@dataclass(frozen=True)
class GuardVerdict:
    """What the quality guard, built from the service's settings, decides after seeing one run's finished jobs:
    whether prediction policies would order the queue (`trusted`) and whether predictions may pre-empt a running
    job (`preempting`), with the measures behind both."""

    jobs: int
    admission_tau: float | None
    admission_bias: float | None
    pooled_tau: float | None
    pooled_bias: float | None
    yield_precision: float | None
    yield_pairs: int
    trusted: bool
    preempting: bool
    reason: str
    preempt_reason: str


def guard_verdict(records: Sequence[LiveRecord], settings: object) -> GuardVerdict:
    """Replay a run's finished jobs through a fresh scheduler built from `settings` (any object with the
    service's setting names, e.g. `elis.config.Settings`), as one refresh of the live guard would see them.

    A forced-length replay's live guard ignores its jobs (their lengths were not the model's to predict); a
    replay of recorded natural lengths (`--lengths-from`) is a fair test all the same, and this is how to ask
    whether its re-predictions would have earned pre-emption."""
    # Levels only set broker priorities, on which the verdict does not depend: log-spaced ones do.
    levels = PriorityLevels.log_spaced(int(settings.num_priority_levels), high=float(settings.max_tokens_limit))
    scheduler = Scheduler.from_settings(settings, levels)
    finished = finished_jobs(records)
    scheduler.observe(finished)
    quality = scheduler.quality
    return GuardVerdict(
        jobs=len(finished),
        admission_tau=quality.admission_tau, admission_bias=quality.admission_bias,
        pooled_tau=quality.pooled_tau, pooled_bias=quality.pooled_bias,
        yield_precision=quality.yield_precision, yield_pairs=quality.yield_pairs,
        trusted=not scheduler.guard.fallback, preempting=scheduler.guard.preempting,
        reason=scheduler.guard.reason, preempt_reason=scheduler.guard.preempt_reason,
    )

