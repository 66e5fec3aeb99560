"""The consumer watchdog on a real Celery worker and the real RabbitMQ: a worker whose consumer stopped reading
(wedged on purpose, heartbeats off) stays stalled without the watchdog, and reconnects and consumes every
message with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kombu import Connection

from elis.config import Settings
from elis.tasks.app import window_queue
from tests.conftest import BROKER_URL, delete_queue, unique_queue

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WATCHDOG_S = 1.5
NUM_MESSAGES = 5


def _send(queue: str, task: str, *args) -> None:
    """Publish one task message in Celery's protocol 2, as `send_task` would."""
    from celery import Celery

    app = Celery("stall-test", broker=BROKER_URL, set_as_current=False)
    app.conf.task_queues = [window_queue(Settings(queue_name=queue))]
    app.send_task(task, args=list(args), queue=queue, routing_key=queue)


def _wait_for(path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.1)
    return False


def _done(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir() if p.name.startswith("job-"))


@pytest.fixture()
def stall_worker(tmp_path):
    """Start the wedgeable worker with a given watchdog period; yields (start, out_dir, log_path)."""
    queue = unique_queue("elis.test.stall")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    log_path = tmp_path / "worker.log"
    procs: list[subprocess.Popen] = []

    def start(watchdog_s: float) -> None:
        env = {**os.environ, "ELIS_BROKER_URL": BROKER_URL, "PYTHONPATH": str(ROOT)}
        with log_path.open("w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.integration.stall_worker", queue, str(out_dir), str(watchdog_s)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        _send(queue, "touch", "ready")
        assert _wait_for(out_dir / "ready", 60.0), log_path.read_text()[-3000:]

    yield start, queue, out_dir, log_path
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
    delete_queue(queue)


def _wedge_then_send(queue: str, out_dir: Path, log_path: Path) -> None:
    _send(queue, "wedge")
    assert _wait_for(out_dir / "wedged", 30.0), log_path.read_text()[-3000:]
    for i in range(NUM_MESSAGES):
        _send(queue, "touch", f"job-{i}")


def test_a_wedged_consumer_stays_stalled_without_the_watchdog(stall_worker):
    start, queue, out_dir, log_path = stall_worker
    start(0.0)
    _wedge_then_send(queue, out_dir, log_path)
    time.sleep(4 * WATCHDOG_S + 2.0)
    assert _done(out_dir) == []  # the stall is real: nothing else recovers it
    with Connection(BROKER_URL, connect_timeout=5) as connection:
        _, ready, _ = window_queue(Settings(queue_name=queue))(connection.default_channel).queue_declare(
            passive=True)
    assert ready > 0


def test_the_watchdog_reconnects_a_wedged_consumer_and_every_message_is_consumed(stall_worker):
    start, queue, out_dir, log_path = stall_worker
    start(WATCHDOG_S)
    _wedge_then_send(queue, out_dir, log_path)
    deadline = time.monotonic() + 4 * WATCHDOG_S + 30.0
    while time.monotonic() < deadline and len(_done(out_dir)) < NUM_MESSAGES:
        time.sleep(0.2)
    log = log_path.read_text()
    assert _done(out_dir) == [f"job-{i}" for i in range(NUM_MESSAGES)], log[-3000:]
    assert "consumer stalled" in log and "reconnecting to the broker" in log
    assert "Connection to broker lost" in log  # Celery's own recovery path took it from there


def test_a_busy_worker_with_a_backlog_is_not_restarted(stall_worker):
    start, queue, out_dir, log_path = stall_worker
    start(0.5)
    for i in range(8):  # 2 slots, 8 naps of 1 s: messages wait while every slot is busy
        _send(queue, "nap", 1.0, f"job-{i}")
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and len(_done(out_dir)) < 8:
        time.sleep(0.2)
    log = log_path.read_text()
    assert len(_done(out_dir)) == 8, log[-3000:]
    assert "consumer stalled" not in log and "Connection to broker lost" not in log
