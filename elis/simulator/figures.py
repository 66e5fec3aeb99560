"""Experiments behind `elis simulate`: load sweeps, scaling, level loss, the benchmark. Each returns a table
(header, rows) and can draw a PNG; the CLI only parses options and prints."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from elis.replay.report import Summary, plot_lines
from elis.replay.workload import TraceJob, read_azure_trace, rescale_to_rate, synthetic_workload, take_cycled
from elis.scheduling.levels import PriorityLevels, calibrate_levels, remaining_length_targets
from elis.scheduling.policy import make_policy
from elis.simulator.core import SimConfig, SimResult, simulate
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.length_models import LengthModel, make_length_model

ALL_POLICIES = ("fcfs", "sjf", "isrtf", "srtf-oracle", "mlfq")

Tick = Callable[[], None]


@dataclass(frozen=True)
class PredictorSpec:
    """How predictions are drawn; a fresh, seeded model per run keeps runs comparable."""

    kind: str = "noise"
    sigma: float = 0.0
    errors: str | None = None

    def build(self, seed: int) -> LengthModel:
        return make_length_model(self.kind, self.sigma, self.errors, seed)


def run_policy(jobs: Sequence[TraceJob], policy: str, profile: EngineProfile, config: SimConfig,
               predictor: PredictorSpec, seed: int = 0, max_wait_s: float = 0.0,
               service_factor: float = 0.0) -> SimResult:
    """One simulated run of a policy by name (with optional aging)."""
    return simulate(jobs, make_policy(policy, max_wait_s, service_factor), profile, config, predictor.build(seed))


def measure_capacity(profile: EngineProfile, config: SimConfig, pool: Sequence[TraceJob],
                     num_jobs: int | None = None, seed: int = 0) -> float:
    """Requests/s the cluster sustains under FCFS with every job queued at once: what load 1.0 means."""
    count = num_jobs or max(2000, 200 * config.num_workers * config.num_slots // 8)
    jobs = [replace(job, arrival=0.0) for job in synthetic_workload(count, "poisson", 1.0, seed=seed, pool=pool)]
    return simulate(jobs, make_policy("fcfs"), profile, config).summary.throughput_rps


def load_sweep(loads: Sequence[float], policies: Sequence[str], *, num_jobs: int, profile: EngineProfile,
               config: SimConfig, predictor: PredictorSpec, pool: Sequence[TraceJob], arrivals: str = "gamma",
               cv: float | None = None, seed: int = 0, max_wait_s: float = 0.0, service_factor: float = 0.0,
               tick: Tick | None = None) -> tuple[float, dict[str, list[Summary]]]:
    """Mean JCT (and the rest) of every policy at every load (arrival rate / measured capacity)."""
    capacity = measure_capacity(profile, config, pool, seed=seed)
    policy_to_summaries: dict[str, list[Summary]] = {p: [] for p in policies}
    for load in loads:
        jobs = synthetic_workload(num_jobs, arrivals, load * capacity, cv, seed=seed, pool=pool)
        for policy in policies:
            result = run_policy(jobs, policy, profile, config, predictor, seed, max_wait_s, service_factor)
            policy_to_summaries[policy].append(result.summary)
            if tick:
                tick()
    return capacity, policy_to_summaries


def load_sweep_table(loads: Sequence[float], policy_to_summaries: dict[str, list[Summary]],
                     metric: str = "mean_jct") -> tuple[list[str], list[list[str]]]:
    header = ["load"] + list(policy_to_summaries)
    rows = [[f"{load:.2f}"] + [f"{getattr(s[i], metric):.2f}" for s in policy_to_summaries.values()]
            for i, load in enumerate(loads)]
    return header, rows


def plot_load_sweep(loads: Sequence[float], policy_to_summaries: dict[str, list[Summary]], path: str | Path,
                    title: str) -> Path:
    series = {p: [s.mean_jct for s in summaries] for p, summaries in policy_to_summaries.items()}
    return plot_lines(loads, series, path, xlabel="load (arrival rate / FCFS capacity)",
                      ylabel="mean JCT (s, log scale)", title=title, logy=True)


@dataclass(frozen=True)
class ScalePoint:
    num_workers: int
    routing: str
    policy: str
    throughput_rps: float
    mean_jct: float
    efficiency: float  # throughput / (linear extrapolation from the smallest worker count)


def scale_sweep(worker_counts: Sequence[int], combos: Sequence[tuple[str, str]], *, profile: EngineProfile,
                num_slots: int, window_tokens: int, predictor: PredictorSpec, trace: Sequence[TraceJob],
                jobs_per_worker: int = 0, overload: float = 1.2, seed: int = 0,
                tick: Tick | None = None) -> tuple[float, list[ScalePoint]]:
    """Throughput vs number of workers on a trace replayed faster than the cluster can serve (`overload` x
    the measured capacity of one worker x N), so throughput measures capacity. Every worker count replays the
    whole trace (the same length mix) unless `jobs_per_worker` > 0 takes that many per worker from its start.
    Returns (per-worker capacity, points) for each (routing, policy) combination."""
    one = SimConfig(1, num_slots, window_tokens)
    per_worker = measure_capacity(profile, one, trace, seed=seed)
    points: list[ScalePoint] = []
    for routing, policy in combos:
        base: float | None = None
        for count in worker_counts:
            chosen = take_cycled(trace, jobs_per_worker * count) if jobs_per_worker > 0 else trace
            jobs = rescale_to_rate(chosen, overload * per_worker * count)
            config = SimConfig(count, num_slots, window_tokens, routing)
            summary = run_policy(jobs, policy, profile, config, predictor, seed).summary
            if base is None:
                base = summary.throughput_rps / count
            points.append(ScalePoint(count, routing, policy, summary.throughput_rps, summary.mean_jct,
                                     summary.throughput_rps / (base * count)))
            if tick:
                tick()
    return per_worker, points


def scale_table(points: Iterable[ScalePoint]) -> tuple[list[str], list[list[str]]]:
    header = ["workers", "routing", "policy", "req/s", "of linear", "mean JCT s"]
    rows = [[str(p.num_workers), p.routing, p.policy, f"{p.throughput_rps:.2f}", f"{p.efficiency:.3f}",
             f"{p.mean_jct:.1f}"] for p in points]
    return header, rows


def plot_scale(points: Sequence[ScalePoint], path: str | Path, title: str) -> Path:
    counts = sorted({p.num_workers for p in points})
    series: dict[str, list[float]] = {}
    for p in points:
        series.setdefault(f"{p.policy}, {p.routing}", []).append(p.throughput_rps)
    first = min(points, key=lambda p: p.num_workers)
    linear = [first.throughput_rps / first.num_workers * n for n in counts]
    return plot_lines(counts, series, path, xlabel="workers", ylabel="throughput (requests/s)", title=title,
                      reference=linear, reference_label=f"linear from {first.num_workers} workers")


def levels_loss(level_counts: Sequence[int], policies: Sequence[str], *, load: float, num_jobs: int,
                profile: EngineProfile, config: SimConfig, predictor: PredictorSpec, pool: Sequence[TraceJob],
                calibration_jobs: int = 5000, seed: int = 0,
                tick: Tick | None = None) -> tuple[list[str], list[list[str]]]:
    """Mean JCT with exact policy order vs K broker levels (quantile edges calibrated on the remaining-length
    targets of a disjoint sample, and fixed log-spaced edges), same workload."""
    capacity = measure_capacity(profile, config, pool, seed=seed)
    jobs = synthetic_workload(num_jobs, "gamma", load * capacity, seed=seed, pool=pool)
    calibration = synthetic_workload(calibration_jobs, "poisson", 1.0, seed=seed + 1000, pool=pool)
    targets = remaining_length_targets([j.num_output_tokens for j in calibration], config.window_tokens)
    header = ["policy", "levels", "edges", "mean JCT s", "vs exact", "p99 JCT s"]
    rows: list[list[str]] = []
    for policy in policies:
        exact = run_policy(jobs, policy, profile, config, predictor, seed).summary
        rows.append([policy, "exact", "-", f"{exact.mean_jct:.2f}", "+0.0%", f"{exact.p99_jct:.1f}"])
        for count in level_counts:
            for edges_kind, levels in (("quantile", calibrate_levels(count, targets)),
                                       ("log-spaced", PriorityLevels.log_spaced(count))):
                leveled = replace(config, levels=levels)
                summary = run_policy(jobs, policy, profile, leveled, predictor, seed).summary
                change = summary.mean_jct / exact.mean_jct - 1
                rows.append([policy, str(count), edges_kind, f"{summary.mean_jct:.2f}", f"{change:+.1%}",
                             f"{summary.p99_jct:.1f}"])
                if tick:
                    tick()
    return header, rows


def benchmark(num_jobs: int, policy: str, *, profile: EngineProfile, config: SimConfig,
              predictor: PredictorSpec, pool: Sequence[TraceJob] | None = None, load: float = 0.9,
              seed: int = 0) -> dict[str, float]:
    """Simulated jobs per second of wall time (workload generation excluded, reported apart)."""
    pool = pool if pool is not None else read_azure_trace()
    started = time.perf_counter()
    capacity = measure_capacity(profile, config, pool, seed=seed)
    jobs = synthetic_workload(num_jobs, "gamma", load * capacity, seed=seed, pool=pool)
    prepared = time.perf_counter() - started
    result = run_policy(jobs, policy, profile, config, predictor, seed, max_wait_s=120.0)
    return {"num_jobs": num_jobs, "num_windows": result.num_windows, "setup_s": prepared,
            "sim_s": result.wall_s, "jobs_per_s": num_jobs / result.wall_s,
            "windows_per_s": result.num_windows / result.wall_s, "mean_jct": result.summary.mean_jct}


# --- the yield margin -------------------------------------------------------------------------------------
SHIPPED_OOD_ERRORS = Path(__file__).resolve().parent.parent / "data" / "predictor" / "eval" / "ood_errors.csv"


@dataclass(frozen=True)
class MarginScenario:
    """A predictor to test the margin against: a name, and how its predictions are drawn."""

    name: str
    predictor: PredictorSpec


def default_margin_scenarios() -> list[MarginScenario]:
    """Predictors whose error is mostly a property of the job (persistent lognormal noise, sigma 0.5 and 1.0),
    one whose error is drawn afresh at every prediction (sigma 1.0), and the shipped checkpoint's recorded
    errors on a source it never trained on (per step, with its bias between steps, drawn afresh)."""
    scenarios = [MarginScenario("persistent sigma 0.5", PredictorSpec("persistent", 0.5)),
                 MarginScenario("persistent sigma 1.0", PredictorSpec("persistent", 1.0)),
                 MarginScenario("fresh noise sigma 1.0", PredictorSpec("noise", 1.0))]
    if SHIPPED_OOD_ERRORS.exists():
        scenarios.append(MarginScenario("recorded (unseen source)", PredictorSpec("recorded", 0.0,
                                                                                  str(SHIPPED_OOD_ERRORS))))
    return scenarios


def margin_choice(uncertainties: Sequence[float], scenarios: Sequence[MarginScenario], *, load: float,
                  num_jobs: int, profile: EngineProfile, config: SimConfig, pool: Sequence[TraceJob],
                  seeds: Sequence[int] = (0, 1, 2), tick: Tick | None = None) -> tuple[list[str], list[list[str]]]:
    """ISRTF's mean JCT relative to FCFS for each uncertainty factor (0: no uncertainty margin; the switch
    cost is always counted) under each predictor scenario, averaged over seeds, at one load."""
    from elis.scheduling.decision import YieldMargin

    capacity = measure_capacity(profile, config, pool)
    header = ["uncertainty"] + [s.name for s in scenarios] + ["worst"]
    ratios: dict[float, list[float]] = {u: [] for u in uncertainties}
    for scenario in scenarios:
        for u in uncertainties:
            total = 0.0
            for seed in seeds:
                jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
                fcfs = run_policy(jobs, "fcfs", profile, config, scenario.predictor, seed).summary.mean_jct
                margined = replace(config, margin=YieldMargin.of(u))
                isrtf = run_policy(jobs, "isrtf", profile, margined, scenario.predictor, seed).summary.mean_jct
                total += isrtf / fcfs
                if tick:
                    tick()
            ratios[u].append(total / len(seeds))
    rows = [[f"{u:.2f}"] + [f"{r:.3f}" for r in ratios[u]] + [f"{max(ratios[u]):.3f}"] for u in uncertainties]
    return header, rows


def margin_load_sweep(loads: Sequence[float], uncertainty: float, scenario: MarginScenario, *, num_jobs: int,
                      profile: EngineProfile, config: SimConfig, pool: Sequence[TraceJob], seed: int = 0,
                      tick: Tick | None = None) -> dict[str, list[Summary]]:
    """Mean JCT vs load: FCFS, ISRTF without a margin, ISRTF with the margin, and the exact-length bound."""
    from elis.scheduling.decision import YieldMargin

    capacity = measure_capacity(profile, config, pool, seed=seed)
    with_margin = replace(config, margin=YieldMargin.of(uncertainty))
    variants = {"fcfs": ("fcfs", config), "isrtf (no margin)": ("isrtf", config),
                f"isrtf (margin {uncertainty:g})": ("isrtf", with_margin), "srtf-oracle (bound)": ("srtf-oracle", config)}
    out: dict[str, list[Summary]] = {name: [] for name in variants}
    for load in loads:
        jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
        for name, (policy, cfg) in variants.items():
            out[name].append(run_policy(jobs, policy, profile, cfg, scenario.predictor, seed).summary)
            if tick:
                tick()
    return out


def profile_weight(profile: EngineProfile, slots: int) -> float:
    """The prefill weight the service would run with on this simulated engine: ELIS_PREFILL_WEIGHT when set, else
    the profile's own at `slots` (the settings' default is the bundled profile's, whatever is simulated)."""
    from elis.config import Settings
    from elis.scheduling.work import prefill_weight

    configured = Settings().prefill_weight
    if configured is not None:
        return configured
    return prefill_weight(profile.prefill_s_per_token, profile.decode_step(slots), slots)


