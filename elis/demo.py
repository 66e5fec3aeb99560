"""`elis demo`: serve the bundled prompts on the live stack once per policy and report per-job JCT and queuing delay."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from elis.replay.client import print_jobs, prompt_jobs, replay
from elis.replay.report import JobRecord, print_summaries, summarize, write_records_csv

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_PROMPTS = DATA_DIR / "demo_prompts.jsonl"


def plot_jct(records_by_policy: dict[str, list[JobRecord]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, records in records_by_policy.items():
        jcts = sorted(r.jct for r in records if r.status == "done")
        ax.step(jcts, [(i + 1) / len(jcts) for i in range(len(jcts))], where="post", label=policy)
    ax.set_xlabel("job completion time (s)")
    ax.set_ylabel("fraction of jobs done")
    ax.set_title("JCT distribution per policy (same workload)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(policies: list[str], num_prompts: int, max_tokens: int, slots: int, out_dir: Path, port: int | None,
             temperature: float, keep_db: bool) -> dict[str, list[JobRecord]]:
    from elis import launch
    from elis.config import get_settings
    from elis.models_prepare import prepare_default_model
    from elis.storage.migrate import upgrade

    settings = get_settings()
    out_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(f"[1/4] preparing the model in {settings.models_dir}")
    prepare_default_model(settings.models_dir)
    database_url = settings.database_url or _own_database(settings.local_postgres_url, out_dir, keep_db)
    upgrade(database_url)
    api_key = _demo_key(database_url)
    queue = "elis.demo"
    try:
        launch.purge_queue(settings.broker_url, queue, settings.num_priority_levels)
    except Exception as exc:
        raise typer.BadParameter(f"RabbitMQ is not reachable at {settings.broker_url} ({exc}); start it first") from exc
    # The demo runs as it would be deployed: with API keys (a local key made for it), not ELIS_AUTH=none.
    env = launch.elis_env(database_url=database_url, queue_name=queue, slots=slots, auth="keys")
    typer.echo(f"[2/4] starting a worker ({slots} slots, vLLM on {settings.dtype}); log in {out_dir}")
    worker = launch.start_worker(env, out_dir, node="demo")
    results: dict[str, list[JobRecord]] = {}
    try:
        launch.wait_for_worker(worker)
        for policy in policies:
            api_port = port or launch.free_port()
            api = launch.start_api({**env, "ELIS_POLICY": policy}, api_port, out_dir, name=f"api-{policy}")
            try:
                base = f"http://127.0.0.1:{api_port}"
                launch.wait_for_api(api, base)
                typer.echo(f"[3/4] policy {policy}: submitting {num_prompts} prompts at once to {base}")
                jobs = prompt_jobs(DEMO_PROMPTS, num_prompts, max_tokens, temperature)
                results[policy] = replay(base, jobs, label=f"demo-{policy}-{int(time.time())}", api_key=api_key)
            finally:
                api.stop()
    finally:
        worker.stop()
    return results


def _own_database(local_postgres_url: str, out_dir: Path, keep_db: bool) -> str:
    """The demo's own database: a fresh `elis_demo` on the local PostgreSQL, or where none answers a SQLite file
    in `out_dir` (said on the console, with why)."""
    from elis.storage.migrate import LocalDatabaseError, own_database

    try:
        url, what = own_database(local_postgres_url, "elis_demo", out_dir / "demo.sqlite3", keep=keep_db)
    except LocalDatabaseError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"      database: {what}")
    return url


def _demo_key(database_url: str) -> str:
    """A local API key of tenant "demo" in the demo's database."""
    from elis import clock
    from elis.storage.db import session_scope
    from elis.storage.keys import create_key

    with session_scope(database_url) as session:
        return create_key(session, tenant="demo", name="elis demo", is_admin=False, now=clock.now())[1]


def demo_command(
    policies: Annotated[str, typer.Option(help="comma-separated policies to run on the same prompts")] = "fcfs,sjf,isrtf",
    num_prompts: Annotated[int, typer.Option(help="prompts to submit (from elis/data/demo_prompts.jsonl)")] = 20,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of every job")] = 256,
    slots: Annotated[int, typer.Option(help="batch slots of the worker: fewer slots, more queueing")] = 4,
    temperature: float = 0.0,
    out_dir: Annotated[Path, typer.Option(help="logs, database, records and plot")] = Path("runs/demo"),
    port: Annotated[int | None, typer.Option(help="API port [a free one]")] = None,
    keep_db: Annotated[bool, typer.Option(help="keep the demo database of an earlier run")] = False,
) -> None:
    """Serve ~20 prompts on the live stack (API + RabbitMQ + Celery worker + vLLM), once per policy, and print
    each job's JCT and queuing delay and the policies side by side."""
    from elis.scheduling import UnknownPolicyError, make_policy

    logging.basicConfig(level=logging.WARNING)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    try:
        for name in names:
            make_policy(name)
    except UnknownPolicyError as exc:
        raise typer.BadParameter(str(exc)) from exc
    results = run_demo(names, num_prompts, max_tokens, slots, out_dir, port, temperature, keep_db)
    typer.echo("[4/4] results")
    all_records = [r for records in results.values() for r in records]
    print_jobs(all_records)
    summaries = {policy: summarize(records) for policy, records in results.items()}
    print_summaries(summaries, title="per policy")
    if "fcfs" in summaries:
        base = summaries["fcfs"].mean_jct
        for policy, summary in summaries.items():
            if policy != "fcfs":
                typer.echo(f"{policy}: mean JCT {summary.mean_jct:.2f} s, {100 * (summary.mean_jct / base - 1):+.1f}% "
                           f"against FCFS ({base:.2f} s)")
    write_records_csv(all_records, out_dir / "records.csv")
    plot_jct(results, out_dir / "jct_cdf.png")
    typer.echo(f"records: {out_dir / 'records.csv'}  plot: {out_dir / 'jct_cdf.png'}")
