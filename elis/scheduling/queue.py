"""The ready queue a policy implies: exact policy order with aging, in O(log n) per operation.

The simulator uses it for its queues; it is also the reference the live stack's broker ordering is measured
against (`levels` makes it behave like a RabbitMQ priority queue: few levels, FIFO within a level).
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from elis.scheduling.levels import PriorityLevels
from elis.scheduling.policy import JobView, Policy

_READY = 0
_AGED = 1


class PolicyQueue:
    """Jobs waiting for a slot, popped in the policy's order.

    Without `levels`, `pop(now)` returns the job with the smallest `policy.sort_key(job, now)` among the queued
    jobs. It keeps two heaps: one by the policy's key before aging, one by what each job's aging bound counts
    from (`aging_key`); at each peek/pop the jobs whose bound (the one in force then) has passed move to a third
    heap that goes first (aged jobs keep the policy's tie-breakers: arrival, then id).

    NOTE: this assumes a queued job's score does not change while it waits, which holds for every built-in
    policy (predictions change only when a job re-enters the queue).

    With `levels`, the score is first mapped to a broker level and jobs of one level leave in the order they
    were pushed, as in RabbitMQ.
    """

    def __init__(self, policy: Policy, levels: PriorityLevels | None = None) -> None:
        self.policy = policy
        self.levels = levels
        self._ready: list[tuple[Any, int, JobView]] = []
        self._aging: list[tuple[float, int, JobView]] = []
        self._aged: list[tuple[tuple[float, str], int, JobView]] = []
        self._where: dict[int, int] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._where)

    def __bool__(self) -> bool:
        return bool(self._where)

    def push(self, job: JobView, now: float) -> None:
        """Queue a job (its `enqueued_at` should be `now`)."""
        self._seq += 1
        seq = self._seq
        key = self.policy.base_key(job, now)
        if self.levels is not None:
            key = (-self.levels.level(key[0]), seq)
        heapq.heappush(self._ready, (key, seq, job))
        self._where[seq] = _READY
        key = self.policy.aging_key(job)
        if key < math.inf:
            heapq.heappush(self._aging, (key, seq, job))

    def peek(self, now: float) -> JobView | None:
        """The job `pop(now)` would return, or None when empty."""
        entry = self._head(now)
        return None if entry is None else entry[2]

    def pop(self, now: float) -> JobView:
        """Remove and return the job that goes next at time `now`. Raises IndexError when empty."""
        entry = self._head(now)
        if entry is None:
            raise IndexError("pop from an empty PolicyQueue")
        heapq.heappop(self._aged if self._where[entry[1]] == _AGED else self._ready)
        del self._where[entry[1]]
        return entry[2]

    def num_aged(self, now: float) -> int:
        """How many queued jobs are starving at `now`."""
        self._age(now)
        return len(self._aged)

    def _age(self, now: float) -> None:
        aging = self._aging
        # The heap is keyed by `aging_key` (what the bound counts from), not by the starve time at push: the
        # bound may change while jobs wait (the service derives it from recent jobs, and the reconciler promotes
        # by the bound in force), and this order holds whatever the bound, so the top is always the first to
        # starve under the bound in force now.
        policy = self.policy
        while aging and policy.starve_time(aging[0][2]) < now:
            _, seq, job = heapq.heappop(aging)
            if self._where.get(seq) == _READY:
                self._where[seq] = _AGED
                heapq.heappush(self._aged, ((job.arrival_time, job.job_id), seq, job))

    def _head(self, now: float) -> tuple[Any, int, JobView] | None:
        self._age(now)
        if self._aged:
            return self._aged[0]
        ready = self._ready
        while ready and self._where.get(ready[0][1]) != _READY:
            heapq.heappop(ready)
        return ready[0] if ready else None
