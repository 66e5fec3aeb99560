"""`elis simulate ...`: run the discrete-event simulator, sweep loads and worker counts, make the figures."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from tqdm import tqdm

from elis.replay.report import (
    markdown_table,
    print_summaries,
    print_table,
    write_records_csv,
    write_table_csv,
)
from elis.replay.workload import read_azure_trace, rescale_to_rate, synthetic_workload
from elis.scheduling.levels import PriorityLevels, calibrate_levels, remaining_length_targets
from elis.scheduling.policy import make_policy
from elis.simulator import figures
from elis.simulator.core import SimConfig
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.figures import ALL_POLICIES, PredictorSpec

simulate_app = typer.Typer(short_help="Simulate the scheduler at any scale (no engine, no broker).",
                           help="Simulate the scheduler at any scale with the live policy code (no engine, no "
                                "broker): N workers x B slots, W-token windows, a calibrated engine cost model.",
                           no_args_is_help=True)

Workers = Annotated[int, typer.Option("--workers", "-n", help="Number of workers (engines).")]
Slots = Annotated[int, typer.Option("--slots", "-b", help="Batch slots per worker (in-flight windows).")]
Window = Annotated[int, typer.Option("--window", "-w", help="Tokens per window.")]
Routing = Annotated[str, typer.Option(help="shared: one global queue (the live stack); sticky: jobs pinned "
                                           "to the least-loaded worker at admission.")]
ProfileOpt = Annotated[Path | None, typer.Option("--profile", help="Engine cost profile JSON written by the "
                                                 "worker benchmark (default: the embedded estimate).")]
Prefill = Annotated[float | None, typer.Option(help="Override the profile's prefill seconds per token "
                                                     "(0: preemption is free, as ELIS assumes).")]
Overhead = Annotated[float | None, typer.Option(help="Override the profile's per-window overhead (s).")]
PredictorOpt = Annotated[str, typer.Option("--predictor", help="noise: true length x lognormal(sigma), fresh per prediction; persistent: the same but 70% of the log-error fixed per job; "
                                           "recorded: errors sampled from --errors.")]
Sigma = Annotated[float, typer.Option(help="Lognormal sigma of the noise predictor (0: exact).")]
Errors = Annotated[Path | None, typer.Option(help="CSV/JSON of (step, true_remaining, predicted_remaining).")]
Jobs = Annotated[int, typer.Option("--jobs", "-j", help="Number of jobs.")]
Seed = Annotated[int, typer.Option(help="Random seed (workload and predictor).")]
Trace = Annotated[Path | None, typer.Option(help="Trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens); "
                                                 "default: the embedded Azure 2023 conversation trace.")]
MaxWait = Annotated[float, typer.Option(help="Aging: a job waiting longer than this (s) goes first (0: off).")]
ServiceFactor = Annotated[float, typer.Option(help="Aging: add this x the job's service time to the bound.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="PNG to write (a .csv and .md table go beside it).")]


def _profile(path: Path | None, prefill: float | None, overhead: float | None) -> EngineProfile:
    profile = EngineProfile.load(path)
    if prefill is not None:
        profile = replace(profile, prefill_s_per_token=prefill)
    if overhead is not None:
        profile = replace(profile, window_overhead_s=overhead)
    return profile


def _read_trace(trace: Path | None):
    """The Azure-layout trace (the bundled one when None); an unreadable one is a clear error, exit code 2."""
    try:
        return read_azure_trace(trace)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--trace") from None


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _save_table(out: Path, header: list[str], rows: list[list[str]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table_csv(header, rows, out.with_suffix(".csv"))
    out.with_suffix(".md").write_text(markdown_table(header, rows) + "\n")


@simulate_app.command(short_help="Simulate one workload under each policy; print the table.")
def run(
    policies: Annotated[str, typer.Option("--policies", "-p", help="Comma-separated policies.")] = ",".join(ALL_POLICIES),
    workers: Workers = 4, slots: Slots = 8, window: Window = 50, routing: Routing = "shared",
    arrivals: Annotated[str, typer.Option(help="gamma, poisson or trace.")] = "gamma",
    load: Annotated[float, typer.Option(help="Arrival rate as a fraction of the measured FCFS capacity "
                                             "(ignored when --rate is given).")] = 0.9,
    rate: Annotated[float | None, typer.Option(help="Arrival rate (requests/s); for a trace, rescales its "
                                                    "timestamps.")] = None,
    cv: Annotated[float | None, typer.Option(help="Gamma inter-arrival CV (default: ELIS's fit, 1.17).")] = None,
    jobs: Jobs = 20000, seed: Seed = 0, trace: Trace = None,
    predictor: PredictorOpt = "noise", sigma: Sigma = 0.5, errors: Errors = None,
    levels: Annotated[int, typer.Option(help="Broker levels (0: exact order); quantile edges.")] = 0,
    max_wait: MaxWait = 0.0, service_factor: ServiceFactor = 0.0,
    profile: ProfileOpt = None, prefill: Prefill = None, overhead: Overhead = None,
    records: Annotated[Path | None, typer.Option(help="Write per-job records (CSV) here; one file per policy "
                                                      "with the policy name appended.")] = None,
) -> None:
    """Simulate one workload under each policy and print the standard report."""
    engine = _profile(profile, prefill, overhead)
    pool = _read_trace(trace)
    config = SimConfig(workers, slots, window, routing)
    if levels:
        targets = remaining_length_targets([j.num_output_tokens for j in pool], window)
        config = replace(config, levels=calibrate_levels(levels, targets))
    if arrivals == "trace":
        workload = pool[:jobs]
        if rate is not None:
            workload = rescale_to_rate(workload, rate)
    else:
        arrival_rate = rate if rate is not None else load * figures.measure_capacity(engine, config, pool, seed=seed)
        workload = synthetic_workload(jobs, arrivals, arrival_rate, cv, seed=seed, pool=pool)
    spec = PredictorSpec(predictor, sigma, str(errors) if errors else None)
    summaries = {}
    for name in tqdm(_names(policies), desc="policies", leave=False):
        result = figures.run_policy(workload, name, engine, config, spec, seed, max_wait, service_factor)
        summaries[result.policy] = result.summary
        if records:
            write_records_csv(result.records, records.with_name(f"{records.stem}_{name}{records.suffix or '.csv'}"))
    print_summaries(summaries, title=f"{len(workload)} jobs, {workers}x{slots} slots, {routing}, {arrivals}")


@simulate_app.command("load-sweep", short_help="Mean JCT vs load for every policy (the ELIS figure).")
def load_sweep(
    loads: Annotated[str, typer.Option(help="Comma-separated loads (fractions of FCFS capacity).")] =
        "0.1,0.3,0.5,0.7,0.8,0.9,0.95",
    policies: Annotated[str, typer.Option("--policies", "-p")] = ",".join(ALL_POLICIES),
    workers: Workers = 4, slots: Slots = 8, window: Window = 50, routing: Routing = "shared",
    jobs: Jobs = 20000, seed: Seed = 0, trace: Trace = None,
    predictor: PredictorOpt = "noise", sigma: Sigma = 0.5, errors: Errors = None,
    max_wait: MaxWait = 0.0, service_factor: ServiceFactor = 0.0,
    profile: ProfileOpt = None, prefill: Prefill = None, overhead: Overhead = None,
    out: Out = Path("docs/figures/jct_vs_load.png"),
) -> None:
    """Mean JCT vs load for every policy (the ELIS figure): a table and a PNG."""
    engine = _profile(profile, prefill, overhead)
    pool = _read_trace(trace)
    load_values, names = _floats(loads), _names(policies)
    config = SimConfig(workers, slots, window, routing)
    spec = PredictorSpec(predictor, sigma, str(errors) if errors else None)
    with tqdm(total=len(load_values) * len(names), desc="load sweep") as bar:
        capacity, results = figures.load_sweep(load_values, names, num_jobs=jobs, profile=engine, config=config,
                                               predictor=spec, pool=pool, seed=seed, max_wait_s=max_wait,
                                               service_factor=service_factor, tick=bar.update)
    header, rows = figures.load_sweep_table(load_values, results)
    title = (f"mean JCT (s), {workers}x{slots} slots, {routing}, W={window}, {predictor} sigma={sigma}, "
             f"capacity {capacity:.2f} req/s")
    print_table(header, rows, title=title)
    _save_table(out, header, rows)
    figures.plot_load_sweep(load_values, results, out, title=f"Mean JCT vs load ({workers}x{slots}, {routing})")
    typer.echo(f"wrote {out} and {out.with_suffix('.md')}")


@simulate_app.command(short_help="Throughput vs number of workers on the Azure trace.")
def scale(
    worker_counts: Annotated[str, typer.Option("--workers", help="Comma-separated worker counts.")] =
        "10,16,24,32,40,50,64",
    combos: Annotated[str, typer.Option(help="Comma-separated routing:policy pairs.")] =
        "shared:isrtf,sticky:isrtf,shared:fcfs",
    slots: Slots = 8, window: Window = 50, jobs_per_worker: Annotated[int, typer.Option(
        help="Trace jobs per worker from its start, repeating it when too short (0: the whole "
             "trace for every worker count, so the length mix is the same).")] = 0,
    overload: Annotated[float, typer.Option(help="Offered rate / (workers x one worker's capacity).")] = 1.2,
    seed: Seed = 0, trace: Trace = None, predictor: PredictorOpt = "noise", sigma: Sigma = 0.5,
    errors: Errors = None, profile: ProfileOpt = None, prefill: Prefill = None, overhead: Overhead = None,
    out: Out = Path("docs/figures/throughput_vs_workers.png"),
) -> None:
    """Throughput vs number of workers on the Azure trace (goal: at least 0.9 of linear)."""
    engine = _profile(profile, prefill, overhead)
    counts = _ints(worker_counts)
    pairs = [tuple(c.split(":", 1)) for c in _names(combos)]
    spec = PredictorSpec(predictor, sigma, str(errors) if errors else None)
    with tqdm(total=len(counts) * len(pairs), desc="scale") as bar:
        per_worker, points = figures.scale_sweep(counts, pairs, profile=engine, num_slots=slots,  # type: ignore[arg-type]
                                                 window_tokens=window, predictor=spec, trace=_read_trace(trace),
                                                 jobs_per_worker=jobs_per_worker, overload=overload, seed=seed,
                                                 tick=bar.update)
    header, rows = figures.scale_table(points)
    print_table(header, rows, title=f"throughput vs workers ({slots} slots, one worker: {per_worker:.2f} req/s)")
    _save_table(out, header, rows)
    figures.plot_scale(points, out, title=f"Throughput vs workers, Azure conv trace ({slots} slots/worker)")
    typer.echo(f"wrote {out} and {out.with_suffix('.md')}")


@simulate_app.command("levels-loss", short_help="Ordering lost to the coarse broker priority levels.")
def levels_loss(
    levels: Annotated[str, typer.Option(help="Comma-separated level counts (<= 10 recommended).")] = "3,5,8,10",
    policies: Annotated[str, typer.Option("--policies", "-p")] = "sjf,isrtf",
    load: Annotated[float, typer.Option(help="Load (fraction of FCFS capacity).")] = 0.9,
    workers: Workers = 4, slots: Slots = 8, window: Window = 50, routing: Routing = "sticky",
    jobs: Jobs = 20000, seed: Seed = 0, trace: Trace = None,
    predictor: PredictorOpt = "noise", sigma: Sigma = 0.5, errors: Errors = None,
    profile: ProfileOpt = None, prefill: Prefill = None, overhead: Overhead = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Table to write (.md; a .csv goes beside it).")] =
        Path("docs/figures/levels_loss.md"),
) -> None:
    """How much ordering the coarse broker levels lose against exact ordering (mean JCT, same workload)."""
    engine = _profile(profile, prefill, overhead)
    counts, names = _ints(levels), _names(policies)
    spec = PredictorSpec(predictor, sigma, str(errors) if errors else None)
    with tqdm(total=len(counts) * len(names) * 2, desc="levels") as bar:
        header, rows = figures.levels_loss(counts, names, load=load, num_jobs=jobs, profile=engine,
                                           config=SimConfig(workers, slots, window, routing), predictor=spec,
                                           pool=_read_trace(trace), seed=seed, tick=bar.update)
    print_table(header, rows, title=f"broker levels vs exact order, load {load}, {routing}")
    _save_table(out, header, rows)
    typer.echo(f"wrote {out.with_suffix('.md')}")


@simulate_app.command(short_help="Simulated jobs per second of wall time.")
def bench(
    jobs: Jobs = 100000, policy: Annotated[str, typer.Option(help="Policy (with 120 s aging).")] = "isrtf",
    workers: Workers = 16, slots: Slots = 8, window: Window = 50, routing: Routing = "shared",
    sigma: Sigma = 0.5, seed: Seed = 0, profile: ProfileOpt = None,
) -> None:
    """Simulated jobs per second of wall time (goal: 100,000 jobs in under a minute)."""
    result = figures.benchmark(jobs, policy, profile=_profile(profile, None, None),
                               config=SimConfig(workers, slots, window, routing),
                               predictor=PredictorSpec("noise", sigma), seed=seed)
    typer.echo(json.dumps({k: round(v, 3) for k, v in result.items()}))


@simulate_app.command("levels", short_help="Print the calibrated priority-level edges.")
def show_levels(
    levels: Annotated[int, typer.Option(help="Number of broker levels.")] = 10, window: Window = 50,
    trace: Trace = None,
) -> None:
    """Print the quantile edges calibrated on the trace's remaining lengths, and the log-spaced fallback."""
    targets = remaining_length_targets([j.num_output_tokens for j in _read_trace(trace)], window)
    typer.echo(f"quantile:   {calibrate_levels(levels, targets).edges}")
    typer.echo(f"log-spaced: {PriorityLevels.log_spaced(levels).edges}")


