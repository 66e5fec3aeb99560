"""The prompt prior: the encoder with its top layers fine-tuned to rank prompts by expected output length.

The fine-tuning study (`finetune.py`, docs/predictor.md) found that tuning MiniLM's top layers (4 since
2026-12-06; 2 before) with a small
head on the prompt's mean output length lifts left-out admission tau well above the ranker's (frozen
embedding, 64 PCA dims). This module turns that admission model into a served feature: the ranker gets the
prior's score of the prompt as one more scalar, at every step; and, since 2026-12-06, each ADMISSION is
predicted by the prior's score alone (isotonic to tokens on the validation admissions, `ranker.Ranker`),
which ranks left-out sources better than the head that reads it among its other inputs. Both are calibrated
to remaining tokens, so admissions and re-predictions stay on one scale (issue 8: a newcomer's admission
prediction is compared with running jobs' re-predictions).

Since 2026-12-07 the shipped prior is a `StatesPrior`: the same kind of head over the SERVED model's own hidden
states at the end of the prompt (llm_states.py), frozen; left out, it ranks admissions at 0.99-1.43 of the noise
ceiling where the tuned MiniLM reached 0.65-0.77 (docs/predictor.md). Only its head is stored; the model is the
bundled one. `RankerConfig.prior_encoder` chooses ("served-model" or "minilm").

Stored inside the ranker checkpoint (`checkpoint.py`, key "prompt_prior"): only the tuned top layers and the
head (about 7 M parameters, 14 MB in float16 with four layers); the bottom layers come from the bundled
encoder, which the checkpoint already names. Cost at serving: one more encoder pass per prompt, at admission
(cached by prompt).
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from elis.predictor.features import prompt_head
from elis.predictor.finetune import (
    AdmissionModel,
    FinetuneConfig,
    length_batches,
    prompt_rows,
    train_admission,
)
from elis.predictor.llm_states import SERVED_MODEL_ENCODER


class PromptPrior:
    """Scores prompt heads (the text the encoder reads): higher = longer expected output (standardized log)."""

    def __init__(self, bert: nn.Module, head: nn.Module, tokenizer, max_length: int, top_layers: int,
                 info: dict[str, Any] | None = None) -> None:
        self.bert = bert.eval()
        self.head = head.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.top_layers = top_layers
        self.info = info or {}

    def score(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """One score per text (float32), batched by length so a batch pads little."""
        texts = list(texts)
        out = np.zeros(len(texts), dtype=np.float32)
        if not texts:
            return out
        with torch.inference_mode():
            for idx in length_batches(texts, batch_size, random.Random(0)):
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                cls = nn.functional.normalize(self.bert(**batch).last_hidden_state[:, 0], dim=-1)
                out[idx] = self.head(cls).squeeze(-1).numpy()
        return out

    # -- storage ------------------------------------------------------------------------------------------
    def state(self, half: bool = True) -> dict[str, torch.Tensor]:
        """The tuned top layers ("layer.<i>.*") and the head ("head.*"): what the bundled encoder lacks."""
        layers = self.bert.encoder.layer
        first = len(layers) - self.top_layers
        state = {}
        for i in range(first, len(layers)):
            for name, value in layers[i].state_dict().items():
                state[f"layer.{i}.{name}"] = value
        for name, value in self.head.state_dict().items():
            state[f"head.{name}"] = value
        return {k: (v.detach().to(torch.float16) if half and v.is_floating_point() and not k.startswith("head.")
                    else v.detach()).clone() for k, v in state.items()}

    def metadata(self) -> dict[str, Any]:
        hidden = int(self.head[0].out_features)
        return {"top_layers": self.top_layers, "hidden": hidden, **{k: v for k, v in self.info.items()
                                                                     if isinstance(v, (int, float, str, list))}}


class StatesPrior:
    """The prompt prior over the served model's own hidden states (llm_states.py): a small head on frozen
    features, so only the head is stored; the model is the bundled one the service serves by default.

    Scores the same prompt heads as PromptPrior (the ranker's encoder cuts them), on the same scale."""

    def __init__(self, states, head: nn.Module, info: dict[str, Any] | None = None) -> None:
        self.states = states
        self.head = head.eval()
        self.top_layers = 0
        self.info = info or {}

    def score(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """One score per text (float32)."""
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            features = torch.from_numpy(self.states.encode(texts))
            return self.head(features).squeeze(-1).numpy().astype(np.float32)

    def state(self, half: bool = True) -> dict[str, torch.Tensor]:
        """The head only ("head.*", float32): the states come from the served model."""
        return {f"head.{k}": v.detach().clone() for k, v in self.head.state_dict().items()}

    def metadata(self) -> dict[str, Any]:
        return {"backbone": SERVED_MODEL_ENCODER, "state_layers": list(self.states.layers),
                "model_hidden": int(self.states.model.config.hidden_size), "top_layers": 0,
                "hidden": int(self.head[0].out_features),
                **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str, list))}}


