"""Training: read the dataset, split by prompt, cache the frozen embeddings, fit the head, save a checkpoint.

Splits. Records whose `source` is in `ood_sources` (default: the human-written `seed_tasks`) are held out
entirely as the out-of-distribution set; the rest are split train / val / test by a hash of the normalized
prompt (`features.split_of`), so a prompt never appears in two splits, and an OOD prompt equal to an
in-distribution one is dropped from the OOD set.

Embeddings are cached per joined text (SHA-1 of encoder name + text) in
`<cache_dir>/predictor/embeddings/<encoder>.npz`, so re-training or evaluating never re-encodes a text.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from elis.predictor.checkpoint import file_sha256, save_checkpoint
from elis.predictor.encoder import Encoder
from elis.predictor.features import (
    DEFAULT_FEATURE_SET,
    DEFAULT_PROMPT_BUDGET,
    Example,
    cap_remaining,
    extra_features,
    flatten,
    join_text,
    prompt_key,
    split_of,
)
from elis.predictor.head import LengthHead, TargetTransform, num_parameters

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_OOD_SOURCES = ("seed_tasks",)


def read_dataset(path: str | Path) -> list[dict[str, Any]]:
    """All records of a gzip (or plain) JSONL dataset file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split_records(
    records: Sequence[dict[str, Any]],
    ood_sources: Iterable[str] = DEFAULT_OOD_SOURCES,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> dict[str, list[dict[str, Any]]]:
    """train / val / test (by prompt hash) from in-distribution sources, plus `ood` from `ood_sources`."""
    ood_sources = set(ood_sources)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in (*SPLITS, "ood")}
    for record in records:
        if record.get("source") not in ood_sources:
            out[split_of(record["prompt"], fractions)].append(record)
    seen = {prompt_key(r["prompt"]) for name in SPLITS for r in out[name]}
    out["ood"] = [
        r for r in records if r.get("source") in ood_sources and prompt_key(r["prompt"]) not in seen
    ]
    return out


class EmbeddingCache:
    """Joined text -> frozen embedding, persisted as one .npz file per encoder."""

    def __init__(self, encoder: Encoder, cache_dir: Path | None, prompt_budget: int) -> None:
        self.encoder = encoder
        self.prompt_budget = prompt_budget
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{encoder.name}-{encoder.max_length}")
        self.path = (
            None if cache_dir is None else Path(cache_dir) / "predictor" / "embeddings" / f"{slug}.npz"
        )
        self._vectors: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            blob = np.load(self.path)
            self._vectors = dict(zip(blob["keys"].tolist(), blob["vectors"]))

    def _key(self, text: str) -> str:
        import hashlib

        return hashlib.sha1(f"{self.encoder.name}\0{text}".encode()).hexdigest()

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        texts = [
            join_text(
                self.encoder.tokenizer, e.prompt, e.output_text, self.encoder.max_length, self.prompt_budget
            )
            for e in examples
        ]
        return self.embed_texts(texts)

    def embed_texts(self, texts: Sequence[str], chunk: int = 2048) -> np.ndarray:
        """Embeddings of texts as given (cached); encodes and saves the missing ones in chunks with a progress bar."""
        keys = [self._key(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts) if k not in self._vectors}.items())
        if missing:
            from tqdm import tqdm

            started = time.perf_counter()
            with tqdm(total=len(missing), desc="encoding", disable=len(missing) < chunk) as bar:
                for i in range(0, len(missing), chunk):
                    part = missing[i : i + chunk]
                    vectors = self.encoder.encode([t for _, t in part])
                    self._vectors.update(zip([k for k, _ in part], vectors))
                    self.save()  # NOTE: a long encoding run keeps what it did if stopped
                    bar.update(len(part))
            log.info("encoded %d texts in %.1f s", len(missing), time.perf_counter() - started)
        if not keys:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # NOTE: another process may have added vectors since: keep them too
            try:
                blob = np.load(self.path)
                for key, vector in zip(blob["keys"].tolist(), blob["vectors"]):
                    self._vectors.setdefault(key, vector)
            except (OSError, ValueError, KeyError):
                pass
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(list(self._vectors)), vectors=np.stack(list(self._vectors.values())))
        tmp.replace(self.path)


