"""The measurements behind docs/predictor.md: leave-one-source-out and in-distribution runs of the ranker,
and the ablation of its choices on validation. Called by `elis predictor evaluate --loso` and
`elis predictor ablate`."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from elis.predictor.corpus_eval import (
    leaked_prompts,
    markdown,
    split_in_distribution,
    split_leave_one_out,
    step_rows,
    summary_line,
    write_csv,
)
from elis.predictor.evaluation import kendall_tau_b
from elis.predictor.features import flatten
from elis.predictor.loops import LoopRule
from elis.predictor.ranker import Ranker, RankerConfig, arrays_of, score_array, train_ranker

log = logging.getLogger(__name__)


def sources_of(records: Sequence[dict]) -> list[str]:
    return sorted({r.get("source", "") for r in records})


def run_split(cache, splits: dict[str, list[dict]], config: RankerConfig) -> tuple[Ranker, dict, Any, Any]:
    """Train on splits['train'] (early stopping + calibration on 'val'); returns the ranker, info, the
    arrays of every split and the prompt prior (None unless `config.use_prompt_prior`; then it is trained
    on the same train/val split first, never on the test split)."""
    if leaked_prompts(splits):
        raise AssertionError("a prompt is in two splits")
    prior = None
    if config.use_prompt_prior:
        from elis.predictor.prompt_prior import prior_backbone, prior_config, train_prompt_prior

        prior = train_prompt_prior(cache.encoder, splits, prior_config(config.prior_epochs, config.prior_layers),
                                   progress=log.info,
                                   embed_texts=cache.embed_texts, backbone=prior_backbone(config.prior_encoder))
    arrays = {name: arrays_of(cache, flatten(splits[name]), config, prior) for name in ("train", "val", "test")}
    ranker, info = train_ranker(arrays["train"], arrays["val"], config, cache.encoder.dim)
    if prior is not None:
        info["prompt_prior"] = prior.metadata()
    return ranker, info, arrays, prior


def evaluate_protocols(
    cache,
    records: Sequence[dict],
    config: RankerConfig,
    out_dir: Path,
    window_tokens: int,
    held_out: Sequence[str] | None = None,
    greedy: dict[str, Sequence[dict]] | None = None,
    in_distribution: bool = True,
    max_step: int = 12,
    baseline: Any = None,
    baseline_sources: Sequence[str] = (),
    train_greedy: bool = False,
) -> list[dict[str, Any]]:
    """LOSO for each source (and the in-distribution split); tables + CSV per set; greedy test sets of a
    held-out source are scored by that source's LOSO model. With `train_greedy`, each LOSO fold also trains
    on the greedy records of the sources it keeps (`config` should then carry the greedy flag). Returns the
    summary rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plans: list[tuple[str, dict[str, list[dict]]]] = []
    if in_distribution:
        plans.append(("in-distribution", split_in_distribution(records)))
    greedy_train = [r for rows in (greedy or {}).values() for r in rows] if train_greedy else []
    for source in held_out if held_out is not None else sources_of(records):
        plans.append((f"loso-{source}", split_leave_one_out(records, source, extra_train=greedy_train)))
    summaries = []
    named_rows = {}
    for name, splits in plans:
        ranker, info, arrays, prior = run_split(cache, splits, config)
        test = arrays["test"]
        predicted = ranker.predict(test)
        rows = step_rows(test.examples, predicted, window_tokens, max_step=max_step)
        named_rows[name] = rows
        (out_dir / f"{name}.md").write_text(markdown(rows))
        summary = summary_line(name, rows) | {"train_records": len(splits["train"]), "best_epoch": info["best_epoch"]}
        if prior is not None:
            summary["prompt_prior"] = info["prompt_prior"]
        val = arrays["val"]
        summary["loop_share_on_val"] = loop_share_sweep(val.examples, ranker.predict(val))
        summaries.append(summary)
        log.info("%s: %s", name, summary)
        _with_loop_rule(f"{name}+loops", test.examples, predicted, window_tokens, max_step, out_dir, named_rows,
                        summaries)
        if ranker.admission is not None:  # beside the prior's admissions (the default), the head's own
            rows = step_rows(test.examples, replace(ranker, admission=None).predict(test), window_tokens,
                             max_step=max_step)
            named_rows[f"{name}+head-admission"] = rows
            (out_dir / f"{name}+head-admission.md").write_text(markdown(rows))
            summaries.append(summary_line(f"{name}+head-admission", rows))
        source = name.removeprefix("loso-")
        if baseline is not None and name.startswith("loso-") and source in baseline_sources:
            # the previous checkpoint (ELIS MLP on the joined text) on the same test examples, steps 0-8
            from elis.predictor.evaluation import predict_examples

            checkpoint, join_cache = baseline
            keep = [e for e in test.examples if e.step <= 8]
            old_rows = step_rows(keep, predict_examples(checkpoint, join_cache, keep), window_tokens, max_step=8)
            named_rows[f"{name}-previous-checkpoint"] = old_rows
            (out_dir / f"{name}-previous-checkpoint.md").write_text(markdown(old_rows))
            summaries.append(summary_line(f"{name} (previous checkpoint)", old_rows))
        set_names = greedy_set_names(greedy or {}, source) if name.startswith("loso-") else {}
        for greedy_name, set_name in set_names.items():
            g = arrays_of(cache, flatten(greedy[greedy_name]), config, prior)
            g_predicted = ranker.predict(g)
            g_rows = step_rows(g.examples, g_predicted, window_tokens, max_step=max_step)
            named_rows[set_name] = g_rows
            (out_dir / f"{set_name}.md").write_text(markdown(g_rows))
            summaries.append(summary_line(f"{set_name} ({greedy_name})", g_rows))
            looped = _with_loop_rule(f"{set_name}+loops", g.examples, g_predicted, window_tokens, max_step,
                                     out_dir, named_rows, summaries)
            looped["loop_min_repeats"] = loop_repeats_sweep(g.examples, g_predicted)
    write_csv(out_dir / "per_step.csv", named_rows)
    (out_dir / "summary.json").write_text(json.dumps(summaries, indent=2))
    return summaries


