"""End to end: HTTP -> RabbitMQ -> Celery worker running vLLM (SmolLM2, CPU) -> PostgreSQL."""

from __future__ import annotations

import pytest

from elis.config import Settings
from elis.tasks.app import configure_celery
from elis.tasks.publish import publish_window
from tests.e2e.conftest import wait_done, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMPTS = ["Give me three tips for staying healthy.", "What is the capital of France?", "Write a haiku about autumn."]


def test_jobs_submitted_over_http_all_finish_with_text_and_consistent_metrics(stack):
    with stack.api("mlfq") as client:
        ids = [client.post("/v1/jobs", json={"prompt": p, "max_tokens": 120}).json()["id"] for p in PROMPTS]
        jobs = [wait_done(client, job_id) for job_id in ids]
    for job in jobs:
        assert job["status"] == "done", job
        assert job["text"].strip()
        assert job["finish_reason"] in {"eos", "length"}
        assert job["num_output_tokens"] == sum(w["num_tokens"] for w in job["windows"]) <= 120
        assert [w["index"] for w in job["windows"]] == list(range(job["num_windows"]))
        assert all(w["num_tokens"] <= 50 for w in job["windows"])
        metrics = job["metrics"]
        assert 0 <= metrics["queuing_delay_s"] < metrics["jct_s"]
        assert metrics["service_s"] <= metrics["jct_s"]
        assert job["arrival_at"] <= job["first_started_at"] <= job["finished_at"]


def test_the_worker_measures_its_engine_at_start_up_and_the_api_orders_by_that_prefill_weight(stack):
    from elis.storage.db import session_scope
    from elis.storage.models import WorkerProfile

    # The stack's worker (other e2e tests start workers of their own on the same database).
    with session_scope(stack.db_url) as session:
        row = session.get(WorkerProfile, stack.worker_name)
        assert row is not None, "the stack's worker recorded no engine profile (see its log)"
        slots, prefill_s, step_s, weight = row.slots, row.prefill_s_per_token, row.decode_step_s, row.prefill_weight
    assert slots == 1 and 0 < prefill_s < step_s < 5.0 and weight == pytest.approx(prefill_s * slots / step_s)
    with stack.api("sjf") as client:
        wait_until(lambda: client.get("/v1/stats").json()["prefill_weight_source"].startswith("measured by"),
                   timeout_s=60, what="the API taking the workers' measured prefill weight")
        stats = client.get("/v1/stats").json()
    with session_scope(stack.db_url) as session:  # the median of the live workers' weights, this one's among them
        live = sorted(p.prefill_weight for p in session.query(WorkerProfile).all())
    assert weight in live and min(live) - 1e-4 <= stats["prefill_weight"] <= max(live) + 1e-4, (stats, live)


def run_long_then_short(stack, policy: str) -> tuple[dict, dict]:
    """A 300-token job starts alone on the one slot; a 20-token job arrives while it runs."""
    with stack.api(policy) as client:
        long_id = client.post("/v1/jobs", json={"prompt": "Tell a long story.", "target_output_tokens": 300}).json()["id"]
        wait_until(lambda: client.get(f"/v1/jobs/{long_id}").json()["status"] == "running", what="long job running")
        short_id = client.post("/v1/jobs", json={"prompt": "Say yes.", "target_output_tokens": 20}).json()["id"]
        return wait_done(client, long_id), wait_done(client, short_id)


def test_under_mlfq_a_short_job_arriving_during_a_long_one_finishes_first(stack):
    long_job, short_job = run_long_then_short(stack, "mlfq")
    assert (long_job["num_output_tokens"], short_job["num_output_tokens"]) == (300, 20)
    assert short_job["finished_at"] < long_job["finished_at"]
    assert long_job["num_windows"] == 6  # it yielded at every boundary


def test_under_fcfs_the_long_job_keeps_its_slot_and_finishes_first(stack):
    long_job, short_job = run_long_then_short(stack, "fcfs")
    assert long_job["finished_at"] < short_job["finished_at"]
    assert short_job["first_started_at"] >= long_job["finished_at"]
    assert short_job["metrics"]["queuing_delay_s"] > 0


def test_a_redelivered_or_duplicated_window_message_does_not_append_tokens_twice(stack):
    with stack.api("mlfq") as client:
        job_id = client.post("/v1/jobs", json={"prompt": "Count to five.", "target_output_tokens": 120}).json()["id"]
        before = wait_done(client, job_id)
        settings = Settings(broker_url=stack.env["ELIS_BROKER_URL"], queue_name=stack.queue)
        configure_celery(settings)
        for window in range(before["num_windows"] + 1):
            publish_window(settings, job_id=job_id, window_index=window, priority=9)
        # A marker job queued behind the duplicates (lower priority): once it is done, they were consumed.
        # The marker is a replay of a natural job with max_tokens 64 that stopped after one token: it keeps the
        # cap of 64 and still generates exactly one token, ending as the natural job did (eos).
        marker = client.post("/v1/jobs", json={"prompt": "ok", "max_tokens": 64, "target_output_tokens": 1}).json()["id"]
        marked = wait_done(client, marker)
        assert (marked["max_tokens"], marked["num_output_tokens"], marked["finish_reason"]) == (64, 1, "eos")
        after = client.get(f"/v1/jobs/{job_id}").json()
    assert after["num_output_tokens"] == before["num_output_tokens"] == 120
    assert after["num_windows"] == before["num_windows"] == 3
    assert after["text"] == before["text"]
