"""Evaluation that tells the truth about generalization: leave-one-source-out, noise ceiling, bias per step.

Splits (all by prompt: every sample of a prompt lands in one split, and equal prompt texts too):
- in-distribution: every source, train / val / test by a hash of the normalized prompt (`features.split_of`);
- leave-one-source-out (LOSO) for each source S: test = every record of S; train / val (90/10 by prompt hash)
  = the other sources, minus any record whose prompt text also occurs in S.

Per step k (tokens generated so far = k x W) on the test set: n, mean true and mean predicted remaining,
bias = mean predicted / mean true, MAE, R2, Kendall tau; and the NOISE CEILING: on the test prompts that
have several samples, how well the mean total length of a prompt's OTHER samples ranks a held-out sample's
remaining length (Kendall tau, every sample in turn held out). The model's tau on the same examples, and
its fraction of the ceiling, stand beside it. With two other samples the ceiling is a lower bound of what
a perfect per-prompt predictor reaches. The `all` row pools every step: the scheduler compares predictions
made at different steps, so a pooled tau (and a bias near 1 at every step) is what it needs.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elis.predictor.evaluation import kendall_tau_b
from elis.predictor.features import Example, prompt_key, split_of


def split_in_distribution(
    records: Sequence[dict], fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for record in records:
        out[split_of(record["prompt"], fractions)].append(record)
    return out


def split_leave_one_out(records: Sequence[dict], held_out: str, val_fraction: float = 0.1,
                        extra_train: Sequence[dict] = ()) -> dict[str, list[dict]]:
    """test = the held-out source; train / val = the others (by prompt hash), minus prompts also in test.
    `extra_train` records (e.g. greedy outputs) join train / val the same way; none of the held-out source."""
    test = [r for r in records if r.get("source") == held_out]
    # the held-out source's prompts, also those only in extra_train (e.g. its greedy test set): never trained on
    test_keys = {prompt_key(r["prompt"]) for r in [*test, *extra_train] if r.get("source") == held_out}
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": test}
    for record in [*records, *extra_train]:
        if record.get("source") == held_out or prompt_key(record["prompt"]) in test_keys:
            continue
        split = split_of(record["prompt"], (1 - val_fraction, val_fraction, 0.0))
        out["train" if split == "train" else "val"].append(record)
    return out


def leaked_prompts(splits: dict[str, Iterable[dict]]) -> set[str]:
    """Prompt keys (normalized text) found in more than one split: must be empty."""
    seen: dict[str, str] = {}
    leaks = set()
    for name, records in splits.items():
        for record in records:
            key = prompt_key(record["prompt"])
            if seen.setdefault(key, name) != name:
                leaks.add(key)
    return leaks


def ceiling_predictions(examples: Sequence[Example]) -> np.ndarray:
    """Per example: the mean total output length of the OTHER samples of its prompt (NaN when it has none).

    Samples are told apart by (prompt_id, sample); a sample's total length is its step-0 remaining."""
    totals: dict[str, dict[int, int]] = defaultdict(dict)
    for e in examples:
        if e.step == 0:
            totals[e.prompt_id][e.sample] = e.remaining
    out = np.full(len(examples), np.nan)
    for i, e in enumerate(examples):
        others = [v for s, v in totals[e.prompt_id].items() if s != e.sample]
        if others:
            out[i] = float(np.mean(others))
    return out


@dataclass(frozen=True)
class StepRow:
    """One row of the per-step table."""

    step: str
    generated: str
    n: int
    mean_true: float
    mean_pred: float
    bias: float
    mae: float
    r2: float
    tau: float
    ceiling_n: int
    ceiling_tau: float
    model_tau_on_ceiling: float

    @property
    def fraction(self) -> float:
        if math.isnan(self.ceiling_tau) or self.ceiling_tau <= 0 or math.isnan(self.model_tau_on_ceiling):
            return float("nan")
        return self.model_tau_on_ceiling / self.ceiling_tau


