"""`elis predictor ...`: train, evaluate, sweep (transform/loss measurement) and bench (latency)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

predictor_app = typer.Typer(
    help="The response-length predictor: train, evaluate, benchmark.", no_args_is_help=True
)

DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "data" / "predictor_dataset.jsonl.gz"
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "predictor_corpus.jsonl.gz"


def _read_corpus(files: list[Path]) -> list[dict]:
    from elis.predictor.build_dataset import read_records

    missing = [f for f in files if not Path(f).exists()]
    if missing:
        typer.secho(f"error: no such corpus file: {missing[0]}", fg="red", err=True)
        raise typer.Exit(2)
    return [r for f in files for r in read_records(f)]


def _embedding_cache():
    from elis.predictor.encoder import load_encoder
    from elis.predictor.training import EmbeddingCache

    return EmbeddingCache(load_encoder(""), _settings().cache_dir, 96)


PromptPriorOption = Annotated[
    bool, typer.Option("--prompt-prior/--no-prompt-prior",
                       help="ranker: train the prompt prior (an admission model over --prior-encoder) on the "
                            "same train split, feed its score to the ranker and predict admissions by it (about "
                            "10 min more)")]


PriorEpochsOption = Annotated[
    int, typer.Option(min=1, help="ranker: epochs of the prompt prior's fine-tuning (its best epoch is kept)")]
# The prompt prior's tuned layers by default (ranker.RankerConfig.prior_layers, prompt_prior.prior_config).
DEFAULT_PRIOR_LAYERS = 4
PriorLayersOption = Annotated[
    int, typer.Option(min=1, max=6, help="ranker: the encoder's top layers the prompt prior fine-tunes (4 of "
                                         "MiniLM's 6; 2 before 2026-12-06)")]


# What the prompt prior reads (ranker.RankerConfig.prior_encoder).
DEFAULT_PRIOR_ENCODER = "served-model"
PriorEncoderOption = Annotated[
    str, typer.Option(help="ranker: what the prompt prior reads: 'served-model' (the served LLM's own hidden "
                           "states at the end of the prompt, frozen, a small head; about 10 min to read 5,000 "
                           "prompts here) or 'minilm' (the bundled encoder, --prior-layers tuned; before "
                           "2026-12-07)")]


def _prior_encoder(name: str) -> str:
    if name not in ("minilm", "served-model"):
        raise typer.BadParameter(f"--prior-encoder is 'served-model' or 'minilm', not {name!r}")
    return name


def _train_ranker(files, out, seed, max_epochs, rank_weight, regression_weight, float32,
                  prompt_prior: bool = True, exclude_sources: Sequence[str] = (), prior_epochs: int = 4,
                  prior_layers: int = DEFAULT_PRIOR_LAYERS, prior_encoder: str = DEFAULT_PRIOR_ENCODER) -> None:
    from elis.predictor.ranker import RankerConfig
    from elis.predictor.ranker_train import train_ranker_checkpoint
    from elis.predictor.serving import user_checkpoint_path

    started = time.perf_counter()
    records = _read_corpus(files)
    if exclude_sources:
        unknown = set(exclude_sources) - {r.get("source", "") for r in records}
        if unknown:
            typer.secho(f"error: --exclude-source {sorted(unknown)} not in the corpus", fg="red", err=True)
            raise typer.Exit(2)
        records = [r for r in records if r.get("source", "") not in set(exclude_sources)]
        typer.echo(f"training without {', '.join(exclude_sources)}: {len(records)} records")
    out = out or user_checkpoint_path(_settings().cache_dir)
    config = RankerConfig(seed=seed, max_epochs=min(max_epochs, 60), rank_weight=rank_weight,
                          regression_weight=regression_weight, use_prompt_prior=prompt_prior,
                          prior_epochs=prior_epochs, prior_layers=prior_layers,
                          prior_encoder=_prior_encoder(prior_encoder))
    path, meta = train_ranker_checkpoint(records, out, _embedding_cache(), config, files, half=not float32)
    val = meta["validation"]
    typer.echo(f"validation: pooled tau {val['val_pooled_tau']:.3f}; tau by step {val['val_tau_by_step']}; "
               f"bias by step {val['val_bias_by_step']}")
    typer.echo(f"checkpoint: {path} ({path.stat().st_size / 1e6:.2f} MB) and {path.parent / 'level_edges.json'} "
               f"in {time.perf_counter() - started:.0f} s")


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _set_threads(threads: int) -> None:
    """NOTE: on a CPU shared with vLLM, one torch thread ran the head's training step 5x faster than two."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


ThreadsOption = Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")]


def _settings():
    from elis.config import get_settings

    return get_settings()


