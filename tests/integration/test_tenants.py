"""Tenants and API keys against the real PostgreSQL and RabbitMQ (ELIS_AUTH=keys)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from elis import clock
from elis.api import batches as batch_routes
from elis.api import openai_format
from elis.api.app import create_app
from elis.storage import batches as batch_store
from elis.storage import jobs as job_store
from elis.storage.db import session_scope
from elis.storage.keys import KeyLimits, create_key, revoke_key
from tests.integration.test_batch_api import CHAT, batch_jobs, finish

pytestmark = pytest.mark.integration


def make_key(settings, tenant: str, admin: bool = False, **limits) -> str:
    with session_scope(settings.resolved_database_url) as session:
        return create_key(session, tenant=tenant, name=tenant, is_admin=admin, now=clock.now(),
                          limits=KeyLimits(**limits))[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def keyed(settings):
    keyed_settings = settings.model_copy(update={"auth": "keys"})
    with TestClient(create_app(keyed_settings)) as client:
        yield client, keyed_settings


def test_without_a_valid_key_every_job_route_answers_401_and_healthz_stays_open(keyed):
    client, settings = keyed
    for method, url in [("get", "/v1/jobs"), ("get", "/v1/jobs/abc"), ("delete", "/v1/jobs/abc")]:
        response = getattr(client, method)(url)
        assert response.status_code == 401 and "API key is required" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/jobs", json={"prompt": "hi"}, headers=bearer("elis_0123456789ab_nope")).status_code == 401
    key = make_key(settings, "acme")
    with session_scope(settings.resolved_database_url) as session:
        revoke_key(session, key_id=key.split("_")[1], now=clock.now())
    response = client.get("/v1/jobs", headers=bearer(key))
    assert response.status_code == 401 and "unknown or revoked" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_another_tenants_job_is_404_on_read_list_and_cancel_and_an_admin_sees_all(keyed):
    client, settings = keyed
    acme, globex, admin = make_key(settings, "acme"), make_key(settings, "globex"), make_key(settings, "ops", admin=True)
    acme_job = client.post("/v1/jobs", json={"prompt": "mine"}, headers=bearer(acme)).json()["id"]
    globex_job = client.post("/v1/jobs", json={"prompt": "theirs"}, headers=bearer(globex)).json()["id"]
    assert client.get(f"/v1/jobs/{acme_job}", headers=bearer(globex)).status_code == 404
    assert client.delete(f"/v1/jobs/{acme_job}", headers=bearer(globex)).status_code == 404
    assert [j["id"] for j in client.get("/v1/jobs", headers=bearer(globex)).json()["items"]] == [globex_job]
    assert client.get(f"/v1/jobs/{acme_job}", headers=bearer(acme)).json()["status"] == "queued"  # not cancelled
    assert {j["id"] for j in client.get("/v1/jobs", headers=bearer(admin)).json()["items"]} == {acme_job, globex_job}
    assert client.delete(f"/v1/jobs/{globex_job}", headers=bearer(admin)).json()["status"] == "cancelled"


def test_per_tenant_limits_answer_429_or_422_in_words(keyed):
    client, settings = keyed
    few = make_key(settings, "few", max_active_jobs=1)
    assert client.post("/v1/jobs", json={"prompt": "a", "max_tokens": 8}, headers=bearer(few)).status_code == 202
    response = client.post("/v1/jobs", json={"prompt": "b", "max_tokens": 8}, headers=bearer(few))
    assert response.status_code == 429 and "has 1 jobs queued or running, its limit" in response.json()["detail"]
    assert response.headers["retry-after"] == "5"
    small = make_key(settings, "small", max_tokens_in_flight=100)
    assert client.post("/v1/jobs", json={"prompt": "a", "max_tokens": 64}, headers=bearer(small)).status_code == 202
    response = client.post("/v1/jobs", json={"prompt": "b", "max_tokens": 64}, headers=bearer(small))
    assert response.status_code == 429 and "64 tokens in flight" in response.json()["detail"]
    short = make_key(settings, "short", max_tokens=16)
    response = client.post("/v1/jobs", json={"prompt": "a", "max_tokens": 32}, headers=bearer(short))
    assert response.status_code == 422 and "at most 16 for your key" in response.json()["detail"]


@pytest.mark.parametrize("limits", [{"max_active_jobs": 3}, {"max_tokens_in_flight": 3 * 8}],
                         ids=["active_jobs", "tokens_in_flight"])
def test_concurrent_submissions_of_one_tenant_never_pass_its_limit(keyed, monkeypatch, limits):
    client, settings = keyed
    num_submissions, limit = 8, 3
    key = make_key(settings, "burst", **limits)
    # Load the tokenizer and the predictor first (another tenant), so the burst's requests reach the limit check
    # together rather than one by one behind the first load.
    assert client.post("/v1/jobs", json={"prompt": "warm"}, headers=bearer(make_key(settings, "warm"))).status_code == 202
    real_usage = job_store.tenant_usage

    def slow_usage(session, *, tenant):
        # Widen the gap between the count and the insert, as a loaded database does: without a lock held from
        # the count to the commit, every submission counts the others' jobs as absent.
        usage = real_usage(session, tenant=tenant)
        time.sleep(0.2)
        return usage

    monkeypatch.setattr(job_store, "tenant_usage", slow_usage)
    start = threading.Barrier(num_submissions)

    def submit(i: int):
        start.wait()
        return client.post("/v1/jobs", json={"prompt": f"job {i}", "max_tokens": 8}, headers=bearer(key))

    with ThreadPoolExecutor(num_submissions) as pool:
        responses = list(pool.map(submit, range(num_submissions)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * limit + [429] * (num_submissions - limit)
    assert all("its limit" in r.json()["detail"] for r in responses if r.status_code == 429)
    with session_scope(settings.resolved_database_url) as session:
        assert real_usage(session, tenant="burst") == (limit, limit * 8)


def test_prompts_and_outputs_never_reach_the_logs_at_info(keyed, caplog):
    client, settings = keyed
    caplog.set_level(logging.INFO)
    secret_prompt = "the launch code is 7431-zebra"
    client.post("/v1/jobs", json={"prompt": secret_prompt}, headers=bearer(make_key(settings, "acme")))
    client.post("/v1/jobs", json={"prompt": secret_prompt, "max_tokens": 10**6})  # an error path too
    assert caplog.records and "7431-zebra" not in caplog.text


def test_the_keys_command_creates_lists_and_revokes_keys_stored_only_as_hashes(settings):
    env = {**os.environ, "ELIS_DATABASE_URL": settings.resolved_database_url}

    def elis(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "elis.cli", "keys", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    created = elis("create", "--tenant", "acme", "--max-active-jobs", "5")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    key_id = key.split("_")[1]
    listed = elis("list")
    assert key_id in listed.stdout and "acme" in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    assert elis("revoke", key_id).returncode == 0
    again = elis("revoke", key_id)
    assert again.returncode == 2 and "no live key" in again.stderr


def test_another_tenants_batch_and_files_are_404_and_its_batches_are_not_listed(keyed):
    client, settings = keyed
    acme, globex, admin = make_key(settings, "acme"), make_key(settings, "globex"), make_key(settings, "ops", admin=True)
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", ' \
           b'"body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}}\n'
    upload = client.post("/v1/files", files={"file": ("in.jsonl", line)}, data={"purpose": "batch"},
                         headers=bearer(acme))
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    assert client.get(f"/v1/files/{file_id}", headers=bearer(globex)).status_code == 404
    assert client.get(f"/v1/files/{file_id}/content", headers=bearer(globex)).status_code == 404
    # globex cannot start a batch on acme's file either
    refused = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
                          headers=bearer(globex))
    assert refused.status_code == 404
    batch = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
                        headers=bearer(acme)).json()
    assert client.get(f"/v1/batches/{batch['id']}", headers=bearer(globex)).status_code == 404
    assert client.post(f"/v1/batches/{batch['id']}/cancel", headers=bearer(globex)).status_code == 404
    assert client.get("/v1/batches", headers=bearer(globex)).json()["data"] == []
    assert [b["id"] for b in client.get("/v1/batches", headers=bearer(acme)).json()["data"]] == [batch["id"]]
    assert client.get(f"/v1/batches/{batch['id']}", headers=bearer(admin)).status_code == 200
    # The batch's request became a job of acme's (validation ran as the response's background task).
    acme_jobs = client.get("/v1/jobs", headers=bearer(acme)).json()["items"]
    assert [j["workload"] for j in acme_jobs] == [f"batch:{batch['id'][-12:]}"]
    assert client.get("/v1/jobs", headers=bearer(globex)).json()["items"] == []


def submit_batch(client, key: str, lines: list[tuple[str, int]]) -> dict:
    """Upload a chat batch of (custom_id, max_tokens) lines with `key` and start it; the batch after its
    validation (the response's background task) has run."""
    text = "\n".join(
        json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT,
                    "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}})
        for custom_id, max_tokens in lines
    )
    upload = client.post("/v1/files", files={"file": ("in.jsonl", text.encode())}, data={"purpose": "batch"},
                         headers=bearer(key))
    assert upload.status_code == 200, upload.text
    created = client.post("/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": CHAT},
                          headers=bearer(key))
    assert created.status_code == 200, created.text
    return created.json()


