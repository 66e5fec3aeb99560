"""Helpers of the fault tests: a private stack (its own PostgreSQL cluster, worker and API on the shared
RabbitMQ), polling that tolerates 503s, the end-state checks and a guarded RabbitMQ restart."""

from __future__ import annotations

import contextlib
import fcntl
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from elis import launch
from elis.storage.migrate import upgrade
from tests.conftest import BROKER_URL, delete_queue, unique_queue
from tests.e2e.conftest import metric_samples
from tests.private_postgres import PrivatePostgres

SERVICES_LOCK = Path("/tmp/elis-services.lock")
# The worker log lines that tell a broker recovery's story: outages, reconnects, the consumer watchdog, acks that
# failed, heartbeats, leases and re-publishes.
RECOVERY_EVENTS = re.compile(
    r"Cannot connect|Connected to|Connection to broker lost|consumer stalled|Couldn't ack|Couldn't reject|"
    r"heartbeat|UnexpectedFrame|is away|message requeued|lease ran out|re-publish|Resuming normal|vLLM step took",
    re.IGNORECASE)
LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")  # a log record's first line (not a traceback's)
SERVICES_DOWN = Path("/tmp/elis-team/SERVICES-DOWN")


@dataclass(frozen=True)
class WorkerState:
    """What the worker's metrics say of its engine: the steps taken so far and the windows in it now."""

    engine_steps: int
    windows_in_engine: int


class PrivateStack:
    """A worker (MLFQ, so every window yields and is re-published) and an API on a private PostgreSQL."""

    slots = 2

    def __init__(self, tmp: Path) -> None:
        self.pg = PrivatePostgres()
        upgrade(self.pg.url)
        self.queue = unique_queue("elis.fault")
        self.metrics_port = launch.free_port()  # the worker's engine tells a slow engine from a stalled consumer
        self.env = launch.elis_env(database_url=self.pg.url, broker_url=BROKER_URL, queue_name=self.queue,
                                   worker_metrics_port=self.metrics_port,
                                   policy="mlfq", slots=self.slots, dtype="float32", window_tokens=50,
                                   reconcile_interval_s=1.0, lease_s=20.0, lost_after_s=5.0, outage_wait_s=300.0,
                                   outcome_guard=False)  # MLFQ must keep yielding: no FCFS fallback mid-test
        self.worker = launch.start_worker(self.env, tmp, name="fault-worker", node=f"fault-{self.queue[-8:]}")
        port = launch.free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.api = launch.start_api(self.env, port, tmp, name="fault-api")
        launch.wait_for_api(self.api, self.base)
        launch.wait_for_worker(self.worker)
        self.client = httpx.Client(base_url=self.base, timeout=30)
        self.tmp = tmp
        self.last_dump = ""  # the last py-spy dump taken (dump_worker)
        self.log_offset = 0  # where the current test's part of the worker log starts (mark_log)
        self.longest_gap_ended = ""  # wall clock at the end of the longest stall `longest_stall` saw
        # The longest stretch without a committed window `longest_stall` saw: its seconds and the engine steps in it
        self.longest_window_gap = (0.0, 0)
        # The longest stretch `longest_stall` saw in which every slot's window waited on an engine that took no step
        self.longest_engine_stall = 0.0

    def dump_worker(self, label: str) -> str:
        """The worker's Python threads (py-spy dump, when installed) and its log tail, also saved under the
        test's directory."""
        pid = self.worker.process.pid
        # vLLM's engine core runs in a child process, where a stalled engine sits: its stacks come first, so that
        # a failure message's cut keeps them, then the worker's threads, then the machine's busiest processes.
        children = [int(c) for c in _run(["pgrep", "-P", str(pid)]).split() if c.isdigit()]
        dumps = [f"== py-spy dump of the worker's child {child}\n{py_spy_dump(child)}" for child in children]
        dumps.append(f"== py-spy dump of worker {pid}\n{py_spy_dump(pid)}")
        evidence = f"== {label}\n" + "\n".join(dumps) + f"\n== the machine\n{machine_snapshot()}"
        (self.tmp / f"worker-{label}.txt").write_text(f"{evidence}\n== worker log tail\n{self.worker.tail(6000)}")
        self.last_dump = evidence
        return evidence

    def mark_log(self) -> None:
        """From here on, `recovery_events` and `watchdog_restarts` read only what the worker logs next (the
        stack serves every test of the module)."""
        self.log_offset = len(self._worker_log())

    def _worker_log(self) -> str:
        try:
            return self.worker.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def recovery_events(self, max_lines: int = 60) -> str:
        """The worker log's recovery records (RECOVERY_EVENTS) since `mark_log`, the last `max_lines`: what a
        failure message carries, since a CI run keeps its output and not its temporary files."""
        lines = self._worker_log()[self.log_offset:].splitlines()
        events = [line[:300] for line in lines if LOG_LINE.match(line) and RECOVERY_EVENTS.search(line)]
        return "\n".join(events[-max_lines:]) or "(no recovery lines in the worker log)"

    def watchdog_restarts(self) -> int:
        """How many times the consumer watchdog reconnected this worker since `mark_log` (its log lines)."""
        return self._worker_log()[self.log_offset:].count("consumer stalled:")

    def worker_state(self) -> WorkerState | None:
        """The worker's engine steps (the count of its batch-occupancy histogram, one sample a step) and the
        windows in its engine now; None when its metrics do not answer."""
        try:
            samples = metric_samples(httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text)
        except httpx.HTTPError:
            return None
        return WorkerState(engine_steps=int(samples.get(("elis_worker_batch_occupancy_count", ()), 0)),
                           windows_in_engine=int(samples.get(("elis_worker_windows_in_engine", ()), 0)))

    def submit(self, workload: str, num_jobs: int, num_tokens: int) -> list[str]:
        body = {"prompt": "Write a long story about a lighthouse.", "target_output_tokens": num_tokens,
                "workload": workload}
        return [self.client.post("/v1/jobs", json=body).json()["id"] for _ in range(num_jobs)]

    def num_windows(self, workload: str) -> int | None:
        """Windows committed so far in the workload; None while the API answers 503 (database away)."""
        progress = self.progress(workload)
        return progress[0] if progress is not None else None

    def progress(self, workload: str) -> tuple[int, int] | None:
        """Windows committed so far in the workload and its jobs not yet finished; None while the API answers 503
        (database away)."""
        response = self.client.get("/v1/jobs", params={"workload": workload, "limit": 1000})
        if response.status_code == 503:
            return None
        response.raise_for_status()
        items = response.json()["items"]
        return (sum(item["num_windows"] for item in items),
                sum(item["status"] not in {"done", "failed", "cancelled"} for item in items))

    def close(self) -> None:
        self.client.close()
        self.api.stop()
        self.worker.stop()
        delete_queue(self.queue)
        self.pg.close()