@predictor_app.command(short_help="Train a checkpoint (ranker or ELIS head) on the corpus.")
def train(
    dataset: Annotated[
        Path, typer.Option(help="gzip JSONL dataset (elis predictor build-dataset)")
    ] = DEFAULT_DATASET,
    out: Annotated[
        Path | None, typer.Option(help="checkpoint path [default: <cache_dir>/predictor/predictor.pt]")
    ] = None,
    encoder: Annotated[
        str | None, typer.Option(help="encoder [default: ELIS_ENCODER, empty = bundled MiniLM]")
    ] = None,
    transform: Annotated[str, typer.Option(help="target transform: raw (tokens / 100) | log1p")] = "raw",
    loss: Annotated[str, typer.Option(help="loss: huber | l1 | mse")] = "huber",
    features: Annotated[
        str, typer.Option(help="cls | cls+step | cls+step+repetition")
    ] = "cls+step+repetition",
    projection_dim: Annotated[
        int, typer.Option(help="PCA dims of the embedding (0: all, as in the paper)")
    ] = 8,
    max_epochs: int = 60,
    seed: int = 0,
    max_records: Annotated[int | None, typer.Option(help="use only the first N records")] = None,
    ood_source: Annotated[
        list[str] | None, typer.Option(help="sources held out as OOD [default: seed_tasks]")
    ] = None,
    float32: Annotated[bool, typer.Option(help="store float32 weights (default float16)")] = False,
    threads: ThreadsOption = 0,
    kind: Annotated[
        str, typer.Option(help="elis: the paper's MLP on one joined text | ranker: prompt + tail towers, "
                               "ranking loss, per-step calibration (docs/predictor.md)")
    ] = "elis",
    corpus: Annotated[
        list[Path] | None, typer.Option(help="ranker: corpus files (repeatable) [default: the shipped corpus]")
    ] = None,
    rank_weight: Annotated[float, typer.Option(help="ranker: weight of the pairwise ranking loss")] = 1.0,
    regression_weight: Annotated[float, typer.Option(help="ranker: weight of the Huber regression loss")] = 1.0,
    prompt_prior: PromptPriorOption = True,
    exclude_source: Annotated[
        list[str] | None, typer.Option(help="ranker: leave this source out of training (repeatable), to replay "
                                            "it later as traffic the predictor never saw")
    ] = None,
    prior_epochs: PriorEpochsOption = 4,
    prior_layers: PriorLayersOption = DEFAULT_PRIOR_LAYERS,
    prior_encoder: PriorEncoderOption = DEFAULT_PRIOR_ENCODER,
) -> None:
    """Cache the frozen embeddings, train the head, save a checkpoint with its metadata.

    With --kind ranker it also writes level_edges.json next to the checkpoint."""
    _setup_logging()
    _set_threads(threads)
    if kind == "ranker":
        _train_ranker(corpus or [DEFAULT_CORPUS], out, seed, max_epochs, rank_weight, regression_weight, float32,
                      prompt_prior, exclude_source or [], prior_epochs, prior_layers, prior_encoder)
        return
    if kind != "elis":
        typer.secho(f"error: unknown --kind {kind!r} (elis | ranker)", fg="red", err=True)
        raise typer.Exit(2)
    from elis.predictor.encoder import load_encoder
    from elis.predictor.serving import user_checkpoint_path
    from elis.predictor.training import DEFAULT_OOD_SOURCES, TrainConfig, train_predictor

    settings = _settings()
    out = out or user_checkpoint_path(settings.cache_dir)
    config = TrainConfig(
        transform=transform,
        loss=loss,
        features=features,
        projection_dim=projection_dim,
        max_epochs=max_epochs,
        seed=seed,
    )
    started = time.perf_counter()
    path, meta = train_predictor(
        dataset,
        out,
        load_encoder(settings.encoder if encoder is None else encoder),
        config=config,
        num_priority_levels=settings.num_priority_levels,
        cache_dir=settings.cache_dir,
        ood_sources=tuple(ood_source or DEFAULT_OOD_SOURCES),
        max_records=max_records,
        half=not float32,
    )
    typer.echo(json.dumps({k: meta[k] for k in ("encoder", "fit", "edges", "dataset")}, indent=2))
    typer.echo(
        f"checkpoint: {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s"
    )