def greedy_set_names(greedy: dict[str, Sequence[dict]], source: str) -> dict[str, str]:
    """Greedy group name (`<file>:<source>`) -> the name of its tables, for the groups of one held-out source.
    One group keeps the plain `loso-<source>-greedy`; several (two greedy files of the same source) each get
    their file's stem, so that no table overwrites another's."""
    mine = [name for name, rows in greedy.items() if rows and all(r.get("source") == source for r in rows)]
    base = f"loso-{source}-greedy"
    if len(mine) == 1:
        return {mine[0]: base}
    names: dict[str, str] = {}
    for name in mine:
        stem = name.rsplit(":", 1)[0].removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.") or "greedy"  # a path labels it: no slashes
        candidate, number = f"{base}-{stem}", 2
        while candidate in names.values():  # greedy.jsonl and greedy.jsonl.gz, say
            candidate, number = f"{base}-{stem}-{number}", number + 1
        names[name] = candidate
    return names


LOOP_SHARES = (0.0, 0.5, 0.8, 1.0)


def loop_share_sweep(examples, predicted, shares: Sequence[float] = LOOP_SHARES) -> dict[str, float]:
    """Pooled Kendall tau (every step) of the predictions with the loop rule at each sampled share, on
    validation examples: the share for sampled jobs is chosen here, never on a test set."""
    true = np.array([e.remaining for e in examples], dtype=np.float64)
    out = {}
    for share in shares:
        rule = LoopRule(sampled_share=share)
        out[f"{share:.1f}"] = kendall_tau_b(true, np.array(rule.apply_all(predicted, examples)))
    return out


LOOP_MIN_REPEATS = (2, 3, 4)


def loop_repeats_sweep(examples, predicted, repeats: Sequence[int] = LOOP_MIN_REPEATS,
                       step: int = 4) -> dict[str, dict[str, float]]:
    """Pooled Kendall tau, and tau at one step, with the loop rule's detector asking for each number of copies
    of the repeating unit (a later flag against fewer loops that then end): reported on greedy test sets, where
    the rule matters most; the shipped value was not chosen on them."""
    true = np.array([e.remaining for e in examples], dtype=np.float64)
    at_step = np.array([e.step == step for e in examples])
    out = {}
    for repeat in repeats:
        looped = np.array(LoopRule(min_repeats=repeat).apply_all(predicted, examples))
        out[str(repeat)] = {"pooled_tau": kendall_tau_b(true, looped),
                            f"tau_step_{step}": kendall_tau_b(true[at_step], looped[at_step])}
    return out


