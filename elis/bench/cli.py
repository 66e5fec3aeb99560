"""`elis bench service`: the service's output tokens/s against one offline `LLM.generate` call on the same
prompts and batch size, and the per-window overhead (prediction + database + publish) against compute."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from elis.replay.report import percentile, print_table

bench_app = typer.Typer(help="Benchmarks that print numbers (never timed tests).", no_args_is_help=True)
DEMO_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "demo_prompts.jsonl"


def window_overheads(database_url: str, workload: str) -> dict[str, float]:
    """p50/p99 of per-window overhead and compute (ms) of one workload's jobs."""
    from sqlalchemy import select

    from elis.storage.db import session_scope
    from elis.storage.models import Job, Window

    with session_scope(database_url) as session:
        rows = session.execute(
            select(Window.overhead_s, Window.compute_s).join(Job).where(Job.workload == workload)
        ).all()
    overhead = sorted(1000 * r[0] for r in rows if r[0] is not None)
    compute = sorted(1000 * r[1] for r in rows)
    return {
        "num_windows": len(rows),
        "overhead_p50_ms": percentile(overhead, 50),
        "overhead_p99_ms": percentile(overhead, 99),
        "compute_p50_ms": percentile(compute, 50),
        "overhead_share": sum(overhead) / max(sum(overhead) + sum(compute), 1e-9),
    }


@bench_app.command("service", short_help="Service tokens/s against the offline engine (goal P4).")
def service(
    num_prompts: Annotated[int, typer.Option(help="prompts (elis/data/demo_prompts.jsonl, cycled)")] = 32,
    slots: Annotated[int, typer.Option(help="B: batch slots of the worker and max_num_seqs offline")] = 32,
    max_tokens: int = 256,
    policies: Annotated[str, typer.Option(help="service policies to measure")] = "fcfs,isrtf",
    out_dir: Path = Path("runs/bench"),
    profile_out: Annotated[Path, typer.Option(help="engine profile for `elis simulate --profile`")] = Path(
        "runs/bench/engine_profile.json"),
) -> None:
    """Measure goal P4 (service tokens/s >= 0.9 x offline) and the per-window overhead; write an engine profile."""
    import time

    from elis import launch
    from elis.config import get_settings
    from elis.demo import prompt_jobs
    from elis.models_prepare import prepare_default_model
    from elis.replay.client import replay
    from elis.storage.migrate import upgrade

    settings = get_settings()
    out_dir.mkdir(parents=True, exist_ok=True)
    model = str(prepare_default_model(settings.models_dir)) if not settings.model else settings.model
    typer.echo(f"[1/2] offline LLM.generate on {num_prompts} prompts, B={slots} (and the engine profile)")
    offline_path = out_dir / "offline.json"
    subprocess.run(
        [sys.executable, "-m", "elis.bench.windows", "--model", model, "--prompts", str(DEMO_PROMPTS),
         "--num-prompts", str(num_prompts), "--slots", str(slots), "--max-tokens", str(max_tokens),
         "--dtype", settings.dtype, "--block-size", str(settings.block_size), "--out", str(offline_path), "--profile-out", str(profile_out)],
        check=True, env=launch.elis_env(),
    )
    offline = json.loads(offline_path.read_text())
    database_url = settings.database_url or f"sqlite:///{out_dir / 'bench.sqlite3'}"
    upgrade(database_url)
    queue = "elis.bench"
    launch.purge_queue(settings.broker_url, queue, settings.num_priority_levels)
    env = launch.elis_env(database_url=database_url, queue_name=queue, slots=slots)
    results: dict[str, dict] = {}
    worker = launch.start_worker(env, out_dir, node="bench")
    try:
        launch.wait_for_worker(worker)
        for policy in [p.strip() for p in policies.split(",") if p.strip()]:
            port = launch.free_port()
            api = launch.start_api({**env, "ELIS_POLICY": policy}, port, out_dir, name=f"api-{policy}")
            try:
                base = f"http://127.0.0.1:{port}"
                launch.wait_for_api(api, base)
                typer.echo(f"[2/2] service, policy {policy}")
                label = f"bench-{policy}-{int(time.time())}"
                records = replay(base, prompt_jobs(DEMO_PROMPTS, num_prompts, max_tokens, 0.0), label)
            finally:
                api.stop()
            tokens = sum(r.num_output_tokens for r in records)
            span = max(r.finish for r in records) - min(r.arrival - r.admission for r in records)
            results[policy] = {"output_tokens": tokens, "seconds": span, "tokens_per_s": tokens / span,
                               "mean_jct_s": statistics.fmean(r.jct for r in records),
                               **window_overheads(database_url, label)}
    finally:
        worker.stop()
    if results and profile_out.exists():
        # The simulator's per-window overhead: the measured median outside the engine (predict, commit, publish).
        profile = json.loads(profile_out.read_text())
        profile["window_overhead_s"] = statistics.median(r["overhead_p50_ms"] for r in results.values()) / 1000
        profile_out.write_text(json.dumps(profile, indent=2))
    offline_tps = offline["offline"]["tokens_per_s"]
    rows = [["offline generate", offline["offline"]["output_tokens"], f"{offline['offline']['seconds']:.1f}",
             f"{offline_tps:.1f}", "1.00", "", "", ""]]
    for policy, r in results.items():
        rows.append([f"service {policy}", r["output_tokens"], f"{r['seconds']:.1f}", f"{r['tokens_per_s']:.1f}",
                     f"{r['tokens_per_s'] / offline_tps:.2f}", f"{r['overhead_p50_ms']:.1f} / {r['overhead_p99_ms']:.1f}",
                     f"{r['compute_p50_ms']:.0f}", f"{100 * r['overhead_share']:.1f}"])
    print_table(["run", "tokens", "s", "tok/s", "ratio", "overhead p50/p99 ms", "compute p50 ms", "overhead %"], rows,
                title=f"{num_prompts} prompts, B={slots}, max_tokens={max_tokens}, greedy, {settings.dtype}")
    (out_dir / "service.json").write_text(json.dumps({"offline": offline, "service": results}, indent=2))
    typer.echo(f"engine profile: {profile_out}  results: {out_dir / 'service.json'}")
    if profile_out.exists():
        from elis.scheduling.work import profile_prefill_weight

        weight = profile_prefill_weight(profile_out, slots)
        typer.echo(f"prefill weight at {slots} slots: {weight:.3f} decode steps per prompt token, offline (the "
                   "service's workers measure their own at start-up; ELIS_PREFILL_WEIGHT pins one instead)")