def wait_for_progress(stack: PrivateStack, workload: str, beyond: int, timeout_s: float = 180.0,
                      dump_after_s: float | None = None) -> float:
    """Seconds until the workload has more than `beyond` windows committed (the recovery time).

    With `dump_after_s`, a worker that has made no progress by then has its threads dumped (py-spy) into the
    test's log directory, and again at the timeout, whose message then carries the dump: a stall leaves
    evidence of where the worker's threads sit."""
    started = time.monotonic()
    dumped = False
    while time.monotonic() - started < timeout_s:
        count = stack.num_windows(workload)
        if count is not None and count > beyond:
            return time.monotonic() - started
        if dump_after_s is not None and not dumped and time.monotonic() - started > dump_after_s:
            dumped = True
            stack.dump_worker(f"stall-{dump_after_s:.0f}s")
        time.sleep(0.2)
    evidence = stack.dump_worker("stall-timeout") if dump_after_s is not None else ""
    raise AssertionError(f"no window committed in {timeout_s:.0f} s after the fault ended\n{evidence}")


def longest_stall(stack: PrivateStack, workload: str, total: int, timeout_s: float = 300.0,
                  dump_after_s: float = 15.0) -> float:
    """Seconds of the longest consumer stall until the workload has `total` windows: time in which the worker
    committed no window, its engine took no step and a slot was free while an unfinished job waited for it
    (fewer windows in the engine than slots and unfinished jobs), so the queued windows were not reaching it
    (issue 11.5). Within one stretch without progress, the consumer's polls add up even when the engine's come
    between them (the count errs towards failing).

    Time in which every window that could run waits on an engine that takes no step is the engine's stall, not
    the consumer's; its longest stretch is kept in `stack.longest_engine_stall` for the report (a CI run saw 45 s
    of it after the broker came back, both slots in `run_window`). A shared machine can also slow a CPU engine
    several-fold: the longest stretch without a commit, and the engine steps in it, are kept in
    `stack.longest_window_gap`. A stretch without a commit longer than `dump_after_s` has the worker's threads
    and its engine core's dumped (py-spy) into the test's directory."""
    started = last_commit = polled = time.monotonic()
    last, dumped = stack.num_windows(workload), False
    state = stack.worker_state()
    steps = steps_at_commit = state.engine_steps if state else None
    consumer_idle = engine_idle = longest = 0.0
    stack.longest_window_gap, stack.longest_engine_stall = (0.0, 0), 0.0
    if last is not None and last >= total:
        return longest
    while time.monotonic() - started < timeout_s:
        progress, state = stack.progress(workload), stack.worker_state()
        count, unfinished = progress if progress is not None else (None, stack.slots)
        now = time.monotonic()
        elapsed, polled = now - polled, now
        stepped = state is not None and steps is not None and state.engine_steps > steps
        steps = state.engine_steps if state is not None else steps
        committed = count is not None and count != last
        # The windows the worker could be running: one a slot, while that many jobs are unfinished.
        runnable = max(1, min(stack.slots, unfinished))
        if committed or stepped:
            consumer_idle = engine_idle = 0.0
        elif state is not None and state.windows_in_engine >= runnable:
            engine_idle += elapsed
            stack.longest_engine_stall = max(stack.longest_engine_stall, engine_idle)
        else:  # a slot free while a job waits for it (or the metrics silent): the consumer's time
            consumer_idle += elapsed
            if consumer_idle > longest:  # the log's clock, to find the stall among the worker's lines
                longest, stack.longest_gap_ended = consumer_idle, time.strftime("%H:%M:%S")
        if committed:
            if now - last_commit > stack.longest_window_gap[0]:
                stack.longest_window_gap = (now - last_commit, (steps or 0) - (steps_at_commit or 0))
            last, last_commit, steps_at_commit, dumped = count, now, steps, False
            if count >= total:
                return longest
        elif not dumped and now - last_commit > dump_after_s:
            dumped = True
            stack.dump_worker(f"gap-{now - started:.0f}s")
        time.sleep(0.2)
    raise AssertionError(f"{last} of {total} windows committed after {timeout_s:.0f} s")