def _with_loop_rule(name, examples, predicted, window_tokens, max_step, out_dir, named_rows, summaries) -> dict:
    """The same test set scored after the loop rule (default shares): a table beside the plain one; returns its
    summary row (also appended to `summaries`)."""
    looped = np.array(LoopRule().apply_all(predicted, examples))
    rows = step_rows(examples, looped, window_tokens, max_step=max_step)
    named_rows[name] = rows
    (out_dir / f"{name}.md").write_text(markdown(rows))
    summary = summary_line(name, rows) | {"loop_changed": int(np.sum(looped != np.asarray(predicted)))}
    summaries.append(summary)
    log.info("%s: %s", name, summary)
    return summary


ABLATIONS: dict[str, dict[str, Any]] = {
    "regression only, no calibration": {"rank_weight": 0.0, "calibrate": False},
    "regression + calibration": {"rank_weight": 0.0},
    "ranking only + calibration": {"regression_weight": 0.0},
    "ranking + regression + calibration (the default)": {},
    "  tail: the encoder's embedding of the last 64 tokens instead": {"use_tail": True, "use_tail_hash": False},
    "  tail: encoder + hashed tokens": {"use_tail": True},
    "  tail: none (prompt + step + repetition)": {"use_tail_hash": False},
    "  PCA dims 16 instead of 64": {"projection_dim": 16},
    "  without the repetition features": {"use_repetition": False},
    "  raw target (tokens/100)": {"transform": "raw"},
}


ROUND_TWO: dict[str, dict[str, Any]] = {
    "hashed tail, ranking + regression, 16 PCA dims": {"projection_dim": 16},
    "hashed tail, ranking only, 16 PCA dims": {"regression_weight": 0.0, "projection_dim": 16},
    "hashed tail, ranking only, 64 PCA dims": {"regression_weight": 0.0, "projection_dim": 64},
    "hashed tail, ranking + regression, 64 PCA dims": {"projection_dim": 64},
    "hashed tail, ranking only, 4 PCA dims": {"regression_weight": 0.0, "projection_dim": 4},
    "hashed tail, ranking + regression, 128 PCA dims": {"projection_dim": 128},
    "hashed tail, ranking only, 128 PCA dims": {"regression_weight": 0.0, "projection_dim": 128},
    "hashed tail, ranking + regression, all 384 dims": {"projection_dim": 384},
}


def ablate(cache, records: Sequence[dict], base: RankerConfig, window_tokens: int,
           variants: dict[str, dict[str, Any]] | None = None, held_out: str | None = None) -> list[dict[str, Any]]:
    """Each variant trained on the in-distribution train split (or LOSO train when `held_out`), scored on
    its validation split (never the test split): within-step tau mean, pooled tau, worst bias, min R2."""
    splits = split_leave_one_out(records, held_out) if held_out else split_in_distribution(records)
    results = []
    for label, change in (variants or ABLATIONS).items():
        config = replace(base, **change)
        arrays = {name: arrays_of(cache, flatten(splits[name]), config) for name in ("train", "val")}
        ranker, info = train_ranker(arrays["train"], arrays["val"], config, cache.encoder.dim)
        val = arrays["val"]
        rows = step_rows(val.examples, ranker.predict(val), window_tokens, max_step=8)
        steps = [r for r in rows if r.step != "all"]
        results.append({
            "variant": label,
            "val_tau_step0": steps[0].tau,
            "val_mean_step_tau_0_4": float(np.nanmean([r.tau for r in steps if int(r.step) <= 4])),
            "val_pooled_tau": rows[-1].tau,
            "val_worst_bias_0_8": max(abs(r.bias - 1) for r in steps),
            "val_min_r2_0_8": min(r.r2 for r in steps),
            "best_epoch": info["best_epoch"],
            "train_s": info["train_seconds"],
        })
        log.info("%s", results[-1])
    return results


