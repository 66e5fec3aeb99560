"""Does fine-tuning the encoder's top layers help admission ranking on a source it never saw? (issue 9.3)

Admission only: the encoder reads only the prompt (re-predictions read the output through cheap features),
so admission is where a better encoder could show. For each set (leave-one-source-out per source, and the
in-distribution split), on the same data, seed and loss:

1. frozen (K = 0): a small head on the prompt's normalized CLS vector, up to 40 epochs, early stopping;
2. tuned (K > 0): the encoder's top K transformer layers AND that head, starting from the frozen run's best
   head, for a few epochs. Epoch 0 is scored too, so if tuning never beats the frozen model on validation, the
   frozen model is what gets tested: the question is exactly "does fine-tuning improve on the frozen model".

- Target: log1p of the prompt's mean output length over its samples (averaging the noisy per-sample lengths).
- Loss: smooth L1 on the standardized target plus the pairwise rank loss (the ranker's default mix).
- Early stopping on the validation split's admission tau; the test split is scored once, at the best epoch.
- Metric: Kendall tau-b of the prediction against every test record's output length: the eval's admission
  tau (corpus_eval), on the same records, so the two tables compare.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from elis.predictor.corpus_eval import split_in_distribution, split_leave_one_out
from elis.predictor.evaluation import kendall_tau_b
from elis.predictor.features import prompt_head, prompt_key
from elis.predictor.ranker import pairwise_rank_loss


@dataclass
class PromptRow:
    """One distinct prompt of a split: its text as the encoder reads it and its samples' output lengths."""

    text: str
    lengths: list[int] = field(default_factory=list)
    source: str = ""

    @property
    def target(self) -> float:
        return math.log1p(float(np.mean(self.lengths)))


def prompt_rows(records: Sequence[dict], head_of: Callable[[str], str]) -> list[PromptRow]:
    """Group records by prompt (normalized text); `head_of` cuts a prompt to what the encoder reads."""
    rows: dict[str, PromptRow] = {}
    for record in records:
        key = prompt_key(record["prompt"])
        row = rows.setdefault(key, PromptRow(head_of(record["prompt"]), source=record.get("source", "")))
        row.lengths.append(len(record["output_ids"]))
    return list(rows.values())


def record_tau(rows: Sequence[PromptRow], predictions: Sequence[float]) -> float:
    """Kendall tau-b of each prompt's prediction against each of its samples' lengths (one pair per sample)."""
    predicted = [p for row, p in zip(rows, predictions) for _ in row.lengths]
    true = [n for row in rows for n in row.lengths]
    return kendall_tau_b(predicted, true)


def ceiling_tau(rows: Sequence[PromptRow]) -> float:
    """The noise ceiling at admission: each sample of a prompt with several, "predicted" by the mean length of
    the prompt's OTHER samples (corpus_eval's ceiling, on prompt rows)."""
    predicted, true = [], []
    for row in rows:
        if len(row.lengths) < 2:
            continue
        total = sum(row.lengths)
        for length in row.lengths:
            predicted.append((total - length) / (len(row.lengths) - 1))
            true.append(length)
    return kendall_tau_b(predicted, true)


def multi_sample(rows: Sequence[PromptRow], predictions: Sequence[float]) -> tuple[list[PromptRow], list[float]]:
    """The rows (and their predictions) of prompts with several samples: the ceiling's examples."""
    kept = [(row, p) for row, p in zip(rows, predictions) if len(row.lengths) >= 2]
    return [row for row, _ in kept], [p for _, p in kept]


@dataclass
class FinetuneConfig:
    """One fine-tuning run: how many top layers train, and the optimizer's settings."""

    top_layers: int = 2
    max_epochs: int = 3
    patience: int = 1
    frozen_epochs: int = 40
    frozen_patience: int = 5
    batch_size: int = 32
    encoder_lr: float = 2e-5
    head_lr: float = 1e-3
    rank_weight: float = 1.0
    seed: int = 0
    # Learn to rank WITHIN each source: targets standardized per source, rank pairs only within a source, and
    # early stopping on the mean within-source validation tau. The test is one unseen source, so its order
    # within itself is all that counts there; a model that learns "math is short, essays are long" from the
    # training sources may spend its capacity on telling sources apart.
    per_source: bool = False


