"""Evaluation: MAE, RMSE, R2 and Kendall tau, overall and per step (window index), plus the ELIS figure.

Outputs of `evaluate_checkpoint` (into `out_dir`, names prefixed by the evaluated set's name):

- `<name>_per_step.csv` and `<name>_per_step.md`: one row per step and an `all` row.
- `<name>_errors.csv`: one row per example, columns `step, true_remaining, predicted_remaining, split` --
  what the simulator samples prediction errors from.
- `<name>_mae_per_step.png`: MAE per step (the ELIS paper's figure).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Metrics:
    """Accuracy of predicted remaining tokens against the true ones."""

    n: int
    mae: float
    rmse: float
    r2: float
    kendall_tau: float
    mean_true: float


def kendall_tau_b(x: Sequence[float], y: Sequence[float], chunk: int = 512) -> float:
    """Kendall's tau-b (ties in either variable handled), exact, O(n^2) in chunks."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    n = len(a)
    if n < 2:
        return float("nan")
    concordance = 0
    ties_a = 0
    ties_b = 0
    for start in range(0, n - 1, chunk):
        rows = slice(start, min(start + chunk, n - 1))
        da = np.sign(a[rows, None] - a[None, :]).astype(np.int8)
        db = np.sign(b[rows, None] - b[None, :]).astype(np.int8)
        upper = np.arange(n)[None, :] > np.arange(n)[rows, None]  # pairs i < j only
        concordance += int(np.sum((da.astype(np.int32) * db)[upper]))
        ties_a += int(np.sum((da == 0) & upper))
        ties_b += int(np.sum((db == 0) & upper))
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - ties_a) * (pairs - ties_b))
    return concordance / denominator if denominator else float("nan")


def metrics(true: Sequence[float], predicted: Sequence[float]) -> Metrics:
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if len(t) == 0:
        nan = float("nan")
        return Metrics(0, nan, nan, nan, nan, nan)
    error = p - t
    variance = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum(error**2)) / variance if variance > 0 else float("nan")
    return Metrics(
        n=len(t),
        mae=float(np.mean(np.abs(error))),
        rmse=float(np.sqrt(np.mean(error**2))),
        r2=r2,
        kendall_tau=kendall_tau_b(t, p),
        mean_true=float(t.mean()),
    )


def per_step(true: np.ndarray, predicted: np.ndarray, steps: np.ndarray) -> list[tuple[str, Metrics]]:
    """Metrics for each step, then `all`."""
    rows = [(str(k), metrics(true[steps == k], predicted[steps == k])) for k in sorted(set(steps.tolist()))]
    rows.append(("all", metrics(true, predicted)))
    return rows