def _row(step: str, generated: str, true: np.ndarray, pred: np.ndarray, ceiling: np.ndarray) -> StepRow:
    n = len(true)
    nan = float("nan")
    if n == 0:
        return StepRow(step, generated, 0, nan, nan, nan, nan, nan, nan, 0, nan, nan)
    var = float(np.sum((true - true.mean()) ** 2))
    r2 = 1.0 - float(np.sum((pred - true) ** 2)) / var if var > 0 else nan
    has = ~np.isnan(ceiling)
    return StepRow(
        step=step,
        generated=generated,
        n=n,
        mean_true=float(true.mean()),
        mean_pred=float(pred.mean()),
        bias=float(pred.mean() / true.mean()) if true.mean() > 0 else nan,
        mae=float(np.mean(np.abs(pred - true))),
        r2=r2,
        tau=kendall_tau_b(true, pred) if n >= 2 else nan,
        ceiling_n=int(has.sum()),
        ceiling_tau=kendall_tau_b(true[has], ceiling[has]) if has.sum() >= 10 else nan,
        model_tau_on_ceiling=kendall_tau_b(true[has], pred[has]) if has.sum() >= 10 else nan,
    )


def step_rows(
    examples: Sequence[Example], predicted: np.ndarray, window_tokens: int, min_n: int = 10, max_step: int | None = None
) -> list[StepRow]:
    """Rows for every step with at least `min_n` examples (up to `max_step`), then `all` (pooled)."""
    true = np.array([e.remaining for e in examples], dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    steps = np.array([e.step for e in examples], dtype=np.int64)
    ceiling = ceiling_predictions(examples)
    # the ceiling predicts total length; remaining = total - generated ranks the same within a step, and
    # the pooled row needs the remaining scale
    ceiling_remaining = ceiling - steps * window_tokens
    rows = []
    for k in sorted(set(steps.tolist())):
        mask = steps == k
        if mask.sum() < min_n or (max_step is not None and k > max_step):
            continue
        rows.append(_row(str(k), str(k * window_tokens), true[mask], pred[mask], ceiling_remaining[mask]))
    rows.append(_row("all", "-", true, pred, ceiling_remaining))
    return rows


def _f(value: float, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


TABLE_HEADER = (
    "| step | generated | n | mean true | mean pred | bias | MAE | R2 | tau | ceiling n | ceiling tau | "
    "tau on ceiling set | fraction |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
)


def markdown(rows: Sequence[StepRow]) -> str:
    lines = [
        f"| {r.step} | {r.generated} | {r.n} | {_f(r.mean_true, 0)} | {_f(r.mean_pred, 0)} | {_f(r.bias, 2)} "
        f"| {_f(r.mae, 0)} | {_f(r.r2, 2)} | {_f(r.tau, 3)} | {r.ceiling_n} | {_f(r.ceiling_tau, 3)} "
        f"| {_f(r.model_tau_on_ceiling, 3)} | {_f(r.fraction, 2)} |"
        for r in rows
    ]
    return TABLE_HEADER + "\n".join(lines) + "\n"


CSV_FIELDS = ["set", "step", "generated", "n", "mean_true", "mean_pred", "bias", "mae", "r2", "tau",
              "ceiling_n", "ceiling_tau", "model_tau_on_ceiling", "fraction"]


def write_csv(path: Path, named_rows: dict[str, Sequence[StepRow]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for name, rows in named_rows.items():
            for r in rows:
                writer.writerow([name, r.step, r.generated, r.n, r.mean_true, r.mean_pred, r.bias, r.mae, r.r2,
                                 r.tau, r.ceiling_n, r.ceiling_tau, r.model_tau_on_ceiling, r.fraction])


def summary_line(name: str, rows: Sequence[StepRow]) -> dict[str, Any]:
    """Headline numbers of one evaluated set: admission tau / ceiling, worst bias, min R2, pooled tau."""
    steps = [r for r in rows if r.step != "all"]
    pooled = rows[-1]
    admission = steps[0] if steps and steps[0].step == "0" else None
    early = [r for r in steps if int(r.step) <= 8]
    return {
        "set": name,
        "admission_tau": admission.tau if admission else float("nan"),
        "admission_ceiling": admission.ceiling_tau if admission else float("nan"),
        "admission_fraction": admission.fraction if admission else float("nan"),
        "tau_step4": next((r.tau for r in steps if r.step == "4"), float("nan")),
        "worst_bias_0_8": max((abs(r.bias - 1) for r in early), default=float("nan")),
        "min_r2_0_8": min((r.r2 for r in early), default=float("nan")),
        "pooled_tau": pooled.tau,
        "n": pooled.n,
    }