if __name__ == "__main__":
    simulate_app()


@simulate_app.command(short_help="Choose the yield margin: ISRTF / FCFS mean JCT per load.")
def margin(
    uncertainties: Annotated[str, typer.Option(help="Uncertainty factors to compare (margin = switch cost + "
                                                    "u x the running job's predicted remaining tokens).")] = "0,0.1,0.2,0.3,0.5,0.7",
    load: Annotated[float, typer.Option(help="Load for the choice (arrival rate / FCFS capacity).")] = 0.9,
    loads: Annotated[str, typer.Option(help="Loads for the JCT-vs-load figure.")] = "0.5,0.7,0.8,0.9,1.0,1.1",
    chosen: Annotated[float, typer.Option(help="The margin drawn in the JCT-vs-load figure.")] = 0.9,
    workers: Workers = 1, slots: Slots = 4, window: Window = 50,
    jobs: Jobs = 3000, seed: Seed = 0, trace: Trace = None,
    profile: ProfileOpt = None,
    out: Out = Path("docs/figures/margin_jct_vs_load.png"),
) -> None:
    """Choose the yield margin: ISRTF / FCFS mean JCT per uncertainty factor under a good, a poor and the
    shipped predictor's recorded out-of-distribution errors; then mean JCT vs load with and without it."""
    engine = _profile(profile, None, None)
    pool = _read_trace(trace)
    config = SimConfig(workers, slots, window)
    scenarios = figures.default_margin_scenarios()
    factors = _floats(uncertainties)
    load_points = _floats(loads)
    seeds = (seed, seed + 1, seed + 2)
    total = len(factors) * len(scenarios) * len(seeds) + len(load_points) * 4 * len(scenarios)
    with tqdm(total=total, desc="margin", unit="run") as bar:
        header, rows = figures.margin_choice(factors, scenarios, load=load, num_jobs=jobs, profile=engine,
                                             config=config, pool=pool, seeds=seeds, tick=lambda: bar.update())
        print_table(header, rows, title=f"ISRTF mean JCT / FCFS at load {load} ({workers} x {slots} slots)")
        _save_table(out.with_name(out.stem + "_choice.png"), header, rows)
        for scenario in scenarios:
            sweep = figures.margin_load_sweep(load_points, chosen, scenario, num_jobs=jobs, profile=engine,
                                              config=config, pool=pool, seed=seed, tick=lambda: bar.update())
            slug = scenario.name.split(" (")[0].replace(" ", "_").replace(".", "")
            path = out.with_name(f"{out.stem}_{slug}.png")
            table_header, table_rows = figures.load_sweep_table(load_points, sweep)
            print_table(table_header, table_rows, title=f"mean JCT (s) vs load, predictor: {scenario.name}")
            _save_table(path, table_header, table_rows)
            figures.plot_load_sweep(load_points, sweep, path, f"Yield margin: mean JCT vs load ({scenario.name})")
    typer.echo(f"tables and figures: {out.parent}")