def prior_backbone(name: str):
    """What a prior of this kind reads besides the ranker's encoder: None for "minilm" (the encoder itself);
    for "served-model", the served model's states, loaded once per process and memoized by text (a training
    run scores each prompt in several passes and folds)."""
    if name in ("", "minilm"):
        return None
    if name != SERVED_MODEL_ENCODER:
        raise ValueError(f"unknown prior encoder {name!r}: 'minilm' or {SERVED_MODEL_ENCODER!r}")
    from elis.predictor.llm_states import shared_served_model_states

    return shared_served_model_states(memo=True)


def prior_from_model(model: AdmissionModel, info: dict[str, Any] | None = None) -> PromptPrior:
    """A PromptPrior from a trained AdmissionModel (a frozen one gets a copy of the encoder's BERT)."""
    encoder = model.encoder
    bert = model.bert if model.bert is not None else copy.deepcopy(encoder.model.model)
    return PromptPrior(bert, model.head, encoder.tokenizer, encoder.max_length, model.top_layers, info)


def load_prior(encoder, metadata: dict[str, Any], state: dict[str, torch.Tensor]) -> PromptPrior | StatesPrior:
    """Rebuild the prior over `encoder` (the checkpoint's bundled encoder) from a stored state; a prior over
    the served model's states reads the bundled model (its states are what the head was trained on), loaded at
    its first score."""
    if metadata.get("backbone") == SERVED_MODEL_ENCODER:
        from elis.predictor.llm_states import LazyServedModelStates, bundled_model_hidden_size

        hidden_size = bundled_model_hidden_size()
        if hidden_size != int(metadata["model_hidden"]):
            raise ValueError(f"the prior wants a model of width {metadata['model_hidden']}, "
                             f"the bundled one has {hidden_size}")
        # loaded at the first score: a worker given every job's admission score never needs the model
        states = LazyServedModelStates(tuple(int(i) for i in metadata["state_layers"]), hidden_size)
        return StatesPrior(states, _head(states.dim, int(metadata["hidden"]), state), dict(metadata))
    top_layers = int(metadata["top_layers"])
    bert = copy.deepcopy(encoder.model.model)
    layers = bert.encoder.layer
    for i in range(len(layers) - top_layers, len(layers)):
        prefix = f"layer.{i}."
        layers[i].load_state_dict({k[len(prefix):]: v.to(torch.float32) for k, v in state.items()
                                   if k.startswith(prefix)})
    head = _head(encoder.dim, int(metadata["hidden"]), state)
    for parameter in bert.parameters():
        parameter.requires_grad_(False)
    return PromptPrior(bert, head, encoder.tokenizer, encoder.max_length, top_layers, dict(metadata))


