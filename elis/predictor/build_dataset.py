"""`elis predictor build-dataset`: run a prompt corpus through the served model and record its real lengths.

Uses the project's own engine, the model's chat template and the serving sampling settings, so the
predictor learns the served model's behaviour. Resumable: records already in the output are skipped.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from elis.prompts import PromptItem, iter_jsonl
from elis.tasks.contracts import Engine, SamplingSettings

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_OUTPUT = DATA_DIR / "predictor_dataset.jsonl.gz"


def done_ids(output: Path) -> set[str]:
    if not output.exists():
        return set()
    try:
        return {record["id"] for record in iter_jsonl(output)}
    except (EOFError, OSError, json.JSONDecodeError):
        # NOTE: an interrupted run can leave a truncated gzip member; keep what reads, rewrite the file.
        kept = []
        with gzip.open(output, "rt", encoding="utf-8") as handle:
            try:
                for line in handle:
                    kept.append(json.loads(line))
            except (EOFError, OSError, json.JSONDecodeError):
                pass
        with gzip.open(output, "wt", encoding="utf-8") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")
        return {record["id"] for record in kept}


def window_char_offsets(engine: Engine, output_ids: list[int], window_tokens: int) -> list[int]:
    """Offset k = length of the text of the first k*W output tokens, for every k with k*W < len(output)."""
    return [len(engine.decode(output_ids[: k * window_tokens])) for k in range(0, (len(output_ids) - 1) // window_tokens + 1)]


def build_record(engine, item: PromptItem, max_tokens: int, sampling: SamplingSettings, window_tokens: int, model: str) -> dict:
    prompt_ids = engine.encode_chat(list(item.messages))
    out = engine.run_window(prompt_ids, [], max_tokens, sampling)
    output_ids = out.new_ids
    return {
        "id": item.id,
        "source": item.source,
        "prompt": item.text,
        "prompt_ids": prompt_ids,
        "output_ids": output_ids,
        "output_text": engine.decode(output_ids),
        "window_char_offsets": window_char_offsets(engine, output_ids, window_tokens),
        "window_tokens": window_tokens,
        "finish_reason": "stop" if out.finished else "length",
        "max_tokens": max_tokens,
        "temperature": sampling.temperature,
        "model": model,
    }


def build_dataset(
    engine,
    items: Iterable[PromptItem],
    output: Path,
    max_tokens: int,
    sampling: SamplingSettings,
    window_tokens: int,
    model: str,
    concurrency: int = 32,
) -> int:
    """Generate a response per prompt not yet in `output`; append each as it finishes. Returns the count added."""
    output.parent.mkdir(parents=True, exist_ok=True)
    skip = done_ids(output)
    todo = [item for item in items if item.id not in skip]
    log.info("%d prompts to run, %d already done", len(todo), len(skip))
    added = 0
    with ThreadPoolExecutor(max_workers=concurrency) as pool, tqdm(total=len(todo), desc="build-dataset") as bar:
        futures = [
            pool.submit(build_record, engine, item, max_tokens, sampling, window_tokens, model) for item in todo
        ]
        for future in as_completed(futures):
            record = future.result()
            # One gzip member per record: a crash loses at most the record being written.
            with gzip.open(output, "at", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            added += 1
            bar.update(1)
    return added


def default_corpus() -> list[Path]:
    """The shared Alpaca corpus and seed tasks, when the project sits beside them (../shared/data)."""
    for root in (Path.cwd(), DATA_DIR.parents[1]):
        shared = root.parent / "shared" / "data"
        files = [shared / "alpaca_5000.json", shared / "alpaca_seed_tasks.jsonl"]
        if all(f.exists() for f in files):
            return files
    return []


def build_dataset_command(
    prompts: Annotated[list[Path] | None, typer.Option("--prompts", help="JSON/JSONL prompt files (repeatable)")] = None,
    output: Annotated[Path, typer.Option(help="gzip JSONL to write (appended; resumable)")] = DEFAULT_OUTPUT,
    num_prompts: Annotated[int, typer.Option(help="sample this many prompts from each file")] = 800,
    max_tokens: Annotated[int, typer.Option(help="generation cap (as served)")] = 1024,
    temperature: Annotated[float, typer.Option(help="sampling temperature (as served)")] = 0.7,
    concurrency: Annotated[int, typer.Option(help="prompts in flight (the engine batches them)")] = 64,
    seed: int = 0,
) -> None:
    """Run prompts through the served model and record its real response lengths for the predictor.

    Default corpus: 800 Alpaca prompts (sampled with --seed) plus all 175 human-written seed tasks from
    ../shared/data (the Stanford Alpaca files), which is how elis/data/predictor_dataset.jsonl.gz was built.
    """
    from elis.config import get_settings
    from elis.models_prepare import resolve_model
    from elis.prompts import PromptFileError, read_prompts, sample
    from elis.workers.vllm_engine import VllmConfig, VllmEngine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    files = prompts or default_corpus()
    if not files:
        typer.secho("error: no prompt files given and ../shared/data/ not found; pass --prompts FILE", fg="red", err=True)
        raise typer.Exit(2)
    items = []
    try:
        for path in files:
            source = "seed_tasks" if "seed" in path.name else path.stem.split("_")[0]
            items += sample(read_prompts(path, source), num_prompts, seed=seed)
    except PromptFileError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    model = resolve_model(settings.model, settings.models_dir)
    engine = VllmEngine(VllmConfig(model=model, dtype=settings.dtype, max_num_seqs=concurrency,
                                   max_model_len=settings.max_model_len, kv_cache_gib=max(settings.kv_cache_gib, 4),
                                   seed=settings.engine_seed))
    try:
        added = build_dataset(engine, items, output, max_tokens, SamplingSettings(temperature=temperature),
                              settings.window_tokens, Path(model).name, concurrency)
    finally:
        engine.close()
    typer.echo(f"added {added} records to {output}")