@simulate_app.command(short_help="The default scheduler vs ISRTF, SSJF, FCFS and the bound.")
def guard(
    loads: Annotated[str, typer.Option(help="Loads (arrival rate / FCFS capacity).")] = "0.5,0.7,0.8,0.9,1.0",
    workers: Workers = 1, slots: Slots = 4, window: Window = 50,
    jobs: Jobs = 2000, seed: Seed = 0, trace: Trace = None, profile: ProfileOpt = None,
    out: Out = Path("docs/figures/guard_jct_vs_load.png"),
) -> None:
    """The service's default scheduler (yield margin, quality guard, per-step calibration, aging) against the
    papers' ISRTF and SSJF, FCFS and the exact-length bound, under each predictor scenario."""
    engine = _profile(profile, None, None)
    pool = _read_trace(trace)
    config = SimConfig(workers, slots, window)
    load_points = _floats(loads)
    scenarios = figures.default_margin_scenarios()
    with tqdm(total=len(load_points) * 6 * len(scenarios), desc="guard", unit="run") as bar:
        for scenario in scenarios:
            sweep = figures.guard_load_sweep(load_points, scenario, num_jobs=jobs, profile=engine, config=config,
                                             pool=pool, seed=seed, tick=lambda: bar.update())
            slug = scenario.name.split(" (")[0].replace(" ", "_").replace(".", "")
            path = out.with_name(f"{out.stem}_{slug}.png")
            header, rows = figures.load_sweep_table(load_points, sweep)
            fcfs = [s.mean_jct for s in sweep["fcfs"]]
            header = header + ["service isrtf / fcfs"]
            rows = [row + [f"{sweep['isrtf (service)'][i].mean_jct / fcfs[i]:.3f}"] for i, row in enumerate(rows)]
            print_table(header, rows, title=f"mean JCT (s) vs load, predictor: {scenario.name}")
            _save_table(path, header, rows)
            figures.plot_load_sweep(load_points, sweep, path, f"Service scheduler vs papers ({scenario.name})")
    typer.echo(f"tables and figures: {out.parent}")