def _fmt(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(rows: list[tuple[str, Metrics]], window_tokens: int) -> str:
    lines = [
        "| step | generated | n | mean true | MAE | RMSE | R2 | Kendall tau |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for step, m in rows:
        generated = "-" if step == "all" else str(int(step) * window_tokens)
        lines.append(
            f"| {step} | {generated} | {m.n} | {_fmt(m.mean_true, 1)} | {_fmt(m.mae, 1)} | {_fmt(m.rmse, 1)} "
            f"| {_fmt(m.r2, 3)} | {_fmt(m.kendall_tau, 3)} |"
        )
    return "\n".join(lines) + "\n"


def write_per_step_csv(path: Path, rows: list[tuple[str, Metrics]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "n", "mean_true", "mae", "rmse", "r2", "kendall_tau"])
        for step, m in rows:
            writer.writerow([step, m.n, m.mean_true, m.mae, m.rmse, m.r2, m.kendall_tau])


def write_errors_csv(
    path: Path, steps: np.ndarray, true: np.ndarray, predicted: np.ndarray, split: str
) -> None:
    """Per-example errors for the simulator: columns step, true_remaining, predicted_remaining, split."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "true_remaining", "predicted_remaining", "split"])
        for k, t, p in zip(steps.tolist(), true.tolist(), predicted.tolist()):
            writer.writerow([k, int(t), round(float(p), 2), split])


def plot_mae_per_step(
    path: Path, curves: dict[str, list[tuple[str, Metrics]]], window_tokens: int, min_n: int = 5
) -> None:
    """MAE per step, one line per evaluated set (steps with fewer than `min_n` examples are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rows in curves.items():
        points = [(int(s), m.mae) for s, m in rows if s != "all" and m.n >= min_n]
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set_xlabel(f"step (windows of {window_tokens} tokens generated)")
    ax.set_ylabel("MAE of remaining tokens")
    ax.set_title("Remaining-length prediction error per step")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(
    out_dir: Path,
    name: str,
    steps: np.ndarray,
    true: np.ndarray,
    predicted: np.ndarray,
    window_tokens: int,
) -> dict[str, Any]:
    """Write the table, the errors file and the plot for one evaluated set; return its rows and paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = per_step(true, predicted, steps)
    table = markdown_table(rows, window_tokens)
    (out_dir / f"{name}_per_step.md").write_text(table)
    write_per_step_csv(out_dir / f"{name}_per_step.csv", rows)
    write_errors_csv(out_dir / f"{name}_errors.csv", steps, true, predicted, name)
    plot_mae_per_step(out_dir / f"{name}_mae_per_step.png", {name: rows}, window_tokens)
    return {"rows": rows, "table": table}


def predict_examples(checkpoint: Any, cache: Any, examples: list[Any]) -> np.ndarray:
    """Predicted remaining tokens for dataset examples, through the embedding cache (same join as serving)."""
    from elis.predictor.training import capped, features_of, predict_array

    if getattr(checkpoint, "kind", "elis") == "ranker":
        from elis.predictor.online import prior_of, ranker_of
        from elis.predictor.ranker import arrays_of

        ranker = ranker_of(checkpoint)
        prior = prior_of(checkpoint, cache.encoder)
        return ranker.predict(arrays_of(cache, list(examples), ranker.config, prior))
    embeddings = cache.embed(examples)
    x = features_of(embeddings, examples, checkpoint.metadata["features"])
    return capped(predict_array(checkpoint.head, checkpoint.transform, x), examples)


def step_mean_baseline(train_examples: Sequence[Any]) -> Any:
    """A text-free predictor: the mean remaining tokens at each step on the train split (last step's for
    later steps). What the model must beat to show that it reads the prompt and the output."""
    step_to_values: dict[int, list[int]] = {}
    for e in train_examples:
        step_to_values.setdefault(e.step, []).append(e.remaining)
    means = {k: float(np.mean(v)) for k, v in step_to_values.items()}
    last = max(means)
    return lambda step: means.get(min(step, last), means[last])


def metrics_line(m: Metrics) -> str:
    return (
        f"MAE {_fmt(m.mae, 1)}, RMSE {_fmt(m.rmse, 1)}, R2 {_fmt(m.r2, 3)}, "
        f"Kendall tau {_fmt(m.kendall_tau, 3)} (n={m.n})"
    )


def evaluate_checkpoint(
    checkpoint_path: Path,
    dataset_path: Path,
    splits: Sequence[str],
    out_dir: Path,
    cache_dir: Path | None,
    encoder: Any = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate a checkpoint on named sets of a dataset file: train / val / test / ood (the checkpoint's own
    split rule) or `all` (every record of the file: for any other prompt file). Writes the reports per set
    and one combined plot `mae_per_step.png`."""
    from elis.predictor.checkpoint import load_checkpoint
    from elis.predictor.encoder import load_encoder
    from elis.predictor.features import flatten
    from elis.predictor.training import EmbeddingCache, read_dataset, split_records

    checkpoint = load_checkpoint(checkpoint_path)
    meta = checkpoint.metadata
    encoder = encoder or load_encoder(meta["encoder"])
    records = read_dataset(dataset_path)
    if meta["dataset"].get("max_records") and dataset_path.name == meta["dataset"]["file"]:
        records = records[: meta["dataset"]["max_records"]]
    named = split_records(records, meta["dataset"]["ood_sources"], meta["dataset"]["split_fractions"])
    named["all"] = records
    cache = EmbeddingCache(encoder, cache_dir, int(meta["prompt_budget"]))
    from elis.predictor.checkpoint import file_sha256

    same_file = file_sha256(dataset_path) == meta["dataset"]["sha256"]
    baseline = step_mean_baseline(flatten(named["train"])) if same_file and named["train"] else None
    results: dict[str, dict[str, Any]] = {}
    for name in splits:
        if name not in named:
            raise ValueError(f"unknown set {name!r}; choose from {sorted(named)}")
        examples = flatten(named[name])
        if not examples:
            continue
        predicted = predict_examples(checkpoint, cache, examples)
        true = np.array([e.remaining for e in examples], dtype=np.float64)
        steps = np.array([e.step for e in examples], dtype=np.int64)
        report = write_reports(out_dir, name, steps, true, predicted, int(meta["window_tokens"]))
        report["num_records"] = len(named[name])
        if baseline is not None:
            guess = np.array([baseline(int(k)) for k in steps])
            report["baseline"] = metrics(true, guess)
            report["table"] += (
                f"\nStep-mean baseline (mean remaining per step on the train split, no text): "
                f"{metrics_line(report['baseline'])}\n"
            )
            (out_dir / f"{name}_per_step.md").write_text(report["table"])
        results[name] = report
    if results:
        plot_mae_per_step(
            out_dir / "mae_per_step.png",
            {name: r["rows"] for name, r in results.items()},
            int(meta["window_tokens"]),
        )
    return results
