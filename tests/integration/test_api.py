"""The REST API against the real PostgreSQL and RabbitMQ (no worker: jobs stay queued)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from elis import clock
from elis.api.app import create_app
from elis.storage.db import session_scope
from elis.storage.models import Job
from elis.tasks.app import configure_celery
from elis.tasks.reconcile import reconcile_once
from elis.tasks.scheduling_setup import build_scheduler
from tests.integration.broker import drain

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_a_submitted_job_is_stored_queued_and_published_at_the_top_non_aged_level(client, settings):
    response = client.post("/v1/jobs", json={"prompt": "Name three rivers.", "max_tokens": 64, "workload": "w1"})
    assert response.status_code == 202
    accepted = response.json()
    job = client.get(accepted["url"]).json()
    assert job["status"] == "queued" and job["max_tokens"] == 64 and job["num_prompt_tokens"] > 5
    assert job["text"] == "" and job["metrics"]["jct_s"] is None
    # MLFQ: no tokens received yet, so the highest level below the one reserved for aged jobs.
    assert drain(settings) == [(accepted["id"], 0, settings.num_priority_levels - 2)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "   "}, "the prompt is empty"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 100000}, "at most 1024"),
        ({"prompt": "hi", "temperature": "hot"}, "temperature"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, "exactly one of"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"prompt": "word " * 3000}, "exceeds the model's context"),
        ({"prompt": "hi", "colour": "red"}, "colour"),
    ],
)
def test_bad_input_gets_a_422_that_says_what_is_wrong(client, body, message):
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_a_body_that_is_not_json_is_refused_in_words(client):
    response = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]


def test_unknown_jobs_are_404_and_listing_filters_by_workload_and_status(client):
    assert client.get("/v1/jobs/nope").status_code == 404
    ids = [client.post("/v1/jobs", json={"prompt": f"p{i}", "workload": "mine"}).json()["id"] for i in range(3)]
    client.post("/v1/jobs", json={"prompt": "other", "workload": "theirs"})
    listed = client.get("/v1/jobs", params={"workload": "mine"}).json()
    assert listed["total"] == 3 and [item["id"] for item in listed["items"]] == ids
    assert client.get("/v1/jobs", params={"status": "done"}).json()["total"] == 0
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_cancelling_a_queued_job_ends_it_at_once(client):
    job_id = client.post("/v1/jobs", json={"prompt": "hi"}).json()["id"]
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{job_id}").json()["finish_reason"] == "cancelled"


def test_healthz_reports_each_dependency(client, settings):
    assert client.get("/healthz").json() == {
        "status": "ok", "database": "ok", "broker": "ok", "policy": "mlfq", "ordering": "mlfq",
        "guard": "no evidence yet: fewer than 20 finished jobs with predictions",
        "model": "SmolLM2-135M-Instruct (bundled)",
    }
    broken = settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:1//"})
    with TestClient(create_app(broken)) as down:
        response = down.get("/healthz")
    assert response.status_code == 503 and response.json()["broker"].startswith("unreachable")


def test_a_job_whose_publish_failed_is_kept_and_the_reconciler_publishes_it(settings):
    broken = settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:1//"})
    with TestClient(create_app(broken)) as down:
        response = down.post("/v1/jobs", json={"prompt": "keep me"})
    assert response.status_code == 202
    job_id = response.json()["id"]
    configure_celery(settings)
    with session_scope(settings.resolved_database_url) as session:  # as if it had waited a while
        session.execute(update(Job).values(enqueued_at=clock.now() - timedelta(seconds=30)))
    counts = reconcile_once(settings, build_scheduler(settings))
    assert counts == {"republished": 1, "promoted": 0}
    # It waited 30 s, past the aging bound (floor 10 s with no finished jobs): one message, at the top level.
    assert drain(settings) == [(job_id, 0, settings.num_priority_levels - 1)]
    assert reconcile_once(settings, build_scheduler(settings))["republished"] == 0


def test_aging_republishes_a_starving_job_once_at_the_reserved_top_level(client, settings):
    job_id = client.post("/v1/jobs", json={"prompt": "wait for me"}).json()["id"]
    drain(settings)
    aged = settings.model_copy(update={"max_wait_s": 10.0})
    configure_celery(aged)
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).values(enqueued_at=clock.now() - timedelta(seconds=11)))
    assert reconcile_once(aged, build_scheduler(aged))["promoted"] == 1
    assert reconcile_once(aged, build_scheduler(aged))["promoted"] == 0
    assert drain(settings) == [(job_id, 0, settings.num_priority_levels - 1)]
