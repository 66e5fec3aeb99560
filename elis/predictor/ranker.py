"""The ranker: a two-tower length predictor built for cheap re-prediction, ranking losses and calibration.

Inputs of a job at step k (tokens generated so far = k x W):
- the PROMPT embedding: the frozen encoder's CLS vector of the prompt's head, computed once per job
  (serving caches it by prompt), so a re-prediction never re-encodes the prompt;
- the TAIL embedding: the CLS vector of the output's last 64 encoder tokens (about what the last window
  added; zeros at admission), a short text, so a re-prediction costs one short encoder pass;
- scalars: tokens generated so far (log and linear), the tail's repetition (zlib ratio, distinct 4-grams;
  loops run to max_tokens), and the prompt's length.

The head projects each embedding onto its top principal components (fitted on the training split), then a
small MLP gives a score in the target transform's space. It trains with a regression loss (Huber on the
transformed remaining tokens), a pairwise ranking loss (RankNet logistic loss on the pairs of a batch whose
true remaining differs, as vllm-ltr and PARS rank rather than regress), or a weighted sum. The score is then
mapped to tokens by the per-step isotonic calibration (`calibration.py`), fitted on validation.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from elis.predictor.calibration import StepCalibration, fit_step_calibration
from elis.predictor.features import (
    TAIL_TOKENS,
    Example,
    output_tail,
    prompt_head,
    repetition_features,
    step_feature,
    tail_hash_features,
)
from elis.predictor.head import TargetTransform
from elis.predictor.loops import is_greedy
from elis.predictor.training import Arrays

KIND = "ranker"


def scalar_features(
    num_generated: int, output_text: str, prompt: str, use_repetition: bool = True, use_tail_hash: bool = False,
    use_prompt_hash: bool = False, greedy: bool | None = None,
) -> list[float]:
    """[log step, linear step, (zlib ratio, distinct 4-grams), log prompt length, (hashed tail tokens),
    (hashed prompt tokens), (1 when decoding is greedy: only when `greedy` is given)]."""
    row = [step_feature(num_generated), min(num_generated, 4096) / 1024.0]
    if use_repetition:
        row += repetition_features(output_text)
    row.append(math.log1p(len(prompt)) / math.log(10000.0))
    if use_tail_hash:
        row += tail_hash_features(output_text)
    if use_prompt_hash:
        row += tail_hash_features(prompt)
    if greedy is not None:
        row.append(1.0 if greedy else 0.0)
    return row


@dataclass
class RankerConfig:
    """Everything that shapes a ranker training run (recorded in the checkpoint)."""

    transform: str = "log1p"
    regression_weight: float = 1.0
    rank_weight: float = 1.0
    # the output's tail: encoded by the transformer (use_tail; about 50-200 ms per job-window on this CPU)
    # and/or as hashed token frequencies (use_tail_hash; well under 1 ms)
    use_tail: bool = False
    use_tail_hash: bool = True
    use_repetition: bool = True
    use_prompt_hash: bool = False  # the prompt's hashed token frequencies besides its embedding
    # whether the job decodes greedily, as one more scalar: for a ranker trained on greedy and sampled outputs
    use_greedy_flag: bool = False
    # the prompt prior's score (prompt_prior.py: the encoder's top layers fine-tuned for admission) as one
    # more scalar; the prior is trained on the same train/val split before the head
    use_prompt_prior: bool = False
    # epochs of the prior's fine-tuning (early stopping keeps its best epoch); 4 in the shipped checkpoint.
    # Up to 8 kept epochs 5-6 and gained only +0.01 left-out tau (docs/predictor.md, "The prompt prior").
    prior_epochs: int = 4
    # the encoder's top layers the prior fine-tunes (of MiniLM's 6); 4 in the shipped checkpoint (2 before
    # 2026-12-06: 4 ranked every left-out source better, docs/predictor.md "More layers")
    prior_layers: int = 4
    # what the prior reads: "minilm" (the bundled sentence encoder, its top `prior_layers` tuned) or
    # "served-model" (the served LLM's own hidden states at the end of the prompt, frozen, with a small head;
    # llm_states.py). Left out, the served model's states ranked every source's admissions at 0.99-1.43 of the
    # two-sample noise ceiling (docs/predictor.md, "The default since 2026-12-07").
    prior_encoder: str = "minilm"
    # with the prior: predict each ADMISSION by the prior's score alone (isotonic to tokens on the validation
    # admissions), the re-predictions by the head. Left out, the prior alone ranks admissions better than the
    # head that reads it among its other inputs (docs/predictor.md, "Admission by the prior").
    admit_by_prior: bool = True
    projection_dim: int = 64
    hidden: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 6
    seed: int = 0
    tail_tokens: int = TAIL_TOKENS
    calibrate: bool = True


class RankerHead(nn.Module):
    """PCA of the prompt embedding (+ PCA of the tail embedding) + scalars -> standardized -> MLP -> score."""

    def __init__(
        self,
        embedding_dim: int,
        num_scalars: int,
        use_tail: bool = True,
        projection_dim: int = 64,
        hidden: int = 256,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.num_scalars = num_scalars
        self.use_tail = use_tail
        self.projection_dim = projection_dim
        towers = 2 if use_tail else 1
        self.input_dim = towers * embedding_dim + num_scalars
        self.register_buffer("centers", torch.zeros(towers, embedding_dim))
        self.register_buffer("projections", torch.zeros(towers, embedding_dim, projection_dim))
        width = towers * projection_dim + num_scalars
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def _towers(self, x: torch.Tensor) -> list[torch.Tensor]:
        d = self.embedding_dim
        return [x[:, i * d : (i + 1) * d] for i in range(self.centers.shape[0])]

    def set_normalization(self, x: torch.Tensor, has_tail: torch.Tensor) -> None:
        """Fit each tower's projection (the tail's on rows that have a tail) and the standardization."""
        for i, emb in enumerate(self._towers(x)):
            rows = emb if i == 0 else emb[has_tail]
            if len(rows) < 2:
                rows = emb
            rows = rows.double()
            center = rows.mean(dim=0)
            _, _, vh = torch.linalg.svd(rows - center, full_matrices=False)
            k = min(self.projection_dim, vh.shape[0])
            proj = torch.zeros(self.embedding_dim, self.projection_dim, dtype=torch.float64)
            proj[:, :k] = vh[:k].T
            self.centers[i].copy_(center.float())
            self.projections[i].copy_(proj.float())
        projected = self.project(x)
        self.mean.copy_(projected.mean(dim=0))
        self.std.copy_(projected.std(dim=0).clamp_min(1e-6))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        parts = [(emb - self.centers[i]) @ self.projections[i] for i, emb in enumerate(self._towers(x))]
        parts.append(x[:, self.centers.shape[0] * self.embedding_dim :])
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((self.project(x) - self.mean) / self.std).squeeze(-1)


def head_shape(head: RankerHead, config: RankerConfig) -> dict[str, Any]:
    return {
        "embedding_dim": head.embedding_dim,
        "num_scalars": head.num_scalars,
        "use_tail": head.use_tail,
        "projection_dim": head.projection_dim,
        "hidden": config.hidden,
        "num_layers": config.num_layers,
        "dropout": config.dropout,
    }


def build_ranker_head(shape: dict[str, Any]) -> RankerHead:
    return RankerHead(
        int(shape["embedding_dim"]),
        int(shape["num_scalars"]),
        bool(shape["use_tail"]),
        int(shape["projection_dim"]),
        int(shape["hidden"]),
        int(shape["num_layers"]),
        float(shape.get("dropout", 0.0)),
    )


# -- inputs ----------------------------------------------------------------------------------------------


def ranker_inputs(
    embed_texts, tokenizer, max_length: int, items: Sequence[Any], use_tail: bool, use_repetition: bool,
    tail_tokens: int = TAIL_TOKENS, use_tail_hash: bool = False, use_prompt_hash: bool = False,
    embed_tails=None, prior_of=None, use_greedy_flag: bool = False,
) -> np.ndarray:
    """Head inputs for items with .prompt, .output_text, .num_generated, in training and serving alike.

    `embed_texts(list[str]) -> array` embeds the prompts' heads, `embed_tails` the outputs' tails (default:
    `embed_texts`; serving caches the prompts' vectors but not the tails'). `prior_of(list[str]) -> array`,
    when given, scores the prompts' heads (the prompt prior): the last column.
    """
    embed_tails = embed_tails or embed_texts
    prompts = [prompt_head(tokenizer, item.prompt, max_length) for item in items]
    unique = list(dict.fromkeys(prompts))
    prompt_vectors = dict(zip(unique, embed_texts(unique))) if unique else {}
    parts = [np.stack([prompt_vectors[p] for p in prompts]) if items else np.zeros((0, 0), np.float32)]
    if use_tail:
        tails = [output_tail(tokenizer, item.output_text, tail_tokens) if item.num_generated > 0 else "" for item in items]
        need = list(dict.fromkeys(t for t in tails if t))
        tail_vectors = dict(zip(need, embed_tails(need))) if need else {}
        dim = parts[0].shape[1]
        zero = np.zeros(dim, dtype=np.float32)
        parts.append(np.stack([tail_vectors[t] if t else zero for t in tails]))
    scalars = np.array(
        [scalar_features(i.num_generated, i.output_text, i.prompt, use_repetition, use_tail_hash, use_prompt_hash,
                         is_greedy(getattr(i, "temperature", None)) if use_greedy_flag else None)
         for i in items],
        dtype=np.float32,
    )
    parts.append(scalars.reshape(len(items), -1))
    if prior_of is not None:
        priors = dict(zip(unique, np.asarray(prior_of(unique), dtype=np.float32))) if unique else {}
        parts.append(np.array([[priors[p]] for p in prompts], dtype=np.float32).reshape(len(items), 1))
    return np.concatenate(parts, axis=1).astype(np.float32)


def arrays_of(cache, examples: list[Example], config: RankerConfig, prior=None) -> Arrays:
    """The RankerHead's inputs; `cache` is a training.EmbeddingCache (its `embed_texts`); `prior` a
    PromptPrior, required when `config.use_prompt_prior`."""
    if config.use_prompt_prior and prior is None:
        raise ValueError("this ranker config uses the prompt prior: pass the trained PromptPrior")
    x = ranker_inputs(
        cache.embed_texts, cache.encoder.tokenizer, cache.encoder.max_length, examples,
        config.use_tail, config.use_repetition, config.tail_tokens, config.use_tail_hash, config.use_prompt_hash,
        prior_of=prior.score if config.use_prompt_prior else None, use_greedy_flag=config.use_greedy_flag,
    )
    return Arrays.of(x, examples)


# -- training --------------------------------------------------------------------------------------------


def pairwise_rank_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float = 0.05,
                       pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """RankNet: mean softplus(-(s_i - s_j)) over the batch's pairs with target_i > target_j + margin (and,
    given `pair_mask`, only the pairs it marks, e.g. those of one source)."""
    diff_t = targets[:, None] - targets[None, :]
    mask = diff_t > margin
    if pair_mask is not None:
        mask = mask & pair_mask
    if not mask.any():
        return scores.sum() * 0.0
    diff_s = scores[:, None] - scores[None, :]
    return nn.functional.softplus(-diff_s[mask]).mean()


def score_array(head: RankerHead, x: np.ndarray) -> np.ndarray:
    head.eval()
    with torch.no_grad():
        parts = [head(torch.from_numpy(x[i : i + 4096])) for i in range(0, len(x), 4096)]
    return torch.cat(parts).numpy().astype(np.float64) if parts else np.zeros(0)


def mean_step_tau(scores: np.ndarray, y: np.ndarray, steps: np.ndarray, max_step: int = 4, min_n: int = 20) -> float:
    """Mean within-step Kendall tau over steps 0..max_step (the validation criterion)."""
    from elis.predictor.evaluation import kendall_tau_b

    taus = []
    for k in range(max_step + 1):
        mask = steps == k
        if mask.sum() >= min_n:
            taus.append(kendall_tau_b(y[mask], scores[mask]))
    return float(np.nanmean(taus)) if taus else float("nan")


def fit_ranker(train: Arrays, val: Arrays, config: RankerConfig, embedding_dim: int) -> tuple[RankerHead, dict]:
    """Train the head; keep the epoch with the best validation mean within-step tau; early stopping."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    transform = TargetTransform(config.transform)
    num_scalars = train.x.shape[1] - (2 if config.use_tail else 1) * embedding_dim
    head = RankerHead(embedding_dim, num_scalars, config.use_tail, config.projection_dim, config.hidden,
                      config.num_layers, config.dropout)
    x_train = torch.from_numpy(train.x)
    head.set_normalization(x_train, torch.from_numpy(train.step > 0))
    y_train = transform.forward(torch.from_numpy(train.y))
    huber = nn.SmoothL1Loss(beta=1.0)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best = (-math.inf, 0, {k: v.clone() for k, v in head.state_dict().items()})
    history = []
    started = time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        head.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), config.batch_size):
            batch = torch.tensor(order[i : i + config.batch_size])
            optimizer.zero_grad()
            scores = head(x_train[batch])
            loss = scores.sum() * 0.0
            if config.regression_weight:
                loss = loss + config.regression_weight * huber(scores, y_train[batch])
            if config.rank_weight:
                loss = loss + config.rank_weight * pairwise_rank_loss(scores, y_train[batch])
            loss.backward()
            optimizer.step()
        val_tau = mean_step_tau(score_array(head, val.x), val.y, val.step)
        history.append({"epoch": epoch, "val_tau": val_tau})
        if val_tau > best[0]:
            best = (val_tau, epoch, {k: v.clone() for k, v in head.state_dict().items()})
        elif epoch - best[1] >= config.patience:
            break
    head.load_state_dict(best[2])
    head.eval()
    return head, {"best_epoch": best[1], "best_val_tau": best[0], "epochs_run": len(history),
                  "train_seconds": round(time.perf_counter() - started, 2)}


