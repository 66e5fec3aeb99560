"""A live run, replayed in the simulator with its own predictions: what would these jobs have got under another
policy or setting?

`elis compare` writes one records CSV per run: each job's arrival, prompt and output lengths, its admission
prediction and its re-predictions after each window. Replaying those jobs with those predictions
(`ReplayedPredictions`) orders each job as the live predictor saw it, errors included, where a noise model of the
predictor would only guess at them; the arrivals can also be compressed or stretched to other loads. Each
policy runs under the service's own scheduler (`Scheduler.from_settings`), with optional setting overrides.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from elis.replay.report import Summary
from elis.replay.workload import TraceJob
from elis.scheduling.policy import make_policy
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.length_models import ReplayedPredictions

REQUIRED_COLUMNS = ("item", "arrival", "num_prompt_tokens", "num_output_tokens")


@dataclass(frozen=True)
class LiveRun:
    """The jobs of a live run (arrivals from 0, job ids = the workload's items) and the predictions made of them."""

    jobs: tuple[TraceJob, ...]
    predictions: ReplayedPredictions
    max_tokens: int


def read_live_run(paths: Sequence[str | Path], window_tokens: int = 50, max_tokens: int | None = None) -> LiveRun:
    """Jobs from the first records CSV; predictions from all of them (the records of runs of one workload: rounds,
    other settings). `max_tokens` default: 512, or 1024 if an output is longer (the longest output beyond that).
    Raises ValueError, naming the file, on a missing column or value, a bad number, a repeated item, an empty
    file, or windows of another size than `window_tokens` (predictions are indexed by window)."""
    if not paths:
        raise ValueError("give at least one records CSV of `elis compare`")
    rows = _read_rows(Path(paths[0]), window_tokens)
    try:
        start = min(float(row["arrival"]) for row in rows)
        jobs = tuple(TraceJob(str(row["item"]), float(row["arrival"]) - start, int(row["num_prompt_tokens"]),
                              int(row["num_output_tokens"])) for row in sorted(rows, key=lambda r: float(r["arrival"])))
    except ValueError as exc:
        raise ValueError(f"{paths[0]}: not a number where one belongs ({exc})") from None
    seen: set[str] = set()
    for job in jobs:
        if job.job_id in seen:
            raise ValueError(f"{paths[0]}: item {job.job_id!r} appears twice (one run's records per file)")
        seen.add(job.job_id)
    by_job: dict[str, dict[int, float]] = {}
    for path, path_rows in [(paths[0], rows)] + [(p, _read_rows(Path(p), window_tokens)) for p in paths[1:]]:
        try:
            ReplayedPredictions.add_rows(by_job, path_rows)
        except ValueError as exc:
            raise ValueError(f"{path}: a prediction is not a number ({exc})") from None
    longest = max(job.num_output_tokens for job in jobs)
    default_cap = 512 if longest <= 512 else max(1024, longest)
    return LiveRun(jobs, ReplayedPredictions(by_job, window_tokens), max_tokens or default_cap)


def _read_rows(path: Path, window_tokens: int) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"{path}: not a records CSV of `elis compare` (missing {', '.join(missing)})")
            rows = list(reader)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) file") from None
    if not rows:
        raise ValueError(f"{path}: no jobs")
    for line, row in enumerate(rows, start=2):
        empty = [c for c in REQUIRED_COLUMNS if not (row.get(c) or "").strip()]
        if empty:
            raise ValueError(f"{path}:{line}: no value for {', '.join(empty)}")
        windows = (row.get("window_tokens") or "").split()
        # Every window but a job's last is full: its size is the run's window.
        if len(windows) > 1 and windows[0].isdigit() and int(windows[0]) != window_tokens:
            raise ValueError(f"{path}:{line}: the run's windows were {windows[0]} tokens, not {window_tokens} "
                             f"(pass --window {windows[0]})")
    return rows


@dataclass(frozen=True)
class Arm:
    """One simulated run of the live jobs: a policy and the setting overrides it runs with."""

    label: str
    policy: str
    overrides: Mapping[str, object]


def replay_live_run(run: LiveRun, arms: Sequence[Arm], scales: Sequence[float], *, profile: EngineProfile,
                    slots: int = 4, window_tokens: int = 50,
                    scheduler_for: Callable[[str, Mapping[str, object]], object] | None = None,
                    tick: Callable[[], None] | None = None) -> dict[float, dict[str, Summary]]:
    """Each arm's summary at each arrival-rate scale (1: the live arrivals; 2: twice as fast)."""
    if scheduler_for is None:
        from elis.simulator.figures import service_scheduler

        from elis.simulator.figures import profile_weight

        weight = profile_weight(profile, slots)

        def scheduler_for(policy: str, overrides: Mapping[str, object]):
            return service_scheduler(policy, **{"prefill_weight": weight, **overrides})

    config = SimConfig(1, slots, window_tokens, max_tokens=run.max_tokens)
    out: dict[float, dict[str, Summary]] = {}
    for scale in scales:
        if scale <= 0:
            raise ValueError("rate scales must be > 0")
        jobs = [replace(job, arrival=job.arrival / scale) for job in run.jobs]
        out[scale] = {}
        for arm in arms:
            scheduler = scheduler_for(arm.policy, arm.overrides)
            result = simulate(jobs, make_policy(arm.policy), profile, config, run.predictions, scheduler=scheduler)
            out[scale][arm.label] = result.summary
            if tick:
                tick()
    return out
