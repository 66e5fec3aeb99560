"""The one place a policy score (lower = sooner) becomes a RabbitMQ priority (higher = sooner)."""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PriorityLevels:
    """Maps a score in tokens to one of `num_levels` broker priorities by ascending score edges.

    `edges` has `num_levels - 2` cut points for scores >= 0; level `num_levels - 1` (the highest, served
    first) is reserved for aged jobs (negative scores). A score below `edges[0]` gets `num_levels - 2`; a
    score at or above the last edge gets 0.
    """

    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.edges) < 1:
            raise ValueError("need at least one edge (three levels)")
        if any(b < a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"edges must ascend: {self.edges}")

    @property
    def num_levels(self) -> int:
        return len(self.edges) + 2

    def level(self, score: float) -> int:
        """Broker priority for a score: higher number = served first by RabbitMQ."""
        if score < 0:
            return self.num_levels - 1
        bucket = bisect.bisect_right(self.edges, score)  # 0 .. len(edges)
        return self.num_levels - 2 - bucket

    @classmethod
    def log_spaced(cls, num_levels: int, low: float = 25.0, high: float = 1024.0) -> PriorityLevels:
        """Fixed edges spaced evenly in log space between `low` and `high` tokens (the fallback)."""
        count = num_levels - 2
        if count < 1:
            raise ValueError("num_levels must be >= 3")
        if count == 1:
            return cls((low,))
        ratio = math.log(high / low) / (count - 1)
        return cls(tuple(round(low * math.exp(ratio * i), 3) for i in range(count)))

    @classmethod
    def from_quantiles(cls, scores: Iterable[float], num_levels: int) -> PriorityLevels:
        """Edges at evenly spaced quantiles of observed scores (e.g. the predictor's training targets)."""
        values = sorted(float(s) for s in scores if s >= 0)
        count = num_levels - 2
        if count < 1:
            raise ValueError("num_levels must be >= 3")
        if len(values) < count + 1:
            raise ValueError(f"need at least {count + 1} scores to calibrate {num_levels} levels")
        edges = [_quantile(values, (i + 1) / (count + 1)) for i in range(count)]
        return cls(tuple(edges))


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    position = q * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] * (1 - fraction) + sorted_values[upper] * fraction


def calibrate_levels(num_levels: int, scores: Iterable[float] | None = None) -> PriorityLevels:
    """Quantile edges from observed scores (the predictor's training targets) when there are enough of
    them, else the fixed log-spaced fallback."""
    values = [] if scores is None else [float(s) for s in scores if s >= 0]
    if len(set(values)) > num_levels - 2:
        return PriorityLevels.from_quantiles(values, num_levels)
    return PriorityLevels.log_spaced(num_levels)


def remaining_length_targets(output_lengths: Iterable[int], window_tokens: int) -> list[int]:
    """The remaining-length targets a predictor trains on: one per window boundary of every job
    (0, W, 2W, ... tokens generated), which is also the distribution of ISRTF scores in service."""
    targets: list[int] = []
    for length in output_lengths:
        targets.extend(range(int(length), 0, -window_tokens))
    return targets


@dataclass(frozen=True)
class LevelFile:
    """The score-to-level edges and the predictor's per-step uncertainty, as shipped next to a checkpoint
    (a small JSON file, so the API and workers need no torch to map scores to levels)."""

    levels: PriorityLevels
    uncertainty_by_step: tuple[tuple[int, float], ...] = ()
    source: str = ""


def load_level_file(path: str | Path) -> LevelFile:
    """Read `{"edges": [...], "uncertainty_by_step": {"0": 0.6, ...}, "source": ...}`."""
    data = json.loads(Path(path).read_text())
    if "edges" not in data:
        raise ValueError(f"{path}: no 'edges' list")
    levels = PriorityLevels(tuple(float(e) for e in data["edges"]))
    by_step = tuple(sorted((int(k), float(v)) for k, v in (data.get("uncertainty_by_step") or {}).items()))
    return LevelFile(levels, by_step, str(data.get("source", "")))


def write_level_file(path: str | Path, levels: PriorityLevels, source: str,
                     uncertainty_by_step: dict[int, float] | None = None, **extra: object) -> None:
    """Write the file `load_level_file` reads."""
    data = {"edges": list(levels.edges), "num_levels": levels.num_levels, "source": source,
            "uncertainty_by_step": {str(k): round(float(v), 4) for k, v in sorted((uncertainty_by_step or {}).items())},
            **extra}
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
