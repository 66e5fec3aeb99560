"""Serving: one predictor per process, batched, used at admission and after every window.

`load_predictor()` loads the checkpoint and its encoder once per process (cached by path).
`LengthPredictor.predict(items)` returns predicted REMAINING tokens (>= 0) for a batch of jobs, built with
the same text join as training (`features.join_text`). `BatchingPredictor` coalesces concurrent
`predict_one` calls from worker threads into one encoder batch; when a batch fails it answers None, logs,
and counts the failure, so the caller keeps the job's last prediction and the job never crashes.

Default checkpoint, first found: `ELIS_PREDICTOR_CHECKPOINT`; `<cache_dir>/predictor/predictor.pt` (what
`elis predictor train` and `update` write); the ranker shipped in the package,
`elis/data/predictor/ranker/predictor.pt`. The previous default (the ELIS head) stays shipped as
`elis/data/predictor/predictor.pt`: the baseline `elis predictor evaluate --loso` compares with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elis import metrics
from elis.predictor.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from elis.predictor.encoder import Encoder, EncoderUnavailable, load_encoder
from elis.predictor.features import PredictionInput, cap_remaining, join_text, prompt_head
from elis.predictor.loops import LoopRule
from elis.predictor.training import features_of
from elis.scheduling.levels import PriorityLevels

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "predictor.pt"
SHIPPED_FOLDER = Path(__file__).resolve().parent.parent / "data" / "predictor"
# The ranker trained on the 5,000-prompt four-source corpus (issue 9): the default since it beat the ELIS
# head on both sources neither saw (docs/predictor.md); `elis predictor update` starts from it.
SHIPPED_RANKER = SHIPPED_FOLDER / "ranker" / CHECKPOINT_NAME
SHIPPED_CHECKPOINT = SHIPPED_RANKER
# The previous default (ELIS head, 631 Alpaca prompts): kept as the evaluation's baseline.
PREVIOUS_CHECKPOINT = SHIPPED_FOLDER / CHECKPOINT_NAME

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


def update_target_path(settings) -> Path:
    """Where `elis predictor update` writes a new version by default: the file serving loads and watches,
    ELIS_PREDICTOR_CHECKPOINT when it is set, unless that names a checkpoint shipped inside the package
    (never overwritten); else `<cache_dir>/predictor/predictor.pt`, which the default serving prefers."""
    if settings.predictor_checkpoint:
        configured = Path(settings.predictor_checkpoint).expanduser().resolve()
        if not configured.is_relative_to(SHIPPED_FOLDER.resolve()):
            return configured
    return user_checkpoint_path(settings.cache_dir)


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


def checkpoint_version(path: Path) -> tuple[int, int]:
    """What changes when a checkpoint file is replaced (update writes a temp file and renames it)."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def prior_fingerprint(checkpoint: Checkpoint) -> str | None:
    """A short hash of the checkpoint's prompt prior (its description and tensors); None without one. An update
    (`elis predictor update`) keeps the prior, so its scores stay valid across versions; a retrained one differs."""
    if not checkpoint.prompt_prior:
        return None
    digest = hashlib.sha256(json.dumps(checkpoint.metadata.get("prompt_prior"), sort_keys=True, default=str).encode())
    for name in sorted(checkpoint.prompt_prior):
        digest.update(name.encode())
        digest.update(checkpoint.prompt_prior[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class LengthPredictor:
    """Predicts a job's remaining tokens from its prompt and partial output (a frozen encoder + a head).

    Two kinds of checkpoint: the ELIS MLP on one joined text (`prompt head [SEP] output tail`), and the
    ranker (`ranker.py`): the prompt's embedding (cached per prompt, so computed once per job) + the
    embedding of the output's last 64 encoder tokens + scalars, then a per-step calibration.

    Hot reload: when built with `watch=True`, `predict` checks at most every `reload_s` seconds whether
    the checkpoint file changed (or, for the default checkpoint, whether another one now takes
    precedence) and swaps in the new version (`elis predictor update` writes new versions).
    """

    PROMPT_CACHE_SIZE = 4096

    def __init__(
        self,
        encoder: Encoder,
        checkpoint: Checkpoint,
        path: Path | None = None,
        watch: bool = False,
        reload_s: float = 10.0,
        follow_default: bool = False,
        loop_rule: LoopRule | None = None,
    ) -> None:
        self._check_encoder(encoder, checkpoint)
        self.loop_rule = loop_rule
        self.encoder = encoder
        self.checkpoint = checkpoint
        self.path = path
        self._lock = threading.Lock()  # the fast tokenizer is not safe to share between threads
        self._levels = PriorityLevels(tuple(float(e) for e in checkpoint.metadata["edges"]))
        self._prompt_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._prompt_priors: OrderedDict[str, float] = OrderedDict()
        self._prior = self._prior_of(checkpoint, encoder)
        self._prior_fingerprint = prior_fingerprint(checkpoint)
        self._calibration = self._calibration_of(checkpoint)
        self._admission = self._calibration_of(checkpoint, "admission_calibration")
        self.watch = watch and path is not None
        self.reload_s = reload_s
        self.follow_default = follow_default
        self.reloads = 0
        self.carried_priors = 0  # prior scores taken from the items (computed at admission) instead of computed
        self._version = checkpoint_version(path) if self.watch else None
        self._next_check = time.monotonic() + reload_s

    @staticmethod
    def _check_encoder(encoder: Encoder, checkpoint: Checkpoint) -> None:
        meta = checkpoint.metadata
        if encoder.name != meta["encoder"] or encoder.dim != meta["encoder_dim"]:
            raise PredictorUnavailable(
                f"checkpoint wants encoder {meta['encoder']} ({meta['encoder_dim']}-dim), "
                f"got {encoder.name} ({encoder.dim}-dim)"
            )

    @staticmethod
    def _prior_of(checkpoint: Checkpoint, encoder: Encoder):
        from elis.predictor.online import prior_of

        return prior_of(checkpoint, encoder)

    @staticmethod
    def _calibration_of(checkpoint: Checkpoint, key: str = "calibration"):
        from elis.predictor.calibration import StepCalibration

        blob = checkpoint.metadata.get(key)
        return StepCalibration.from_json(blob) if blob else None

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

    @property
    def version(self) -> str:
        """The loaded checkpoint's version label (update writes `version`; older checkpoints: created_at)."""
        return str(self.metadata.get("version", self.metadata.get("created_at", "")))

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

    # -- hot reload ------------------------------------------------------------------------------------
    def maybe_reload(self, force: bool = False) -> bool:
        """Swap in a changed checkpoint (checked at most every `reload_s` s); True when one was loaded.

        A checkpoint that fails to load is logged and ignored: the current one keeps serving."""
        if not self.watch or (not force and time.monotonic() < self._next_check):
            return False
        self._next_check = time.monotonic() + self.reload_s
        try:
            path = self.path
            if self.follow_default:
                path = default_checkpoint_path().resolve()
            version = checkpoint_version(path)
            if path == self.path and version == self._version:
                return False
            loaded = load_checkpoint(path)
            encoder = self.encoder
            if loaded.metadata["encoder"] != self.encoder.name:
                encoder = load_encoder(loaded.metadata["encoder"])
            self._check_encoder(encoder, loaded)
            prior = self._prior_of(loaded, encoder)
            fingerprint = prior_fingerprint(loaded)
        except Exception as exc:  # noqa: BLE001 -- a half-written or foreign file must not stop serving
            log.warning("predictor checkpoint not reloaded: %s", exc)
            return False
        with self._lock:
            if encoder is not self.encoder:
                self._prompt_vectors.clear()
            self._prompt_priors.clear()
            self.encoder, self.checkpoint, self.path, self._version = encoder, loaded, path, version
            self._prior = prior
            self._prior_fingerprint = fingerprint
            self._levels = PriorityLevels(tuple(float(e) for e in loaded.metadata["edges"]))
            self._calibration = self._calibration_of(loaded)
            self._admission = self._calibration_of(loaded, "admission_calibration")
            self.reloads += 1
        log.info("predictor reloaded from %s (version %s)", path, self.version)
        return True

    # -- prediction ------------------------------------------------------------------------------------
    def _cached(self, cache: OrderedDict, heads: list[str], compute) -> list:
        """Per prompt head, from an LRU cache, so a job's prompt is encoded once, at admission."""
        missing = list(dict.fromkeys(h for h in heads if h not in cache))
        if missing:
            for head, value in zip(missing, compute(missing)):
                cache[head] = value
        values = [cache[h] for h in heads]
        for head in heads:
            cache.move_to_end(head)
        while len(cache) > self.PROMPT_CACHE_SIZE:
            cache.popitem(last=False)
        return values

    def _embed_prompt_heads(self, heads: list[str]) -> np.ndarray:
        """Prompt-head embeddings (cached)."""
        return np.stack(self._cached(self._prompt_vectors, heads, self.encoder.encode))

    def _prior_scores(self, heads: list[str]) -> np.ndarray:
        """The prompt prior's scores of prompt heads (cached)."""
        return np.array(self._cached(self._prompt_priors, heads, self._score_prior), dtype=np.float32)

    def _score_prior(self, heads: list[str]) -> np.ndarray:
        metrics.observe_prior_scores("computed", len(heads))
        return self._prior.score(heads)

    def _head_of(self, prompt: str) -> str:
        return prompt_head(self.encoder.tokenizer, prompt, self.encoder.max_length)

    def _reuse_carried_priors(self, items: Sequence[PredictionInput]) -> None:
        """Seed the prior cache with the scores the items carry from admission, when this prior made them."""
        carried = 0
        for item in items:
            if item.prior_score is not None and item.prior_fingerprint == self._prior_fingerprint:
                head = self._head_of(item.prompt)
                if head not in self._prompt_priors:
                    self._prompt_priors[head] = float(item.prior_score)
                    carried += 1
        self.carried_priors += carried
        metrics.observe_prior_scores("carried", carried)

    def prior_score(self, prompt: str) -> tuple[float, str] | None:
        """The prompt prior's score of `prompt` and the prior's fingerprint (to carry with the job, see
        `PredictionInput.prior_score`); None when the checkpoint has no prior. Cached: after `predict` of the
        same prompt it costs a dictionary lookup."""
        with self._lock:
            if self.checkpoint.kind != "ranker" or self._prior is None:
                return None
            score = self._cached(self._prompt_priors, [self._head_of(prompt)], self._score_prior)[0]
            return float(score), self._prior_fingerprint

    def _ranker_scores(self, items: Sequence[PredictionInput]) -> np.ndarray:
        from elis.predictor.ranker import ranker_inputs

        meta = self.metadata
        if self._prior is not None:
            self._reuse_carried_priors(items)
        # The inputs training builds (ranker_inputs); only the prompts' vectors come from the LRU cache.
        x = ranker_inputs(
            self._embed_prompt_heads, self.encoder.tokenizer, self.encoder.max_length, items,
            use_tail=bool(meta["head"]["use_tail"]), use_repetition=bool(meta.get("use_repetition", True)),
            tail_tokens=int(meta["tail_tokens"]), use_tail_hash=bool(meta.get("use_tail_hash", False)),
            use_prompt_hash=bool(meta.get("use_prompt_hash", False)), embed_tails=self.encoder.encode,
            prior_of=self._prior_scores if self._prior is not None else None,
            use_greedy_flag=bool(meta.get("use_greedy_flag", False)),
        )
        with torch.no_grad():
            scores = self.checkpoint.head(torch.from_numpy(x)).numpy().astype(np.float64)
        steps = np.array([i.num_generated // self.window_tokens for i in items])
        if self._calibration is not None:
            out = self._calibration.apply(scores, steps)
        else:
            out = self.checkpoint.transform.inverse(torch.from_numpy(scores)).numpy()
        if self._admission is not None and self._prior is not None:
            # An admission is predicted by the prompt prior alone (ranker.Ranker.predict, as trained).
            from elis.predictor.ranker import admission_tokens

            # admission = nothing generated yet (a worker's window may be shorter than the checkpoint's)
            first = np.array([item.num_generated == 0 for item in items])
            out[first] = admission_tokens(self._admission, x[first, -1])
        return out

    def predict(self, items: Sequence[PredictionInput]) -> list[float]:
        """Predicted remaining tokens (>= 0, at most max_tokens - num_generated when the item knows its
        limit), one per item, in one encoder batch."""
        if not items:
            return []
        self.maybe_reload()
        with self._lock:
            if self.checkpoint.kind == "ranker":
                out = self._ranker_scores(items)
            else:
                embeddings = self.encoder.encode(self.texts(items))
                x = features_of(embeddings, items, self.metadata["features"])
                with torch.no_grad():
                    out = self.checkpoint.transform.inverse(self.checkpoint.head(torch.from_numpy(x)))
        capped = [cap_remaining(float(v), item) for v, item in zip(np.asarray(out, dtype=np.float64), items)]
        return self.loop_rule.apply_all(capped, items) if self.loop_rule is not None else capped


_loaded: dict[Path, LengthPredictor] = {}
_load_lock = threading.Lock()


def load_predictor(checkpoint: str | Path | None = None) -> LengthPredictor:
    """The process's predictor for `checkpoint` (None: `default_checkpoint_path()`), loaded once, then
    reloaded when the file changes (every `ELIS_PREDICTOR_RELOAD_S` seconds at most; 0 turns it off)."""
    from elis.config import get_settings

    follow_default = checkpoint is None
    path = Path(checkpoint).expanduser() if checkpoint is not None else default_checkpoint_path()
    path = path.resolve()
    settings = get_settings()
    reload_s = float(settings.predictor_reload_s)
    loop_rule = LoopRule(greedy_share=settings.predictor_loop_greedy_share,
                         sampled_share=settings.predictor_loop_sampled_share)
    with _load_lock:
        if path in _loaded:
            return _loaded[path]
        try:
            loaded = load_checkpoint(path)
            encoder = load_encoder(loaded.metadata["encoder"])
        except (CheckpointError, EncoderUnavailable) as exc:
            raise PredictorUnavailable(str(exc)) from exc
        # NOTE: watch the file so `elis predictor update` reaches running APIs and workers without a restart
        predictor = LengthPredictor(encoder, loaded, path, watch=reload_s > 0, reload_s=reload_s,
                                    follow_default=follow_default, loop_rule=loop_rule)
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
