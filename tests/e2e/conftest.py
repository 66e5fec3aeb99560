"""The live stack for end-to-end tests: a real Celery worker running vLLM (float32, one slot), APIs per
policy, RabbitMQ and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from elis import launch
from tests.conftest import BROKER_URL, delete_queue, ensure_database, reset_schema, unique_queue

FINAL = {"done", "failed", "cancelled"}


class Stack:
    """A running worker plus lazily started APIs (one per policy), sharing one queue and database."""

    def __init__(self, tmp: Path, **worker_settings) -> None:
        self.db_url = ensure_database("elis_e2e")
        reset_schema(self.db_url)
        self.queue = unique_queue("elis.e2e")
        self.worker_metrics_port = launch.free_port()
        self.env = launch.elis_env(database_url=self.db_url, broker_url=BROKER_URL, queue_name=self.queue,
                                   reconcile_interval_s=1.0, worker_metrics_port=self.worker_metrics_port,
                                   **worker_settings)
        self.log_dir = tmp
        self.apis: dict[str, tuple[launch.Managed, str]] = {}
        self.worker_name = f"e2e-{self.queue[-8:]}"
        self.worker = launch.start_worker(self.env, tmp, node=self.worker_name)
        launch.wait_for_worker(self.worker)

    def api(self, policy: str) -> httpx.Client:
        if policy not in self.apis:
            port = launch.free_port()
            managed = launch.start_api({**self.env, "ELIS_POLICY": policy}, port, self.log_dir, name=f"api-{policy}")
            base = f"http://127.0.0.1:{port}"
            launch.wait_for_api(managed, base)
            self.apis[policy] = (managed, base)
        return httpx.Client(base_url=self.apis[policy][1], timeout=30)

    def stop_worker(self) -> None:
        self.worker.stop()

    def close(self) -> None:
        for managed, _ in self.apis.values():
            managed.stop()
        self.worker.stop()
        delete_queue(self.queue)


def metric_samples(text: str) -> dict[tuple, float]:
    """A Prometheus exposition's samples, keyed by (name, sorted label pairs)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_done(client: httpx.Client, job_id: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s: {job}")


def wait_until(predicate, timeout_s: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One worker for the e2e tier: one slot, float32 (windows exact), 50-token windows."""
    # The tests below check orders exactly: aging (on by default, its bound follows observed service times)
    # would let a starving short job overtake, and the quality guard (forced-length jobs teach it nothing)
    # would hold the order at FCFS, and so would the outcome guard once the session's jobs of several policies
    # add up to 50 judged ones. tests/integration and tests/unit cover all three. A lone job re-predicts only as the
    # guard's sample (Scheduler.should_repredict); sampling every window lets the tests see each window's re-prediction
    # (tests/unit/test_window_task.py covers the skipping).
    live = Stack(tmp_path_factory.mktemp("stack"), slots=1, dtype="float32", window_tokens=50, aging=False,
                 guard_start_in_fallback=False, repredict_sample_every=1, outcome_guard=False)
    yield live
    live.close()