def features_of(embeddings: np.ndarray, items: Sequence[Any], feature_set: str) -> np.ndarray:
    """The head's input: the embedding, then the feature set's scalar features (`features.FEATURE_SETS`)."""
    extra = np.array(extra_features(feature_set, items), dtype=np.float32).reshape(len(items), -1)
    return np.concatenate([embeddings, extra], axis=1) if extra.shape[1] else embeddings


@dataclass
class TrainConfig:
    """Everything that shapes a training run (recorded in the checkpoint)."""

    transform: str = "raw"
    loss: str = "huber"
    features: str = DEFAULT_FEATURE_SET
    hidden: int = 1024
    num_layers: int = 8
    dropout: float = 0.0
    # Principal components of the embedding fed to the MLP (0: the whole embedding, as in the paper).
    projection_dim: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    max_epochs: int = 60
    patience: int = 8
    seed: int = 0
    prompt_budget: int = DEFAULT_PROMPT_BUDGET


@dataclass
class Arrays:
    """One split's head inputs, true remaining tokens and steps."""

    x: np.ndarray
    y: np.ndarray
    step: np.ndarray
    examples: list[Example] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def of(cls, x: np.ndarray, examples: list[Example]) -> Arrays:
        """The head inputs `x` of `examples` (one row each), with their true remaining tokens and steps."""
        y = np.array([e.remaining for e in examples], dtype=np.float32)
        step = np.array([e.step for e in examples], dtype=np.int64)
        return cls(x=x, y=y, step=step, examples=examples)

    def subset(self, mask: np.ndarray) -> Arrays:
        idx = np.flatnonzero(mask)
        return Arrays(self.x[idx], self.y[idx], self.step[idx], [self.examples[i] for i in idx])


def arrays_for(cache: EmbeddingCache, examples: list[Example], feature_set: str) -> Arrays:
    """The LengthHead's inputs: the joined text's embedding, then the feature set's scalars."""
    return Arrays.of(features_of(cache.embed(examples), examples, feature_set), examples)


def _loss_fn(name: str) -> nn.Module:
    losses = {"l1": nn.L1Loss(), "mse": nn.MSELoss(), "huber": nn.SmoothL1Loss(beta=1.0)}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(losses)}")
    return losses[name]


def predict_array(head: LengthHead, transform: TargetTransform, x: np.ndarray) -> np.ndarray:
    head.eval()
    with torch.no_grad():
        outputs = [transform.inverse(head(torch.from_numpy(x[i : i + 1024]))) for i in range(0, len(x), 1024)]
    return torch.cat(outputs).numpy() if outputs else np.zeros(0, dtype=np.float32)


def capped(predicted: np.ndarray, examples: Sequence[Example]) -> np.ndarray:
    """Predictions clamped to each example's token limit (as serving does)."""
    if not examples:
        return predicted
    return np.array([cap_remaining(float(p), e) for p, e in zip(predicted, examples)], dtype=np.float32)


