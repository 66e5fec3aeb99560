"""Online learning: `elis predictor update` learns from the service's own finished jobs.

Every finished job is a labelled example: its prompt, its text after each window (decoded from its token ids
at the window boundaries) and its true remaining length at each of them. An update:

1. takes the last N finished jobs (or corpus-format records, for a replay), oldest first, and splits them by
   prompt into an ADAPT part and a held-back HOLDOUT part (`holdout_fraction`): by default the HOLDOUT is the
   LATER stretch (the prompts seen last), so an update is judged on traffic that came after what it learned
   from, as it will be served; `holdout_split="hash"` draws it by prompt hash instead;
2. builds candidates from the current ranker checkpoint: (a) the same head with the per-step calibration
   refitted on ADAPT; (b) if `refit_head` and ADAPT holds at least `min_finetune_jobs` jobs, the head
   fine-tuned on ADAPT (ranking + regression loss, a few epochs, a lower learning rate) and then recalibrated;
3. scores the current checkpoint and each candidate on HOLDOUT by the POOLED Kendall tau (every step at
   once: the scheduler compares admission predictions with re-predictions, so ranking across steps is
   what it needs);
4. writes a new checkpoint VERSION (version + 1, atomically, with its level-edges file) only when the best
   candidate ranks better than the current one by at least `min_gain`; otherwise it refuses and says why.

Running APIs and workers watch the checkpoint file and reload it (`serving.LengthPredictor.maybe_reload`).
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from elis.predictor.calibration import MIN_POINTS, fit_step_calibration
from elis.predictor.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from elis.predictor.corpus_eval import step_rows
from elis.predictor.evaluation import kendall_tau_b
from elis.predictor.features import flatten, prompt_key, split_of, window_char_offsets
from elis.predictor.head import TargetTransform
from elis.predictor.ranker import (
    Ranker,
    RankerConfig,
    arrays_of,
    fit_admission_calibration,
    mean_step_tau,
    pairwise_rank_loss,
    ranker_metadata,
    score_array,
)
from elis.predictor.training import Arrays

log = logging.getLogger(__name__)


class UpdateRefused(RuntimeError):
    """The candidate did not rank the held-back jobs better than the current checkpoint."""


def ranker_of(checkpoint: Checkpoint) -> Ranker:
    from elis.predictor.calibration import StepCalibration

    meta = checkpoint.metadata
    if meta.get("kind") != "ranker":
        raise ValueError("online update needs a ranker checkpoint (elis predictor train --kind ranker)")
    known = RankerConfig.__dataclass_fields__
    # A checkpoint from before a field existed keeps what it was trained with, not today's default.
    before = {"admit_by_prior": False, "prior_layers": int((meta.get("prompt_prior") or {}).get("top_layers", 2)),
              "prior_encoder": "minilm"}
    config = RankerConfig(**(before | {k: v for k, v in meta["ranker_config"].items() if k in known}))
    calibration = StepCalibration.from_json(meta["calibration"]) if meta.get("calibration") else None
    admission = meta.get("admission_calibration")
    return Ranker(checkpoint.head, config, calibration, StepCalibration.from_json(admission) if admission else None)


def prior_of(checkpoint: Checkpoint, encoder):
    """The checkpoint's PromptPrior over `encoder`, or None when it has none."""
    if not checkpoint.metadata.get("prompt_prior"):
        return None
    from elis.predictor.prompt_prior import load_prior

    return load_prior(encoder, checkpoint.metadata["prompt_prior"], checkpoint.prompt_prior)


# -- finished jobs -> records ----------------------------------------------------------------------------


def job_record(job: Any, decode, window_tokens: int, sample: int = 0) -> dict[str, Any]:
    """A finished job as a corpus-format record (text at each window boundary decoded from its token ids).

    Its prompt id is the prompt's identity, not the job's: jobs that asked the same prompt are samples of
    one prompt (`sample` tells them apart), which keeps them on one side of every split and makes the
    update repeatable (a random job id would reshuffle the fine-tuning's inner split on every run)."""
    ids = list(job.generated_ids or [])
    offsets = window_char_offsets(decode, ids, window_tokens)
    return {
        "id": job.id,
        "prompt_id": prompt_key(job.prompt),
        "sample": sample,
        "source": job.workload or "service",
        "prompt": job.prompt,
        "output_ids": ids,
        "output_text": decode(ids),
        "window_char_offsets": offsets,
        "window_tokens": window_tokens,
        "max_tokens": job.max_tokens,
        "temperature": job.temperature,
    }


