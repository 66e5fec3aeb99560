"""Prometheus metrics of the workers (one process each: Celery threads share the default registry, so no
multiprocess mode is needed). `elis worker` serves them on ELIS_WORKER_METRICS_PORT; the API's own metrics
(read from the database) are in elis.api.metrics.

The window task calls the `observe_*` functions, one line per call site; an observer's error is logged,
never raised into the job.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_WINDOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
_PREDICT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_OCCUPANCY_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)

WINDOW_SECONDS = Histogram(
    "elis_worker_window_seconds", "Engine time of one job-window", buckets=_WINDOW_BUCKETS
)
WINDOWS = Counter(
    "elis_worker_windows_total", "Job-windows by outcome (run, skipped, duplicate)", ["outcome"]
)
OUTPUT_TOKENS = Counter("elis_worker_output_tokens_total", "Tokens generated")
TOKENS_PER_SECOND = Gauge(
    "elis_worker_output_tokens_per_second", "Output tokens per engine second, last window"
)
BATCH_OCCUPANCY = Histogram(
    "elis_worker_batch_occupancy", "Sequences in the engine at each step", buckets=_OCCUPANCY_BUCKETS
)
RUNNING_SEQUENCES = Gauge("elis_worker_running_sequences", "Sequences in the engine now")
WINDOWS_IN_ENGINE = Gauge(
    "elis_worker_windows_in_engine", "Job-windows handed to the engine and not yet returned (busy slots)"
)
SLOTS = Gauge("elis_worker_slots", "Job-windows this worker runs at once (Celery threads)")
REPREDICT_SECONDS = Histogram(
    "elis_worker_reprediction_seconds", "Re-prediction latency after a window", buckets=_PREDICT_BUCKETS
)
YIELDS = Counter("elis_worker_yields_total", "Windows after which the job yielded its slot (re-queued)")
PRIOR_SCORES = Counter(
    "elis_worker_prior_scores_total",
    "Prompt prior scores a re-prediction needed, by source: carried from the job's admission, or computed here "
    "(a pass of the prompt through the served model; the API and worker run different priors, or none was carried)",
    ["source"],
)
DELIVERIES = Counter(
    "elis_worker_deliveries_total",
    "Window messages received, by whether RabbitMQ redelivered",
    ["redelivered"],
)


def serve_worker_metrics(port: int, slots: int) -> None:
    """Start the /metrics HTTP server of this worker process (a daemon thread)."""
    SLOTS.set(slots)
    start_http_server(port)
    log.info("worker metrics on :%d/metrics", port)


def observe_delivery(redelivered: bool) -> None:
    DELIVERIES.labels(redelivered=str(bool(redelivered)).lower()).inc()


@contextlib.contextmanager
def window_in_engine() -> Iterator[None]:
    """Counts a job-window as in the engine while it runs there: with `elis_worker_slots`, it tells a worker
    whose slots all wait on a slow engine from one with a slot free and nothing coming (a stalled consumer)."""
    WINDOWS_IN_ENGINE.inc()
    try:
        yield
    finally:
        WINDOWS_IN_ENGINE.dec()


def observe_window(compute_s: float, num_tokens: int, predict_s: float | None, yielded: bool) -> None:
    """One committed window: its engine time, tokens, re-prediction latency and whether it yielded."""
    try:
        WINDOW_SECONDS.observe(compute_s)
        OUTPUT_TOKENS.inc(num_tokens)
        if compute_s > 0:
            TOKENS_PER_SECOND.set(num_tokens / compute_s)
        if predict_s is not None:
            REPREDICT_SECONDS.observe(predict_s)
        if yielded:
            YIELDS.inc()
    except Exception:  # never let an observer break a window
        log.exception("recording window metrics failed")


def observe_prior_scores(source: str, amount: int) -> None:
    """Prompt prior scores taken from admission ("carried") or computed in this process ("computed")."""
    try:
        if amount:
            PRIOR_SCORES.labels(source=source).inc(amount)
    except Exception:  # never let an observer break a prediction
        log.exception("recording prior score metrics failed")


def observe_outcome(outcome: str, amount: int = 1) -> None:
    """A window task outcome, named as the runtime's counters are (windows_run, windows_skipped, ...)."""
    WINDOWS.labels(outcome=outcome.removeprefix("windows_")).inc(amount)


def observe_engine_step(num_sequences: int) -> None:
    BATCH_OCCUPANCY.observe(num_sequences)
    RUNNING_SEQUENCES.set(num_sequences)
