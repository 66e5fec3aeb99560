"""Start and stop the service's processes (API, worker) for the demo, the benchmark and end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


class LaunchError(RuntimeError):
    """A process did not start or become ready; the message points at its log."""


@dataclass
class Managed:
    """A started child process and its log file."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def tail(self, num_chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-num_chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        # Celery and uvicorn shut down cleanly on SIGTERM (Celery: warm shutdown, waiting for windows).
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def elis_env(**settings: object) -> dict[str, str]:
    """The current environment plus ELIS_* settings."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    for key, value in settings.items():
        if value is not None:
            env[f"ELIS_{key.upper()}"] = str(value)
    return env


def start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Managed:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    # The child gets its own copy of the descriptor: the parent closes its handle at once.
    with open(log_path, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "elis.cli", *args], env=env, stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Managed(name, process, log_path)


def start_api(env: dict[str, str], port: int, log_dir: Path, name: str = "api") -> Managed:
    return start(name, ["serve", "--host", "127.0.0.1", "--port", str(port)], env, log_dir)


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker", node: str | None = None) -> Managed:
    return start(name, ["worker", "--name", node or f"{name}-{os.getpid()}"], env, log_dir)


def wait_for_api(managed: Managed, base_url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise LaunchError(f"the API exited ({managed.process.returncode}); log {managed.log_path}:\n{managed.tail()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise LaunchError(f"the API was not healthy after {timeout_s:.0f} s; log {managed.log_path}:\n{managed.tail()}")


def wait_for_worker(managed: Managed, timeout_s: float = 300.0) -> None:
    """Wait until the worker's consumer is up (it starts only after the engine is loaded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise LaunchError(f"the worker exited ({managed.process.returncode}); log {managed.log_path}:\n{managed.tail()}")
        if "ready." in managed.tail(20000):  # Celery's own "<node> ready." line
            return
        time.sleep(0.5)
    raise LaunchError(f"the worker was not ready after {timeout_s:.0f} s; log {managed.log_path}:\n{managed.tail()}")


def purge_queue(broker_url: str, queue_name: str, num_levels: int) -> int:
    """Drop every message of the queue (a fresh demo or test run)."""
    from kombu import Connection, Exchange, Queue

    queue = Queue(queue_name, Exchange(queue_name, type="direct"), routing_key=queue_name,
                  queue_arguments={"x-max-priority": num_levels})
    with Connection(broker_url, connect_timeout=5) as connection:
        bound = queue(connection.default_channel)
        bound.declare()
        return bound.purge() or 0