def service_scheduler(policy: str, **overrides: object):
    """A fresh Scheduler built from the service's settings (ELIS_* and defaults), as the API and workers
    build theirs: margin, quality guard, per-step calibration and aging."""
    from elis.config import Settings
    from elis.scheduling.scheduler import Scheduler

    settings = Settings(policy=policy, **overrides)
    return Scheduler.from_settings(settings, PriorityLevels.log_spaced(settings.num_priority_levels))


def guard_load_sweep(loads: Sequence[float], scenario: MarginScenario, *, num_jobs: int, profile: EngineProfile,
                     config: SimConfig, pool: Sequence[TraceJob], seed: int = 0,
                     tick: Tick | None = None) -> dict[str, list[Summary]]:
    """Mean JCT vs load: FCFS; ISRTF and SSJF as the papers run them (no margin, no guard); ISRTF and SSJF
    under the service's default scheduler (margin, guard, calibration, aging); the exact-length bound (SRTF on
    the true lengths under the service's scheduler, as `elis compare` runs its bound live: the switch cost,
    the prefill still to pay and aging count)."""
    capacity = measure_capacity(profile, config, pool, seed=seed)
    weight = profile_weight(profile, config.num_slots)
    names = ["fcfs", "isrtf (paper)", "isrtf (service)", "sjf (paper)", "sjf (service)", "srtf-oracle (bound)"]
    out: dict[str, list[Summary]] = {name: [] for name in names}
    for load in loads:
        jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
        for name in names:
            policy = name.split(" ")[0]
            service = "(service)" in name or "(bound)" in name
            scheduler = service_scheduler(policy, prefill_weight=weight) if service else None
            result = simulate(jobs, make_policy(policy), profile, config, scenario.predictor.build(seed),
                              scheduler=scheduler)
            out[name].append(result.summary)
            if tick:
                tick()
    return out
