"""Length predictions in the simulator: pluggable models of the predictor's errors."""

from __future__ import annotations

import csv
import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path


class LengthModel(ABC):
    """Predicts a job's remaining output tokens from its true remaining length and its window index."""

    name: str = "model"

    @abstractmethod
    def predict(self, true_remaining: int, step: int, job_id: str = "") -> float:
        """The prediction after `step` windows (step 0: at admission, from the prompt alone) for `job_id`."""


class Exact(LengthModel):
    """A perfect predictor."""

    name = "exact"

    def predict(self, true_remaining: int, step: int, job_id: str = "") -> float:
        return float(true_remaining)


class LognormalNoise(LengthModel):
    """True remaining length times exp(N(0, sigma)), drawn afresh for every prediction."""

    def __init__(self, sigma: float, seed: int = 0) -> None:
        if sigma < 0:
            raise ValueError("sigma must be >= 0")
        self.sigma = sigma
        self.name = f"noise(sigma={sigma})"
        self._rng = random.Random(seed)

    def predict(self, true_remaining: int, step: int, job_id: str = "") -> float:
        if self.sigma == 0:
            return float(true_remaining)
        return true_remaining * self._rng.lognormvariate(0.0, self.sigma)


class PersistentNoise(LengthModel):
    """True remaining length times exp(sigma x (sqrt(p) z_job + sqrt(1 - p) z)): a real predictor's error is
    mostly a property of the job (the same prompt misleads it at every step), with a fresh part per
    prediction. `persistence` p in [0, 1] is the share of the log-variance fixed per job."""

    def __init__(self, sigma: float, persistence: float = 0.7, seed: int = 0) -> None:
        if sigma < 0 or not 0 <= persistence <= 1:
            raise ValueError("sigma must be >= 0 and persistence in [0, 1]")
        self.sigma, self.persistence, self.seed = sigma, persistence, seed
        self.name = f"persistent(sigma={sigma}, p={persistence})"
        self._rng = random.Random(seed)
        self._per_job: dict[str, float] = {}

    def predict(self, true_remaining: int, step: int, job_id: str = "") -> float:
        fixed = self._per_job.get(job_id)
        if fixed is None:
            fixed = self._per_job[job_id] = self._rng.gauss(0.0, 1.0)
        z = (self.persistence ** 0.5) * fixed + ((1 - self.persistence) ** 0.5) * self._rng.gauss(0.0, 1.0)
        return true_remaining * math.exp(self.sigma * z)


class RecordedErrors(LengthModel):
    """Relative errors sampled from the predictor's evaluation: rows of (step, true_remaining,
    predicted_remaining). A prediction at step k draws a ratio predicted/true recorded at step k (the last
    recorded step for later ones)."""

    def __init__(self, rows: Iterable[tuple[int, float, float]], seed: int = 0) -> None:
        step_to_ratios: dict[int, list[float]] = {}
        for step, true_remaining, predicted in rows:
            if true_remaining > 0:
                step_to_ratios.setdefault(int(step), []).append(max(0.0, predicted) / true_remaining)
        if not step_to_ratios:
            raise ValueError("no usable error rows (need true_remaining > 0)")
        self._max_step = max(step_to_ratios)
        fallback = step_to_ratios[min(step_to_ratios)]
        self._ratios = [step_to_ratios.get(k) or fallback for k in range(self._max_step + 1)]
        for k in range(1, self._max_step + 1):
            if k not in step_to_ratios:
                self._ratios[k] = self._ratios[k - 1]
        self._rng = random.Random(seed)
        self.name = "recorded"

    def predict(self, true_remaining: int, step: int, job_id: str = "") -> float:
        ratios = self._ratios[min(step, self._max_step)]
        return true_remaining * ratios[self._rng.randrange(len(ratios))]

    @classmethod
    def load(cls, path: str | Path, seed: int = 0) -> RecordedErrors:
        """Read a CSV with a header (step, true_remaining, predicted_remaining) or a JSON list of such
        objects or triples."""
        path = Path(path)
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            rows = [(r["step"], r["true_remaining"], r["predicted_remaining"]) if isinstance(r, dict) else tuple(r)
                    for r in data]
        else:
            with open(path, newline="") as handle:
                rows = [(int(r["step"]), float(r["true_remaining"]), float(r["predicted_remaining"]))
                        for r in csv.DictReader(handle)]
        return cls(rows, seed)


class ReplayedPredictions(LengthModel):
    """The predictions a live run made, job by job: `by_job[job_id]` maps a step (windows done; 0 = admission) to
    the predicted remaining tokens. A step the run did not re-predict at (it re-predicts only where a prediction
    could change the order) takes the latest earlier prediction less the tokens generated since, as the live
    worker clips it. A job the run did not predict is predicted exactly.

    With a trace built from the same run's records, the simulator then orders each job as the live predictor
    saw it: its errors on short and long jobs as they were, not a noise model's."""

    name = "replayed"

    def __init__(self, by_job: dict[str, dict[int, float]], window_tokens: int = 50) -> None:
        self.by_job = by_job
        self.window_tokens = window_tokens

    def predict(self, true_remaining: int, step: int, job_id: str = "") -> float:
        steps = self.by_job.get(job_id)
        known = [at for at in (steps or {}) if at <= step]
        if not known:
            return float(true_remaining)
        at = max(known)
        return max(1.0, steps[at] - self.window_tokens * (step - at))

    @classmethod
    def from_records(cls, paths: Iterable[str | Path], window_tokens: int = 50) -> ReplayedPredictions:
        """Read `elis compare` records CSVs (columns item, initial_prediction, predictions: one value or nan per
        window, the prediction after it); job ids are the items. Later files fill steps earlier ones lack. Raises
        ValueError on a prediction that is not a number."""
        by_job: dict[str, dict[int, float]] = {}
        for path in paths:
            with open(path, newline="", encoding="utf-8") as handle:
                cls.add_rows(by_job, csv.DictReader(handle))
        return cls(by_job, window_tokens)

    @staticmethod
    def add_rows(by_job: dict[str, dict[int, float]], rows: Iterable[dict[str, str]]) -> None:
        """Add the predictions of records rows to `by_job`, keeping steps it already has."""
        for row in rows:
            steps = by_job.setdefault(str(row["item"]), {})
            values = [(0, row.get("initial_prediction") or "nan")]
            values += list(enumerate((row.get("predictions") or "").split(), start=1))
            for step, text in values:
                value = float(text)
                if not math.isnan(value):
                    steps.setdefault(step, value)


def make_length_model(kind: str = "noise", sigma: float = 0.0, errors: str | Path | None = None,
                      seed: int = 0) -> LengthModel:
    """`noise` (sigma 0: exact), `persistent` (noise mostly fixed per job) or `recorded` (needs `errors`)."""
    if kind == "noise":
        return Exact() if sigma == 0 else LognormalNoise(sigma, seed)
    if kind == "persistent":
        return Exact() if sigma == 0 else PersistentNoise(sigma, 0.7, seed)
    if kind == "recorded":
        if errors is None:
            raise ValueError("--predictor recorded needs --errors PATH")
        return RecordedErrors.load(errors, seed)
    raise ValueError(f"unknown predictor {kind!r}; choose noise or recorded")
