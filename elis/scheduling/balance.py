"""Load balancing across workers: which worker runs a job's next window.

`SharedQueue` is the live stack's choice: one global priority queue, any free slot takes the head, so the
order is global. `Sticky` pins a job to the worker chosen at admission (least loaded), so its prefix cache
stays warm, at the cost of a per-worker order; the simulator measures both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar


class UnknownRoutingError(ValueError):
    """The configured routing name is not one of `routing_names()`."""


def least_loaded(loads: Sequence[float]) -> int:
    """The index of the smallest load; ties go to the lowest index."""
    if not loads:
        raise ValueError("no workers")
    best = 0
    for index in range(1, len(loads)):
        if loads[index] < loads[best]:
            best = index
    return best


class Routing(ABC):
    """Where a job's windows wait: a shared queue (None) or one worker's own queue (its index)."""

    name: ClassVar[str]
    shared: ClassVar[bool]

    @abstractmethod
    def admit(self, job_id: str, loads: Sequence[float]) -> int | None:
        """Route a new job given each worker's load (running + queued jobs); remembers pinned jobs."""

    @abstractmethod
    def worker_of(self, job_id: str) -> int | None:
        """The worker a job is pinned to (None: any worker)."""

    def forget(self, job_id: str) -> None:
        """Drop a finished job's pin."""


class SharedQueue(Routing):
    """One global queue in policy order; a free slot on any worker takes the head."""

    name = "shared"
    shared = True

    def admit(self, job_id: str, loads: Sequence[float]) -> int | None:
        return None

    def worker_of(self, job_id: str) -> int | None:
        return None


class Sticky(Routing):
    """Each job is pinned at admission to the least-loaded worker and runs every window there."""

    name = "sticky"
    shared = False

    def __init__(self) -> None:
        self._job_to_worker: dict[str, int] = {}

    def admit(self, job_id: str, loads: Sequence[float]) -> int | None:
        worker = least_loaded(loads)
        self._job_to_worker[job_id] = worker
        return worker

    def worker_of(self, job_id: str) -> int | None:
        return self._job_to_worker.get(job_id)

    def forget(self, job_id: str) -> None:
        self._job_to_worker.pop(job_id, None)


_ROUTINGS: dict[str, type[Routing]] = {cls.name: cls for cls in (SharedQueue, Sticky)}


def routing_names() -> list[str]:
    return sorted(_ROUTINGS)


def make_routing(name: str) -> Routing:
    """A routing by name (`shared` or `sticky`). Fails fast on an unknown name."""
    key = name.strip().lower()
    if key not in _ROUTINGS:
        raise UnknownRoutingError(f"unknown routing {name!r}; choose one of {', '.join(routing_names())}")
    return _ROUTINGS[key]()
