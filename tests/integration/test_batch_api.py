"""The OpenAI-style Files and Batch APIs against the real PostgreSQL and RabbitMQ. No worker runs: the test
finishes the batch's jobs through the same storage calls a worker makes."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from elis import clock
from elis.api.app import create_app
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.models import Job
from tests.integration.broker import drain

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"


@pytest.fixture()
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def chat_line(custom_id: str, content: str = "Name a river.", **extra) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 16, **extra}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body})


def upload(client, text: str) -> str:
    response = client.post(
        "/v1/files", files={"file": ("in.jsonl", text.encode())}, data={"purpose": "batch"}
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def start_batch(client, text: str, endpoint: str = CHAT) -> dict:
    file_id = upload(client, text)
    response = client.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "validating"
    return client.get(f"/v1/batches/{response.json()['id']}").json()


def finish(settings, job_id: str, text: str, num_tokens: int) -> None:
    """What a worker does to a job that ends in one window."""
    url = settings.resolved_database_url
    with session_scope(url) as session:
        job = store.claim_window(
            session, job_id=job_id, window_index=0, worker="w", redelivered=False, now=clock.now()
        )
        assert job is not None
    now = clock.now()
    commit = store.WindowCommit(
        job_id=job_id,
        window_index=0,
        worker="w",
        new_ids=list(range(num_tokens)),
        output_text=text,
        started_at=now,
        ended_at=now,
        compute_s=0.1,
        predict_s=None,
        enqueued_at=None,
        prediction_before=None,
        prediction_after=None,
        finish_reason="eos",
    )
    with session_scope(url) as session:
        assert store.commit_window(session, commit=commit) is not None


def batch_jobs(settings, batch_id: str) -> dict[str, str]:
    with session_scope(settings.resolved_database_url) as session:
        return {job.custom_id: job.id for job in session.query(Job).filter(Job.batch_id == batch_id)}


def test_files_upload_and_read_back_byte_for_byte(client):
    text = chat_line("a") + "\n"
    file_id = upload(client, text)
    meta = client.get(f"/v1/files/{file_id}").json()
    assert meta["object"] == "file" and meta["purpose"] == "batch" and meta["bytes"] == len(text.encode())
    assert client.get(f"/v1/files/{file_id}/content").content == text.encode()
    assert client.get("/v1/files/file-nope").status_code == 404
    refused = client.post("/v1/files", files={"file": ("x.jsonl", b"{}")}, data={"purpose": "fine-tune"})
    assert refused.status_code == 400 and "purpose" in refused.json()["detail"]


def test_a_batch_queues_one_job_per_good_line_and_writes_openai_output_and_error_files(client, settings):
    text = "\n".join([chat_line("a"), chat_line("b", max_tokens=99999), chat_line("c", "Say hi.")])
    batch = start_batch(client, text)
    assert batch["status"] == "in_progress"
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 1}
    jobs = batch_jobs(settings, batch["id"])
    assert sorted(jobs) == ["a", "c"]
    assert sorted(m[0] for m in drain(settings)) == sorted(jobs.values())

    finish(settings, jobs["a"], "The Nile.", 4)
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "in_progress"
    finish(settings, jobs["c"], "Hi!", 2)
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed" and done["completed_at"] >= done["in_progress_at"]
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}

    outputs = [
        json.loads(x) for x in client.get(f"/v1/files/{done['output_file_id']}/content").text.splitlines()
    ]
    assert [o["custom_id"] for o in outputs] == ["a", "c"]
    first = outputs[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["request_id"] == jobs["a"]
    body = first["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "The Nile."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 4

    errors = [
        json.loads(x) for x in client.get(f"/v1/files/{done['error_file_id']}/content").text.splitlines()
    ]
    assert len(errors) == 1 and errors[0]["custom_id"] == "b" and errors[0]["response"] is None
    assert errors[0]["error"]["line"] == 2 and "at most 1024" in errors[0]["error"]["message"]


def test_a_file_that_is_not_jsonl_fails_the_batch_at_validation_naming_the_line(client, settings):
    batch = start_batch(client, chat_line("a") + "\nthis is not json\n")
    assert batch["status"] == "failed"
    error = batch["errors"]["data"][0]
    assert error["code"] == "invalid_jsonl" and error["line"] == 2 and "line 2" in error["message"]
    assert batch_jobs(settings, batch["id"]) == {}


def test_cancelling_keeps_finished_requests_in_the_output_and_cancels_the_rest(client, settings):
    batch = start_batch(client, "\n".join(chat_line(c) for c in "abc"))
    jobs = batch_jobs(settings, batch["id"])
    finish(settings, jobs["a"], "done early", 3)
    cancelled = client.post(f"/v1/batches/{batch['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
    assert cancelled["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    outputs = client.get(f"/v1/files/{cancelled['output_file_id']}/content").text.splitlines()
    assert [json.loads(x)["custom_id"] for x in outputs] == ["a"]
    errors = [
        json.loads(x) for x in client.get(f"/v1/files/{cancelled['error_file_id']}/content").text.splitlines()
    ]
    assert sorted(e["custom_id"] for e in errors) == ["b", "c"]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}


def test_completions_batches_answer_text_completion_objects_and_batches_list_newest_first(client, settings):
    line = json.dumps(
        {
            "custom_id": "t",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "m", "prompt": "Once upon a time", "max_tokens": 8},
        }
    )
    older = start_batch(client, chat_line("x"))
    batch = start_batch(client, line, endpoint="/v1/completions")
    finish(settings, batch_jobs(settings, batch["id"])["t"], " there was a river.", 5)
    done = client.get(f"/v1/batches/{batch['id']}").json()
    body = json.loads(client.get(f"/v1/files/{done['output_file_id']}/content").text)["response"]["body"]
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == " there was a river."
    listed = client.get("/v1/batches", params={"limit": 1}).json()
    assert [b["id"] for b in listed["data"]] == [batch["id"]] and listed["has_more"]
    after = client.get("/v1/batches", params={"limit": 1, "after": batch["id"]}).json()
    assert [b["id"] for b in after["data"]] == [older["id"]]
    assert client.get("/v1/batches/batch_nope").status_code == 404


def test_a_batch_whose_admitting_process_stopped_is_resumed_without_queueing_a_request_twice(
        client, settings, monkeypatch):
    from datetime import timedelta

    from sqlalchemy import update

    from elis.api import batches as batch_routes
    from elis.storage import batches as batch_store
    from elis.storage.models import Batch

    # The API that took the batch "stops" after queueing its first request: its background admission is
    # replaced by the first step alone, and its heartbeat then ages past the stale bound.
    def first_request_only(state, settings_, batch_id):
        with session_scope(settings_.resolved_database_url) as session:
            assert batch_store.claim_admission(session, batch_id=batch_id, now=clock.now(),
                                               stale_before=clock.now())
            content = batch_store.get_file(
                session, file_id=batch_store.get_batch(session, batch_id=batch_id).input_file_id).content
        requests, _ = batch_routes.parse_batch(content, CHAT)
        batch_routes.admit_batch_request(state, settings_, batch_id, requests[0])

    monkeypatch.setattr(batch_routes, "validate_and_queue", first_request_only)
    batch = start_batch(client, "\n".join([chat_line("a"), chat_line("b"), chat_line("x", max_tokens=99999),
                                           chat_line("c")]))
    monkeypatch.undo()
    # Its file validated and a request is queued: the batch reads in_progress while the rest wait to be queued.
    assert batch["status"] == "in_progress" and batch["in_progress_at"] is None
    assert list(batch_jobs(settings, batch["id"])) == ["a"]
    # A live heartbeat is left alone: the admission is another process's.
    assert batch_routes.resume_stalled_admissions(client.app.state, settings) == []
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Batch).where(Batch.id == batch["id"])
                        .values(admission_heartbeat_at=clock.now() - timedelta(seconds=300)))
    assert batch_routes.resume_stalled_admissions(client.app.state, settings) == [batch["id"]]
    resumed = client.get(f"/v1/batches/{batch['id']}").json()
    assert resumed["status"] == "in_progress"
    assert resumed["request_counts"] == {"total": 4, "completed": 0, "failed": 1}
    jobs = batch_jobs(settings, batch["id"])
    assert sorted(jobs) == ["a", "b", "c"]  # "a" once: the resumed admission skipped it
    with session_scope(settings.resolved_database_url) as session:
        line_errors = batch_store.get_batch(session, batch_id=batch["id"]).line_errors
    assert [(e["line"], e["custom_id"]) for e in line_errors] == [(3, "x")]  # max_tokens over the limit
    assert batch_routes.resume_stalled_admissions(client.app.state, settings) == []  # done: nothing to resume
