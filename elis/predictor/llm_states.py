"""The served model's own hidden states of a prompt, as admission features (issue 9.3: a better encoder).

The prompt prior tunes MiniLM, a sentence encoder that has never seen what SmolLM2 answers. The served model
itself has: the state it holds at the end of the chat-templated prompt is the state it starts answering from.
Probing an LLM's own states for its output length is the idea of TRAIL (Shahout et al., 2024) and of the
"response length perception" line of work. This module reads those states with transformers, on the CPU, from
the model folder `elis models prepare` builds (no download), and exposes the encoder interface the admission
study uses (`name`, `dim`, `max_length`, `tokenizer`, `encode`), so `finetune-encoder --encoder served-model`
compares it with MiniLM's frozen head on the same folds; the served prompt prior (`prompt_prior.StatesPrior`)
reads the same features.

Features, per chosen layer: the last prompt token's state and the mean over the prompt's tokens, each passed
through the model's final RMSNorm (an intermediate residual stream carries a few huge dimensions; the norm puts
every layer on the scale the LM head reads) and L2-normalized, then concatenated.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SERVED_MODEL_ENCODER = "served-model"


@dataclass
class ServedModelStates:
    """The served LLM as a frozen prompt encoder: pooled, normalized hidden states of chosen layers."""

    model: Any  # a transformers causal LM
    tokenizer: Any
    layers: tuple[int, ...]
    max_length: int = 512
    batch_size: int = 16
    name: str = SERVED_MODEL_ENCODER
    # keep every text's features (training: each prompt is read by several folds and passes); off when
    # serving, where the predictor's own LRU cache bounds memory
    memo: dict[str, np.ndarray] | None = None
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.dim = 2 * len(self.layers) * int(self.model.config.hidden_size)

    def templated(self, text: str) -> str:
        """The text exactly as the worker sends it to vLLM: one user message, with the generation prompt."""
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                  tokenize=False)

    def encode(self, texts: list[str]) -> np.ndarray:
        """One feature row per text (float32)."""
        if self.memo is not None:
            missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
            if missing:
                self.memo.update(zip(missing, self._encode(missing)))
            return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        norm = self.model.model.norm
        starts = range(0, len(order), self.batch_size)
        if len(texts) > 4 * self.batch_size:  # a study encodes thousands of prompts at once: minutes
            from tqdm import tqdm

            starts = tqdm(starts, desc="served-model states", unit="batch", leave=False)
        with torch.inference_mode():
            for start in starts:
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer([self.templated(texts[i]) for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                # NOTE: the decoder body only: the LM head's logits over 49k tokens at every position would
                # cost about a quarter of the pass and are never read.
                states = self.model.model(**batch, output_hidden_states=True).hidden_states
                mask = batch["attention_mask"].unsqueeze(-1).float()
                last = batch["attention_mask"].sum(1) - 1  # right padding: the last real token
                blocks = []
                for layer in self.layers:
                    # NOTE: the last entry of hidden_states already went through the final norm.
                    hidden = states[layer] if layer == len(states) - 1 else norm(states[layer])
                    pooled = (hidden * mask).sum(1) / mask.sum(1)
                    final = hidden[torch.arange(hidden.shape[0]), last]
                    blocks += [torch.nn.functional.normalize(final, dim=-1),
                               torch.nn.functional.normalize(pooled, dim=-1)]
                out[idx] = torch.cat(blocks, dim=-1).float().numpy()
        return out


def bundled_model_dir() -> Path:
    """The folder of the bundled SmolLM2-135M-Instruct (built from the package's GGUF once, no download)."""
    from elis.config import Settings
    from elis.models_prepare import prepare_default_model

    return prepare_default_model(Settings().models_dir)


def load_served_model_states(model_dir: Path | None = None, layers: tuple[int, ...] = (),
                             memo: bool = False) -> ServedModelStates:
    """Load the served model (a local folder; the bundled one by default) for its states; `layers` default to
    the middle, three quarters and the last of its layers (index 0 is the embeddings)."""
    model_dir = model_dir or bundled_model_dir()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    count = int(model.config.num_hidden_layers)
    chosen = tuple(layers) or (count // 2, (3 * count) // 4, count)
    log.info("served-model states from %s: layers %s of %d", model_dir, chosen, count)
    return ServedModelStates(model=model, tokenizer=tokenizer, layers=chosen, memo={} if memo else None)


_SHARED: dict[tuple[tuple[int, ...], bool], ServedModelStates] = {}
# Held while a reader loads: a hot reload's new predictor and the old one (or two Celery threads) asking at once
# would otherwise each load the 540 MB model.
_SHARED_LOCK = threading.Lock()


def shared_served_model_states(layers: tuple[int, ...] = (), memo: bool = False) -> ServedModelStates:
    """One process-wide reader of the bundled model's states per layer choice: a hot reload of the predictor,
    or a second predictor in the process, reuses the loaded model instead of loading 540 MB again. `memo`
    (training: every prompt is read in several passes and folds) gets its own reader that keeps every text's
    features; serving's has none (the predictor's LRU cache bounds its memory)."""
    key = (tuple(layers), memo)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = load_served_model_states(layers=tuple(layers), memo=memo)
        return _SHARED[key]


class LazyServedModelStates:
    """The bundled model's states reader, loaded at its first use (then shared process-wide, as
    `shared_served_model_states`): serving builds the prompt prior on it, so a worker whose jobs all carry their
    admission prior score (`PredictionInput.prior_score`) never loads the 540 MB model."""

    def __init__(self, layers: tuple[int, ...], hidden_size: int) -> None:
        self.layers = tuple(layers)
        self.dim = 2 * len(self.layers) * int(hidden_size)
        self._lock = threading.Lock()
        self._states: ServedModelStates | None = None
        self._failure: str | None = None

    @property
    def loaded(self) -> bool:
        return self._states is not None

    def load(self) -> ServedModelStates:
        """The loaded reader. A load that failed is not tried again at every prediction (each would wait for
        it and log it): the failure is raised at once until the predictor is reloaded."""
        with self._lock:
            if self._failure is not None:
                raise RuntimeError(f"the served model did not load for the prompt prior: {self._failure}")
            if self._states is None:
                try:
                    self._states = shared_served_model_states(self.layers)
                except Exception as exc:
                    self._failure = f"{type(exc).__name__}: {exc}"
                    raise
        return self._states

    @property
    def model(self):
        return self.load().model

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.load().encode(texts)


def bundled_model_hidden_size() -> int:
    """The bundled model's hidden size, from its config (no weights loaded)."""
    config = json.loads((bundled_model_dir() / "config.json").read_text())
    return int(config["hidden_size"])