@simulate_app.command(short_help="Can a scheduler blind to lengths beat FCFS?")
def blind(
    loads: Annotated[str, typer.Option(help="Loads (arrival rate / FCFS capacity).")] = "0.7,0.9",
    sources: Annotated[str, typer.Option(help="Corpus sources to take lengths from (besides the Azure "
                                              "trace).")] = "alpaca,seed_tasks,code_alpaca,gsm8k",
    max_tokens: Annotated[int, typer.Option(help="Cap of the corpus lengths (the service's max_tokens).")] = 512,
    slots: Slots = 4, window: Window = 50, jobs: Jobs = 400,
    seeds: Annotated[str, typer.Option(help="Seeds to average over.")] = "0,1,2",
    trace: Trace = None, profile: ProfileOpt = None,
    out: Out = Path("docs/figures/blind_policies.png"),
) -> None:
    """Can a scheduler that knows NO job's length beat FCFS on these lengths? The blind Gittins index policy
    (the best such policy on one server) and MLFQ against FCFS and the exact-length bound, on the Azure trace
    and on each source of the served model's corpus. Writes the table beside --out (its name with .md and
    .csv)."""
    from elis.simulator.blind import BLIND_HEADER, CORPUS_PATH, blind_study, corpus_pool

    engine = _profile(profile, None, None)
    config = SimConfig(1, slots, window)
    pools = {"azure 2023 conv": _read_trace(trace)}
    for source in _names(sources):
        pool = corpus_pool(CORPUS_PATH, source, max_tokens)
        if not pool:
            raise typer.BadParameter(f"no corpus records of source {source!r}", param_hint="--sources")
        pools[f"{source} (T=0.7, cap {max_tokens})"] = pool
    load_points, seed_list = _floats(loads), _ints(seeds)
    with tqdm(total=len(pools) * len(load_points) * len(seed_list) * 4, desc="blind", unit="run") as bar:
        rows = blind_study(pools, load_points, num_jobs=jobs, seeds=seed_list, profile=engine, config=config,
                           tick=lambda: bar.update())
    print_table(BLIND_HEADER, rows, title="mean JCT relative to FCFS; no policy here sees a predicted length")
    _save_table(out, BLIND_HEADER, rows)
    typer.echo(f"table: {out.with_suffix('.md')}")