def fit_head(
    train: Arrays, val: Arrays, config: TrainConfig, embedding_dim: int
) -> tuple[LengthHead, dict[str, Any]]:
    """Fit the head on `train`, keep the epoch with the lowest validation MAE (tokens); early stopping."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    transform = TargetTransform(config.transform)
    head = LengthHead(
        train.x.shape[1],
        config.hidden,
        config.num_layers,
        config.dropout,
        embedding_dim=embedding_dim,
        projection_dim=config.projection_dim,
    )
    x_train = torch.from_numpy(train.x)
    head.set_normalization(x_train)
    y_train = transform.forward(torch.from_numpy(train.y))
    loss_fn = _loss_fn(config.loss)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best = (math.inf, 0, {k: v.clone() for k, v in head.state_dict().items()})
    history = []
    started = time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        head.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            batch = torch.tensor(order[i : i + config.batch_size])
            optimizer.zero_grad()
            loss = loss_fn(head(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        val_mae = float(np.mean(np.abs(capped(predict_array(head, transform, val.x), val.examples) - val.y)))
        history.append({"epoch": epoch, "train_loss": total / max(len(train), 1), "val_mae": val_mae})
        if val_mae < best[0]:
            best = (val_mae, epoch, {k: v.clone() for k, v in head.state_dict().items()})
        elif epoch - best[1] >= config.patience:
            break
    head.load_state_dict(best[2])
    head.eval()
    info = {
        "best_epoch": best[1],
        "best_val_mae": best[0],
        "epochs_run": len(history),
        "train_seconds": round(time.perf_counter() - started, 2),
        "history": history,
    }
    return head, info


def build_metadata(
    *,
    encoder: Encoder,
    config: TrainConfig,
    head: LengthHead,
    window_tokens: int,
    edges: Sequence[float],
    dataset_path: Path,
    dataset_sha256: str,
    ood_sources: Sequence[str],
    fractions: Sequence[float],
    counts: dict[str, Any],
    fit_info: dict[str, Any],
) -> dict[str, Any]:
    return {
        "encoder": encoder.name,
        "encoder_dim": encoder.dim,
        "max_length": encoder.max_length,
        "prompt_budget": config.prompt_budget,
        "features": config.features,
        "window_tokens": window_tokens,
        "head": {
            "input_dim": head.input_dim,
            "hidden": config.hidden,
            "num_layers": config.num_layers,
            "dropout": config.dropout,
            "embedding_dim": head.embedding_dim,
            "projection_dim": head.projection_dim,
            "num_parameters": num_parameters(head),
        },
        "target_transform": {"name": config.transform, "scale": TargetTransform(config.transform).scale},
        "loss": config.loss,
        "edges": [float(e) for e in edges],
        "num_priority_levels": len(edges) + 2,
        "dataset": {
            "file": dataset_path.name,
            "sha256": dataset_sha256,
            "ood_sources": list(ood_sources),
            "split_fractions": list(fractions),
            "counts": counts,
        },
        "train_config": asdict(config),
        "fit": {k: v for k, v in fit_info.items() if k != "history"},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def train_predictor(
    dataset_path: str | Path,
    out_path: str | Path,
    encoder: Encoder,
    *,
    config: TrainConfig | None = None,
    num_priority_levels: int = 10,
    cache_dir: Path | None = None,
    ood_sources: Sequence[str] = DEFAULT_OOD_SOURCES,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    max_records: int | None = None,
    half: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """The whole `elis predictor train`: returns the checkpoint path and its metadata."""
    from elis.scheduling.levels import calibrate_levels

    config = config or TrainConfig()
    dataset_path = Path(dataset_path)
    records = read_dataset(dataset_path)
    if max_records is not None:
        records = records[:max_records]
    windows = {int(r["window_tokens"]) for r in records}
    if len(windows) != 1:
        raise ValueError(f"dataset mixes window sizes {sorted(windows)}")
    splits = split_records(records, ood_sources, fractions)
    examples = {name: flatten(splits[name]) for name in SPLITS}
    if not examples["train"] or not examples["val"]:
        raise ValueError(f"too few records to train: { {k: len(v) for k, v in examples.items()} }")
    cache = EmbeddingCache(encoder, cache_dir, config.prompt_budget)
    train = arrays_for(cache, examples["train"], config.features)
    val = arrays_for(cache, examples["val"], config.features)
    head, fit_info = fit_head(train, val, config, encoder.dim)
    edges = calibrate_levels(num_priority_levels, train.y.tolist()).edges
    counts = {
        **{f"{name}_records": len(splits[name]) for name in (*SPLITS, "ood")},
        **{f"{name}_examples": len(examples[name]) for name in SPLITS},
    }
    metadata = build_metadata(
        encoder=encoder,
        config=config,
        head=head,
        window_tokens=windows.pop(),
        edges=edges,
        dataset_path=dataset_path,
        dataset_sha256=file_sha256(dataset_path),
        ood_sources=ood_sources,
        fractions=fractions,
        counts=counts,
        fit_info=fit_info,
    )
    if max_records is not None:
        metadata["dataset"]["max_records"] = max_records
    path = save_checkpoint(out_path, head, metadata, half=half)
    log.info("saved %s (best epoch %d, val MAE %.1f)", path, fit_info["best_epoch"], fit_info["best_val_mae"])
    return path, metadata
