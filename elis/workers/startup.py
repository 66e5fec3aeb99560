"""Worker start-up: load the engine (and predictor) once, then start consuming. Nothing is consumed before
the engine is ready, since the Celery consumer starts only after `install_runtime`."""

from __future__ import annotations

import logging
import socket

from elis import clock
from elis.config import Settings
from elis.metrics import serve_worker_metrics
from elis.models_prepare import resolve_model
from elis.tasks import windows as _register_window_task  # noqa: F401  (registers the task)
from elis.tasks.app import celery_app, configure_celery
from elis.tasks.consumer_watchdog import ConsumerWatchdog
from elis.tasks.contracts import Engine
from elis.tasks.reconcile import Reconciler
from elis.tasks.recovery import COUNTS, LeaseKeeper, QueueDepthProbe
from elis.tasks.runtime import WorkerRuntime, install_runtime
from elis.tasks.scheduling_setup import QualityMonitor, build_scheduler
from elis.tasks.switch_cost import SwitchCostMeter

log = logging.getLogger(__name__)


def build_engine(settings: Settings, max_num_seqs: int) -> Engine:
    from elis.workers.trace_engine import TraceEngine
    from elis.workers.vllm_engine import VllmConfig, VllmEngine

    engine = VllmEngine(
        VllmConfig(
            model=resolve_model(settings.model, settings.models_dir),
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            max_num_seqs=max_num_seqs,
            kv_cache_gib=settings.kv_cache_gib,
            seed=settings.engine_seed,
            block_size=settings.block_size or None,
        )
    )
    if settings.engine == "trace":
        return TraceEngine(engine)
    if settings.engine != "vllm":
        raise ValueError(f"unknown engine {settings.engine!r}: use 'vllm' or 'trace'")
    return engine


def load_worker_predictor(settings: Settings):
    """The batching predictor; None (the policies fall back to FCFS order) when it cannot load.

    Loaded whatever the worker's default policy: jobs carry their own policy.
    """
    try:
        import torch

        from elis.predictor.serving import BatchingPredictor, load_predictor

        torch.set_num_threads(settings.predictor_threads)
        predictor = load_predictor(settings.predictor_checkpoint or None)
        return BatchingPredictor(predictor, max_batch=max(settings.slots, 1))
    except Exception as exc:
        log.error("length predictor unavailable (%s): jobs keep their last prediction", exc)
        return None


def start_consumer_watchdog(settings: Settings) -> ConsumerWatchdog | None:
    """Reconnects this worker to the broker when it stops being fed (elis.tasks.consumer_watchdog)."""
    if settings.consumer_watchdog_s <= 0:
        return None

    watchdog = ConsumerWatchdog(
        slots=settings.slots,
        period_s=settings.consumer_watchdog_s,
        ready_messages=QueueDepthProbe(settings),
        on_restart=lambda: COUNTS.update(["consumer_restarts"]),
    )
    watchdog.install().start()
    return watchdog


def measure_engine(engine: Engine, settings: Settings, name: str) -> SwitchCostMeter:
    """Measure the prefill (cold and cached) and the decode step at this worker's slots, and share them through
    the database: the API and the other workers order newcomers by the prefill weight the live workers measured
    (unless ELIS_PREFILL_WEIGHT is set). A failure is logged and drops this worker's row of an earlier start (it
    must not count as live): the margin then counts the measured overhead only, and the weight comes from the
    other workers (or stays as it was)."""
    from elis.storage.db import session_scope
    from elis.storage.profiles import forget_worker_profile, record_worker_profile
    from elis.workers.calibrate import measure_decode_step, measure_prefill

    meter = SwitchCostMeter()
    try:
        meter.prefill_s_per_token, meter.cached_prefill_s_per_token = measure_prefill(engine)
        meter.decode_step_s = measure_decode_step(engine, settings.slots)
    except Exception as exc:
        log.warning("engine calibration failed: %s", exc)
    if meter.decode_step_s <= 0:  # not measured: an earlier start's row must not count as this worker's
        try:
            with session_scope(settings.resolved_database_url) as session:
                forget_worker_profile(session, worker=name)
        except Exception as exc:
            log.warning("could not drop the old engine profile: %s", type(exc).__name__)
        return meter
    weight = meter.prefill_weight(settings.slots)
    log.info("engine measured: prefill %.2f ms/token cold, %.2f ms/token from the prefix cache; decode step "
             "%.1f ms at %d slots; prefill weight %.4f", 1e3 * meter.prefill_s_per_token,
             1e3 * meter.cached_prefill_s_per_token, 1e3 * meter.decode_step_s, settings.slots, weight)
    try:
        with session_scope(settings.resolved_database_url) as session:
            record_worker_profile(session, worker=name, slots=settings.slots,
                                  prefill_s_per_token=meter.prefill_s_per_token,
                                  cached_prefill_s_per_token=meter.cached_prefill_s_per_token,
                                  decode_step_s=meter.decode_step_s, prefill_weight=weight, now=clock.now())
    except Exception as exc:  # the database away: the API keeps the weight it has
        log.warning("could not record the engine profile: %s", type(exc).__name__)
    return meter


def mark_profile_stopped(settings: Settings, name: str) -> None:
    """Take this worker's measured weight out of the live median as it stops (logged, never raised)."""
    from elis.storage.db import session_scope
    from elis.storage.profiles import log_profile_error, mark_stopped

    try:
        with session_scope(settings.resolved_database_url) as session:
            mark_stopped(session, worker=name)
    except Exception as exc:  # the database away: the row ages out with its last heartbeat instead
        log_profile_error("engine profile not marked stopped", exc)


def start_worker(settings: Settings, name: str | None = None, loglevel: str = "INFO") -> None:
    """Load everything, then run the Celery consumer in this process until it is stopped."""
    name = name or f"elis-{socket.gethostname()}"
    engine = build_engine(settings, max_num_seqs=settings.slots)
    predictor = load_worker_predictor(settings)
    scheduler = build_scheduler(settings)
    meter = measure_engine(engine, settings, name)
    install_runtime(WorkerRuntime(settings=settings, engine=engine, worker_name=name, scheduler=scheduler,
                                  predictor=predictor, switch_cost=meter))
    monitor = QualityMonitor(scheduler, settings)
    monitor.start()
    if settings.worker_metrics_port:
        serve_worker_metrics(settings.worker_metrics_port, settings.slots)
    reconciler = Reconciler(settings, scheduler)
    reconciler.start()
    updater = None
    if settings.predictor_update_every_s > 0:
        from elis.predictor.periodic import PeriodicUpdate

        updater = PeriodicUpdate.from_settings(settings)
        updater.start()
    lease_keeper = LeaseKeeper(settings, name)
    lease_keeper.start()
    watchdog = start_consumer_watchdog(settings)
    configure_celery(settings)
    log.info("worker %s ready: %d slots, window %d, policy %s",
             name, settings.slots, settings.window_tokens, settings.policy)
    try:
        celery_app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={settings.slots}",
                f"--hostname={name}@%h",
                f"--queues={settings.queue_name}",
                f"--loglevel={loglevel}",
                "--without-mingle",
                "--without-gossip",
                "--task-events",
            ]
        )
    finally:
        reconciler.stopped.set()
        if updater is not None:
            updater.stopped.set()
        monitor.stopped.set()
        lease_keeper.stopped.set()
        if watchdog is not None:
            watchdog.stopped.set()
        lease_keeper.join(timeout=10)  # a heartbeat in flight must not mark the worker seen after it stopped
        mark_profile_stopped(settings, name)
        engine.close()