@bench_app.command("windows", short_help="Engine only: whole jobs vs the same jobs cut into windows.")
def windows(
    num_prompts: Annotated[int, typer.Option(help="jobs run at once (demo prompts, cycled)")] = 32,
    max_tokens: int = 256,
    window: Annotated[int, typer.Option(help="window size W")] = 50,
    block_size: Annotated[int | None, typer.Option(help="vLLM KV block size [ELIS_BLOCK_SIZE]")] = None,
    repeats: int = 2,
) -> None:
    """Engine only: the project's vLLM adapter running every job uninterrupted vs cut into W-token windows
    (each window re-prefills prompt + tokens so far), side by side in one process."""
    import threading
    import time

    from elis.config import get_settings
    from elis.models_prepare import resolve_model
    from elis.prompts import read_prompts
    from elis.tasks.contracts import SamplingSettings
    from elis.workers.vllm_engine import VllmConfig, VllmEngine

    settings = get_settings()
    engine = VllmEngine(VllmConfig(model=resolve_model(settings.model, settings.models_dir), dtype=settings.dtype,
                                   max_num_seqs=num_prompts, kv_cache_gib=settings.kv_cache_gib,
                                   block_size=block_size or settings.block_size or None))
    items = read_prompts(DEMO_PROMPTS)
    prompts = [engine.encode_chat(list(items[i % len(items)].messages)) for i in range(num_prompts)]
    greedy = SamplingSettings(temperature=0.0)

    def run(step: int) -> float:
        counts = [0] * len(prompts)

        def job(index: int) -> None:
            generated: list[int] = []
            while len(generated) < max_tokens:
                out = engine.run_window(prompts[index], generated, min(step, max_tokens - len(generated)), greedy)
                generated += out.new_ids
                if out.finished:
                    break
            counts[index] = len(generated)

        started = time.perf_counter()
        threads = [threading.Thread(target=job, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - started)

    try:
        run(8)  # warm-up
        rows = []
        for _ in range(repeats):
            whole, cut = run(max_tokens), run(window)
            rows.append([f"{whole:.1f}", f"{cut:.1f}", f"{cut / whole:.2f}"])
    finally:
        engine.close()
    print_table(["uninterrupted tok/s", f"{window}-token windows tok/s", "ratio"], rows,
                title=f"{num_prompts} jobs, max {max_tokens} tokens, block size {block_size or settings.block_size}")