def finished_job_records(database_url: str, limit: int, window_tokens: int, decode) -> list[dict[str, Any]]:
    """The last `limit` jobs that ended on their own (EOS, stop or max_tokens), oldest first (as `update`
    takes them: its held-back judge is the later stretch). Jobs with a forced length (trace replay) are left
    out: their length says nothing about the prompt."""
    from sqlalchemy import select
    from sqlalchemy.orm import lazyload

    from elis.storage.db import session_scope
    from elis.storage.models import Job, JobStatus

    with session_scope(database_url) as session:
        jobs = session.scalars(
            select(Job)
            .options(lazyload(Job.windows))  # the token ids say all: the window rows are not read
            .where(Job.status == JobStatus.DONE.value, Job.force_length.is_(False), Job.num_output_tokens > 0)
            # the id breaks ties: jobs finished at one instant come in a stable order, so a limit is repeatable
            .order_by(Job.finished_at.desc(), Job.id)
            .limit(limit)
        ).all()
        samples: dict[str, int] = {}
        records = []
        for job in reversed(jobs):  # oldest first: a prompt's first job is its sample 0
            key = prompt_key(job.prompt)
            samples[key] = samples.get(key, -1) + 1
            records.append(job_record(job, decode, window_tokens, samples[key]))
        return records


# -- the update ------------------------------------------------------------------------------------------


@dataclass
class UpdateResult:
    """What an update measured and did."""

    accepted: bool
    reason: str
    current_tau: float
    candidates: dict[str, float]
    version: int | None = None
    path: Path | None = None
    adapt_jobs: int = 0
    holdout_jobs: int = 0
    # Share of bootstrap resamples of the held-back prompts in which the best candidate beat the current model.
    confidence: float | None = None


def pooled_tau(ranker: Ranker, arrays: Arrays) -> float:
    return kendall_tau_b(arrays.y, ranker.predict(arrays))


def bootstrap_win_rate(true: Sequence[float], before: Sequence[float], after: Sequence[float],
                       groups: Sequence[str], min_gain: float = 0.0, reps: int = 200, seed: int = 0) -> float:
    """The share of bootstrap resamples of the held-back prompts in which `after` ranks `true` better than
    `before` by more than `min_gain` (pooled Kendall tau-b; a prompt's examples, every step of every sample, are
    drawn together, since they are not independent).

    Why: with 100-300 finished jobs, 30-90 are held back; their pooled tau moves by about 0.1 from one slice to
    another, and the best of two candidates is picked on the same slice, so "better on the slice" accepts noise
    (a random walk of versions under the periodic update). It does not make the slice stand for later traffic:
    on the online-update curve (docs/predictor.md) a version 100% sure on its 30 held-back jobs still ranked a
    fixed test set worse."""
    y, b, a = (np.asarray(v, dtype=np.float64) for v in (true, before, after))
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    blocks = [np.asarray(ix) for ix in members.values()]
    if len(blocks) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(reps):
        picked = np.concatenate([blocks[i] for i in rng.integers(0, len(blocks), len(blocks))])
        gain = kendall_tau_b(y[picked], a[picked]) - kendall_tau_b(y[picked], b[picked])
        wins += bool(gain > min_gain)  # a NaN gain (one length in the resample) is no win
    return wins / reps


HOLDOUT_SPLITS = ("later", "hash")


