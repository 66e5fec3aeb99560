"""A worker killed mid-job: RabbitMQ redelivers the unacknowledged message and another worker resumes the
job from its last committed window, with no window run twice."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from elis import launch
from tests.conftest import delete_queue, unique_queue
from tests.e2e.conftest import wait_done, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_job_survives_its_worker_being_killed_mid_window(stack, tmp_path):
    queue = unique_queue("elis.crash")
    # Its own queue; no metrics port (the session worker holds the stack's, and two workers cannot share one).
    env = {**stack.env, "ELIS_QUEUE_NAME": queue, "ELIS_SLOTS": "1", "ELIS_POLICY": "fcfs",
           "ELIS_WORKER_METRICS_PORT": "0"}
    port = launch.free_port()
    api = launch.start_api(env, port, tmp_path, name="api-crash")
    victim = launch.start_worker(env, tmp_path, name="victim", node="victim")
    rescuer = None
    try:
        base = f"http://127.0.0.1:{port}"
        launch.wait_for_api(api, base)
        launch.wait_for_worker(victim)
        with httpx.Client(base_url=base, timeout=30) as client:
            job_id = client.post("/v1/jobs", json={"prompt": "Write a long essay.", "target_output_tokens": 400}).json()["id"]
            wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["num_windows"] >= 1, what="a first window")
            os.killpg(victim.process.pid, signal.SIGKILL)  # no warm shutdown, no ack
            victim.process.wait(timeout=30)
            killed_at = client.get(f"/v1/jobs/{job_id}").json()
            assert killed_at["status"] == "running" and killed_at["num_output_tokens"] < 400
            rescuer = launch.start_worker(env, tmp_path, name="rescuer", node="rescuer")
            launch.wait_for_worker(rescuer)
            ready = time.monotonic()
            done_before = killed_at["num_windows"]
            wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["num_windows"] > done_before,
                       what="a window after the kill")
            recovery_s = time.monotonic() - ready
            job = wait_done(client, job_id)
            print(f"\nworker SIGKILL: the rescuer ran the job's next window {recovery_s:.1f} s after it was ready")
    finally:
        for managed in (api, victim, rescuer):
            if managed is not None:
                managed.stop()
        delete_queue(queue)
    assert job["status"] == "done" and job["num_output_tokens"] == 400
    assert [w["index"] for w in job["windows"]] == list(range(8))
    assert {w["worker"] for w in job["windows"]} == {"victim", "rescuer"}
