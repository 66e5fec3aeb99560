"""Serving: one predictor per process, batched, used at admission and after every window.

`load_predictor()` loads the checkpoint and its encoder once per process (cached by path).
`LengthPredictor.predict(items)` returns predicted REMAINING tokens (>= 0) for a batch of jobs, built with
the same text join as training (`features.join_text`). `BatchingPredictor` coalesces concurrent
`predict_one` calls from worker threads into one encoder batch; when a batch fails it answers None, logs,
and counts the failure, so the caller keeps the job's last prediction and the job never crashes.

Default checkpoint, first found: `ELIS_PREDICTOR_CHECKPOINT`; `<cache_dir>/predictor/predictor.pt` (what
`elis predictor train` writes); the one shipped in the package, `elis/data/predictor/predictor.pt`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elis.predictor.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from elis.predictor.encoder import Encoder, EncoderUnavailable, load_encoder
from elis.predictor.features import PredictionInput, cap_remaining, join_text
from elis.predictor.training import features_of
from elis.scheduling.levels import PriorityLevels

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "predictor.pt"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "predictor" / CHECKPOINT_NAME

__all__ = [
    "BatchingPredictor",
    "LengthPredictor",
    "PredictionInput",
    "PredictorUnavailable",
    "default_checkpoint_path",
    "load_predictor",
]


class PredictorUnavailable(RuntimeError):
    """No usable predictor: the checkpoint or its encoder is missing or unreadable."""


def user_checkpoint_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / "predictor" / CHECKPOINT_NAME


def default_checkpoint_path() -> Path:
    """The checkpoint `load_predictor(None)` uses (see the module docstring); raises if none exists."""
    from elis.config import get_settings

    settings = get_settings()
    if settings.predictor_checkpoint:
        return Path(settings.predictor_checkpoint).expanduser()
    for candidate in (user_checkpoint_path(settings.cache_dir), SHIPPED_CHECKPOINT):
        if candidate.is_file():
            return candidate
    raise PredictorUnavailable(
        f"no predictor checkpoint: looked in {user_checkpoint_path(settings.cache_dir)} and "
        f"{SHIPPED_CHECKPOINT}; run `elis predictor train` or set ELIS_PREDICTOR_CHECKPOINT"
    )


class LengthPredictor:
    """Predicts a job's remaining tokens from its prompt and partial output (a frozen encoder + MLP head)."""

    def __init__(self, encoder: Encoder, checkpoint: Checkpoint, path: Path | None = None) -> None:
        meta = checkpoint.metadata
        if encoder.name != meta["encoder"] or encoder.dim != meta["encoder_dim"]:
            raise PredictorUnavailable(
                f"checkpoint wants encoder {meta['encoder']} ({meta['encoder_dim']}-dim), "
                f"got {encoder.name} ({encoder.dim}-dim)"
            )
        self.encoder = encoder
        self.checkpoint = checkpoint
        self.path = path
        self._lock = threading.Lock()  # the fast tokenizer is not safe to share between threads
        self._levels = PriorityLevels(tuple(float(e) for e in meta["edges"]))

    @property
    def metadata(self) -> dict[str, Any]:
        return self.checkpoint.metadata

    @property
    def window_tokens(self) -> int:
        return int(self.metadata["window_tokens"])

    @property
    def levels(self) -> PriorityLevels:
        """Priority levels calibrated on the training targets (the checkpoint's edges)."""
        return self._levels

    def texts(self, items: Sequence[PredictionInput]) -> list[str]:
        meta = self.metadata
        return [
            join_text(
                self.encoder.tokenizer,
                item.prompt,
                item.output_text,
                int(meta["max_length"]),
                int(meta["prompt_budget"]),
            )
            for item in items
        ]

    def predict(self, items: Sequence[PredictionInput]) -> list[float]:
        """Predicted remaining tokens (>= 0, at most max_tokens - num_generated when the item knows its
        limit), one per item, in one encoder batch."""
        if not items:
            return []
        with self._lock:
            embeddings = self.encoder.encode(self.texts(items))
            x = features_of(embeddings, items, self.metadata["features"])
            with torch.no_grad():
                out = self.checkpoint.transform.inverse(self.checkpoint.head(torch.from_numpy(x)))
        return [cap_remaining(float(v), item) for v, item in zip(np.asarray(out, dtype=np.float64), items)]


_loaded: dict[Path, LengthPredictor] = {}
_load_lock = threading.Lock()


def load_predictor(checkpoint: str | Path | None = None) -> LengthPredictor:
    """The process's predictor for `checkpoint` (None: `default_checkpoint_path()`), loaded once."""
    path = Path(checkpoint).expanduser() if checkpoint is not None else default_checkpoint_path()
    path = path.resolve()
    with _load_lock:
        if path in _loaded:
            return _loaded[path]
        try:
            loaded = load_checkpoint(path)
            encoder = load_encoder(loaded.metadata["encoder"])
        except (CheckpointError, EncoderUnavailable) as exc:
            raise PredictorUnavailable(str(exc)) from exc
        predictor = LengthPredictor(encoder, loaded, path)
        _loaded[path] = predictor
        log.info("predictor loaded from %s (encoder %s)", path, encoder.name)
        return predictor


class BatchingPredictor:
    """Thread-safe front of a predictor: concurrent `predict_one` calls are coalesced into batches.

    A background thread takes the first waiting request, collects more for up to `max_delay_s` (at most
    `max_batch`), and predicts them together. On an error (or after `timeout_s` waiting) the caller gets
    None, the failure is logged, and `failures` counts the failed job predictions.
    """

    def __init__(
        self,
        predictor: Any,
        max_batch: int = 16,
        max_delay_s: float = 0.005,
        timeout_s: float = 60.0,
    ) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self.failures = 0
        self.num_batches = 0
        self.num_predictions = 0
        self._counter_lock = threading.Lock()
        self._queue: queue.Queue[tuple[PredictionInput, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="elis-predictor", daemon=True)
        self._thread.start()

    def predict_one(self, item: PredictionInput) -> float | None:
        """Predicted remaining tokens for one job, or None when prediction failed (keep the last one)."""
        future: Future = Future()
        self._queue.put((item, future))
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            log.error("length prediction timed out after %.1f s", self.timeout_s)
            self._count_failures(1)
            return None

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _count_failures(self, n: int) -> None:
        with self._counter_lock:
            self.failures += n

    def _collect(self, first: tuple[PredictionInput, Future]) -> tuple[list, bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_delay_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                entry = (
                    self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            try:
                results = self.predictor.predict([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"predictor returned {len(results)} results for {len(batch)} jobs")
            except Exception:
                log.exception("length prediction failed for a batch of %d jobs", len(batch))
                self._count_failures(len(batch))
                results = [None] * len(batch)
            with self._counter_lock:
                self.num_batches += 1
                self.num_predictions += len(batch)
            for (_, future), value in zip(batch, results):
                if not future.done():
                    future.set_result(value)
            if stop:
                return