def _variants(text: str | None) -> tuple[str, list[object]] | None:
    """`--vary NAME=V1,V2,...` parsed against the service's settings: (name, values); None when not given."""
    if not text:
        return None
    from elis.config import Settings

    name, sep, values = text.partition("=")
    name = name.strip().lower()
    if not sep or not values.strip():
        raise typer.BadParameter("expected NAME=V1,V2,... e.g. yield_uncertainty=0.5,0.9", param_hint="--vary")
    if name not in Settings.model_fields:
        raise typer.BadParameter(f"{name!r} is not a setting (see README.md, \"Settings\")", param_hint="--vary")
    if name in _SET_BY_REPLAY:
        raise typer.BadParameter(f"{name} is set by the command itself ({_SET_BY_REPLAY[name]})", param_hint="--vary")
    parsed = []
    for value in _names(values):
        try:
            parsed.append(getattr(Settings(**{name: value}), name))
        except ValidationError as exc:
            errors = exc.errors()
            reason = errors[0].get("msg", "invalid") if errors else "invalid"
            raise typer.BadParameter(f"{name}={value}: {reason}", param_hint="--vary") from None
    return name, parsed


# Settings `elis simulate replay` sets from its own options: varying them would run another command.
_SET_BY_REPLAY = {"policy": "--policies", "guard": "--guard", "guard_start_in_fallback": "--guard",
                  "window_tokens": "--window"}


