"""`elis replay` (one workload against a running API) and `elis compare` (one workload under several policies
on the live stack, with the exact-length bound). elis/cli.py registers both."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

DEMO_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "demo_prompts.jsonl"


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def replay_command(
    base_url: Annotated[str, typer.Option(help="the API to replay against")] = "http://127.0.0.1:8000",
    prompts: Annotated[Path, typer.Option(help="JSON/JSONL prompts (prompt, messages or instruction)")] = DEMO_PROMPTS,
    num: Annotated[int | None, typer.Option(help="jobs to submit (cycles the prompts) [all]")] = None,
    arrivals: Annotated[str, typer.Option(help="batch | poisson | gamma | trace")] = "batch",
    rate: Annotated[float | None, typer.Option(help="jobs/s for poisson/gamma; trace: rescale to this rate")] = None,
    trace: Annotated[Path | None, typer.Option(help="trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens) "
                                                  "[the bundled Azure trace]; forces its output lengths")] = None,
    max_tokens: int = 256,
    temperature: float = 0.7,
    label: Annotated[str | None, typer.Option(help="workload label [replay-<time>]")] = None,
    out: Annotated[Path | None, typer.Option(help="write per-job records to this CSV")] = None,
    timeout_s: float = 3600.0,
) -> None:
    """Replay a bulk offline workload against a running service and print the report (same format as
    `elis simulate`)."""
    from elis.prompts import PromptFileError, read_prompts
    from elis.replay import workload as wl
    from elis.replay.client import ReplayError, print_jobs, prompt_jobs, replay
    from elis.replay.report import print_summaries, summarize, write_records_csv

    try:
        count = num if num is not None else len(read_prompts(prompts))
    except PromptFileError as exc:
        _fail(str(exc))
    offsets, lengths = None, None
    if arrivals in ("poisson", "gamma"):
        offsets = [float(t) for t in wl.arrival_times(count, arrivals, rate=rate)]
    elif arrivals == "trace":
        jobs = wl.take_cycled(wl.read_azure_trace(trace), count)
        if rate is not None:
            jobs = wl.rescale_to_rate(jobs, rate)
        offsets = [j.arrival for j in jobs]
        lengths = [j.num_output_tokens for j in jobs]
    elif arrivals != "batch":
        _fail("--arrivals must be batch, poisson, gamma or trace")
    replay_jobs = prompt_jobs(prompts, count, max_tokens, temperature, offsets, lengths)
    try:
        records = replay(base_url, replay_jobs, label or f"replay-{int(time.time())}", timeout_s)
    except ReplayError as exc:
        _fail(str(exc), code=1)
    print_jobs(records)
    print_summaries({records[0].policy if records else "?": summarize(records)})
    if out:
        write_records_csv(records, out)


def _policy_list(text: str) -> list[str]:
    from elis.scheduling import UnknownPolicyError, make_policy

    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        _fail("--policies is empty")
    for name in names:
        try:
            make_policy(name)
        except UnknownPolicyError as exc:
            _fail(str(exc))
    return names


def compare_command(
    prompts: Annotated[Path, typer.Option(help="JSON/JSONL prompt file: objects with prompt, messages or "
                                               "instruction (Alpaca) [the 32 bundled demo prompts]")] = DEMO_PROMPTS,
    num: Annotated[int | None, typer.Option(help="jobs: a seeded sample of the prompts, cycled if the file is "
                                                 "shorter [all]")] = None,
    arrivals: Annotated[str, typer.Option(help="gamma | poisson | batch (all at once)")] = "gamma",
    rate: Annotated[float | None, typer.Option(help="mean arrival rate, jobs/s (gamma without it: the ELIS fit, "
                                                    "shape 0.73 scale 10.41 s)")] = None,
    cv: Annotated[float | None, typer.Option(help="gamma: coefficient of variation of the gaps [1.17, the ELIS "
                                                  "fit's]")] = None,
    seed: Annotated[int, typer.Option(help="seed of the prompt sample and the arrivals")] = 0,
    policies: Annotated[str, typer.Option(help="comma-separated policies, run one after the other")] = "fcfs,sjf,isrtf",
    bound: Annotated[bool, typer.Option(help="after the policies, replay the true lengths of the FCFS run as "
                                             "forced lengths under srtf-oracle (the row 'bound')")] = True,
    bound_from: Annotated[Path | None, typer.Option(help="take the bound's true lengths from this records CSV of "
                                                         "an earlier run instead")] = None,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of every job")] = 256,
    temperature: Annotated[float, typer.Option(help="sampling temperature (0: greedy, the same output under "
                                                    "every policy)")] = 0.0,
    slots: Annotated[int, typer.Option(help="batch slots of the worker started here")] = 4,
    out_dir: Annotated[Path | None, typer.Option(help="table, records, manifest and logs "
                                                      "[runs/compare-<time>]")] = None,
    database_url: Annotated[str | None, typer.Option(envvar="ELIS_DATABASE_URL",
                                                     help="database of the stack [a SQLite file in --out-dir, as "
                                                          "`elis demo`]")] = None,
    base_url: Annotated[list[str] | None, typer.Option(help="a running API to use (repeatable; its policy is read "
                                                            "from /healthz). Then no worker is started: the running "
                                                            "one serves, and missing policies get an API on the "
                                                            "same ELIS_* settings")] = None,
    timeout_s: Annotated[float, typer.Option(help="give up a run after this many seconds")] = 3600.0,
) -> None:
    """Run one workload under several policies, back to back on the live stack (API, RabbitMQ, Celery worker,
    vLLM, database), then the exact-length bound, and print one table: JCT mean/p50/p90/p99, queuing delay and
    throughput, each also as a ratio to FCFS and to the bound. Writes table.md/.csv, records-<run>.csv and
    manifest.json to --out-dir. Ctrl-C stops cleanly and leaves a partial report."""
    from elis.config import get_settings
    from elis.replay import compare as cmp
    from elis.replay.sources import WorkloadError, prompt_workload

    logging.basicConfig(level=logging.WARNING)
    names = _policy_list(policies)
    if bound_from is not None and not bound_from.exists():
        _fail(f"--bound-from: no such file {bound_from}")
    if max_tokens < 1:
        _fail("--max-tokens must be at least 1")
    try:
        items = prompt_workload(prompts, num, arrivals, rate, cv, seed, max_tokens, temperature)
    except WorkloadError as exc:
        _fail(str(exc))
    out_dir = out_dir or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    given = cmp.policies_of(base_url) if base_url else {}
    database = database_url or settings.database_url or f"sqlite:///{out_dir.resolve() / 'compare.sqlite3'}"
    stack = cmp.Stack(settings=settings, out_dir=out_dir, database_url=database, base_urls=given, slots=slots)
    options = {"prompts": str(prompts), "num": len(items), "arrivals": arrivals, "rate": rate, "cv": cv, "seed": seed,
               "policies": names, "bound": bound, "bound_from": str(bound_from) if bound_from else None,
               "max_tokens": max_tokens, "temperature": temperature, "slots": slots, "base_url": base_url,
               "last_arrival_s": round(max(i.offset_s for i in items), 2)}
    manifest = cmp.build_manifest(settings, options, stack.describe())
    cmp.write_manifest(out_dir, manifest)
    typer.echo(f"{len(items)} jobs ({arrivals} arrivals, last at {options['last_arrival_s']} s), policies "
               f"{', '.join(names)}{' + bound' if bound else ''}; output in {out_dir}")
    result = cmp.run_compare(items, names, stack, out_dir, manifest, bound=bound, bound_from=bound_from,
                             timeout_s=timeout_s, echo=typer.echo)
    manifest["stack"] = stack.describe()
    manifest["status"] = "interrupted" if result.interrupted else "failed" if result.error else "complete"
    manifest["error"] = result.error
    manifest["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cmp.write_manifest(out_dir, manifest)
    if result.runs:
        cmp.write_tables(out_dir, result.runs, title=f"elis compare ({manifest['status']})")
        cmp.print_comparison(result.runs, title=f"{len(items)} jobs, {arrivals} arrivals")
    typer.echo(f"table: {out_dir / 'table.md'}  manifest: {out_dir / 'manifest.json'}")
    if result.interrupted:
        typer.secho("interrupted: the report holds the finished jobs so far", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130)
    if result.error:
        _fail(result.error, code=1)