def finish_jobs_and_read_errors(client, settings, key: str, batch_id: str) -> dict[str, dict]:
    """End the batch's jobs as a worker would (done), then its error file's lines by custom_id."""
    jobs = batch_jobs(settings, batch_id)
    for job_id in jobs.values():
        finish(settings, job_id, "ok", 1)
    done = client.get(f"/v1/batches/{batch_id}", headers=bearer(key)).json()
    assert done["status"] == "completed", done
    content = client.get(f"/v1/files/{done['error_file_id']}/content", headers=bearer(key)).text
    return {line["custom_id"]: line["error"] for line in map(json.loads, content.splitlines())}


@pytest.fixture()
def keyed_short_wait(settings):
    """As `keyed`, but a batch request over its tenant's limit waits only 1 s for room."""
    keyed_settings = settings.model_copy(update={"auth": "keys", "batch_limit_wait_s": 1.0})
    with TestClient(create_app(keyed_settings)) as client:
        yield client, keyed_settings


def test_a_batchs_requests_are_admitted_with_the_limits_of_the_key_that_created_it(keyed_short_wait):
    client, settings = keyed_short_wait
    key = make_key(settings, "short", max_tokens=16, max_active_jobs=2)
    started = time.monotonic()
    batch = submit_batch(client, key, [("small", 8), ("long", 64), ("second", 8), ("third", 8)])
    # "long" asks more than the key's max_tokens: it fails at once. "third" would be the tenant's third active
    # job of two: it waits for room (batch_limit_wait_s, 1 s here), and fails when none comes.
    assert time.monotonic() - started >= 1.0
    assert sorted(batch_jobs(settings, batch["id"])) == ["second", "small"]
    errors = finish_jobs_and_read_errors(client, settings, key, batch["id"])
    assert sorted(errors) == ["long", "third"]
    assert "max_tokens is 64; this service allows at most 16 for your key" in errors["long"]["message"]
    assert "has 2 jobs queued or running, its limit" in errors["third"]["message"]
    assert "still so after waiting 1 s" in errors["third"]["message"]