def split_adapt_holdout(records: Sequence[dict], holdout_fraction: float,
                        how: str = "later") -> tuple[list[dict], list[dict]]:
    """All samples of a prompt on one side. `later` (records oldest first): the prompts first seen in the
    last `holdout_fraction` of the records are held back, so the judge is the stretch of traffic after the
    one adapted to. `hash`: by prompt hash (salted, so it is independent of the train/val/test rule)."""
    if how not in HOLDOUT_SPLITS:
        raise ValueError(f"holdout split {how!r}: choose one of {', '.join(HOLDOUT_SPLITS)}")
    if how == "hash":
        held = {r["prompt"] for r in records
                if split_of("update\0" + r["prompt"], (1 - holdout_fraction, holdout_fraction, 0.0)) != "train"}
    else:
        first_seen = list(dict.fromkeys(r["prompt"] for r in records))
        held = set(first_seen[len(first_seen) - round(len(first_seen) * holdout_fraction):])
    adapt = [r for r in records if r["prompt"] not in held]
    holdout = [r for r in records if r["prompt"] in held]
    return adapt, holdout


def fine_tune(ranker: Ranker, adapt: Arrays, epochs: int = 8, lr: float = 3e-4, seed: int = 0) -> Ranker:
    """A copy of the head trained a few more epochs on `adapt` (80%; the best epoch on the other 20% kept),
    then recalibrated on all of `adapt`."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    keys = sorted({e.prompt_id or e.prompt for e in adapt.examples})
    rng.shuffle(keys)
    inner_val = set(keys[: max(1, len(keys) // 5)])
    val_mask = np.array([(e.prompt_id or e.prompt) in inner_val for e in adapt.examples])
    train, val = adapt.subset(~val_mask), adapt.subset(val_mask)
    head = copy.deepcopy(ranker.head)
    config = ranker.config
    transform = TargetTransform(config.transform)
    x = torch.from_numpy(train.x)
    y = transform.forward(torch.from_numpy(train.y))
    huber = nn.SmoothL1Loss(beta=1.0)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=config.weight_decay)
    best = (mean_step_tau(score_array(head, val.x), val.y, val.step, min_n=5), {k: v.clone() for k, v in head.state_dict().items()})
    for _ in range(epochs):
        head.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), config.batch_size):
            batch = torch.tensor(order[i : i + config.batch_size])
            optimizer.zero_grad()
            scores = head(x[batch])
            loss = config.regression_weight * huber(scores, y[batch]) + config.rank_weight * pairwise_rank_loss(scores, y[batch])
            loss.backward()
            optimizer.step()
        tau = mean_step_tau(score_array(head, val.x), val.y, val.step, min_n=5)
        if tau > best[0]:
            best = (tau, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[1])
    head.eval()
    calibration = fit_step_calibration(score_array(head, adapt.x), adapt.y, adapt.step, min_points=20)
    return Ranker(head, config, calibration, _admission_on(ranker, adapt))


def recalibrated(ranker: Ranker, adapt: Arrays) -> Ranker:
    return Ranker(ranker.head, ranker.config, fit_step_calibration(score_array(ranker.head, adapt.x), adapt.y,
                                                                    adapt.step, min_points=20),
                  _admission_on(ranker, adapt))


def _admission_on(ranker: Ranker, adapt: Arrays):
    """The prior's admission calibration refitted on the service's own jobs (kept below MIN_POINTS admissions:
    an isotonic map of a dozen points would replace one fitted on hundreds)."""
    if ranker.admission is None or int((adapt.step == 0).sum()) < MIN_POINTS:
        return ranker.admission
    return fit_admission_calibration(adapt)


def update_checkpoint(
    checkpoint_path: Path,
    records: Sequence[dict],
    cache,
    out_path: Path | None = None,
    holdout_fraction: float = 0.3,
    refit_head: bool = True,
    min_gain: float = 0.0,
    dry_run: bool = False,
    min_confidence: float = 0.9,
    holdout_split: str = "later",
    min_finetune_jobs: int = 200,
) -> UpdateResult:
    """One update from `records`, oldest first (see the module docstring). Raises UpdateRefused when nothing
    is better: the best candidate must beat the current model's pooled tau on the held-back jobs by more than
    `min_gain`, and do so in at least `min_confidence` of bootstrap resamples of them (`bootstrap_win_rate`; 0
    turns it off). The head is fine-tuned only from `min_finetune_jobs` adapting jobs up: on the update curve
    (docs/predictor.md) a head fine-tuned on 70 jobs won its own held-back slice and ranked a fixed test set
    worse; below that only the calibration is refitted."""
    from elis.predictor.ranker_train import uncertainty_by_step, write_level_file

    checkpoint = load_checkpoint(checkpoint_path)
    current = ranker_of(checkpoint)
    config = replace(current.config)
    adapt_records, holdout_records = split_adapt_holdout(records, holdout_fraction, holdout_split)
    if len(adapt_records) < 10 or len(holdout_records) < 5:
        raise UpdateRefused(f"too few finished jobs ({len(adapt_records)} to adapt, {len(holdout_records)} held "
                            "back; need 10 and 5)")
    prior = prior_of(checkpoint, cache.encoder)
    adapt = arrays_of(cache, flatten(adapt_records), config, prior)
    holdout = arrays_of(cache, flatten(holdout_records), config, prior)
    current_tau = pooled_tau(current, holdout)
    candidates = {"recalibrated": recalibrated(current, adapt)}
    if refit_head and len(adapt_records) >= min_finetune_jobs:
        candidates["fine-tuned"] = fine_tune(current, adapt)
    taus = {name: pooled_tau(r, holdout) for name, r in candidates.items()}
    best_name = max(taus, key=lambda n: taus[n])
    result = UpdateResult(False, "", current_tau, taus, adapt_jobs=len(adapt_records), holdout_jobs=len(holdout_records))
    if not taus[best_name] > current_tau + min_gain:
        result.reason = (f"refused: best candidate ({best_name}) pooled tau {taus[best_name]:.3f} on "
                         f"{len(holdout_records)} held-back jobs does not beat the current {current_tau:.3f}")
        raise UpdateRefused(result.reason)
    best = candidates[best_name]
    if min_confidence > 0:
        groups = [example.prompt_id or example.prompt for example in holdout.examples]
        result.confidence = bootstrap_win_rate(holdout.y, current.predict(holdout), best.predict(holdout), groups,
                                               min_gain)
        if result.confidence < min_confidence:
            result.reason = (f"refused: best candidate ({best_name}) pooled tau {current_tau:.3f} -> "
                             f"{taus[best_name]:.3f} on {len(holdout_records)} held-back jobs, but better in only "
                             f"{100 * result.confidence:.0f}% of resamples of them (needs {100 * min_confidence:.0f}%)")
            raise UpdateRefused(result.reason)
    version = int(checkpoint.metadata.get("version", 1)) + 1
    window = int(checkpoint.metadata["window_tokens"])
    rows = step_rows(holdout.examples, best.predict(holdout), window, min_n=5, max_step=8)
    metadata = {
        **checkpoint.metadata,
        **ranker_metadata(best),
        "version": version,
        "update": {
            "candidate": best_name,
            "adapt_jobs": len(adapt_records),
            "holdout_jobs": len(holdout_records),
            "holdout_split": holdout_split,
            "holdout_pooled_tau_before": current_tau,
            "holdout_pooled_tau_after": taus[best_name],
            "holdout_confidence": result.confidence,
            "holdout_bias_by_step": {r.step: round(r.bias, 4) for r in rows if r.step != "all"},
            "previous_version": int(checkpoint.metadata.get("version", 1)),
        },
    }
    result.accepted, result.version = True, version
    sure = "" if result.confidence is None else f", better in {100 * result.confidence:.0f}% of resamples"
    result.reason = f"accepted {best_name}: pooled tau {current_tau:.3f} -> {taus[best_name]:.3f}{sure}"
    if dry_run:
        return result
    out_path = Path(out_path or checkpoint_path)
    # the prompt prior is not retrained by an update: its stored tensors are carried over as they are
    save_checkpoint(out_path, best.head, metadata, half=True, prompt_prior=checkpoint.prompt_prior)
    write_level_file(out_path, metadata["edges"], int(metadata.get("num_priority_levels", len(metadata["edges"]) + 2)),
                     f"edges of version 1; uncertainty from the update to version {version}",
                     uncertainty_by_step(holdout.examples, best.predict(holdout), window))
    result.path = out_path
    return result
