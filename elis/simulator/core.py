"""A discrete-event simulator of the service: N workers x B slots, windows of W tokens, the live policies.

It runs the same `Policy` objects as the live workers (order, yield and aging decisions all come from the
policy; the queue is `scheduling.PolicyQueue`, routing is `scheduling.balance`) against an engine cost model
(`EngineProfile`) and a model of the predictor's errors (`LengthModel`), and writes the same `JobRecord`s as
the live replay.

The engine model is fluid at the token level: between events, every running job on a worker gains one token
per decode step, and a step takes `decode_step(b)` seconds with b jobs running. A job joining a worker stalls
that worker for its prefill (prompt + tokens so far, free when the worker's prefix cache still holds them).
Events are window ends, arrivals and the ends of the per-window overhead, so a run costs O(windows log n).
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from elis.replay.report import JobRecord, Summary, summarize
from elis.replay.workload import TraceJob
from elis.scheduling.balance import Routing, make_routing
from elis.scheduling.decision import NO_MARGIN, SwitchCost, YieldMargin, decide
from elis.scheduling.guard import FinishedJob
from elis.scheduling.levels import PriorityLevels
from elis.scheduling.outcome import Cohort, JobOutcome, ResidualEstimate
from elis.scheduling.policy import JobView, Policy
from elis.scheduling.queue import PolicyQueue
from elis.scheduling.scheduler import ScheduledPolicy, Scheduler
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.length_models import Exact, LengthModel

_WORKER, _FREE, _REQUEUE, _CONTINUE = 0, 1, 2, 3
_EPS = 1e-9
# Without a max_tokens cap (SimConfig.max_tokens None) a job's longest possible remaining length (what
# `Scheduler.should_repredict` tests a yield with) is unbounded; large and finite, as the margin scales with it.
_UNCAPPED = 1e9


@dataclass(frozen=True)
class SimConfig:
    """The simulated cluster: `num_workers` engines with `num_slots` batch slots each, `window_tokens` per
    window, `routing` (`shared` queue or `sticky` per-worker queues), optional broker `levels` (None: exact
    policy order), the window-end decision's yield `margin`, and the jobs' `max_tokens` (None: no cap), which
    clips predictions to what is left under it, as the live worker does."""

    num_workers: int = 1
    num_slots: int = 8
    window_tokens: int = 50
    routing: str = "shared"
    levels: PriorityLevels | None = None
    # The yield margin of the window-end decision (the service's default comes from its settings).
    margin: YieldMargin = NO_MARGIN
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.num_slots < 1 or self.window_tokens < 1:
            raise ValueError("num_workers, num_slots and window_tokens must be >= 1")


@dataclass
class SimResult:
    """Per-job records of one run, plus the cost of computing them."""

    policy: str
    records: list[JobRecord]
    wall_s: float
    num_windows: int
    config: SimConfig = field(default_factory=SimConfig)
    num_predictions: int = 0  # window-end re-predictions

    @property
    def summary(self) -> Summary:
        return summarize(self.records)


class _Job:
    __slots__ = ("job_id", "arrival", "prompt", "output", "generated", "windows", "first_start", "enqueued_at",
                 "service", "initial", "predicted", "queued", "max_wait", "window_start", "window_len", "steps",
                 "spans", "loop_at")

    def __init__(self, spec: TraceJob) -> None:
        self.job_id = spec.job_id
        self.arrival = spec.arrival
        self.prompt = spec.num_prompt_tokens
        self.output = max(1, spec.num_output_tokens)
        self.loop_at = spec.loop_at
        self.generated = 0
        self.windows = 0
        self.first_start = -1.0
        self.enqueued_at = spec.arrival
        self.service = 0.0
        self.initial: float | None = None
        self.predicted: float | None = None
        self.queued = 0.0
        self.max_wait = 0.0
        self.window_start = 0.0
        self.window_len = 0
        self.steps: list[tuple[int, float]] = []  # (tokens generated, re-prediction), for the quality guard
        self.spans: list[tuple[float, float]] = []  # (start, end) of each window and its overhead: outcome guard

    def view(self) -> JobView:
        remaining = self.output - self.generated
        looping = self.loop_at is not None and self.generated >= self.loop_at
        return JobView(self.job_id, self.arrival, self.generated, self.predicted, self.initial, self.enqueued_at,
                       self.service, remaining, known_remaining=remaining if looping else None,
                       prefill_tokens=self.prompt if self.generated == 0 else 0)


class _Worker:
    __slots__ = ("index", "queue", "running", "steps", "t_last", "resume_at", "version", "busy", "cache",
                 "cache_tokens")

    def __init__(self, index: int, queue: PolicyQueue | None) -> None:
        self.index = index
        self.queue = queue
        self.running: list[tuple[float, int, _Job]] = []  # (step at which the window ends, seq, job)
        self.steps = 0.0
        self.t_last = 0.0
        self.resume_at = 0.0
        self.version = 0
        self.busy = 0  # slots taken: running jobs plus jobs in their window-end overhead
        self.cache: OrderedDict[str, int] = OrderedDict()
        self.cache_tokens = 0


class Simulator:
    """One run: `Simulator(jobs, policy, profile, config, length_model).run()`."""

    def __init__(self, jobs: Sequence[TraceJob], policy: Policy, profile: EngineProfile,
                 config: SimConfig = SimConfig(), length_model: LengthModel | None = None,
                 progress: Callable[[int], None] | None = None, scheduler: Scheduler | None = None,
                 refresh_s: float = 10.0, window_jobs: int = 200) -> None:
        self.specs = sorted(jobs, key=lambda j: j.arrival)
        # With a scheduler (the service's, built from its settings), the run also has the live quality guard,
        # the per-step calibration and the derived aging bound, refreshed from finished jobs every
        # `refresh_s` simulated seconds as the service's monitor does.
        self.scheduler = scheduler
        self.refresh_s = refresh_s
        self.window_jobs = window_jobs
        self.next_refresh = refresh_s
        self.finished: list[FinishedJob] = []
        self.outcomes: list[tuple[JobOutcome, int]] = []  # finished jobs and their tokens: the outcome guard's
        self.policy = ScheduledPolicy(scheduler, policy.name.split("+")[0]) if scheduler is not None else policy
        self.profile = profile
        self.config = config
        self.model = length_model or Exact()
        self.progress = progress
        self.routing: Routing = make_routing(config.routing)
        shared = self.routing.shared
        # The queues order by the scheduled policy (with its aging), as the service's broker levels and
        # reconciler do: with the bare policy no queued job ever starved, and aging never shortened a wait.
        self.shared_queue = PolicyQueue(self.policy, config.levels) if shared else None
        self.workers = [_Worker(i, None if shared else PolicyQueue(self.policy, config.levels))
                        for i in range(config.num_workers)]
        self.step = profile.step_table(config.num_slots)
        self.jobs: dict[str, _Job] = {}
        self.events: list[tuple] = []
        self.seq = 0
        self.dirty: set[_Worker] = set()
        self.records: list[JobRecord] = []
        self.num_windows = 0
        self.num_predictions = 0
        self._decision_levels = config.levels or PriorityLevels.log_spaced(10)

    # --- the event loop -------------------------------------------------------------------------------
    def run(self) -> SimResult:
        started = time.perf_counter()
        events = self.events
        specs = self.specs
        index, count = 0, len(specs)
        while index < count or events:
            if index < count and (not events or specs[index].arrival < events[0][0]):
                spec = specs[index]
                index += 1
                self._arrive(_Job(spec), spec.arrival)
            else:
                now, _, kind, job, worker_index = heapq.heappop(events)
                worker = self.workers[worker_index]
                if kind == _WORKER:
                    if job == worker.version:
                        self._window_ends(worker, now)
                else:
                    self._release(kind, job, worker, now)
            if self.scheduler is not None and self.finished and (events or index < count):
                clock_now = events[0][0] if events else specs[index].arrival
                if clock_now >= self.next_refresh:
                    recent = self.scheduler.aging_cohort_jobs
                    self.scheduler.observe(self.finished[-self.window_jobs:], cohort=self._cohort(clock_now),
                                           now=clock_now,
                                           aging_cohort=self._cohort(clock_now, 0.0, recent) if recent else None)
                    self.next_refresh = clock_now + self.refresh_s
            if self.dirty:
                for worker in self.dirty:
                    self._schedule(worker)
                self.dirty.clear()
        return SimResult(self.policy.name, self.records, time.perf_counter() - started, self.num_windows,
                         self.config, self.num_predictions)

    def _cohort(self, now: float, horizon: float | None = None, limit: int | None = None) -> Cohort:
        """What the service's `recent_cohort` reads: the last jobs by arrival (`limit`, default the guard's
        window) that arrived an aging bound ago or earlier (`horizon` seconds ago, when given), finished or
        (censored) not, each with the time it held a slot."""
        cut = now - (self.scheduler.aging_bound_s if horizon is None else horizon)
        finished = [(o, n) for o, n in self.outcomes if o.arrival_s < cut]
        done = [o for o, _ in finished]
        # As the service: the outcome guard's cohort learns from its own done jobs, the aging cohort (the latest
        # arrivals) from the last done jobs (`storage.jobs.recent_costs`).
        learn_from = finished if horizon is None else self.outcomes[-self.window_jobs:]
        residual = ResidualEstimate.of((o.slot_s, n) for o, n in learn_from)
        judged = self.policy.name != "fcfs"
        cap = self.config.max_tokens
        active = [JobOutcome(job.arrival, now, tuple(job.spans), judged,
                             remaining_s=residual.remaining_s(job.generated, cap or job.output),
                             policy=self.policy.name)
                  for job in self.jobs.values() if job.arrival < cut]
        everything = sorted(done + active, key=lambda o: o.arrival_s)
        limit = limit or self.window_jobs
        cohort = everything[-limit:]
        first = cohort[0].arrival_s if cohort else 0.0
        backlog = [o for o in everything[:-limit] if o.finish_s > first]
        return Cohort(tuple(cohort), self.config.num_workers * self.config.num_slots, tuple(backlog))

    def _push(self, when: float, kind: int, payload: object, worker: _Worker) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, payload, worker.index))

    def _schedule(self, worker: _Worker) -> None:
        worker.version += 1
        if worker.running:
            start = worker.t_last if worker.t_last > worker.resume_at else worker.resume_at
            when = start + (worker.running[0][0] - worker.steps) * self.step[len(worker.running)]
            self._push(when, _WORKER, worker.version, worker)

    def _advance(self, worker: _Worker, now: float) -> None:
        start = worker.t_last if worker.t_last > worker.resume_at else worker.resume_at
        if now > start and worker.running:
            worker.steps += (now - start) / self.step[len(worker.running)]
        if now > worker.t_last:
            worker.t_last = now

    # --- jobs entering queues and slots ---------------------------------------------------------------
    def _arrive(self, job: _Job, now: float) -> None:
        self.jobs[job.job_id] = job
        if self.policy.needs_initial_prediction or self.scheduler is not None:  # the service predicts every job
            job.initial = job.predicted = self._clipped(self.model.predict(job.output, 0, job.job_id), job)
        if self.shared_queue is not None:
            self.shared_queue.push(job.view(), now)
            free = [w for w in self.workers if w.busy < self.config.num_slots]
            if free:
                self._fill(min(free, key=lambda w: w.busy), now)
            return
        loads = [w.busy + len(w.queue) for w in self.workers]  # type: ignore[arg-type]
        worker = self.workers[self.routing.admit(job.job_id, loads)]  # type: ignore[index]
        worker.queue.push(job.view(), now)  # type: ignore[union-attr]
        self._fill(worker, now)

    def _queue_of(self, worker: _Worker) -> PolicyQueue:
        return self.shared_queue if self.shared_queue is not None else worker.queue  # type: ignore[return-value]

    def _fill(self, worker: _Worker, now: float) -> None:
        queue = self._queue_of(worker)
        while worker.busy < self.config.num_slots and queue:
            job = self.jobs[queue.pop(now).job_id]
            worker.busy += 1
            self._start(worker, job, now)

    def _start(self, worker: _Worker, job: _Job, now: float) -> None:
        self._advance(worker, now)
        tokens = job.prompt + job.generated
        cached = worker.cache.pop(job.job_id, None)
        if cached is not None:
            worker.cache_tokens -= cached
            tokens -= cached
        cost = tokens * self.profile.prefill_s_per_token
        if cost > 0:
            worker.resume_at = (now if now > worker.resume_at else worker.resume_at) + cost
        wait = now - job.enqueued_at
        job.queued += wait
        if wait > job.max_wait:
            job.max_wait = wait
        if job.first_start < 0:
            job.first_start = now
        self._begin_window(worker, job, now)

    def _begin_window(self, worker: _Worker, job: _Job, now: float) -> None:
        job.window_start = now
        remaining = job.output - job.generated
        job.window_len = remaining if remaining < self.config.window_tokens else self.config.window_tokens
        self.seq += 1
        heapq.heappush(worker.running, (worker.steps + job.window_len, self.seq, job))
        self.dirty.add(worker)

    # --- window ends ----------------------------------------------------------------------------------
    def _window_ends(self, worker: _Worker, now: float) -> None:
        self._advance(worker, now)
        running = worker.running
        ended = []
        while running and running[0][0] <= worker.steps + _EPS:
            ended.append(heapq.heappop(running)[2])
        self.dirty.add(worker)
        overhead = self.profile.window_overhead_s
        for job in ended:
            action = self._decide(worker, job, now)
            if overhead > 0:
                self._push(now + overhead, action, job, worker)
            else:
                self._release(action, job, worker, now)

    def _decide(self, worker: _Worker, job: _Job, now: float) -> int:
        job.generated += job.window_len
        job.windows += 1
        job.service += now - job.window_start
        job.spans.append((job.window_start, now + self.profile.window_overhead_s))
        self.num_windows += 1
        if job.generated >= job.output:
            self._finish(job, now)
            return _FREE
        scheduler = self.scheduler
        queue = self._queue_of(worker)
        head = queue.peek(now) if queue else None
        # The service's own window-end decision (elis.scheduling.decision.decide), with the switch cost the
        # live worker would measure: the window-end overhead plus the re-prefill the prefix cache misses.
        cost = self._switch_cost(worker, job)
        if job.predicted is not None:  # what the cap leaves now, as the worker clips the last prediction
            job.predicted = self._clipped(job.predicted, job)
        if scheduler is not None:  # as the live worker: re-predict where it may matter, then decide with it
            repredicts = scheduler.should_repredict(job.view(), self._most_remaining(job), head, now, cost,
                                                    self.policy.name)
        else:
            repredicts = self.policy.repredicts
        if repredicts:
            job.predicted = self._clipped(self.model.predict(job.output - job.generated, job.windows, job.job_id), job)
            job.steps.append((job.generated, job.predicted))
            self.num_predictions += 1
            if self.profile.predict_s > 0:  # the predictor takes the engine's cores for a moment
                worker.resume_at = max(worker.resume_at, now) + self.profile.predict_s
        if scheduler is not None:
            decision = scheduler.decide(job.view(), head, now, cost, self.policy.name)
        else:
            decision = decide(self.policy, job.view(), head, now, self._decision_levels, self.config.margin, cost)
        return _REQUEUE if decision.yields else _CONTINUE

    def _most_remaining(self, job: _Job) -> float:
        cap = self.config.max_tokens
        return _UNCAPPED if cap is None else float(max(cap - job.generated, 0))

    def _clipped(self, prediction: float, job: _Job) -> float:
        return min(max(prediction, 0.0), self._most_remaining(job))

    def _switch_cost(self, worker: _Worker, job: _Job) -> SwitchCost:
        margin = self.scheduler.margin if self.scheduler is not None else self.config.margin
        if not margin.enabled:
            return SwitchCost()
        tokens = job.prompt + job.generated
        cached = tokens <= self.profile.prefix_cache_tokens
        # A shared queue resumes the job on any worker: this one holds its context 1 in num_workers times.
        hit_rate = (1.0 / self.config.num_workers if self.routing.shared else 1.0) if cached else 0.0
        seconds = self.profile.window_overhead_s + (1.0 - hit_rate) * tokens * self.profile.prefill_s_per_token
        return SwitchCost(seconds, self.step[max(1, len(worker.running))])

    def _finish(self, job: _Job, now: float) -> None:
        self.records.append(JobRecord(
            job.job_id, self.policy.name, job.arrival, job.first_start, now, now - job.arrival, job.queued,
            job.prompt, job.output, job.windows, "done", job.max_wait))
        if self.scheduler is not None:
            self.finished.append(FinishedJob(job.job_id, job.output, job.service, job.initial, tuple(job.steps)))
            self.outcomes.append((JobOutcome(job.arrival, now, tuple(job.spans), judged=self.policy.name != "fcfs",
                                             policy=self.policy.name), job.output))
            if len(self.outcomes) > 4 * self.window_jobs:
                del self.outcomes[:len(self.outcomes) - 4 * self.window_jobs]
        del self.jobs[job.job_id]
        self.routing.forget(job.job_id)
        if self.progress is not None and len(self.records) % 1000 == 0:
            self.progress(len(self.records))

    def _release(self, action: int, job: _Job, worker: _Worker, now: float) -> None:
        if action == _CONTINUE:
            self._advance(worker, now)
            self._begin_window(worker, job, now)
            return
        worker.busy -= 1
        if action == _REQUEUE:
            self._remember(worker, job)
            job.enqueued_at = now
            self._queue_of(worker).push(job.view(), now)
        self._fill(worker, now)

    def _remember(self, worker: _Worker, job: _Job) -> None:
        capacity = self.profile.prefix_cache_tokens
        tokens = job.prompt + job.generated
        if tokens > capacity:
            return
        worker.cache[job.job_id] = tokens
        worker.cache_tokens += tokens
        while worker.cache_tokens > capacity:
            _, evicted = worker.cache.popitem(last=False)
            worker.cache_tokens -= evicted


def simulate(jobs: Sequence[TraceJob], policy: Policy, profile: EngineProfile | None = None,
             config: SimConfig = SimConfig(), length_model: LengthModel | None = None,
             progress: Callable[[int], None] | None = None, scheduler: Scheduler | None = None) -> SimResult:
    """Run one policy on one workload (default engine profile, exact predictions); with `scheduler`, under
    the service's whole scheduler (margin, guard, calibration, aging) as its settings build it."""
    return Simulator(jobs, policy, profile or EngineProfile.load(), config, length_model, progress,
                     scheduler).run()