def test_a_batch_request_over_its_tenants_limit_waits_for_room_and_then_runs(keyed):
    client, settings = keyed  # the default wait: an hour
    key = make_key(settings, "one-at-a-time", max_active_jobs=1)
    finished: list[str] = []
    seen_while_waiting: list[dict] = []

    def finish_the_first_job_once_the_second_waits():
        # As a worker would: the batch's first job ends while its second request waits for room.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not finished:
            with session_scope(settings.resolved_database_url) as session:
                jobs, _ = job_store.list_jobs(session, tenant="one-at-a-time")
            if jobs:
                time.sleep(1.5)  # the second request has been refused at least once by now
                with session_scope(settings.resolved_database_url) as session:
                    waiting = batch_store.get_batch(session, batch_id=jobs[0].batch_id)
                    seen_while_waiting.append(openai_format.batch_object(
                        waiting, batch_store.job_counts(session, batch_id=waiting.id)))
                finish(settings, jobs[0].id, "ok", 1)
                finished.append(jobs[0].custom_id)
            time.sleep(0.1)

    helper = threading.Thread(target=finish_the_first_job_once_the_second_waits)
    helper.start()
    batch = submit_batch(client, key, [("first", 8), ("second", 8)])
    helper.join()
    assert finished == ["first"]
    # While the second request waited, the batch read in_progress (its file had validated), one request counted.
    assert [(b["status"], b["request_counts"]["total"]) for b in seen_while_waiting] == [("in_progress", 1)]
    assert sorted(batch_jobs(settings, batch["id"])) == ["first", "second"]  # both ran: no line failed
    status = client.get(f"/v1/batches/{batch['id']}", headers=bearer(key)).json()
    assert status["status"] == "in_progress" and status["request_counts"]["failed"] == 0


def test_once_a_batchs_key_is_revoked_its_requests_not_yet_queued_fail_in_words(keyed, monkeypatch):
    client, settings = keyed
    key, admin = make_key(settings, "acme"), make_key(settings, "ops", admin=True)
    real_admit = batch_routes.admit

    def admit_then_revoke(*args, **kwargs):
        # The key is revoked while the batch is being queued: after its first request became a job.
        accepted = real_admit(*args, **kwargs)
        with session_scope(settings.resolved_database_url) as session:
            revoke_key(session, key_id=key.split("_")[1], now=clock.now())
        return accepted

    monkeypatch.setattr(batch_routes, "admit", admit_then_revoke)
    batch = submit_batch(client, key, [("first", 8), ("second", 8), ("third", 8)])
    assert list(batch_jobs(settings, batch["id"])) == ["first"]
    assert client.get(f"/v1/batches/{batch['id']}", headers=bearer(key)).status_code == 401
    errors = finish_jobs_and_read_errors(client, settings, admin, batch["id"])
    assert sorted(errors) == ["second", "third"]
    assert {e["code"] for e in errors.values()} == {"api_key_revoked"}
    assert all("the API key that created this batch was revoked" in e["message"] for e in errors.values())
