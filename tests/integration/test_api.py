"""The REST API against the real PostgreSQL and RabbitMQ (no worker: jobs stay queued)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

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
        ({"prompt": "hi", "max_tokens": 16, "target_output_tokens": 20}, "target_output_tokens is 20, above max_tokens"),
    ],
)
def test_bad_input_gets_a_422_that_says_what_is_wrong(client, body, message):
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_a_forced_length_job_keeps_the_cap_its_client_gave_or_else_its_length(client, settings):
    # A replay of a natural job (max_tokens 512) forced to its recorded 30 tokens: the cap stays 512, so its
    # predictions are clipped where the natural job's were, not at the answer.
    replay = client.post("/v1/jobs", json={"prompt": "Name a river.", "max_tokens": 512, "target_output_tokens": 30})
    trace = client.post("/v1/jobs", json={"prompt": "Name a lake.", "target_output_tokens": 30})
    assert replay.status_code == trace.status_code == 202
    assert client.get(replay.json()["url"]).json()["max_tokens"] == 512
    assert client.get(trace.json()["url"]).json()["max_tokens"] == 30
    drain(settings)


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
        "model": "SmolLM2-135M-Instruct (bundled)", "max_model_len": settings.max_model_len,
        "max_tokens_limit": settings.max_tokens_limit,
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
    with session_scope(settings.resolved_database_url) as session:  # as if it had arrived and waited a while
        waited = clock.now() - timedelta(seconds=30)
        session.execute(update(Job).values(arrival_at=waited, enqueued_at=waited))
    counts = reconcile_once(settings, build_scheduler(settings))
    assert (counts["republished"], counts["promoted"], counts["republished_lost"]) == (1, 0, 0)
    # It waited 30 s, past the aging bound (floor 10 s with no finished jobs): one message, at the top level.
    assert drain(settings) == [(job_id, 0, settings.num_priority_levels - 1)]
    assert reconcile_once(settings, build_scheduler(settings))["republished"] == 0


def test_aging_republishes_a_starving_job_once_at_the_reserved_top_level(client, settings):
    job_id = client.post("/v1/jobs", json={"prompt": "wait for me"}).json()["id"]
    drain(settings)
    aged = settings.model_copy(update={"max_wait_s": 10.0})
    configure_celery(aged)
    with session_scope(settings.resolved_database_url) as session:  # arrived and queued 11 s ago
        waited = clock.now() - timedelta(seconds=11)
        session.execute(update(Job).values(arrival_at=waited, enqueued_at=waited))
    assert reconcile_once(aged, build_scheduler(aged))["promoted"] == 1
    assert reconcile_once(aged, build_scheduler(aged))["promoted"] == 0
    assert drain(settings) == [(job_id, 0, settings.num_priority_levels - 1)]


def test_aging_promotes_a_job_that_starves_by_its_whole_time_though_its_last_wait_was_short(client, settings):
    """Aging counts from arrival: a job in the system 11 s, back in the queue 1 s ago at a low level (it yielded),
    starves by a 10-s bound and is promoted; one already waiting at the top level is not published again."""
    job_id = client.post("/v1/jobs", json={"prompt": "wait for me"}).json()["id"]
    drain(settings)
    aged = settings.model_copy(update={"max_wait_s": 10.0})
    configure_celery(aged)
    top = settings.num_priority_levels - 1
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).values(arrival_at=clock.now() - timedelta(seconds=11),
                                           enqueued_at=clock.now() - timedelta(seconds=1), priority=top))
    assert reconcile_once(aged, build_scheduler(aged))["promoted"] == 0  # at the top level already
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).values(priority=2))
    assert reconcile_once(aged, build_scheduler(aged))["promoted"] == 1
    assert drain(settings) == [(job_id, 0, top)]


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        (("post", "/v1/jobs", {"json": {"prompt": "a\u0000b"}}), "prompt: contains a NUL character"),
        (("post", "/v1/jobs", {"json": {"prompt": "hi", "workload": "w\u0000"}}), "workload: contains a NUL"),
        (("post", "/v1/jobs", {"content": b'{"prompt": "bad \\ud800 half"}',
                                "headers": {"content-type": "application/json"}}), "prompt: contains a lone surrogate"),
        (("post", "/v1/jobs", {"json": {"messages": [{"role": "user", "content": "x\u0000"}]}}),
         "messages.0.content: contains a NUL"),
        (("post", "/v1/jobs", {"json": {"prompt": "hi", "stop": ["ok\u0000"]}}), "stop: contains a NUL"),
        (("post", "/v1/jobs", {"json": {"prompt": "x" * 32_001}}), "prompt: String should have at most 32000"),
        (("post", "/v1/jobs", {"json": {"messages": [{"role": "user", "content": "x"}] * 65}}), "messages:"),
        (("post", "/v1/jobs", {"json": {"prompt": "hi", "stop": ["s"] * 9}}), "stop:"),
        (("post", "/v1/jobs", {"json": {"prompt": "hi", "stop_token_ids": [49152, 10**6]}}),
         "stop_token_ids: [49152, 1000000] are outside the model's vocabulary"),
        (("get", "/v1/jobs/%00", {}), "job_id: a job id is 1-64 letters"),
        (("delete", "/v1/jobs/%00", {}), "job_id: a job id is 1-64 letters"),
        (("get", "/v1/jobs?workload=%00", {}), "workload: contains a NUL"),
        (("get", "/v1/jobs?policy=%00", {}), "policy:"),
        (("get", f"/v1/jobs?offset={10**20}", {}), "offset: Input should be less than or equal to 1000000000"),
    ],
)
def test_nul_surrogates_oversized_lists_and_unknown_token_ids_get_a_422_that_says_what_to_fix(client, request_args,
                                                                                                message):
    method, url, kwargs = request_args
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == 422, response.text
    body = response.json()
    assert message in body["detail"] and body["errors"], body


def test_a_body_past_the_limit_is_refused_with_413_before_it_is_read(client, settings):
    huge = b'{"prompt": "' + b"x" * (settings.max_body_bytes + 1) + b'"}'
    response = client.post("/v1/jobs", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    def chunks():  # no Content-Length: the streamed bytes are counted
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b"x" * 1024

    response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["errors"]


def test_every_error_the_api_answers_is_in_its_openapi_spec_with_one_body_shape(client):
    spec = client.get("/openapi.json").json()
    documented = {(path, method): set(op["responses"]) for path, ops in spec["paths"].items()
                  for method, op in ops.items()}
    assert {"400", "413", "422", "429", "503"} <= documented[("/v1/jobs", "post")]
    assert {"404", "422", "503"} <= documented[("/v1/jobs/{job_id}", "get")]
    assert {"404", "409", "422", "503"} <= documented[("/v1/jobs/{job_id}", "delete")]
    assert {"422", "503"} <= documented[("/v1/jobs", "get")]
    error_refs = {op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                  for ops in spec["paths"].values() for op in ops.values() for code in op["responses"]
                  if code[0] in "45" and op["operationId"] != "healthz_healthz_get"}
    assert error_refs == {"#/components/schemas/ErrorBody"}
    assert client.get("/v1/nothing-here").json() == {"detail": "Not Found", "errors": ["Not Found"]}


def test_the_admission_wait_is_counted_from_the_requests_receipt(client, settings, monkeypatch):
    """The receipt is taken before tokenizing (here made 0.3 s slow) and the store: the job's admission wait
    holds that time, and its JCT, once it finishes, counts from the receipt."""
    from elis.api import admission
    from elis.storage import jobs as store

    tokenize = admission._tokenize

    def slow_tokenize(*args, **kwargs):
        time.sleep(0.3)
        return tokenize(*args, **kwargs)

    monkeypatch.setattr(admission, "_tokenize", slow_tokenize)
    accepted = client.post("/v1/jobs", json={"prompt": "Name a lake.", "max_tokens": 8}).json()
    job = client.get(accepted["url"]).json()
    received, arrival = (datetime.fromisoformat(job[key]) for key in ("received_at", "arrival_at"))
    assert 0.3 <= job["metrics"]["admission_s"] == pytest.approx((arrival - received).total_seconds(), abs=1e-3)
    drain(settings)
    with session_scope(settings.resolved_database_url) as session:  # a queued job ends at once when cancelled
        ended = store.request_cancel(session, job_id=accepted["id"], now=arrival + timedelta(seconds=2))
        assert ended.status == "cancelled"
        assert ended.jct_s == pytest.approx(2.0 + job["metrics"]["admission_s"], abs=1e-3)


@pytest.fixture()
def ordered_client(settings):
    """An API whose order reads the predictions from the start: ISRTF, trusted before the guard has judged."""
    trusted = settings.model_copy(update={"policy": "isrtf", "guard_start_in_fallback": False})
    with TestClient(create_app(trusted)) as test_client:
        yield test_client


def test_with_a_slot_free_a_job_is_queued_before_its_prediction_which_comes_after(ordered_client, settings):
    """A live worker has a slot free for it: the job starts at once whatever its score, so the API
    stores and publishes it without the prediction and stores that when made. Once a job waits, the next one is
    predicted before it is stored, as its score orders it."""
    from elis.storage import jobs as store
    from elis.storage.profiles import record_worker_profile

    client = ordered_client
    client.app.state.predictor.warm()  # the model's first load is not what this measures
    with session_scope(settings.resolved_database_url) as session:
        record_worker_profile(session, worker="w1", slots=4, prefill_s_per_token=1e-3, cached_prefill_s_per_token=0.0,
                              decode_step_s=0.03, prefill_weight=0.1, now=clock.now())
    first = client.post("/v1/jobs", json={"prompt": "Name a lake.", "max_tokens": 64}).json()
    assert first["initial_prediction"] is None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with session_scope(settings.resolved_database_url) as session:
            initial, latest, prior_score, _ = store.stored_admission(session, job_id=first["id"])
        if initial is not None:
            break
        time.sleep(0.1)
    assert initial is not None and 0 <= initial <= 64 and latest == initial
    wait_stored = time.monotonic() + 10  # the counter moves just after the commit the row shows
    while client.app.state.deferred_predictions.stored < 1 and time.monotonic() < wait_stored:
        time.sleep(0.05)
    assert client.app.state.deferred_predictions.stored == 1
    # With the first still queued (no worker runs here) the four slots leave room for three more; then each
    # next job is predicted before it is stored, as its score orders it.
    later = [client.post("/v1/jobs", json={"prompt": f"Name {n} rivers.", "max_tokens": 64}).json()
             for n in range(4)]
    assert [job["initial_prediction"] is None for job in later] == [True, True, True, False]
    drain(settings)


@pytest.mark.parametrize(("policy", "ordering", "deferred"), [
    ("fcfs", "fcfs", True),
    ("sjf", "fcfs (guard fallback)", True),
    # ISRTF's worker re-predicts from the prior's score stored with the admission: it keeps it, fallback or not.
    ("isrtf", "fcfs (guard fallback)", False),
])
def test_where_the_order_does_not_read_predictions_no_job_waits_for_its_own(settings, policy, ordering, deferred):
    """No live worker has a slot (none is known), but the order in force is FCFS (the policy, or SJF while the
    guard has not judged the predictor): a prediction cannot change where a job waits, so every job is queued
    first and its shadow prediction, the guard's evidence, is stored after."""
    from elis.storage import jobs as store

    with TestClient(create_app(settings.model_copy(update={"policy": policy}))) as client:
        client.app.state.predictor.warm()
        accepted = [client.post("/v1/jobs", json={"prompt": f"Name {n} lakes.", "max_tokens": 64}).json()
                    for n in range(3)]
        assert [job["initial_prediction"] is None for job in accepted] == [deferred] * 3
        assert {job["ordering"] for job in accepted} == {ordering}
        deadline = time.monotonic() + 60
        stored: list = []
        while time.monotonic() < deadline:
            with session_scope(settings.resolved_database_url) as session:
                stored = [store.stored_admission(session, job_id=job["id"])[0] for job in accepted]
            if all(value is not None for value in stored):
                break
            time.sleep(0.1)
        assert all(value is not None and 0 <= value <= 64 for value in stored)
    drain(settings)