def _head(dim: int, hidden: int, state: dict[str, torch.Tensor]) -> nn.Module:
    """The prior's head (dim -> hidden -> 1) from the stored "head.*" tensors, frozen."""
    head = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
    head.load_state_dict({k[len("head."):]: v.to(torch.float32) for k, v in state.items() if k.startswith("head.")})
    for parameter in head.parameters():
        parameter.requires_grad_(False)
    return head


def prior_config(epochs: int = 4, layers: int = 4) -> FinetuneConfig:
    """The fine-tuning of the prior: the top `layers` layers (4 shipped; 2 before 2026-12-06), `epochs` at most
    (its best epoch is kept)."""
    return FinetuneConfig(top_layers=layers, max_epochs=epochs)


def train_prompt_prior(encoder, splits: dict[str, list[dict]], config: FinetuneConfig | None = None,
                       progress: Callable[[str], None] = lambda _: None,
                       embed_texts: Callable[[list[str]], np.ndarray] | None = None,
                       backbone=None) -> PromptPrior | StatesPrior:
    """Fit the prior on splits['train'] (early stopping on splits['val']; the test split is never read):
    the frozen head first, then the top layers and that head (kept only when validation improves).

    `embed_texts` (e.g. the training EmbeddingCache's) gives the frozen encoder's vectors, so the frozen
    head does not re-encode prompts already cached on disk. `backbone` (`prior_backbone`): the served
    model's states to read instead of `encoder`'s vectors; frozen, a head only. Either way the prompt heads
    are cut by `encoder`, as serving cuts them."""
    config = config or prior_config()

    def head_of(prompt: str) -> str:
        return prompt_head(encoder.tokenizer, prompt, encoder.max_length)

    train, val = prompt_rows(splits["train"], head_of), prompt_rows(splits["val"], head_of)
    if backbone is not None:
        # NOTE: read every prompt's states up front, in one pass with a progress bar (memoized by text): the
        # head's first epoch would read them batch by batch anyway, for minutes, silently.
        backbone.encode(list(dict.fromkeys([r.text for r in train] + [r.text for r in val])))
        model, fit = train_admission(backbone, train, val, dataclasses.replace(config, top_layers=0), progress)
        progress(f"prompt prior over the served model's states: val tau {fit['val_tau']:.3f}")
        return StatesPrior(backbone, model.head, {"train_prompts": len(train), "val_prompts": len(val),
                                                  "val_tau": fit["val_tau"], "best_epoch": fit["best_epoch"],
                                                  "train_seconds": fit["train_seconds"]})
    frozen_vectors: dict[str, torch.Tensor] = {}
    if embed_texts is not None:
        texts = list(dict.fromkeys([r.text for r in train] + [r.text for r in val]))
        frozen_vectors = {t: torch.from_numpy(np.asarray(v)) for t, v in zip(texts, embed_texts(texts))}
    frozen, frozen_info = train_admission(encoder, train, val, dataclasses.replace(config, top_layers=0),
                                          progress, frozen_vectors)
    info = {"train_prompts": len(train), "val_prompts": len(val), "frozen_val_tau": frozen_info["val_tau"],
            "frozen_train_seconds": frozen_info["train_seconds"]}
    if config.top_layers <= 0:
        return prior_from_model(frozen, info | {"val_tau": frozen_info["val_tau"], "best_epoch": 0})
    tuned, tuned_info = train_admission(encoder, train, val, config, progress, frozen_vectors,
                                        init_head=copy.deepcopy(frozen.head.state_dict()))
    info |= {"val_tau": tuned_info["val_tau"], "best_epoch": tuned_info["best_epoch"],
             "val_tau_by_epoch": tuned_info["val_tau_by_epoch"], "train_seconds": tuned_info["train_seconds"]}
    progress(f"prompt prior: val tau {frozen_info['val_tau']:.3f} frozen, {tuned_info['val_tau']:.3f} tuned "
             f"(epoch {tuned_info['best_epoch']})")
    return prior_from_model(tuned, info)