def ablation_markdown(results: Sequence[dict[str, Any]]) -> str:
    lines = [("| variant | val tau step 0 | val tau mean steps 0-4 | val pooled tau | worst bias steps 0-8 | "
              "min R2 steps 0-8 | best epoch | train s |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['val_tau_step0']:.3f} | {r['val_mean_step_tau_0_4']:.3f} | {r['val_pooled_tau']:.3f} "
            f"| {r['val_worst_bias_0_8']:.2f} | {r['val_min_r2_0_8']:.2f} | {r['best_epoch']} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def scores_for(ranker: Ranker, arrays) -> np.ndarray:
    return score_array(ranker.head, arrays.x)


def online_curve(cache, records: Sequence[dict], source: str, out_dir: Path, config: RankerConfig,
                 points: Sequence[int] = (100, 300), holdout_fraction: float = 0.3, holdout_split: str = "later",
                 min_finetune_jobs: int = 200) -> list[dict[str, Any]]:
    """The online-update curve by replay: a checkpoint trained without `source`, then `elis predictor
    update` fed the first 100, then the first 300 finished jobs of `source` (corpus records in the order
    they were generated), each update from the checkpoint the previous one left. Every point is scored on a
    fixed test slice of `source` (30% of its prompts by hash, never fed to an update)."""
    from elis.predictor.checkpoint import load_checkpoint
    from elis.predictor.features import split_of
    from elis.predictor.online import UpdateRefused, prior_of, ranker_of, update_checkpoint
    from elis.predictor.ranker_train import train_ranker_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    others = [r for r in records if r.get("source") != source]
    target = [r for r in records if r.get("source") == source]
    test_records = [r for r in target if split_of(r["prompt"], (1 - holdout_fraction, holdout_fraction, 0.0)) != "train"]
    stream = [r for r in target if split_of(r["prompt"], (1 - holdout_fraction, holdout_fraction, 0.0)) == "train"]
    path = out_dir / "predictor.pt"
    train_ranker_checkpoint(others, path, cache, config, [])
    test = arrays_of(cache, flatten(test_records), config, prior_of(load_checkpoint(path), cache.encoder))
    window = int(records[0]["window_tokens"])
    results = []

    def score(label: str, jobs: int, note: str) -> None:
        ranker = ranker_of(load_checkpoint(path))
        rows = step_rows(test.examples, ranker.predict(test), window, max_step=8)
        steps = [r for r in rows if r.step != "all"]
        results.append({"after_jobs": jobs, "label": label, "note": note, "admission_tau": steps[0].tau,
                        "admission_fraction": steps[0].fraction, "pooled_tau": rows[-1].tau,
                        "worst_bias_0_8": max(abs(r.bias - 1) for r in steps),
                        "bias_step0": steps[0].bias, "r2_step0": steps[0].r2,
                        "version": load_checkpoint(path).metadata.get("version")})
        (out_dir / f"after_{jobs}.md").write_text(markdown(rows))
        log.info("%s", results[-1])

    score("trained without the source", 0, "")
    for n in points:
        if n > len(stream):
            log.warning("only %d finished jobs of %s to replay; stopping before %d", len(stream), source, n)
            break
        try:
            result = update_checkpoint(path, stream[:n], cache, holdout_fraction=holdout_fraction,
                                       holdout_split=holdout_split, min_finetune_jobs=min_finetune_jobs)
            note = result.reason
        except UpdateRefused as exc:
            note = str(exc)
        score(f"after update with {n} jobs", n, note)
    (out_dir / "curve.json").write_text(json.dumps(results, indent=2))
    return results


def curve_markdown(results: Sequence[dict[str, Any]]) -> str:
    lines = [("| finished jobs fed to update | checkpoint version | admission tau | fraction of ceiling | "
              "pooled tau | bias at admission | worst bias steps 0-8 | R2 at admission | update said |"),
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        lines.append(f"| {r['after_jobs']} | {r['version']} | {r['admission_tau']:.3f} | {r['admission_fraction']:.2f} "
                     f"| {r['pooled_tau']:.3f} | {r['bias_step0']:.2f} | {r['worst_bias_0_8']:.2f} | {r['r2_step0']:.2f} "
                     f"| {r['note'] or '-'} |")
    return "\n".join(lines) + "\n"