@predictor_app.command(short_help="MAE, R2, tau and bias per step; --loso for unseen sources.")
def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(help="[default: the serving default]")] = None,
    dataset: Annotated[
        Path, typer.Option(help="any dataset file in the build-dataset format")
    ] = DEFAULT_DATASET,
    split: Annotated[
        list[str] | None,
        typer.Option(help="train | val | test | ood | all (repeatable) [default: test, ood]"),
    ] = None,
    out_dir: Annotated[Path | None, typer.Option(help="[default: <cache_dir>/predictor/eval]")] = None,
    threads: ThreadsOption = 0,
    loso: Annotated[
        bool, typer.Option(help="train a ranker per protocol on --corpus and test it: leave-one-source-out "
                                "for each source, plus the in-distribution split (no checkpoint needed)")
    ] = False,
    corpus: Annotated[list[Path] | None, typer.Option(help="--loso: corpus files [default: the shipped corpus]")] = None,
    greedy: Annotated[
        list[Path] | None, typer.Option(help="--loso: greedy (temperature 0) records; each source's are scored "
                                             "by the model that never saw that source")
    ] = None,
    source: Annotated[list[str] | None, typer.Option(help="--loso: sources to hold out [default: all]")] = None,
    max_epochs: Annotated[int, typer.Option(help="--loso: training epochs at most")] = 40,
    baseline_source: Annotated[
        list[str] | None, typer.Option(help="--loso: also score the previous checkpoint (--checkpoint, default "
                                            "the shipped one) on these held-out sources, steps 0-8")
    ] = None,
    prompt_prior: PromptPriorOption = True,
    prior_epochs: PriorEpochsOption = 4,
    prior_layers: PriorLayersOption = DEFAULT_PRIOR_LAYERS,
    prior_encoder: PriorEncoderOption = DEFAULT_PRIOR_ENCODER,
    in_distribution: Annotated[bool, typer.Option(help="--loso: also score the in-distribution split (one more "
                                                       "training)")] = True,
    train_greedy: Annotated[
        bool, typer.Option(help="--loso: each fold also trains on the --greedy records of the sources it keeps, "
                                "with a greedy flag among the features (no in-distribution split)")
    ] = False,
) -> None:
    """MAE, RMSE, R2, Kendall tau overall and per step; tables, per-example errors CSV, MAE-per-step PNG.

    With --loso: per step MAE, R2, Kendall tau, bias (mean predicted / mean true remaining) and the noise
    ceiling (the other samples of a prompt ranking a held-out sample) with tau as a fraction of it; a
    Markdown table per protocol, per_step.csv and summary.json in --out-dir."""
    if train_greedy and not (loso and greedy):
        raise typer.BadParameter("--train-greedy needs --loso and at least one --greedy file")
    _setup_logging()
    _set_threads(threads)
    if loso:
        _evaluate_loso(corpus or [DEFAULT_CORPUS], greedy or [], source, out_dir, max_epochs,
                       checkpoint, baseline_source or [], prompt_prior, prior_epochs, train_greedy, prior_layers,
                       in_distribution, prior_encoder)
        return
    from elis.predictor.evaluation import evaluate_checkpoint
    from elis.predictor.serving import default_checkpoint_path

    settings = _settings()
    checkpoint = checkpoint or default_checkpoint_path()
    out_dir = out_dir or settings.cache_dir / "predictor" / "eval"
    results = evaluate_checkpoint(checkpoint, dataset, split or ["test", "ood"], out_dir, settings.cache_dir)
    for name, report in results.items():
        typer.echo(f"\n## {name} ({report['num_records']} prompts)\n")
        typer.echo(report["table"])
    typer.echo(f"reports in {out_dir}")