def wait_all_done(stack: PrivateStack, ids: list[str], timeout_s: float = 300.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    jobs: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for job_id in ids:
            if jobs.get(job_id, {}).get("status") in {"done", "failed", "cancelled"}:
                continue
            response = stack.client.get(f"/v1/jobs/{job_id}")
            if response.status_code == 200:
                jobs[job_id] = response.json()
        if len(jobs) == len(ids) and all(j["status"] in {"done", "failed", "cancelled"} for j in jobs.values()):
            return [jobs[i] for i in ids]
        time.sleep(0.5)
    raise AssertionError(f"jobs not finished after {timeout_s:.0f} s: "
                         f"{ {i: j.get('status') for i, j in jobs.items()} }")


def assert_each_done_once(jobs: list[dict], num_tokens: int, window_tokens: int = 50) -> None:
    """Every job done, with exactly its tokens, each window index committed once and in order."""
    num_windows = -(-num_tokens // window_tokens)
    for job in jobs:
        assert job["status"] == "done", job
        assert job["num_output_tokens"] == num_tokens, (job["id"], job["num_output_tokens"])
        assert [w["index"] for w in job["windows"]] == list(range(num_windows)), job["windows"]
        assert sum(w["num_tokens"] for w in job["windows"]) == num_tokens


@contextlib.contextmanager
def shared_services_down():
    """Hold the services lock and announce the outage to the other checkouts while a shared service is down."""
    with open(SERVICES_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = SERVICES_DOWN if SERVICES_DOWN.parent.is_dir() else None
        if marker:
            marker.write_text("robust fault test: RabbitMQ restart\n")
        try:
            yield
        finally:
            if marker:
                marker.unlink(missing_ok=True)


def _run(command: list[str], timeout_s: float = 60.0) -> str:
    """A diagnostic command's output; its failure as text (evidence must never raise)."""
    try:
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout_s).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({command[0]} failed: {exc})"


def py_spy_dump(pid: int) -> str:
    """The Python threads of one process (py-spy, when installed)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return _run([str(py_spy), "dump", "--pid", str(pid)]) if py_spy.exists() else "(py-spy not installed)"


def machine_snapshot() -> str:
    """The load average and the busiest processes over one second (top's second frame): whether something
    else held the CPU while the worker stalled."""
    frames = _run(["top", "-b", "-n", "2", "-d", "1", "-o", "%CPU", "-w", "160"], timeout_s=30)
    second = frames[frames.rfind("\ntop - ") + 1:] if "\ntop - " in frames else frames
    return "\n".join(second.splitlines()[:20])


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)
