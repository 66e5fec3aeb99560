"""What a worker process holds once it is ready: its engine, predictor, scheduler and name.

The worker start-up (elis.workers.startup) installs it before the consumer starts; a window that arrives
earlier is rejected back to the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from elis import metrics
from elis.config import Settings
from elis.scheduling.scheduler import Scheduler
from elis.tasks.contracts import Engine
from elis.tasks.switch_cost import SwitchCostMeter


class WorkerNotReady(RuntimeError):
    """The worker's engine is not loaded yet."""


class Repredictor(Protocol):
    """Anything that re-estimates one job's remaining tokens; None when the predictor failed."""

    def predict_one(self, item) -> float | None: ...


def _publish(settings: Settings, *, job_id: str, window_index: int, priority: int | None) -> None:
    from elis.tasks.publish import publish_window

    publish_window(settings, job_id=job_id, window_index=window_index, priority=priority)


@dataclass
class WorkerRuntime:
    """The long-lived parts of a worker process, shared by its Celery threads."""

    settings: Settings
    engine: Engine
    worker_name: str
    scheduler: Scheduler
    predictor: Repredictor | None = None
    switch_cost: SwitchCostMeter = field(default_factory=SwitchCostMeter)
    # How a continuation reaches the queue (RabbitMQ with publisher confirms; fast tests record instead).
    publish: Callable[..., None] = _publish
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, amount: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + amount
        metrics.observe_outcome(key, amount)


_runtime: WorkerRuntime | None = None


def install_runtime(runtime: WorkerRuntime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> WorkerRuntime:
    if _runtime is None:
        raise WorkerNotReady("the engine is not loaded in this process")
    return _runtime