def _evaluate_loso(files, greedy_files, held_out, out_dir, max_epochs, baseline_checkpoint=None,
                   baseline_sources=(), prompt_prior: bool = True, prior_epochs: int = 4,
                   train_greedy: bool = False, prior_layers: int = DEFAULT_PRIOR_LAYERS,
                   in_distribution: bool = True, prior_encoder: str = DEFAULT_PRIOR_ENCODER) -> None:
    from elis.predictor.experiments import evaluate_protocols
    from elis.predictor.ranker import RankerConfig

    started = time.perf_counter()
    records = _read_corpus(files)
    greedy: dict[str, list[dict]] = {}
    file_names = [Path(p).name for p in greedy_files]
    for path in greedy_files:  # one test set per source: each is scored by the fold that left its source out
        # a file's name labels its tables; its whole path when another --greedy file has the same name
        label = Path(path).name if file_names.count(Path(path).name) == 1 else str(path)
        for row in _read_corpus([path]):
            if not row.get("source"):
                raise typer.BadParameter(f"--greedy {path}: a record without a source ({row.get('id')}); no fold "
                                         "could score it")
            greedy.setdefault(f"{label}:{row['source']}", []).append(row)
    out_dir = out_dir or _settings().cache_dir / "predictor" / "loso"
    window = int(records[0]["window_tokens"])
    cache = _embedding_cache()
    baseline = None
    if baseline_sources:
        from elis.predictor.checkpoint import load_checkpoint
        from elis.predictor.serving import PREVIOUS_CHECKPOINT

        old = load_checkpoint(baseline_checkpoint or PREVIOUS_CHECKPOINT)
        cache.prompt_budget = int(old.metadata["prompt_budget"])  # its text join (the ranker does not use it)
        baseline = (old, cache)
    config = RankerConfig(max_epochs=max_epochs, use_prompt_prior=prompt_prior, prior_epochs=prior_epochs,
                          prior_layers=prior_layers, use_greedy_flag=train_greedy,
                          prior_encoder=_prior_encoder(prior_encoder))
    summaries = evaluate_protocols(cache, records, config, out_dir,
                                   window, held_out=held_out, greedy=greedy, baseline=baseline,
                                   baseline_sources=baseline_sources, train_greedy=train_greedy,
                                   in_distribution=in_distribution and not train_greedy)
    for name in sorted(p.stem for p in out_dir.glob("*.md")):
        typer.echo(f"\n## {name}\n")
        typer.echo((out_dir / f"{name}.md").read_text())
    typer.echo("| set | admission tau | ceiling | fraction | tau step 4 | worst |bias-1| steps 0-8 | min R2 0-8 | pooled tau |")
    typer.echo("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in summaries:
        typer.echo(f"| {s['set']} | {s['admission_tau']:.3f} | {s['admission_ceiling']:.3f} | {s['admission_fraction']:.2f} "
                   f"| {s['tau_step4']:.3f} | {s['worst_bias_0_8']:.2f} | {s['min_r2_0_8']:.2f} | {s['pooled_tau']:.3f} |")
    typer.echo(f"reports in {out_dir} ({time.perf_counter() - started:.0f} s)")


@predictor_app.command(short_help="What each ranker choice does (loss, calibration, ...).")
def ablate(
    corpus: Annotated[list[Path] | None, typer.Option(help="corpus files [default: the shipped corpus]")] = None,
    held_out: Annotated[str | None, typer.Option(help="ablate on a LOSO split's validation (a source name)")] = None,
    max_epochs: int = 40,
    threads: ThreadsOption = 0,
    round_two: Annotated[bool, typer.Option(help="the second round: loss and PCA size with the hashed tail")] = False,
    only: Annotated[str, typer.Option(help="run only the variants whose label contains this")] = "",
) -> None:
    """What each ranker choice does (loss, calibration, tail embedding, repetition features, target), on the
    validation split only."""
    _setup_logging()
    _set_threads(threads)
    from elis.predictor.experiments import ablate as run_ablation
    from elis.predictor.experiments import ablation_markdown
    from elis.predictor.ranker import RankerConfig

    records = _read_corpus(corpus or [DEFAULT_CORPUS])
    from elis.predictor.experiments import ABLATIONS, ROUND_TWO

    base = RankerConfig(max_epochs=max_epochs)
    if round_two:
        base = RankerConfig(max_epochs=max_epochs, use_tail=False, use_tail_hash=True, projection_dim=64)
    results = run_ablation(_embedding_cache(), records, base, int(records[0]["window_tokens"]),
                           variants={k: v for k, v in (ROUND_TWO if round_two else ABLATIONS).items() if only in k},
                           held_out=held_out)
    typer.echo(ablation_markdown(results))


@predictor_app.command("finetune-encoder", short_help="Fine-tune the encoder's top layers for admission.")
def finetune_encoder(
    corpus: Annotated[list[Path] | None, typer.Option(help="corpus files [default: the shipped corpus]")] = None,
    held_out: Annotated[list[str] | None, typer.Option(
        help="sets to score: a source name (left out of training) or 'in-distribution' [default: every source]")] = None,
    layers: Annotated[list[int] | None, typer.Option(
        help="trainable top layers to compare; 0 = frozen encoder [default: 0 and 2]")] = None,
    max_epochs: int = 4,
    out_dir: Annotated[Path | None, typer.Option(help="write results.json and results.md here")] = None,
    threads: ThreadsOption = 1,
    per_source: Annotated[bool, typer.Option(help="learn to rank within each source: per-source targets, "
                                                  "within-source pairs and validation")] = False,
    extra_seed: Annotated[list[int] | None, typer.Option(
        help="besides seed 0 (the main table's), train every choice again from this seed (repeatable), and "
             "score each seed and their ensemble (the mean prediction) [default: none]")] = None,
    encoder: Annotated[str, typer.Option(
        help="the prompt encoder: 'minilm' (the bundled sentence encoder) or 'served-model' (the served LLM's "
             "own hidden states at the end of the chat-templated prompt; frozen only, --layers 0)")] = "minilm",
    state_layer: Annotated[list[int] | None, typer.Option(
        help="with --encoder served-model: which of its layers to read (repeatable) [default: the middle, "
             "three quarters and the last]")] = None,
) -> None:
    """Fine-tune the encoder's top layers for the admission prediction and compare with the frozen encoder,
    on sources left out of training (same data, seed, loss and early stopping for both)."""
    _setup_logging()
    _set_threads(threads)
    from elis.predictor.experiments import sources_of
    from elis.predictor.finetune import FinetuneConfig, finetune_study, seeds_markdown, study_markdown

    records = _read_corpus(corpus or [DEFAULT_CORPUS])
    sets = held_out or sources_of(records)
    unknown = [s for s in sets if s != "in-distribution" and s not in sources_of(records)]
    if unknown:
        typer.secho(f"error: no source {unknown[0]!r} in the corpus (sources: {', '.join(sources_of(records))})",
                    fg="red", err=True)
        raise typer.Exit(2)
    choices = layers or [0, 2]
    if encoder not in ("minilm", "served-model"):
        typer.secho(f"error: --encoder is 'minilm' or 'served-model', not {encoder!r}", fg="red", err=True)
        raise typer.Exit(2)
    if encoder == "served-model" and any(choices):
        typer.secho("error: the served model's states are studied frozen only: use --layers 0", fg="red", err=True)
        raise typer.Exit(2)

    def save(results: dict) -> None:
        if out_dir:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
            (out_dir / "results.md").write_text(markdown(results) + "\n")

    def markdown(results: dict) -> str:
        seeds_table = seeds_markdown(results)
        return study_markdown(results, choices) + (f"\n\nSeeds:\n\n{seeds_table}" if seeds_table else "")

    results = finetune_study(_study_encoder(encoder, state_layer or []), records, sets, choices,
                             FinetuneConfig(max_epochs=max_epochs, per_source=per_source),
                             progress=lambda line: typer.echo(line, err=True), on_set=save, seeds=extra_seed or ())
    typer.echo(markdown(results))
    if out_dir:
        typer.echo(f"wrote {out_dir / 'results.json'} and results.md")


def _study_encoder(name: str, state_layers: list[int]):
    """The admission study's prompt encoder: MiniLM, or the served model's states (prepared if missing)."""
    from elis.predictor.encoder import load_encoder

    if name == "minilm":
        return load_encoder("")
    from elis.predictor.llm_states import load_served_model_states

    return load_served_model_states(layers=tuple(state_layers))  # the bundled model, as the served prior reads


@predictor_app.command(short_help="Refit from finished jobs; keep only if it ranks better.")
def update(
    checkpoint: Annotated[Path | None, typer.Option(help="the ranker checkpoint to improve [default: --out if it exists, else the serving default when it is a ranker, else the shipped ranker]")] = None,
    out: Annotated[
        Path | None, typer.Option(help="where the new version goes [default: the file serving watches: "
                                       "ELIS_PREDICTOR_CHECKPOINT if set and not a shipped file, else "
                                       "<cache_dir>/predictor/predictor.pt]")
    ] = None,
    jobs: Annotated[int, typer.Option(help="learn from the last N finished jobs")] = 300,
    records: Annotated[
        Path | None, typer.Option(help="replay: learn from this corpus file's records instead of the database")
    ] = None,
    holdout: Annotated[float, typer.Option(help="fraction of the jobs (by prompt) held back to validate")] = 0.3,
    holdout_split: Annotated[str, typer.Option(
        help="which jobs are held back: 'later' (the prompts seen last: the update is judged on the traffic "
             "after what it learned from) or 'hash' (by prompt hash)")] = "later",
    head: Annotated[bool, typer.Option(help="also try fine-tuning the head (else calibration only)")] = True,
    min_finetune_jobs: Annotated[int, typer.Option(
        min=1, help="fine-tune the head only from this many adapting jobs up (below: calibration only)")] = 200,
    min_gain: Annotated[float, typer.Option(help="required pooled-tau gain on the held-back jobs")] = 0.0,
    min_confidence: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="required share of bootstrap resamples of the held-back prompts in which the new "
                               "version ranks better (0: off)")] = 0.9,
    database_url: Annotated[
        str | None, typer.Option(help="the service's database [default: the ELIS_DATABASE_URL setting]")
    ] = None,
    every: Annotated[float, typer.Option(help="repeat every S seconds (0: once)")] = 0.0,
    dry_run: Annotated[bool, typer.Option(help="measure, write nothing")] = False,
    threads: ThreadsOption = 1,
) -> None:
    """Refit the calibration (and the head, if it pays) from finished jobs; write a new checkpoint version
    only when it ranks the held-back jobs better. Running APIs and workers reload it without a restart."""
    _setup_logging()
    _set_threads(threads)
    from elis.predictor.checkpoint import load_checkpoint
    from elis.predictor.online import UpdateRefused, finished_job_records, update_checkpoint
    from elis.predictor.serving import SHIPPED_RANKER, default_checkpoint_path, update_target_path

    settings = _settings()
    cache = _embedding_cache()
    out = Path(out) if out else update_target_path(settings)
    if settings.predictor_checkpoint and Path(settings.predictor_checkpoint).expanduser().resolve() != out.resolve():
        typer.secho(f"note: serving loads ELIS_PREDICTOR_CHECKPOINT={settings.predictor_checkpoint} and will not "
                    f"see versions written to {out}; unset it (serving then prefers {out}) or point it there",
                    fg="yellow", err=True)
    tokenizer = None
    while True:
        source = Path(checkpoint) if checkpoint else (out if out.exists() else default_checkpoint_path())
        if not checkpoint and load_checkpoint(source).kind != "ranker":
            source = SHIPPED_RANKER  # the ELIS head cannot be updated online: start from the shipped ranker
        if records is not None:
            data = _read_corpus([records])[-jobs:]
        else:
            tokenizer = tokenizer or _served_tokenizer(settings)
            data = finished_job_records(database_url or settings.resolved_database_url, jobs, settings.window_tokens,
                                        lambda ids, tok=tokenizer: tok.decode(ids, skip_special_tokens=True))
        try:
            result = update_checkpoint(source, data, cache, out_path=out, holdout_fraction=holdout,
                                       refit_head=head, min_gain=min_gain, dry_run=dry_run,
                                       min_confidence=min_confidence, holdout_split=holdout_split,
                                       min_finetune_jobs=min_finetune_jobs)
            typer.echo(f"{result.reason} ({result.adapt_jobs} jobs to adapt, {result.holdout_jobs} held back); "
                       f"version {result.version}{'' if dry_run else f' written to {result.path}'}")
            if not dry_run:
                # The next round improves on this version, not again on the one it started from.
                checkpoint = out
        except UpdateRefused as exc:
            typer.echo(str(exc))
            if not every:
                raise typer.Exit(1)
        except ValueError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2)
        if not every:
            return
        time.sleep(every)


