"""`elis predictor build-dataset`: run a prompt corpus through the served model and record its real lengths.

Uses the project's own engine, the model's chat template and the serving sampling settings, so the
predictor learns the served model's behaviour.

One run draws from several prompt sources (by default the four in ../shared/data) in a fixed order that puts
the most valuable data first: (a) `--ceiling-prompts` prompts of every source, `--samples` samples each (the
repeated samples give the noise ceiling), then (b) more prompts round-robin across the sources, one sample
each, until `--total-prompts` distinct prompts. Every record carries its `source`, a stable `prompt_id` (the
prompt's position in its file) and its `sample` index. Resumable: each record is appended as its own gzip
member as soon as it finishes, and a rerun skips every (prompt_id, sample) already in the output.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from elis.prompts import PromptItem
from elis.tasks.contracts import Engine, SamplingSettings

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_OUTPUT = DATA_DIR / "predictor_corpus.jsonl.gz"
# The first dataset (800 Alpaca prompts + 175 seed tasks, one sample each): part of the corpus.
LEGACY_DATASET = DATA_DIR / "predictor_dataset.jsonl.gz"

# source name -> file name in ../shared/data
SOURCE_FILES = {
    "alpaca": "alpaca_5000.json",
    "seed_tasks": "alpaca_seed_tasks.jsonl",
    "code_alpaca": "code_alpaca_2k.json",
    "gsm8k": "gsm8k_train.jsonl",
}


def record_id(prompt_id: str, sample: int) -> str:
    """A record's id: the prompt id for the first sample (as the first dataset), `<prompt_id>#<k>` after."""
    return prompt_id if sample == 0 else f"{prompt_id}#{sample}"


def prompt_key(record: dict) -> tuple[str, int]:
    """(prompt_id, sample) of a record; records of the first dataset have neither field: sample 0."""
    return record.get("prompt_id", record["id"]), int(record.get("sample", 0))


def read_records(path: Path) -> list[dict]:
    """Every complete record of a gzip JSONL file, stopping quietly at a truncated tail (a killed run)."""
    records = []
    if not Path(path).exists():
        return records
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        try:
            for line in handle:
                if line.strip():
                    records.append(json.loads(line))
        except (EOFError, OSError, json.JSONDecodeError):
            log.warning("%s: truncated tail ignored after %d records", path, len(records))
    return records


def _repair(output: Path, records: list[dict]) -> None:
    """NOTE: a killed run can leave a truncated gzip member; appending after it would hide every later
    record from readers, so rewrite the file with what reads."""
    try:
        with gzip.open(output, "rt", encoding="utf-8") as handle:
            for _ in handle:
                pass
        return
    except (EOFError, OSError, json.JSONDecodeError):
        pass
    tmp = output.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    tmp.replace(output)


def done_keys(output: Path) -> set[tuple[str, int]]:
    """(prompt_id, sample) of every record already in `output` (repairing a truncated tail)."""
    if not output.exists():
        return set()
    records = read_records(output)
    _repair(output, records)
    return {prompt_key(r) for r in records}


@dataclass(frozen=True)
class Task:
    """One generation to run: a prompt and which sample of it."""

    item: PromptItem
    sample: int

    @property
    def key(self) -> tuple[str, int]:
        return self.item.id, self.sample


def plan_tasks(
    by_source: dict[str, list[PromptItem]],
    ceiling_prompts: int,
    samples: int,
    total_prompts: int,
    seed: int = 0,
    first: Iterable[str] = (),
) -> list[Task]:
    """The ordered generation plan: (a) `ceiling_prompts` per source x `samples`, then (b) round-robin.

    Each source's prompts are shuffled with a seed of their own (so adding a source keeps the others' order);
    prompts whose id is in `first` (already generated, e.g. the first dataset) lead their source, so their
    existing record serves as sample 0. Sources interleave, so a run stopped at any point is balanced.
    """
    first = set(first)
    orders: dict[str, list[PromptItem]] = {}
    for source, items in by_source.items():
        shuffled = random.Random(f"{seed}:{source}").sample(items, len(items))
        orders[source] = [i for i in shuffled if i.id in first] + [i for i in shuffled if i.id not in first]
    tasks: list[Task] = []
    prompts = 0
    for index in range(ceiling_prompts):
        for order in orders.values():
            if index < len(order) and prompts < total_prompts:
                tasks += [Task(order[index], k) for k in range(samples)]
                prompts += 1
    index = ceiling_prompts
    while prompts < total_prompts and any(index < len(order) for order in orders.values()):
        for order in orders.values():
            if index < len(order) and prompts < total_prompts:
                tasks.append(Task(order[index], 0))
                prompts += 1
        index += 1
    return tasks


def window_char_offsets(engine: Engine, output_ids: list[int], window_tokens: int) -> list[int]:
    """Offset k = where the text of the first k*W output tokens ends (features.window_char_offsets)."""
    from elis.predictor.features import window_char_offsets as offsets

    return offsets(engine.decode, output_ids, window_tokens)