def test_when_too_many_predictions_wait_an_admission_predicts_its_own_job(settings, monkeypatch):
    """Back-pressure: the background thread's queue is full (here: refuses every job), so the request predicts its
    job itself after storing it; the job is queued first all the same and never goes without its prediction."""
    from elis.storage import jobs as store

    with TestClient(create_app(settings.model_copy(update={"policy": "fcfs"}))) as client:
        client.app.state.predictor.warm()
        monkeypatch.setattr(client.app.state.deferred_predictions, "submit", lambda job: False)
        accepted = client.post("/v1/jobs", json={"prompt": "Name a sea.", "max_tokens": 64}).json()
        assert accepted["initial_prediction"] is None  # stored and published before it was predicted
        with session_scope(settings.resolved_database_url) as session:  # and predicted before the answer
            initial = store.stored_admission(session, job_id=accepted["id"])[0]
        assert initial is not None and 0 <= initial <= 64
        assert client.app.state.deferred_predictions.stored == 1
    drain(settings)


def test_a_burst_onto_an_idle_service_defers_only_as_many_jobs_as_there_are_free_slots(ordered_client, settings):
    """Concurrent admissions check for a free slot and store their job under one lock: with two slots free, two
    of six simultaneous jobs go unpredicted to the queue, and the rest are predicted before they are stored
    (else every one of them would be published unpredicted, at the top level)."""
    from concurrent.futures import ThreadPoolExecutor

    from elis.api.admission import admit
    from elis.api.auth import Caller
    from elis.api.schemas import JobCreate
    from elis.storage.profiles import record_worker_profile

    client = ordered_client
    settings = client.app.state.settings
    client.app.state.predictor.warm()
    with session_scope(settings.resolved_database_url) as session:
        record_worker_profile(session, worker="w1", slots=2, prefill_s_per_token=1e-3, cached_prefill_s_per_token=0.0,
                              decode_step_s=0.03, prefill_weight=0.1, now=clock.now())
    caller = Caller(tenant="local", is_admin=True, max_active_jobs=100, max_tokens_in_flight=10**6, max_tokens=1024)
    bodies = [JobCreate(prompt=f"Name {n} birds.", max_tokens=32) for n in range(6)]
    with ThreadPoolExecutor(6) as pool:
        accepted = list(pool.map(lambda body: admit(client.app.state, settings, caller, body), bodies))
    assert sorted(a.initial_prediction is None for a in accepted) == [False] * 4 + [True] * 2
    drain(settings)