def _served_tokenizer(settings):
    """The served model's tokenizer: finished jobs store its token ids, decoded here as the worker did."""
    from transformers import AutoTokenizer

    from elis.models_prepare import ModelPrepareError, resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(settings.model, settings.models_dir))
    except ModelPrepareError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


@predictor_app.command(short_help="How well the loop detector flags outputs that hit the cap.")
def loops(
    records: Annotated[list[Path], typer.Argument(help="build-dataset record files (.jsonl or .jsonl.gz)")],
    max_step: Annotated[int, typer.Option(min=1, help="last window boundary to count")] = 12,
    min_span: Annotated[
        list[int] | None, typer.Option(min=1, help="characters the tail must repeat over (repeat to sweep) "
                                                   "[default: the shipped detector's]")] = None,
    min_repeats: Annotated[
        list[int] | None, typer.Option(min=2, help="copies of the unit the tail must hold (repeat to sweep) "
                                                   "[default: the shipped detector's]")] = None,
    by_source: Annotated[bool, typer.Option(help="one table per source too, not only per temperature")] = False,
) -> None:
    """How well the loop rule's detector works on recorded outputs: per window boundary, the outputs still
    running, how many it flags as looping, how many of those ran to max_tokens (precision), and how many of
    the outputs that ran to max_tokens it had flagged by then (recall). By temperature. With several
    --min-span / --min-repeats values, a sweep: per variant, the outputs ever flagged, those that then ended
    before max_tokens (escaped), and the median tokens at the first flag."""
    from elis.predictor.loops import MIN_REPEATS, MIN_SPAN, loop_counts, loop_summary

    spans, repeats = min_span or [MIN_SPAN], min_repeats or [MIN_REPEATS]
    rows = _read_corpus(records)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        temperature = f"temperature {row.get('temperature', '?')}"
        groups.setdefault(temperature, []).append(row)
        if by_source:
            groups.setdefault(f"{temperature}, {row.get('source', '?')}", []).append(row)
    for name, group in sorted(groups.items()):
        window = int(group[0].get("window_tokens") or _settings().window_tokens)
        typer.echo(f"\n## {name} ({len(group)} outputs, "
                   f"{sum(r.get('finish_reason') == 'length' for r in group)} ran to max_tokens)\n")
        if len(spans) * len(repeats) > 1:
            typer.echo(f"| min span | min repeats | flagged by step {max_step} | escaped | precision | recall "
                       "| median tokens at the first flag (of those that ran to max_tokens) |")
            typer.echo("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for span in spans:
                for repeat in repeats:
                    sm = loop_summary(group, max_step, min_span=span, min_repeats=repeat)
                    typer.echo(f"| {span} | {repeat} | {sm.flagged} | {sm.escaped} | {sm.precision:.3f} "
                               f"| {sm.recall:.3f} | {sm.median_first_step * window:.0f} |")
            typer.echo("")
        typer.echo(f"min span {spans[0]}, min repeats {repeats[0]}:\n")
        typer.echo("| step | running | ran to max_tokens | flagged | of those, ran to max_tokens | precision "
                   "| recall |")
        typer.echo("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in loop_counts(group, max_step, min_span=spans[0], min_repeats=repeats[0]):
            typer.echo(f"| {c.step} | {c.running} | {c.capped} | {c.flagged} | {c.flagged_capped} "
                       f"| {c.precision:.2f} | {c.recall:.2f} |")


@predictor_app.command("update-curve", short_help="The online-update curve on a held-out source.")
def update_curve(
    source: Annotated[str, typer.Option(help="the source the checkpoint never sees")] = "gsm8k",
    corpus: Annotated[list[Path] | None, typer.Option(help="corpus files [default: the shipped corpus]")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="[default: <cache_dir>/predictor/update-curve]")] = None,
    point: Annotated[list[int] | None, typer.Option(help="finished jobs per update [default: 100, 300]")] = None,
    max_epochs: int = 40,
    prompt_prior: PromptPriorOption = True,
    holdout_split: Annotated[str, typer.Option(help="as `update --holdout-split`")] = "later",
    min_finetune_jobs: Annotated[int, typer.Option(min=1, help="as `update --min-finetune-jobs`")] = 200,
    threads: ThreadsOption = 1,
) -> None:
    """The online-update curve by replaying a held-out source's finished jobs through `update`, from a checkpoint
    of the shipped kind (the ranker with the prompt prior; --no-prompt-prior: without) trained without it."""
    _setup_logging()
    _set_threads(threads)
    from elis.predictor.experiments import curve_markdown, online_curve
    from elis.predictor.ranker import RankerConfig

    records = _read_corpus(corpus or [DEFAULT_CORPUS])
    out_dir = out_dir or _settings().cache_dir / "predictor" / "update-curve"
    config = RankerConfig(max_epochs=max_epochs, use_prompt_prior=prompt_prior)
    results = online_curve(_embedding_cache(), records, source, out_dir, config, point or [100, 300],
                           holdout_split=holdout_split, min_finetune_jobs=min_finetune_jobs)
    typer.echo(curve_markdown(results))
    typer.echo(f"tables in {out_dir}")


@predictor_app.command(short_help="Target transforms, losses and feature sets, side by side.")
def sweep(
    dataset: Annotated[Path, typer.Option()] = DEFAULT_DATASET,
    encoder: Annotated[str | None, typer.Option()] = None,
    max_epochs: int = 40,
    variant: Annotated[
        list[str] | None,
        typer.Option(help="transform:loss:features:projection (e.g. log1p:l1:cls:0); repeatable"),
    ] = None,
    threads: ThreadsOption = 0,
) -> None:
    """Measure target transforms, losses, feature sets and PCA sizes on the validation split (cached embeddings)."""
    _setup_logging()
    _set_threads(threads)
    from elis.predictor.encoder import load_encoder
    from elis.predictor.evaluation import metrics
    from elis.predictor.features import flatten
    from elis.predictor.head import TargetTransform
    from elis.predictor.training import (
        EmbeddingCache,
        TrainConfig,
        arrays_for,
        capped,
        fit_head,
        predict_array,
        read_dataset,
        split_records,
    )

    settings = _settings()
    enc = load_encoder(settings.encoder if encoder is None else encoder)
    splits = split_records(read_dataset(dataset))
    cache = EmbeddingCache(enc, settings.cache_dir, TrainConfig().prompt_budget)
    variants = variant or [
        f"{t}:{loss}:cls+step+repetition:8"
        for t, loss in [("log1p", "l1"), ("log1p", "mse"), ("raw", "l1"), ("raw", "mse"), ("raw", "huber")]
    ] + ["log1p:mse:cls:0", "log1p:mse:cls+step+repetition:0", "log1p:mse:cls+step:8"]
    typer.echo(
        "| transform | loss | features | PCA dims | best epoch | val MAE | val RMSE | val R2 | val tau | s |"
    )
    typer.echo("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for spec in variants:
        transform, loss, feature_set, projection = (spec.split(":") + ["8"])[:4]
        config = TrainConfig(
            transform=transform,
            loss=loss,
            features=feature_set,
            projection_dim=int(projection),
            max_epochs=max_epochs,
        )
        train_arr = arrays_for(cache, flatten(splits["train"]), feature_set)
        val_arr = arrays_for(cache, flatten(splits["val"]), feature_set)
        head, info = fit_head(train_arr, val_arr, config, enc.dim)
        m = metrics(
            val_arr.y, capped(predict_array(head, TargetTransform(transform), val_arr.x), val_arr.examples)
        )
        typer.echo(
            f"| {transform} | {loss} | {feature_set} | {projection} | {info['best_epoch']} | {m.mae:.1f} | {m.rmse:.1f} | {m.r2:.3f} "
            f"| {m.kendall_tau:.3f} | {info['train_seconds']:.0f} |"
        )


@predictor_app.command(short_help="Milliseconds per job-window of re-prediction.")
def bench(
    checkpoint: Annotated[Path | None, typer.Option()] = None,
    dataset: Annotated[Path, typer.Option(help="records to replay (prompts and outputs)")] = DEFAULT_DATASET,
    batch: Annotated[list[int] | None, typer.Option(help="jobs re-predicted together (slots) [default: 1, 4, 16]")] = None,
    windows: Annotated[int, typer.Option(help="windows replayed per job")] = 6,
    repeats: Annotated[int, typer.Option(help="groups of jobs per batch size")] = 3,
    threads: ThreadsOption = 1,
) -> None:
    """Milliseconds per job-window of re-prediction, as a worker pays it: each job's admission prediction
    first (the ranker encodes and caches the prompt then), then after each window one batched call for the
    slots' jobs with their text so far. Prints the admission cost too."""
    _setup_logging()
    _set_threads(threads)
    import numpy as np
    import torch

    from elis.predictor.build_dataset import read_records
    from elis.predictor.features import PredictionInput
    from elis.predictor.serving import load_predictor

    predictor = load_predictor(checkpoint)
    window = predictor.window_tokens
    jobs = [r for r in read_records(dataset) if len(r["window_char_offsets"]) > windows] if dataset.exists() else []
    if not jobs:
        typer.secho(f"error: no record with more than {windows} windows in {dataset}", fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(f"checkpoint {predictor.path} (kind {predictor.checkpoint.kind}); torch threads "
               f"{torch.get_num_threads()}; {len(jobs)} jobs with > {windows} windows")
    rng = np.random.default_rng(0)
    predictor.predict([PredictionInput(jobs[0]["prompt"])])  # warm-up
    for size in batch or [1, 4, 16]:
        admission, per_window = [], []
        for _ in range(repeats):
            group = [jobs[i] for i in rng.choice(len(jobs), size=min(size, len(jobs)), replace=False)]
            started = time.perf_counter()
            predictor.predict([PredictionInput(r["prompt"], max_tokens=r["max_tokens"]) for r in group])
            admission.append((time.perf_counter() - started) / len(group))
            for k in range(1, windows + 1):
                items = [PredictionInput(r["prompt"], r["output_text"][: r["window_char_offsets"][k]], k * window,
                                         r["max_tokens"]) for r in group]
                started = time.perf_counter()
                predictor.predict(items)
                per_window.append((time.perf_counter() - started) / len(group))
        per_window_ms = 1000 * np.array(per_window)
        typer.echo(
            f"batch {size:3d}: re-prediction {np.median(per_window_ms):6.1f} ms per job-window median "
            f"(mean {per_window_ms.mean():.1f}, p90 {np.percentile(per_window_ms, 90):.1f}); "
            f"admission {1000 * np.median(admission):.1f} ms per job"
        )


if __name__ == "__main__":
    predictor_app()


@predictor_app.command(short_help="Make sure a predictor checkpoint loads.")
def ensure(
    retrain: Annotated[bool, typer.Option(help="train even if a checkpoint loads")] = False,
    threads: ThreadsOption = 1,
) -> None:
    """Make sure a predictor checkpoint loads (the shipped one by default); train it when none does.

    Set-up (`make demo`, `make test`) calls this, so the demo needs no manual step.
    """
    from elis.predictor.serving import PredictorUnavailable, load_predictor, user_checkpoint_path

    _setup_logging()
    _set_threads(threads)
    if not retrain:
        try:
            predictor = load_predictor(_settings().predictor_checkpoint or None)
            typer.echo(f"predictor ready: {predictor.path} (encoder {predictor.metadata['encoder']})")
            return
        except PredictorUnavailable as exc:
            typer.echo(f"no usable checkpoint ({exc}); training one")
    out = user_checkpoint_path(_settings().cache_dir)
    train(out=out, threads=threads)
    typer.echo(f"predictor trained: {out}")