def build_record(engine, task: Task, max_tokens: int, sampling: SamplingSettings, window_tokens: int, model: str) -> dict:
    item = task.item
    prompt_ids = engine.encode_chat(list(item.messages))
    out = engine.run_window(prompt_ids, [], max_tokens, sampling)
    output_ids = out.new_ids
    return {
        "id": record_id(item.id, task.sample),
        "prompt_id": item.id,
        "sample": task.sample,
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


def append_record(output: Path, record: dict) -> None:
    # One gzip member per record, closed (flushed) at once: a kill loses at most the record being written.
    with gzip.open(output, "at", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def compact(output: Path) -> tuple[int, int]:
    """Rewrite the file as one gzip stream (a run appends one member per record, which compresses poorly);
    returns (bytes before, bytes after)."""
    before = output.stat().st_size
    records = read_records(output)
    tmp = output.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    tmp.replace(output)
    return before, output.stat().st_size


def include_records(output: Path, include: Path) -> set[str]:
    """Copy `include`'s records missing from `output` into it; returns the prompt ids `include` holds."""
    records = read_records(include)
    done = done_keys(output)
    for record in records:
        key = prompt_key(record)
        if key not in done:
            append_record(output, {**record, "prompt_id": key[0], "sample": key[1]})
    return {prompt_key(r)[0] for r in records}


def build_dataset(
    engine,
    tasks: Iterable[Task],
    output: Path,
    max_tokens: int,
    sampling: SamplingSettings,
    window_tokens: int,
    model: str,
    concurrency: int = 32,
) -> int:
    """Run every task not yet in `output`, in plan order; append each as it finishes. Returns the count added."""
    output.parent.mkdir(parents=True, exist_ok=True)
    skip = done_keys(output)
    todo = [task for task in tasks if task.key not in skip]
    log.info("%d generations to run, %d records already in %s", len(todo), len(skip), output)
    added = 0
    # The pool takes tasks in submission order, so the plan's order is the order they run in.
    with ThreadPoolExecutor(max_workers=concurrency) as pool, tqdm(total=len(todo), desc="build-dataset") as bar:
        futures = [
            pool.submit(build_record, engine, task, max_tokens, sampling, window_tokens, model) for task in todo
        ]
        for future in as_completed(futures):
            append_record(output, future.result())
            added += 1
            bar.update(1)
    return added


def shared_data_dir() -> Path | None:
    """../shared/data beside the project (or the working directory), when it is there."""
    for root in (Path.cwd(), DATA_DIR.parents[1]):
        shared = root.parent / "shared" / "data"
        if shared.is_dir():
            return shared
    return None


def load_sources(names: list[str], data_dir: Path) -> dict[str, list[PromptItem]]:
    from elis.prompts import read_prompts

    unknown = [n for n in names if n not in SOURCE_FILES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; choose from {sorted(SOURCE_FILES)}")
    return {name: read_prompts(data_dir / SOURCE_FILES[name], name) for name in names}


def build_dataset_command(
    sources: Annotated[
        str, typer.Option(help="comma-separated prompt sources from ../shared/data")
    ] = ",".join(SOURCE_FILES),
    data_dir: Annotated[Path | None, typer.Option(help="where the source files are [default: ../shared/data]")] = None,
    output: Annotated[Path, typer.Option(help="gzip JSONL to write (appended; resumable)")] = DEFAULT_OUTPUT,
    include: Annotated[
        str,
        typer.Option(help="gzip JSONL whose records are copied into the output first (their prompts lead the "
                          "plan as sample 0); '' for none"),
    ] = str(LEGACY_DATASET),
    samples: Annotated[int, typer.Option(help="samples of each of the first --ceiling-prompts prompts per source")] = 3,
    ceiling_prompts: Annotated[int, typer.Option(help="prompts per source that get --samples samples")] = 150,
    total_prompts: Annotated[int, typer.Option(help="distinct prompts in all (round-robin after the first)")] = 5000,
    max_tokens: Annotated[int, typer.Option(help="generation cap (as served)")] = 1024,
    temperature: Annotated[float, typer.Option(help="sampling temperature (as served; 0 = greedy)")] = 0.7,
    concurrency: Annotated[int, typer.Option(help="prompts in flight (the engine batches them)")] = 128,
    seed: Annotated[int, typer.Option(help="seed of the prompt order")] = 0,
    compact_only: Annotated[
        bool, typer.Option("--compact", help="only rewrite --output as one gzip stream (smaller), then exit")
    ] = False,
) -> None:
    """Run prompts through the served model and record its real response lengths for the predictor.

    Order: --ceiling-prompts prompts of every source x --samples samples first (the noise ceiling), then one
    sample of more prompts round-robin across the sources up to --total-prompts. Kill it at any time and run
    the same command again to continue.
    """
    from elis.config import get_settings
    from elis.models_prepare import resolve_model
    from elis.prompts import PromptFileError
    from elis.workers.vllm_engine import VllmConfig, VllmEngine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if compact_only:
        before, after = compact(output)
        typer.echo(f"{output}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
        return
    settings = get_settings()
    data_dir = data_dir or shared_data_dir()
    if data_dir is None:
        typer.secho("error: ../shared/data/ not found; pass --data-dir DIR", fg="red", err=True)
        raise typer.Exit(2)
    try:
        by_source = load_sources([s.strip() for s in sources.split(",") if s.strip()], data_dir)
    except (PromptFileError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    output.parent.mkdir(parents=True, exist_ok=True)
    first: set[str] = set()
    if include:
        if not Path(include).exists():
            typer.secho(f"error: --include {include}: no such file", fg="red", err=True)
            raise typer.Exit(2)
        if Path(include).resolve() != output.resolve():
            first = include_records(output, Path(include))
    tasks = plan_tasks(by_source, ceiling_prompts, samples, total_prompts, seed, first)
    model = resolve_model(settings.model, settings.models_dir)
    engine = VllmEngine(VllmConfig(model=model, dtype=settings.dtype, max_num_seqs=concurrency,
                                   max_model_len=settings.max_model_len, kv_cache_gib=max(settings.kv_cache_gib, 4),
                                   seed=settings.engine_seed))
    try:
        added = build_dataset(engine, tasks, output, max_tokens, SamplingSettings(temperature=temperature),
                              settings.window_tokens, Path(model).name, concurrency)
    finally:
        engine.close()
    typer.echo(f"added {added} records to {output}")
