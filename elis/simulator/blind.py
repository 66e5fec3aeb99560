"""The best policy that knows no job's length: the Gittins index of attained service, for the simulator.

Among policies that see only how many tokens a job has received, the Gittins index policy minimizes mean
response time on one server (Gittins; Aalto, Ayesta and Righter 2009). Its index at attained service `a` is

    G(a) = max over quanta d of  P(S - a <= d | S > a) / E[min(S - a, d) | S > a]

for a length distribution S. Where G decreases with `a` (heavy tails), newcomers go first: LAS/MLFQ. Where it
grows with `a` (lengths bunched, many at a cap), a job that started should finish: FCFS. The study command
`elis simulate blind` measures it on empirical length pools, answering: can any scheduler WITHOUT a predictor
beat FCFS on this traffic? If not, the quality guard's FCFS fallback is the best a blind service can do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elis.scheduling.policy import JobView, Policy

# The served model's generations (elis predictor build-dataset): real output lengths per prompt source.
CORPUS_PATH = Path(__file__).resolve().parent.parent / "data" / "predictor_corpus.jsonl.gz"


class GittinsTable:
    """G(a) from an empirical sample of output lengths, evaluated at multiples of `step` tokens (the window:
    a live service only decides at window ends) and cached."""

    def __init__(self, lengths: Sequence[int], step: int = 50) -> None:
        if not len(lengths) or step < 1:
            raise ValueError("need at least one length and step >= 1")
        self.lengths = np.sort(np.asarray(lengths, dtype=float))
        self.step = step
        self._cache: dict[int, float] = {}

    def index(self, attained: int) -> float:
        """G at the last decision point at or below `attained` (a job past every sampled length: infinite,
        it is about to end)."""
        a = (int(attained) // self.step) * self.step
        if a not in self._cache:
            self._cache[a] = self._compute(a)
        return self._cache[a]

    def _compute(self, attained: int) -> float:
        remaining = self.lengths[self.lengths > attained] - attained
        n = len(remaining)
        if n == 0:
            return float("inf")
        prefix = np.cumsum(remaining)
        # Quantum d = each distinct remaining length: done = how many end within d; E[min(R, d)] in O(1).
        quanta = np.unique(remaining)
        done = np.searchsorted(remaining, quanta, side="right")
        expected = (prefix[done - 1] + (n - done) * quanta) / n
        return float(np.max((done / n) / expected))


class GittinsPolicy(Policy):
    """Blind Gittins: the higher the index of a job's attained service, the sooner; yields at window ends."""

    name = "gittins"

    def __init__(self, table: GittinsTable) -> None:
        self.table = table

    def score(self, job: JobView, now: float) -> float:
        return -self.table.index(job.num_generated)

    def yields(self, job: JobView) -> bool:
        return True


def corpus_pool(path, source: str, max_tokens: int) -> list:
    """(prompt, output) lengths of one source of the predictor corpus (gzip JSONL of the served model's
    generations), outputs capped at `max_tokens` as a service with that max_tokens would have ended them."""
    import gzip
    import json

    from elis.replay.workload import TraceJob

    pool = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            record = json.loads(line)
            if record.get("source") == source:
                pool.append(TraceJob(record["id"], 0.0, len(record["prompt_ids"]),
                                     max(1, min(len(record["output_ids"]), max_tokens))))
    return pool


def blind_study(pools: dict, loads: Sequence[float], *, num_jobs: int, seeds: Sequence[int], profile, config,
                tick=None) -> list[list[str]]:
    """Mean JCT of FCFS, MLFQ, blind Gittins and the exact-length bound, as ratios to FCFS (mean over seeds),
    per length pool and load. Gittins learns its distribution from the pool itself (as the service would from
    its finished jobs)."""
    from elis.replay.workload import synthetic_workload
    from elis.scheduling.policy import make_policy
    from elis.simulator.core import simulate
    from elis.simulator.figures import measure_capacity

    rows = []
    for name, pool in pools.items():
        lengths = [job.num_output_tokens for job in pool]
        longest = max(lengths)
        table = GittinsTable(lengths, step=config.window_tokens)
        capacity = measure_capacity(profile, config, pool)
        for load in loads:
            totals: dict[str, float] = {}
            for seed in seeds:
                jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
                for label, policy in (("fcfs", make_policy("fcfs")), ("mlfq", make_policy("mlfq")),
                                      ("gittins", GittinsPolicy(table)), ("bound", make_policy("srtf-oracle"))):
                    totals[label] = totals.get(label, 0.0) + simulate(jobs, policy, profile, config).summary.mean_jct
                    if tick:
                        tick()
            at_cap = lengths.count(longest) / len(lengths)
            rows.append([name, f"{np.mean(lengths):.0f}", f"{at_cap:.0%}", f"{load:g}", f"{totals['fcfs'] / len(seeds):.1f}"]
                        + [f"{totals[label] / totals['fcfs']:.2f}" for label in ("mlfq", "gittins", "bound")])
    return rows


BLIND_HEADER = ["lengths", "mean output", "at the cap", "load", "FCFS mean JCT s", "MLFQ / FCFS",
                "blind Gittins / FCFS", "exact-length bound / FCFS"]