def _scale_list(text: str) -> list[float]:
    try:
        values = _floats(text)
    except ValueError:
        raise typer.BadParameter(f"expected numbers like 1,1.4, got {text!r}", param_hint="--scales") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise typer.BadParameter("rate scales must be finite numbers > 0", param_hint="--scales")
    return values


@simulate_app.command("replay", short_help="Replay a live run's jobs, with its own predictions, under other "
                                           "policies, settings or loads.")
def replay_live(
    records: Annotated[list[Path], typer.Argument(help="Records CSVs of `elis compare` of one workload: the first "
                                                       "gives the jobs, all give predictions.", show_default=False)],
    policies: Annotated[str, typer.Option("--policies", "-p", help="Comma-separated policies.")]
    = "fcfs,isrtf,srtf-oracle",
    vary: Annotated[str | None, typer.Option(help="One setting to vary for each policy that orders by "
                                                  "predictions, e.g. yield_uncertainty=0.5,0.9.")] = None,
    scales: Annotated[str, typer.Option(help="Arrival rates as multiples of the live run's (2: twice as "
                                             "fast).")] = "1",
    guard: Annotated[bool, typer.Option(help="Run the quality guard as the service does, starting trusted (as "
                                             "after a natural pass; its pre-emption gate is judged in the run). "
                                             "Off: the predictor is trusted throughout.")] = False,
    slots: Slots = 4, window: Window = 50,
    max_tokens: Annotated[int | None, typer.Option(help="The run's max_tokens (default: 512, or 1024 if an "
                                                        "output is longer).")] = None,
    profile: ProfileOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the table here (.md and .csv).")] = None,
) -> None:
    """What would the jobs of a live run have got under another policy, setting or load? Replays the jobs of
    `elis compare` records (arrivals, prompt and output lengths) in the simulator, each job predicted as the live
    predictor predicted it (admission and re-predictions; a step it did not re-predict at takes the last
    prediction less the tokens since), under the service's scheduler. Ratios are to FCFS and to the exact-length
    bound (srtf-oracle) of the same scale when those policies are in --policies."""
    from elis.simulator.replayed import Arm, read_live_run, replay_live_run

    if slots < 1 or window < 1:
        raise typer.BadParameter("--slots and --window must be >= 1")
    if max_tokens is not None and max_tokens < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--max-tokens")
    try:
        run_data = read_live_run(records, window, max_tokens)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="RECORDS") from None
    try:
        names = list(dict.fromkeys(make_policy(name).name for name in _names(policies)))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--policies") from None
    if not names:
        raise typer.BadParameter("name at least one policy", param_hint="--policies")
    varied = _variants(vary)
    if varied and not any(make_policy(name).uses_predictions for name in names):
        raise typer.BadParameter("--vary applies to policies that order by predictions (sjf, isrtf); --policies "
                                 "has none", param_hint="--vary")
    trust = {"guard": True, "guard_start_in_fallback": False} if guard else {"guard": False}
    arms: list[Arm] = []
    for name in names:
        if varied and make_policy(name).uses_predictions:
            setting, values = varied
            arms += [Arm(f"{name} {setting}={value}", name, {**trust, setting: value}) for value in values]
        else:
            arms.append(Arm(name, name, trust))
    scale_list = _scale_list(scales)
    try:
        engine = _profile(profile, None, None)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read the engine profile: {exc}", param_hint="--profile") from None
    with tqdm(total=len(arms) * len(scale_list), desc="replay", unit="run") as bar:
        results = replay_live_run(run_data, arms, scale_list, profile=engine, slots=slots, window_tokens=window,
                                  tick=lambda: bar.update())
    header = ["rate", "run", "mean JCT s", "p50 JCT s", "p99 JCT s", "mean queuing s", "mean / FCFS",
              "mean / bound", "p99 / FCFS"]
    rows = []
    for scale, summaries in results.items():
        fcfs, bound = summaries.get("fcfs"), summaries.get("srtf-oracle")
        for label, s in summaries.items():
            rows.append([f"x{scale:g}", label, f"{s.mean_jct:.2f}", f"{s.p50_jct:.2f}", f"{s.p99_jct:.2f}",
                         f"{s.mean_queuing_delay:.2f}", _ratio(s.mean_jct, fcfs and fcfs.mean_jct),
                         _ratio(s.mean_jct, bound and bound.mean_jct), _ratio(s.p99_jct, fcfs and fcfs.p99_jct)])
    print_table(header, rows, title=f"{len(run_data.jobs)} live jobs of {records[0]}, 1 worker x {slots} slots, "
                                    f"max_tokens {run_data.max_tokens}, guard {'on' if guard else 'off'}")
    if out:
        _save_table(out, header, rows)
        typer.echo(f"table: {out.with_suffix('.md')}")


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.3f}" if base else "-"
