"""Per-step calibration: map a raw predicted remaining length to the realized one, per step bucket.

The scheduler compares a newcomer's admission prediction (step 0) with a running job's re-prediction (step
k), so predictions must be on one scale at every step. A head trained with a ranking loss (or simply biased)
is not. For each step bucket we fit an isotonic (monotone non-decreasing) regression of the true remaining
tokens on the raw prediction (pool-adjacent-violators, on a validation slice the head never trained on), so
a calibrated value estimates E[remaining | raw prediction, step]. Within a bucket the order is kept: a tiny
increasing term (at most 0.01 token) breaks the isotonic steps' ties in the raw order, so Kendall tau within a step is the
raw model's. Pure numpy; stored as JSON in the checkpoint's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Step buckets (window index ranges, inclusive): later steps are rarer, so their buckets are wider.
DEFAULT_BUCKETS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, 8), (9, 13), (14, 10**6))
MIN_POINTS = 40  # a bucket with fewer validation points is merged into the one before it
TIE_TOKENS = 0.01  # at most 0.01 token added, strictly increasing in the raw score: breaks ties in its order


def isotonic_fit(x: Sequence[float], y: Sequence[float], max_knots: int = 64) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators: knots (x, y) of the non-decreasing fit of y on x (at most `max_knots`)."""
    order = np.argsort(np.asarray(x, dtype=np.float64), kind="mergesort")
    xs = np.asarray(x, dtype=np.float64)[order]
    ys = np.asarray(y, dtype=np.float64)[order]
    # blocks: [sum_y, count, x_min, x_max]
    blocks: list[list[float]] = []
    for xv, yv in zip(xs, ys):
        blocks.append([yv, 1.0, xv, xv])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, c, _, hi = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][3] = hi
    knots_x = [(b[2] + b[3]) / 2 for b in blocks]
    knots_y = [b[0] / b[1] for b in blocks]
    if len(knots_x) > max_knots:  # thin evenly; the fit stays monotone
        keep = np.unique(np.linspace(0, len(knots_x) - 1, max_knots).round().astype(int))
        knots_x = [knots_x[i] for i in keep]
        knots_y = [knots_y[i] for i in keep]
    return knots_x, knots_y


@dataclass(frozen=True)
class StepCalibration:
    """Isotonic maps per step bucket: `buckets[i]` = (first step, last step), `knots[i]` = (xs, ys)."""

    buckets: tuple[tuple[int, int], ...]
    knots: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]

    def bucket_of(self, step: int) -> int:
        for i, (lo, hi) in enumerate(self.buckets):
            if lo <= step <= hi:
                return i
        return len(self.buckets) - 1 if step > self.buckets[-1][1] else 0

    def apply(self, raw: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Calibrated remaining tokens for raw predictions at the given steps (monotone in raw per bucket)."""
        raw = np.asarray(raw, dtype=np.float64)
        steps = np.asarray(steps)
        out = np.empty_like(raw)
        buckets = np.array([self.bucket_of(int(s)) for s in steps], dtype=np.int64) if len(steps) else steps
        for i, (xs, ys) in enumerate(self.knots):
            mask = buckets == i
            if mask.any():
                out[mask] = np.interp(raw[mask], xs, ys) + TIE_TOKENS / (1.0 + np.exp(-np.clip(raw[mask], -30, 30)))
        return np.maximum(out, 0.0)

    def to_json(self) -> dict:
        return {"buckets": [list(b) for b in self.buckets], "knots": [[[float(v) for v in xs], [float(v) for v in ys]] for xs, ys in self.knots]}

    @classmethod
    def from_json(cls, blob: dict) -> StepCalibration:
        return cls(
            buckets=tuple((int(a), int(b)) for a, b in blob["buckets"]),
            knots=tuple((tuple(map(float, xs)), tuple(map(float, ys))) for xs, ys in blob["knots"]),
        )


def _merge_small(buckets: list[tuple[int, int]], counts: list[int], min_points: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    merged_counts: list[int] = []
    for bucket, count in zip(buckets, counts):
        if merged and (count < min_points or merged_counts[-1] < min_points):
            merged[-1] = (merged[-1][0], bucket[1])
            merged_counts[-1] += count
        else:
            merged.append(bucket)
            merged_counts.append(count)
    if len(merged) > 1 and merged_counts[-1] < min_points:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    return merged


def fit_step_calibration(
    raw: Sequence[float],
    true: Sequence[float],
    steps: Sequence[int],
    buckets: Sequence[tuple[int, int]] = DEFAULT_BUCKETS,
    min_points: int = MIN_POINTS,
) -> StepCalibration:
    """Fit one isotonic map per step bucket (small buckets merged into the one before)."""
    raw = np.asarray(raw, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.int64)
    if len(raw) == 0:
        raise ValueError("no points to calibrate on")
    counts = [int(((steps >= lo) & (steps <= hi)).sum()) for lo, hi in buckets]
    merged = _merge_small(list(buckets), counts, min_points)
    knots = []
    for lo, hi in merged:
        mask = (steps >= lo) & (steps <= hi)
        if not mask.any():  # no data in this range at all: identity
            knots.append(((0.0, 1.0), (0.0, 1.0)))
            continue
        xs, ys = isotonic_fit(raw[mask], true[mask])
        if len(xs) == 1:
            xs, ys = [xs[0] - 1.0, xs[0] + 1.0], [ys[0], ys[0]]
        knots.append((tuple(xs), tuple(ys)))
    # the last bucket covers every later step
    merged[-1] = (merged[-1][0], 10**6)
    merged[0] = (0, merged[0][1])
    return StepCalibration(buckets=tuple(merged), knots=tuple(knots))