class AdmissionModel(nn.Module):
    """The encoder (a BERT from FlagEmbedding's FlagModel) with a small head on its normalized CLS vector.

    With no trainable layer the encoder is not copied: the head reads vectors computed once (`embed`)."""

    def __init__(self, encoder, top_layers: int, hidden: int = 128,
                 frozen_vectors: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.encoder = encoder
        self.top_layers = top_layers
        self.head = nn.Sequential(nn.Linear(encoder.dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.bert = copy.deepcopy(encoder.model.model) if top_layers else None
        # NOTE: shared between runs (and sets) when given: the frozen encoder's vector of a text never changes.
        self._frozen = frozen_vectors if frozen_vectors is not None else {}
        if self.bert is not None:
            for parameter in self.bert.parameters():
                parameter.requires_grad_(False)
            layers = self.bert.encoder.layer
            for layer in layers[len(layers) - top_layers:]:
                for parameter in layer.parameters():
                    parameter.requires_grad_(True)

    def embed(self, texts: list[str]) -> torch.Tensor:
        if self.bert is None:
            missing = [t for t in dict.fromkeys(texts) if t not in self._frozen]
            for text, vector in zip(missing, self.encoder.encode(missing)):
                self._frozen[text] = torch.from_numpy(vector)
            return torch.stack([self._frozen[t] for t in texts])
        batch = self.encoder.tokenizer(texts, padding=True, truncation=True, max_length=self.encoder.max_length,
                                       return_tensors="pt")
        return nn.functional.normalize(self.bert(**batch).last_hidden_state[:, 0], dim=-1)

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.head(self.embed(texts)).squeeze(-1)


def length_batches(texts: Sequence[str], size: int, rng: random.Random) -> list[list[int]]:
    """Batches of texts of similar length, in random order: a batch pads to its longest text, so random
    batches of short prompts with one long one cost several times more encoder time."""
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), rng.random()))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def _standardized(rows: Sequence[PromptRow], per_source: bool) -> np.ndarray:
    """The rows' targets as z-scores: over all rows, or within each row's source."""
    targets = np.array([row.target for row in rows])
    groups = _source_ids(rows) if per_source else [0] * len(rows)
    out = np.zeros(len(rows))
    for group in set(groups):
        mask = np.array(groups) == group
        out[mask] = (targets[mask] - targets[mask].mean()) / (targets[mask].std() or 1.0)
    return out


def _source_ids(rows: Sequence[PromptRow]) -> list[int]:
    names = sorted({row.source for row in rows})
    return [names.index(row.source) for row in rows]


def _val_tau(rows: Sequence[PromptRow], predictions: np.ndarray, per_source: bool) -> float:
    """Validation tau: pooled over the rows, or the mean of the taus within each source."""
    if not per_source:
        return record_tau(rows, predictions)
    taus = []
    for source in sorted({row.source for row in rows}):
        idx = [i for i, row in enumerate(rows) if row.source == source]
        if len(idx) >= 10:
            tau = record_tau([rows[i] for i in idx], predictions[idx])
            taus.append(0.0 if math.isnan(tau) else tau)  # a constant prediction ranks nothing
    return float(np.mean(taus)) if taus else record_tau(rows, predictions)


def _predict(model: AdmissionModel, texts: list[str]) -> np.ndarray:
    model.eval()
    out = np.zeros(len(texts))
    with torch.inference_mode():
        for idx in length_batches(texts, 64, random.Random(0)):
            out[idx] = model([texts[i] for i in idx]).numpy()
    return out


