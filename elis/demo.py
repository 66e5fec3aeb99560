"""`elis demo` and `elis replay`: serve a workload on the live stack and report per-job JCT and queuing delay."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from elis.replay.client import ReplayJob, replay
from elis.replay.report import JobRecord, print_summaries, print_table, summarize, write_records_csv

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_PROMPTS = DATA_DIR / "demo_prompts.jsonl"


def prompt_jobs(path: Path, num: int | None, max_tokens: int, temperature: float, offsets: list[float] | None = None,
                target_lengths: list[int] | None = None) -> list[ReplayJob]:
    """Replay jobs from a prompt file; all at once unless offsets are given."""
    from elis.prompts import read_prompts

    items = read_prompts(path)
    if num is not None:
        items = [items[i % len(items)] for i in range(num)]
    jobs = []
    for i, item in enumerate(items):
        body: dict = {"messages": list(item.messages), "max_tokens": max_tokens, "temperature": temperature}
        if target_lengths is not None:
            body = {**body, "target_output_tokens": max(1, min(target_lengths[i], max_tokens))}
            body.pop("max_tokens")
        jobs.append(ReplayJob(offset_s=offsets[i] if offsets else 0.0, body=body))
    return jobs


def print_jobs(records: list[JobRecord], prompts: dict[str, str] | None = None) -> None:
    rows = [
        [r.job_id[:8], r.policy, r.status, r.num_prompt_tokens, r.num_output_tokens, r.num_windows,
         f"{r.queuing_delay:.2f}", f"{r.jct:.2f}"]
        for r in sorted(records, key=lambda r: r.jct)
    ]
    print_table(["job", "policy", "status", "prompt tok", "output tok", "windows", "queuing delay s", "JCT s"], rows,
                title="per-job results (sorted by JCT)")


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
    database_url = settings.database_url or f"sqlite:///{out_dir / 'demo.sqlite3'}"
    if not settings.database_url and not keep_db:
        (out_dir / "demo.sqlite3").unlink(missing_ok=True)
    upgrade(database_url)
    queue = "elis.demo"
    try:
        launch.purge_queue(settings.broker_url, queue, settings.num_priority_levels)
    except Exception as exc:
        raise typer.BadParameter(f"RabbitMQ is not reachable at {settings.broker_url} ({exc}); start it first") from exc
    env = launch.elis_env(database_url=database_url, queue_name=queue, slots=slots)
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
                results[policy] = replay(base, jobs, label=f"demo-{policy}-{int(time.time())}")
            finally:
                api.stop()
    finally:
        worker.stop()
    return results


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
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

    @app.command("replay")
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
        from elis.replay import workload as wl
        from elis.replay.client import ReplayError

        count = num
        if count is None:
            from elis.prompts import read_prompts

            count = len(read_prompts(prompts))
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
            raise typer.BadParameter("--arrivals must be batch, poisson, gamma or trace")
        replay_jobs = prompt_jobs(prompts, count, max_tokens, temperature, offsets, lengths)
        try:
            records = replay(base_url, replay_jobs, label or f"replay-{int(time.time())}", timeout_s)
        except ReplayError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from exc
        print_jobs(records)
        print_summaries({records[0].policy if records else "?": summarize(records)})
        if out:
            write_records_csv(records, out)
