"""`elis replay` (one workload against a running API) and `elis compare` (one workload under several policies
on the live stack, with the exact-length bound). elis/cli.py registers both."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

DEMO_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "demo_prompts.jsonl"


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def replay_command(
    base_url: Annotated[str, typer.Option(help="the API to replay against")] = "http://127.0.0.1:8000",
    prompts: Annotated[Path, typer.Option(help="JSON/JSONL prompts (prompt, messages, instruction, "
                                                "conversations, question, problem, ...; .gz too)")] = DEMO_PROMPTS,
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
        items = _admissible_prompts(read_prompts(prompts), max_tokens, temperature, base_url)
    except PromptFileError as exc:
        _fail(str(exc))
    count = num if num is not None else len(items)
    offsets, lengths = None, None
    if arrivals in ("poisson", "gamma"):
        offsets = [float(t) for t in wl.arrival_times(count, arrivals, rate=rate)]
    elif arrivals == "trace":
        try:
            jobs = wl.take_cycled(wl.read_azure_trace(trace), count)
        except ValueError as exc:
            _fail(str(exc))
        if rate is not None:
            jobs = wl.rescale_to_rate(jobs, rate)
        offsets = [j.arrival for j in jobs]
        lengths = [j.num_output_tokens for j in jobs]
    elif arrivals != "batch":
        _fail("--arrivals must be batch, poisson, gamma or trace")
    replay_jobs = prompt_jobs(prompts, count, max_tokens, temperature, offsets, lengths, items=items)
    try:
        records = replay(base_url, replay_jobs, label or f"replay-{int(time.time())}", timeout_s)
    except ReplayError as exc:
        _fail(str(exc), code=1)
    except httpx.HTTPError as exc:  # the API is down, or went away mid-run (submitted jobs stay in the service)
        _fail(f"cannot reach the API at {base_url}: {exc}", code=1)
    print_jobs(records)
    print_summaries({records[0].policy if records else "?": summarize(records)})
    if out:
        write_records_csv(records, out)


def _admissible_prompts(items: list, max_tokens: int, temperature: float, base_url: str) -> list:
    """The prompts the API at `base_url` would admit with this max_tokens, by its own limits (as `elis compare`
    judges them; this machine's settings where it does not say); the others are left out with a warning, since
    a refusal would stop the replay midway."""
    from elis.config import get_settings
    from elis.replay.api_limits import api_limits
    from elis.replay.sources import body_of, refusal_of

    context = _context_check(get_settings(), api_limits(base_url))
    kept, reasons = [], []
    for item in items:
        refusal = refusal_of(body_of(item.messages, max_tokens, temperature), context)
        (reasons if refusal else kept).append(refusal or item)
    if not kept:
        _fail(f"the API would refuse every prompt; the first: {reasons[0]}")
    if reasons:
        typer.secho(f"left out {len(reasons)} of {len(items)} prompts that the API would refuse; the first: "
                    f"{reasons[0]}", fg=typer.colors.YELLOW, err=True)
    _warn_unchecked(context, base_url)
    return kept


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


def _rates(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"--rates must be comma-separated numbers, not {text!r}")
    if not rates or any(r <= 0 for r in rates):
        _fail("--rates must be positive numbers")
    return rates


def compare_command(
    prompts: Annotated[Path, typer.Option("--prompts", "--workload", help="the workload file: prompts (JSON/JSONL "
                                          "with prompt, messages, instruction, conversations, question, "
                                          "problem, ...; .gz too; docs/compare.md lists them), a JSONL "
                                          "trace (arrival, prompt, max_tokens, output_tokens), an Azure "
                                          "2023 or BurstGPT CSV, a Mooncake JSONL trace, or an "
                                          "OpenAI batch input file [the 32 bundled demo prompts]")] = DEMO_PROMPTS,
    kind: Annotated[str, typer.Option("--format", help="auto | prompts | trace | lengths (Azure/BurstGPT CSV, "
                                                       "Mooncake JSONL) | openai-batch")] = "auto",
    num: Annotated[int | None, typer.Option(help="jobs: a seeded sample of the prompts (the first ones of a "
                                                 "trace), cycled if the file is shorter [all]")] = None,
    arrivals: Annotated[str, typer.Option(help="files without times: gamma | poisson | batch (all at once)")] = "gamma",
    rate: Annotated[float | None, typer.Option(help="mean arrival rate, jobs/s (gamma without it: the ELIS fit, "
                                                    "shape 0.73 scale 10.41 s); traces are rescaled to it")] = None,
    cv: Annotated[float | None, typer.Option(help="gamma: coefficient of variation of the gaps [1.17, the ELIS "
                                                  "fit's]")] = None,
    seed: Annotated[int, typer.Option(help="seed of the prompt sample and the arrivals")] = 0,
    policies: Annotated[str, typer.Option(help="comma-separated policies, run one after the other")] = "fcfs,sjf,isrtf",
    rounds: Annotated[int, typer.Option(help="run the policies this many times, the order rotated by one each "
                                             "round (round 2 of fcfs,sjf,isrtf is sjf,isrtf,fcfs): FCFS's rounds "
                                             "are an A/A test of the noise, and each policy gets a '(mean of N)' "
                                             "row")] = 1,
    bound: Annotated[bool, typer.Option(help="after the policies, replay the true lengths of the FCFS run as "
                                             "forced lengths under srtf-oracle (the row 'bound')")] = True,
    bound_from: Annotated[Path | None, typer.Option(help="take the bound's true lengths from this records CSV of "
                                                         "an earlier run instead")] = None,
    warmup: Annotated[bool, typer.Option(help="before the first run, every prompt once with one output token, not "
                                              "measured: the engine and its prefix cache start as warm for the "
                                              "first policy as for the later ones")] = True,
    lengths_from: Annotated[Path | None, typer.Option(help="force every run's outputs to the lengths of an earlier "
                                                           "run of the same workload (its records CSV; same file, "
                                                           "--num and --seed): every policy then does the same work, "
                                                           "with no run-to-run output noise")] = None,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of every job (and the cap of a trace's forced "
                                                 "lengths)")] = 256,
    max_prompt_tokens: Annotated[int, typer.Option(help="length traces: cap of the filler prompts")] = 512,
    load: Annotated[float, typer.Option(help="length traces without --rate: arrivals scaled to this fraction of "
                                             "what one worker serves here (the engine profile at the speed the "
                                             "worker measured at start-up; the bundled one when none "
                                             "has)")] = 0.8,
    temperature: Annotated[float, typer.Option(help="sampling temperature (0: greedy, the same output under "
                                                    "every policy)")] = 0.0,
    slots: Annotated[int, typer.Option(help="batch slots of the worker started here")] = 4,
    rates: Annotated[str | None, typer.Option(help="load sweep: comma-separated arrival rates (jobs/s); the whole "
                                                   "comparison runs at each, then mean and p99 JCT are plotted "
                                                   "against the rate")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="table, records, manifest and logs "
                                                      "[runs/compare-<time>]")] = None,
    database_url: Annotated[str | None, typer.Option(envvar="ELIS_DATABASE_URL",
                                                     help="database of the stack, created when missing [a fresh "
                                                          "database named after --out-dir on the local PostgreSQL "
                                                          "(ELIS_LOCAL_POSTGRES_URL), or a SQLite file in --out-dir "
                                                          "where none answers; with --base-url: the ELIS_* "
                                                          "default]")] = None,
    base_url: Annotated[list[str] | None, typer.Option(help="a running API to use (repeatable; its policy is read "
                                                            "from /healthz). Then no worker is started: the running "
                                                            "one serves, and missing policies get an API on the "
                                                            "same ELIS_* settings")] = None,
    timeout_s: Annotated[float, typer.Option(help="give up a run after this many seconds")] = 3600.0,
) -> None:
    """Run one workload under several policies, back to back on the live stack (API, RabbitMQ, Celery worker,
    vLLM, database), then the exact-length bound, and print one table: JCT mean/p50/p90/p99, queuing delay and
    throughput, each also as a ratio to FCFS and to the bound. Writes table.md/.csv, records-<run>.csv and
    manifest.json to --out-dir (with --rates: one such folder per rate plus the sweep's table and plots).
    Ctrl-C stops cleanly and leaves a partial report."""
    from elis.config import get_settings
    from elis.replay import compare as cmp
    from elis.replay.sources import WorkloadError, build_workload

    logging.basicConfig(level=logging.WARNING)
    names = _policy_list(policies)
    sweep_rates = _rates(rates)
    for option, path in (("--bound-from", bound_from), ("--lengths-from", lengths_from)):
        if path is not None and not path.exists():
            _fail(f"{option}: no such file {path}")
    if max_tokens < 1 or max_prompt_tokens < 1:
        _fail("--max-tokens and --max-prompt-tokens must be at least 1")
    if load <= 0:
        _fail("--load must be positive")
    if rounds < 1:
        _fail("--rounds must be at least 1")

    try:
        given = cmp.policies_of(base_url) if base_url else {}
    except cmp.CompareError as exc:
        _fail(str(exc))
    context = _context_check(get_settings(), _compare_limits(given, [*names, *([cmp.BOUND_POLICY] if bound else [])],
                                                              get_settings()))

    def workload_at(run_rate: float | None, capacity=None):
        try:
            return build_workload(prompts, kind=kind, num=num, arrivals=arrivals, rate=run_rate, cv=cv, seed=seed,
                                  max_tokens=max_tokens, temperature=temperature, slots=slots, load=load,
                                  max_prompt_tokens=max_prompt_tokens, context=context, profile=capacity)
        except WorkloadError as exc:
            _fail(str(exc))

    workloads = {r: workload_at(r) for r in sweep_rates} if sweep_rates else {None: workload_at(rate)}
    first = next(iter(workloads.values()))
    if first.info.get("left_out"):
        typer.secho(f"left out {first.info['left_out']} of {first.info['rows_in_file']} requests that the API would "
                    f"refuse ({first.info['left_out_too_long']} of them longer than the model's context of "
                    f"{context.max_model_len} tokens with their max_tokens); the first: "
                    f"{first.info['left_out_first_reason']}", fg=typer.colors.YELLOW, err=True)
    if base_url:
        _warn_unchecked(context, ", ".join(base_url))
    # Records name jobs by their place in the sample: check once that earlier records come from this sample.
    sample = {"workload": str(prompts), "num": num, "seed": seed, "max_tokens": max_tokens}
    for option, path in (("--bound-from", bound_from), ("--lengths-from", lengths_from)):
        mismatch = _sample_mismatch(first, path, sample, option) if path else None
        if mismatch:
            _fail(mismatch)
    if lengths_from is not None:
        workloads = {r: _with_lengths_from(work, lengths_from) for r, work in workloads.items()}
    out_dir = out_dir or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    # A running stack's database is the one its ELIS_* settings name; a stack started here gets its own.
    database = database_url or (settings.resolved_database_url if given else
                                settings.database_url or _own_database(settings.local_postgres_url, out_dir))
    stack = cmp.Stack(settings=settings, out_dir=out_dir, database_url=database, base_urls=given, slots=slots)
    options = {"workload": str(prompts), "format": kind, "num": num, "arrivals": arrivals, "rate": rate, "cv": cv,
               "seed": seed, "policies": names, "rounds": rounds, "bound": bound, "bound_from": str(bound_from) if bound_from else None,
               "lengths_from": str(lengths_from) if lengths_from else None, "warmup": warmup,
               "max_tokens": max_tokens, "max_prompt_tokens": max_prompt_tokens, "load": load,
               "temperature": temperature, "slots": slots, "rates": sweep_rates, "base_url": base_url}
    outcome = "complete"
    _stop_cleanly_on_signals()
    try:
        try:
            stack.start(typer.echo)
        except cmp.CompareError as exc:
            _fail(str(exc), code=1)
        if first.info.get("capacity_from") is not None:
            # --load of a length trace is a fraction of what this machine serves: the speed the worker measured at
            # start-up (the stack's own, or the running stack's), else the bundled profile's estimate.
            capacity = cmp.measured_capacity_profile(stack.database_url)
            if capacity is not None:
                workloads = {r: workload_at(r, capacity) for r in workloads}
                if lengths_from is not None:
                    workloads = {r: _with_lengths_from(work, lengths_from) for r, work in workloads.items()}
            info = next(iter(workloads.values())).info
            typer.echo(f"arrivals: {info['time_scale']}, the capacity {info['capacity_from']}")
        for run_rate, work in workloads.items():
            run_dir = out_dir if run_rate is None else out_dir / f"rate-{run_rate:g}"
            run_dir.mkdir(parents=True, exist_ok=True)
            outcome = _compare_once(cmp, work, names, stack, run_dir, settings, options, run_rate, bound, bound_from,
                                    timeout_s, warmup, rounds)
            if outcome != "complete":
                break
    except KeyboardInterrupt:
        outcome = "interrupted"
    finally:
        stack.close()
    if sweep_rates:
        from elis.replay.sweep import write_sweep

        typer.echo(write_sweep(out_dir, sorted(out_dir.glob("rate-*"))))
    typer.echo(f"output: {out_dir}")
    if outcome == "interrupted":
        typer.secho("interrupted: the report holds the jobs finished so far", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130)
    if outcome != "complete":
        _fail(outcome, code=1)


def _own_database(local_postgres_url: str, out_dir: Path) -> str:
    """A fresh database for a stack started here: on the local PostgreSQL (named after --out-dir), or a SQLite
    file in --out-dir where none answers (said on the console, with why)."""
    from elis.storage.migrate import LocalDatabaseError, database_name_for, own_database

    try:
        url, what = own_database(local_postgres_url, database_name_for(out_dir), out_dir.resolve() / "compare.sqlite3")
    except LocalDatabaseError as exc:
        _fail(str(exc))
    typer.echo(f"database: {what}")
    return url


def _context_check(settings, limits=None):
    """The model's context as the API checks it, with the served model's tokenizer (prepared on first need).
    `limits` (an `ApiLimits` read from a running API): its context, max_tokens limit and model rule, not this
    machine's ELIS_* settings; where this machine has no copy of its model, long prompts pass unchecked."""
    from elis.replay.api_limits import local_model_of
    from elis.replay.sources import ContextCheck

    model = settings.model if limits is None else local_model_of(limits.model, settings.model)

    def tokenizer():
        from elis.api.deps import Tokenizer
        from elis.models_prepare import prepare_default_model, resolve_model

        if model is None:
            return None
        if not model:
            prepare_default_model(settings.models_dir)
            return Tokenizer(resolve_model(model, settings.models_dir))
        try:
            return Tokenizer(resolve_model(model, settings.models_dir))
        except Exception:  # noqa: BLE001 - e.g. a hub id never fetched here, offline: check what can be checked
            logging.getLogger(__name__).warning("cannot load the tokenizer of %s here", model, exc_info=True)
            return None

    if limits is None:
        return ContextCheck(settings.max_model_len, tokenizer, max_tokens_limit=settings.max_tokens_limit)
    return ContextCheck(limits.max_model_len, tokenizer, max_tokens_limit=limits.max_tokens_limit)


def _compare_limits(given: dict[str, str], policies: list[str], settings):
    """The limits a comparison's requests must meet: None (this machine's settings) without given APIs; the
    given APIs' own; and where APIs start here too, for policies no given API serves, the stricter of both."""
    from elis.replay.api_limits import api_limits, with_local

    limits = api_limits(*given.values()) if given else None
    if limits is not None and any(p not in given for p in policies):
        limits = with_local(limits, settings)
    return limits


def _warn_unchecked(context, base_url) -> None:
    if context.unchecked:
        typer.secho(f"{context.unchecked} prompts (long, or of several turns) were not checked against the "
                    f"context and chat template of the API at {base_url}: its model's tokenizer is not on this "
                    "machine, so it may refuse some of them (422), which stops the run", fg=typer.colors.YELLOW,
                    err=True)


def _stop_cleanly_on_signals() -> None:
    """SIGTERM, and SIGINT even when a non-interactive shell started us in the background (which sets it to
    ignored, so Python installs no handler), stop the comparison as Ctrl-C does: unfinished jobs cancelled,
    a consistent partial report, exit code 130."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def _sample_mismatch(work, records_csv: Path, sample: dict, option: str = "--lengths-from") -> str | None:
    """Why the run that wrote `records_csv` drew other items than this one, from the manifest.json beside it
    (None when it matches or there is no manifest). Records name items by their position in the sample, so
    another --num or --seed would silently give each prompt another prompt's length."""
    manifest_path = records_csv.parent / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        options = manifest.get("options") or {}
        there = manifest.get("workload") or {}
    except (OSError, ValueError, AttributeError):
        return None
    timed = work.info.get("timed", work.info.get("kind") in ("trace", "lengths"))  # a trace's first rows: no seed
    # max_tokens too: a recorded length above this run's cap would raise a job's max_tokens past what was checked
    keys = ("num", "max_tokens") if timed else ("num", "seed", "max_tokens")
    differ = [f"--{key.replace('_', '-')} {options[key]} there, {sample[key]} here" for key in keys
              if key in options and key in sample and options[key] != sample[key]]
    if options.get("workload") and Path(str(options["workload"])).name != Path(sample["workload"]).name:
        differ.insert(0, f"workload {Path(str(options['workload'])).name} there, {Path(sample['workload']).name} here")
    digest = work.info.get("sample_digest")
    if not differ and "sample_digest" in there and there["sample_digest"] != digest:
        differ.append("other requests were left out as ones the API would refuse (model context or limits differ)")
    elif not differ and "sample_digest" not in there and work.info.get("left_out"):
        differ.append(f"this run leaves out {work.info['left_out']} requests the API would refuse; that run, older, "
                      "left none out")
    if not differ:
        return None
    return (f"{option} {records_csv}: its run ({manifest_path}) drew another sample ({'; '.join(differ)}); "
            "records name jobs by their place in the sample, so each prompt would get another prompt's length. "
            "Use the same workload, --num, --seed and --max-tokens")


def _with_lengths_from(work, records_csv: Path):
    """The workload with each item's output forced to the length it had in `records_csv` (items it does not
    hold, e.g. jobs that failed there, are left out, and the run says how many)."""
    from dataclasses import replace

    from elis.replay import compare as cmp
    from elis.replay.live import read_live_records

    try:
        lengths = cmp.true_lengths_of(read_live_records(records_csv))
    except (OSError, ValueError) as exc:
        _fail(f"--lengths-from {records_csv}: {exc}")
    items = cmp.bound_items(work.items, lengths)
    if not items:
        _fail(f"--lengths-from {records_csv}: no finished job of this workload in it (same file, --num, --seed and "
              "--max-tokens?)")
    if len(items) < len(work.items):
        typer.echo(f"--lengths-from: {len(work.items) - len(items)} of {len(work.items)} items have no recorded length "
                   "and are left out")
    info = {**work.info, "jobs": len(items), "lengths_from": str(records_csv)}
    return replace(work, items=items, info=info)


def _compare_once(cmp, work, names, stack, run_dir, settings, options, run_rate, bound, bound_from,
                  timeout_s, warmup: bool = True, rounds: int = 1) -> str:
    """One comparison into `run_dir`; returns "complete", "interrupted" or the error."""
    manifest = cmp.build_manifest(settings, {**options, "rate": run_rate or options["rate"]}, stack.describe())
    manifest["workload"] = work.info
    cmp.write_manifest(run_dir, manifest)
    info = work.info
    typer.echo(f"{info['jobs']} jobs from {info['file']} ({info['kind']}, arrivals {info['arrivals']}, last at "
               f"{info['last_arrival_s']} s), policies {', '.join(names)}"
               f"{f' x {rounds} rounds' if rounds > 1 else ''}{' + bound' if bound else ''} -> {run_dir}")
    result = cmp.run_compare(work.items, names, stack, run_dir, manifest, bound=bound, bound_from=bound_from,
                             timeout_s=timeout_s, echo=typer.echo, warmup=warmup, rounds=rounds)
    status = "interrupted" if result.interrupted else "failed" if result.error else "complete"
    manifest.update(status=status, error=result.error, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    cmp.write_manifest(run_dir, manifest)
    if result.runs:
        same_work = cmp.same_work_note(manifest["runs"])
        cmp.write_tables(run_dir, result.runs, title=f"elis compare ({status})",
                         notes=cmp.ordering_notes(manifest["runs"]), readings=[same_work])
        cmp.print_comparison(result.runs, title=f"{info['jobs']} jobs, arrivals {info['arrivals']}"
                             + (f", rate {run_rate:g}/s" if run_rate else ""))
        if same_work:
            typer.echo(same_work)
    typer.echo(f"table: {run_dir / 'table.md'}  manifest: {run_dir / 'manifest.json'}")
    return status if status != "failed" else str(result.error)