def train_admission(encoder, train: list[PromptRow], val: list[PromptRow], config: FinetuneConfig,
                    progress: Callable[[str], None] = lambda _: None,
                    frozen_vectors: dict | None = None,
                    init_head: dict | None = None) -> tuple[AdmissionModel, dict[str, Any]]:
    """Train one AdmissionModel; keep the epoch with the best validation tau (epoch 0 = `init_head` as given)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = AdmissionModel(encoder, config.top_layers, frozen_vectors=frozen_vectors)
    if init_head is not None:
        model.head.load_state_dict(init_head)
    max_epochs, patience = ((config.max_epochs, config.patience) if config.top_layers
                            else (config.frozen_epochs, config.frozen_patience))
    y = torch.tensor(_standardized(train, config.per_source), dtype=torch.float32)
    groups_of = torch.tensor(_source_ids(train)) if config.per_source else None
    groups = [{"params": model.head.parameters(), "lr": config.head_lr}]
    tuned = [p for p in model.bert.parameters() if p.requires_grad] if model.bert is not None else []
    if tuned:
        groups.append({"params": tuned, "lr": config.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    huber = nn.SmoothL1Loss(beta=1.0)
    texts = [row.text for row in train]
    val_texts = [r.text for r in val]
    def val_score() -> float:
        return _val_tau(val, _predict(model, val_texts), config.per_source)

    start_tau = val_score() if init_head is not None else -math.inf
    best = (start_tau, 0, copy.deepcopy(model.state_dict()))
    history, started = [], time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        model.train()
        for idx in length_batches(texts, config.batch_size, rng):
            optimizer.zero_grad()
            scores = model([texts[i] for i in idx])
            same = None if groups_of is None else groups_of[idx][:, None] == groups_of[idx][None, :]
            loss = huber(scores, y[idx]) + config.rank_weight * pairwise_rank_loss(scores, y[idx], pair_mask=same)
            loss.backward()
            optimizer.step()
        val_tau = val_score()
        history.append(round(val_tau, 4))
        progress(f"top {config.top_layers} layers, epoch {epoch}: val tau {val_tau:.3f}")
        if val_tau > best[0]:
            best = (val_tau, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= patience:
            break
    model.load_state_dict(best[2])
    return model, {"best_epoch": best[1], "val_tau": round(best[0], 4), "val_tau_by_epoch": history,
                   "train_seconds": round(time.perf_counter() - started, 1)}


def compare_on(encoder, splits: dict[str, list[dict]], layer_choices: Sequence[int], base: FinetuneConfig,
               progress: Callable[[str], None] = lambda _: None, frozen_vectors: dict | None = None,
               seeds: Sequence[int] = ()) -> dict[str, Any]:
    """The frozen run, then one tuned run per K > 0 in `layer_choices` (from the frozen head); test taus.

    `seeds`: besides `base.seed`, train every choice again from these seeds (its own frozen head each) and score
    each seed alone and the ensemble (the mean of the seeds' standardized predictions): how much of a choice's
    test tau is the seed, and whether averaging models ranks better. `runs` keeps `base.seed`'s results."""
    def head_of(prompt: str) -> str:
        return prompt_head(encoder.tokenizer, prompt, encoder.max_length)

    rows = {name: prompt_rows(splits[name], head_of) for name in ("train", "val", "test")}
    result: dict[str, Any] = {"train_prompts": len(rows["train"]), "val_prompts": len(rows["val"]),
                              "test_prompts": len(rows["test"]), "test_records": len(splits["test"]),
                              "ceiling_tau": round(ceiling_tau(rows["test"]), 4), "per_source": base.per_source,
                              "runs": {}}
    all_seeds = list(dict.fromkeys([base.seed, *seeds]))
    predictions: dict[int, list[np.ndarray]] = {}
    for seed in all_seeds:
        frozen_head = None
        for layers in [0, *sorted({k for k in layer_choices if k > 0})]:
            config = dataclasses.replace(base, top_layers=layers, seed=seed)
            model, info = train_admission(encoder, rows["train"], rows["val"], config, progress, frozen_vectors,
                                          init_head=frozen_head)
            if layers == 0:
                frozen_head = copy.deepcopy(model.head.state_dict())
            test = _predict(model, [r.text for r in rows["test"]])
            predictions.setdefault(layers, []).append(test)
            info["test_tau"] = round(record_tau(rows["test"], test), 4)
            info["test_tau_on_ceiling_set"] = round(record_tau(*multi_sample(rows["test"], test)), 4)
            if seed == base.seed:
                result["runs"][layers] = info
            progress(f"top {layers} layers, seed {seed}: test tau {info['test_tau']:.3f}")
    if len(all_seeds) > 1:
        result["seeds"] = {layers: _seed_summary(rows["test"], all_seeds, runs) for layers, runs in predictions.items()}
    return result


def _seed_summary(test: list[PromptRow], seeds: list[int], predictions: list[np.ndarray]) -> dict[str, Any]:
    """Each seed's test tau, and the ensemble's (the mean of the seeds' predictions, all on the standardized
    target's scale), on every record and on the ceiling's examples."""
    ensemble = np.mean(predictions, axis=0)
    return {"seeds": seeds,
            "test_tau": [round(record_tau(test, p), 4) for p in predictions],
            "test_tau_on_ceiling_set": [round(record_tau(*multi_sample(test, p)), 4) for p in predictions],
            "ensemble_test_tau": round(record_tau(test, ensemble), 4),
            "ensemble_test_tau_on_ceiling_set": round(record_tau(*multi_sample(test, ensemble)), 4)}


def finetune_study(encoder, records: Sequence[dict], held_out: Sequence[str], layer_choices: Sequence[int],
                   base: FinetuneConfig, progress: Callable[[str], None] = lambda _: None,
                   on_set: Callable[[dict[str, Any]], None] = lambda _: None,
                   seeds: Sequence[int] = ()) -> dict[str, Any]:
    """`compare_on` for each left-out source (and 'in-distribution'), the same seeds for every choice.

    `on_set` gets the results so far after each set (a long study keeps what it finished)."""
    out, frozen_vectors = {}, {}
    for name in held_out:
        splits = split_in_distribution(records) if name == "in-distribution" else split_leave_one_out(records, name)
        progress(f"== {name}")
        out[name] = compare_on(encoder, splits, layer_choices, base, progress, frozen_vectors, seeds)
        on_set(out)
    return out


def study_markdown(results: dict[str, Any], layer_choices: Sequence[int]) -> str:
    """One row per set: test prompts, and for each choice the test admission tau (best epoch, train s)."""
    layer_choices = [0, *sorted({k for k in layer_choices if k > 0})]
    names = ["frozen" if k == 0 else f"top {k} layers tuned" for k in layer_choices]
    lines = ["| set | train prompts | test records | " + " | ".join(f"{n}: test tau" for n in names)
             + " | ceiling tau | " + " | ".join(f"{n}: fraction of ceiling" for n in names)
             + " | " + " | ".join(f"{n}: val tau (epoch), train s" for n in names) + " |",
             "| --- | ---: | ---: | " + " | ".join("---:" for _ in names * 3) + " | ---: |"]
    for name, result in results.items():
        runs = [result["runs"][_key(result["runs"], k)] for k in layer_choices]
        ceiling = result.get("ceiling_tau", float("nan"))
        lines.append(f"| {name} | {result['train_prompts']} | {result['test_records']} | "
                     + " | ".join(f"{r['test_tau']:.3f}" for r in runs) + f" | {ceiling:.3f} | "
                     + " | ".join(_fraction(r.get("test_tau_on_ceiling_set", float("nan")), ceiling) for r in runs)
                     + " | "
                     + " | ".join(f"{r['val_tau']:.3f} ({r['best_epoch']}), {r['train_seconds']:.0f}" for r in runs)
                     + " |")
    return "\n".join(lines)


def seeds_markdown(results: dict[str, Any]) -> str:
    """For the sets trained from several seeds: per choice, each seed's test tau, their spread, and the
    ensemble's tau; fractions of the ceiling on the ceiling's examples. Empty when no set had seeds."""
    lines = []
    for name, result in results.items():
        ceiling = result.get("ceiling_tau", float("nan"))
        for layers, summary in sorted(result.get("seeds", {}).items(), key=lambda item: int(item[0])):
            taus, fractions = summary["test_tau"], summary["test_tau_on_ceiling_set"]
            label = "frozen" if int(layers) == 0 else f"top {layers} layers tuned"
            lines.append(f"| {name} | {label} | {', '.join(str(s) for s in summary['seeds'])} | "
                         f"{', '.join(f'{t:.3f}' for t in taus)} | {np.mean(taus):.3f} | {max(taus) - min(taus):.3f} | "
                         f"**{summary['ensemble_test_tau']:.3f}** | "
                         f"{', '.join(_fraction(f, ceiling) for f in fractions)} | "
                         f"{_fraction(summary['ensemble_test_tau_on_ceiling_set'], ceiling)} |")
    if not lines:
        return ""
    return "\n".join(["| set | model | seeds | test tau per seed | mean | spread | ensemble test tau | "
                      "fraction of ceiling per seed | ensemble fraction |",
                      "| --- | --- | --- | --- | ---: | ---: | ---: | --- | ---: |", *lines])


def _key(runs: dict, layers: int):
    """Runs are keyed by int in memory and by str once read back from results.json."""
    return layers if layers in runs else str(layers)


def _fraction(tau: float, ceiling: float) -> str:
    return f"{tau / ceiling:.2f}" if ceiling > 0.05 and not math.isnan(tau) else "-"
