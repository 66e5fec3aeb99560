"""What a worker process holds once it is ready: its engine, predictor, levels and name.

The worker start-up (elis.workers.startup) installs it before the consumer starts; a window that arrives
earlier is rejected back to the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from elis.config import Settings
from elis.scheduling import Policy, PriorityLevels, make_policy
from elis.tasks.contracts import Engine


class WorkerNotReady(RuntimeError):
    """The worker's engine is not loaded yet."""


class Repredictor(Protocol):
    """Anything that re-estimates one job's remaining tokens; None when the predictor failed."""

    def predict_one(self, item) -> float | None: ...


@dataclass
class WorkerRuntime:
    """The long-lived parts of a worker process, shared by its Celery threads."""

    settings: Settings
    engine: Engine
    worker_name: str
    levels: PriorityLevels
    predictor: Repredictor | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def policy(self, name: str) -> Policy:
        return cached_policy(name, self.settings.max_wait_s)

    def count(self, key: str, amount: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + amount


@lru_cache(maxsize=32)
def cached_policy(name: str, max_wait_s: float) -> Policy:
    return make_policy(name, max_wait_s=max_wait_s)


_runtime: WorkerRuntime | None = None


def install_runtime(runtime: WorkerRuntime) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> WorkerRuntime:
    if _runtime is None:
        raise WorkerNotReady("the engine is not loaded in this process")
    return _runtime
