"""`elis predictor ...`: train, evaluate, sweep (transform/loss measurement) and bench (latency)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer

predictor_app = typer.Typer(
    help="The response-length predictor: train, evaluate, benchmark.", no_args_is_help=True
)

DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "data" / "predictor_dataset.jsonl.gz"


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


@predictor_app.command()
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
) -> None:
    """Cache the frozen embeddings, train the head, save a checkpoint with its metadata."""
    _setup_logging()
    _set_threads(threads)
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


@predictor_app.command()
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
) -> None:
    """MAE, RMSE, R2, Kendall tau overall and per step; tables, per-example errors CSV, MAE-per-step PNG."""
    _setup_logging()
    _set_threads(threads)
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


@predictor_app.command()
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


@predictor_app.command()
def bench(
    checkpoint: Annotated[Path | None, typer.Option()] = None,
    dataset: Annotated[Path, typer.Option()] = DEFAULT_DATASET,
    batch: Annotated[list[int] | None, typer.Option(help="batch sizes [default: 1, 16]")] = None,
    repeats: int = 10,
    threads: ThreadsOption = 0,
) -> None:
    """Predictor latency per job (encoder + head, end to end) at each batch size, on real dataset inputs."""
    _setup_logging()
    _set_threads(threads)
    import numpy as np
    import torch

    from elis.predictor.features import PredictionInput, flatten
    from elis.predictor.serving import load_predictor
    from elis.predictor.training import read_dataset, split_records

    predictor = load_predictor(checkpoint)
    if dataset.exists():
        examples = flatten(split_records(read_dataset(dataset))["test"])
        items = [PredictionInput(e.prompt, e.output_text, e.num_generated) for e in examples]
    else:
        items = [
            PredictionInput("Write a short poem about the sea.", "The sea is wide " * i, 4 * i)
            for i in range(64)
        ]
    rng = np.random.default_rng(0)
    typer.echo(f"torch threads: {torch.get_num_threads()}; {len(items)} candidate inputs")
    for size in batch or [1, 16]:
        predictor.predict([items[0]] * size)  # warm-up
        timings = []
        for _ in range(repeats):
            chosen = [items[i] for i in rng.choice(len(items), size=size, replace=False)]
            started = time.perf_counter()
            predictor.predict(chosen)
            timings.append(time.perf_counter() - started)
        per_job = 1000 * np.array(timings) / size
        typer.echo(
            f"batch {size:3d}: {np.median(per_job):7.1f} ms/job median (p90 {np.percentile(per_job, 90):.1f}), "
            f"{1000 * np.median(timings):.0f} ms/batch"
        )


if __name__ == "__main__":
    predictor_app()


@predictor_app.command()
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
