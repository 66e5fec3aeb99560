"""Workloads: arrival processes (Gamma, Poisson, a production trace) and true prompt/output lengths.

A workload is a list of `TraceJob` in arrival order. Prompts are not needed by the simulator: only the
lengths. Every generator takes a seed, so the same arguments give the same workload.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

# ELIS (arXiv 2505.09142) fits production inter-arrival times with this Gamma distribution (seconds).
ELIS_GAMMA_SHAPE = 0.73
ELIS_GAMMA_SCALE = 10.41

ARRIVAL_KINDS = ("gamma", "poisson", "trace")


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One request of a workload: when it arrives (seconds from the start) and its true lengths."""

    job_id: str
    arrival: float
    num_prompt_tokens: int
    num_output_tokens: int
    # Tokens generated when the output's loop becomes detectable (a greedy output that runs to its limit),
    # for the simulator; None: it does not loop, or no one looked.
    loop_at: int | None = None


def default_trace_path() -> Path:
    """The Azure LLM inference trace (conversation, 2023) shipped with the package."""
    return Path(__file__).resolve().parent.parent / "data" / "azure_llm_2023_conv.csv"


def _parse_timestamp(text: str) -> float:
    # "2023-11-16 18:15:46.6805900": seven fractional digits, more than datetime parses.
    head, _, fraction = text.strip().partition(".")
    seconds = datetime.fromisoformat(head).timestamp()
    return seconds + (float("0." + fraction) if fraction else 0.0)


def read_azure_trace(path: str | Path | None = None, limit: int | None = None) -> list[TraceJob]:
    """Read a trace with columns TIMESTAMP, ContextTokens, GeneratedTokens; arrivals start at 0."""
    from elis.prompts import read_text

    jobs: list[TraceJob] = []
    # read_text: a .gz trace too; an unreadable file raises ValueError, which the commands report.
    with io.StringIO(read_text(Path(path or default_trace_path()), ValueError), newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if limit is not None and index >= limit:
                break
            try:
                jobs.append(
                    TraceJob(
                        job_id=f"t{index:06d}",
                        arrival=_parse_timestamp(row["TIMESTAMP"]),
                        num_prompt_tokens=int(row["ContextTokens"]),
                        num_output_tokens=max(1, int(row["GeneratedTokens"])),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path or default_trace_path()}, line {index + 2}: not a row of TIMESTAMP, "
                                 f"ContextTokens, GeneratedTokens ({type(exc).__name__}: {exc})") from None
    if not jobs:
        raise ValueError(f"no rows in trace {path}")
    start = jobs[0].arrival
    return [replace(job, arrival=job.arrival - start) for job in jobs]


def gamma_interarrivals(num_jobs: int, shape: float, scale: float, seed: int = 0) -> np.ndarray:
    """Inter-arrival times drawn from Gamma(shape, scale) (mean shape*scale, CV 1/sqrt(shape))."""
    return np.random.default_rng(seed).gamma(shape, scale, size=num_jobs)


def gamma_shape_scale(rate: float, cv: float) -> tuple[float, float]:
    """The Gamma (shape, scale) with mean inter-arrival 1/rate and coefficient of variation `cv`."""
    if rate <= 0 or cv <= 0:
        raise ValueError("rate and cv must be positive")
    shape = 1.0 / (cv * cv)
    return shape, 1.0 / (rate * shape)


def arrival_times(num_jobs: int, kind: str = "gamma", rate: float | None = None, cv: float | None = None,
                  seed: int = 0) -> np.ndarray:
    """Arrival times (seconds, first at 0) of a Gamma or Poisson process.

    `gamma` without a rate uses the ELIS fit (shape 0.73, scale 10.41); with a rate, the ELIS shape (or the
    shape that `cv` implies) scaled to that rate. `poisson` needs a rate.
    """
    if kind == "poisson":
        if rate is None:
            raise ValueError("poisson arrivals need a rate")
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=num_jobs)
    elif kind == "gamma":
        if rate is None:
            shape, scale = ELIS_GAMMA_SHAPE, ELIS_GAMMA_SCALE
        else:
            shape, scale = gamma_shape_scale(rate, cv if cv is not None else 1.0 / math.sqrt(ELIS_GAMMA_SHAPE))
        gaps = gamma_interarrivals(num_jobs, shape, scale, seed)
    else:
        raise ValueError(f"unknown arrival kind {kind!r}; choose gamma or poisson")
    times = np.cumsum(gaps)
    return times - times[0]


def synthetic_workload(num_jobs: int, kind: str = "gamma", rate: float | None = None, cv: float | None = None,
                       seed: int = 0, pool: Sequence[TraceJob] | None = None) -> list[TraceJob]:
    """Gamma or Poisson arrivals with lengths sampled from `pool` (default: the Azure trace), with replacement,
    each job's prompt and output lengths (and loop point) drawn together so their correlation is kept."""
    times = arrival_times(num_jobs, kind, rate, cv, seed)
    pool = pool if pool is not None else read_azure_trace()
    picks = np.random.default_rng(seed + 1).integers(0, len(pool), size=num_jobs)
    return [TraceJob(f"j{i:07d}", float(t), pool[k].num_prompt_tokens, pool[k].num_output_tokens, pool[k].loop_at)
            for i, (t, k) in enumerate(zip(times, picks))]


def rescale_to_rate(jobs: Sequence[TraceJob], rate: float) -> list[TraceJob]:
    """The same jobs with arrival times stretched or compressed so the mean arrival rate is `rate`."""
    span = jobs[-1].arrival - jobs[0].arrival
    if len(jobs) < 2 or span <= 0:
        return list(jobs)
    factor = (len(jobs) - 1) / (rate * span)
    return [replace(job, arrival=(job.arrival - jobs[0].arrival) * factor) for job in jobs]


def take_cycled(jobs: Sequence[TraceJob], num_jobs: int) -> list[TraceJob]:
    """The first `num_jobs` jobs, repeating the trace (shifted in time, new ids) when it is too short."""
    out: list[TraceJob] = []
    span = jobs[-1].arrival - jobs[0].arrival + (jobs[-1].arrival - jobs[0].arrival) / max(1, len(jobs) - 1)
    for index in range(num_jobs):
        lap, position = divmod(index, len(jobs))
        job = jobs[position]
        out.append(replace(job, job_id=f"{job.job_id}r{lap}" if lap else job.job_id,
                           arrival=job.arrival + lap * span))
    return out
