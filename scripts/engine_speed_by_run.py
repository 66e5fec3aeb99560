"""Engine speed of each run in an `elis compare` database: ms per generated token per sequence, by how many
windows ran at once. It separates "the engine got slower" from "the order made jobs wait", which mean JCT
alone cannot (docs/scheduling.md, the A/A runs).

    python scripts/engine_speed_by_run.py postgresql+psycopg2://postgres@127.0.0.1:5432/elis_ev11 [PREFIX]

A window's concurrency is the number of windows of the same worker running at its midpoint (itself
included). Windows are grouped by their job's workload (one per run; `PREFIX` keeps those starting with it).
"""

from __future__ import annotations

import sys
from bisect import bisect_left, bisect_right
from collections import defaultdict

from sqlalchemy import create_engine, text

QUERY = text(
    """
    SELECT j.workload, w.worker, w.started_at, w.ended_at, w.num_tokens, w.compute_s
    FROM windows w JOIN jobs j ON j.id = w.job_id
    WHERE w.num_tokens > 0 AND j.workload LIKE :prefix
    ORDER BY w.started_at
    """
)


def concurrency(rows: list[tuple]) -> list[int]:
    """For each window, how many windows of its worker were running at its midpoint."""
    by_worker: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_worker[row[1]].append(i)
    out = [0] * len(rows)
    for indices in by_worker.values():
        starts = sorted(rows[i][2].timestamp() for i in indices)
        ends = sorted(rows[i][3].timestamp() for i in indices)
        for i in indices:
            mid = (rows[i][2].timestamp() + rows[i][3].timestamp()) / 2
            out[i] = bisect_right(starts, mid) - bisect_left(ends, mid)
    return out


def main(url: str, prefix: str = "") -> None:
    with create_engine(url).connect() as connection:
        rows = [tuple(r) for r in connection.execute(QUERY, {"prefix": prefix + "%"})]
    if not rows:
        raise SystemExit(f"no windows in {url} for workloads starting with {prefix!r}")
    levels = concurrency(rows)
    stats: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    first: dict[str, float] = {}
    for row, level in zip(rows, levels, strict=True):
        workload, _, started, _, tokens, compute_s = row
        first.setdefault(workload, started.timestamp())
        for key in (level, 0):  # 0: all windows
            cell = stats[workload][key]
            cell[0] += compute_s
            cell[1] += tokens
    top = max(levels)
    print("| run (workload) | all: ms/token | " + " | ".join(f"{k} at once" for k in range(1, top + 1)) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in range(top)) + " |")
    for workload in sorted(stats, key=first.get):
        cells = []
        for k in range(top + 1):
            compute_s, tokens = stats[workload].get(k, (0.0, 0))
            cells.append(f"{1e3 * compute_s / tokens:.1f} ({tokens})" if tokens else "-")
        print(f"| {workload} | " + " | ".join(cells) + " |")
    print("\nCells: ms of window compute per generated token of one sequence (tokens generated).")


if __name__ == "__main__":
    main(*sys.argv[1:3])
