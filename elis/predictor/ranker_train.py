"""Train a ranker checkpoint from corpus records, and write the level-edges file next to it.

The checkpoint is the same container as the ELIS head's (`checkpoint.py`, float16 weights) with
`metadata["kind"] == "ranker"`, the per-step calibration and a `version` (1 for a trained checkpoint; each
`elis predictor update` that is accepted adds 1). `level_edges.json` beside it holds the score-to-level
edges and the per-step uncertainty the scheduler reads without torch (shape agreed with the lead):
`{"edges": [...], "num_levels": N, "source": ..., "checkpoint": ..., "uncertainty_by_step": {"0": ..}}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from elis.predictor.checkpoint import file_sha256, save_checkpoint
from elis.predictor.corpus_eval import split_in_distribution, step_rows
from elis.predictor.features import flatten
from elis.predictor.ranker import Ranker, RankerConfig, arrays_of, ranker_metadata, train_ranker

log = logging.getLogger(__name__)

LEVEL_FILE_NAME = "level_edges.json"


def uncertainty_by_step(examples, predicted: np.ndarray, window_tokens: int, max_step: int = 20) -> dict[int, float]:
    """Median |pred - true| / max(true, W) per step, keyed by tokens generated (steps with >= 10 examples)."""
    true = np.array([e.remaining for e in examples], dtype=np.float64)
    steps = np.array([e.step for e in examples])
    out = {}
    for k in range(max_step + 1):
        mask = steps == k
        if mask.sum() >= 10:
            rel = np.abs(predicted[mask] - true[mask]) / np.maximum(true[mask], window_tokens)
            out[k * window_tokens] = round(float(np.median(rel)), 4)
    return out


def write_level_file(checkpoint_path: Path, edges: Sequence[float], num_levels: int, source: str,
                     uncertainty: dict[int, float]) -> Path:
    """`level_edges.json` next to the checkpoint (the shape `elis.scheduling.levels.load_level_file` reads)."""
    checkpoint_path = Path(checkpoint_path)
    data = {
        "edges": [float(e) for e in edges],
        "num_levels": num_levels,
        "source": source,
        "checkpoint": f"{checkpoint_path.name} sha256 {file_sha256(checkpoint_path)[:16]}",
        "uncertainty_by_step": {str(k): v for k, v in sorted(uncertainty.items())},
    }
    path = checkpoint_path.parent / LEVEL_FILE_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def checkpoint_metadata(ranker: Ranker, encoder, window_tokens: int, edges: Sequence[float], num_levels: int,
                        dataset: dict[str, Any], validation: dict[str, Any], version: int = 1) -> dict[str, Any]:
    return {
        **ranker_metadata(ranker),
        "encoder": encoder.name,
        "encoder_dim": encoder.dim,
        "max_length": encoder.max_length,
        "prompt_budget": 96,  # unused by the ranker; kept so older tools reading the key still work
        "features": "ranker",
        "window_tokens": window_tokens,
        "edges": [float(e) for e in edges],
        "num_priority_levels": num_levels,
        "dataset": dataset,
        "validation": validation,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def train_ranker_checkpoint(
    records: Sequence[dict],
    out_path: Path,
    cache,
    config: RankerConfig,
    dataset_files: Sequence[Path],
    num_levels: int = 10,
    half: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Split by prompt (80/10/10), train on train, early-stop and calibrate on val, report val; save."""
    from elis.scheduling.levels import calibrate_levels

    windows = {int(r["window_tokens"]) for r in records}
    if len(windows) != 1:
        raise ValueError(f"records mix window sizes {sorted(windows)}")
    window = windows.pop()
    splits = split_in_distribution(records)
    prior = None
    if config.use_prompt_prior:
        from elis.predictor.prompt_prior import prior_backbone, prior_config, train_prompt_prior

        prior = train_prompt_prior(cache.encoder, splits, prior_config(config.prior_epochs, config.prior_layers),
                                   progress=log.info,
                                   embed_texts=cache.embed_texts, backbone=prior_backbone(config.prior_encoder))
    train = arrays_of(cache, flatten(splits["train"]), config, prior)
    val = arrays_of(cache, flatten(splits["val"]), config, prior)
    ranker, info = train_ranker(train, val, config, cache.encoder.dim)
    predicted = ranker.predict(val)
    rows = step_rows(val.examples, predicted, window, max_step=8)
    validation = {
        "fit": info,
        "val_pooled_tau": rows[-1].tau,
        "val_tau_by_step": {r.step: round(r.tau, 4) for r in rows if r.step != "all"},
        "val_bias_by_step": {r.step: round(r.bias, 4) for r in rows if r.step != "all"},
    }
    edges = calibrate_levels(num_levels, train.y.tolist()).edges
    dataset = {
        "files": [Path(f).name for f in dataset_files],
        "sha256": {Path(f).name: file_sha256(f) for f in dataset_files},
        "records": len(records),
        "sources": sorted({r.get("source", "") for r in records}),
        "counts": {name: len(v) for name, v in splits.items()},
        # kept for older tools (evaluate's split rule): no OOD source, by-prompt fractions
        "ood_sources": [],
        "split_fractions": [0.8, 0.1, 0.1],
        "file": Path(dataset_files[0]).name if dataset_files else "",
    }
    metadata = checkpoint_metadata(ranker, cache.encoder, window, edges, num_levels, dataset, validation)
    if prior is not None:
        metadata["prompt_prior"] = prior.metadata()
    path = save_checkpoint(out_path, ranker.head, metadata, half=half,
                           prompt_prior=prior.state(half=half) if prior is not None else None)
    write_level_file(path, edges, num_levels, "quantiles of the remaining-length training targets of the ranker "
                     "checkpoint", uncertainty_by_step(val.examples, predicted, window))
    log.info("saved %s (val pooled tau %.3f)", path, validation["val_pooled_tau"])
    return path, metadata