def fit_admission_calibration(arrays: Arrays) -> StepCalibration:
    """Isotonic map of the prompt prior's score (the inputs' last column) to the remaining tokens of the
    admissions (step 0) in `arrays`."""
    first = arrays.step == 0
    if not first.any():
        raise ValueError("no admissions to calibrate the prior's admission predictions on")
    return fit_step_calibration(arrays.x[first, -1], arrays.y[first], np.zeros(int(first.sum()), dtype=np.int64))


def admission_tokens(calibration: StepCalibration, prior_scores: np.ndarray) -> np.ndarray:
    """Admission predictions (tokens) from the prompt prior's scores."""
    prior_scores = np.asarray(prior_scores, dtype=np.float64)
    return calibration.apply(prior_scores, np.zeros(len(prior_scores), dtype=np.int64))


@dataclass
class Ranker:
    """A trained head, its config and its calibration: raw scores -> calibrated remaining tokens; and, with
    the prompt prior and `config.admit_by_prior`, the admission calibration of the prior's score."""

    head: RankerHead
    config: RankerConfig
    calibration: StepCalibration | None
    admission: StepCalibration | None = None

    def uncalibrated(self, scores: np.ndarray) -> np.ndarray:
        return TargetTransform(self.config.transform).inverse(torch.from_numpy(np.asarray(scores))).numpy()

    def tokens(self, scores: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Remaining tokens (before the job's max_tokens cap)."""
        if self.calibration is None:
            return self.uncalibrated(scores)
        return self.calibration.apply(scores, steps)

    def predict(self, arrays: Arrays) -> np.ndarray:
        """Calibrated remaining tokens, capped at each example's max_tokens - generated."""
        out = self.tokens(score_array(self.head, arrays.x), arrays.step)
        if self.admission is not None and self.config.use_prompt_prior:
            first = arrays.step == 0
            out[first] = admission_tokens(self.admission, arrays.x[first, -1])
        limits = np.array([(e.max_tokens or 10**9) - e.num_generated for e in arrays.examples], dtype=np.float64)
        return np.clip(out, 0.0, np.maximum(limits, 0.0))


def train_ranker(train: Arrays, val: Arrays, config: RankerConfig, embedding_dim: int) -> tuple[Ranker, dict]:
    """Fit the head on train, then the per-step calibration on val (when `config.calibrate`)."""
    head, info = fit_ranker(train, val, config, embedding_dim)
    calibration = None
    if config.calibrate:
        calibration = fit_step_calibration(score_array(head, val.x), val.y, val.step)
    admission = fit_admission_calibration(val) if config.use_prompt_prior and config.admit_by_prior else None
    return Ranker(head, config, calibration, admission), info


def ranker_metadata(ranker: Ranker) -> dict[str, Any]:
    """The metadata keys a ranker checkpoint adds (besides encoder, window, edges, dataset)."""
    return {
        "kind": KIND,
        "head": head_shape(ranker.head, ranker.config),
        "target_transform": {"name": ranker.config.transform, "scale": TargetTransform(ranker.config.transform).scale},
        "ranker_config": asdict(ranker.config),
        "calibration": ranker.calibration.to_json() if ranker.calibration else None,
        "admission_calibration": ranker.admission.to_json() if ranker.admission else None,
        "tail_tokens": ranker.config.tail_tokens,
        "use_repetition": ranker.config.use_repetition,
        "use_tail_hash": ranker.config.use_tail_hash,
        "use_prompt_hash": ranker.config.use_prompt_hash,
        "use_greedy_flag": ranker.config.use_greedy_flag,
        "use_prompt_prior": ranker.config.use_prompt_prior,
    }
