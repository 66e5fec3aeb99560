"""Recovery against real services: the database away (a private PostgreSQL cluster, stopped and started),
a purged queue, a worker that vanished, a job that cannot progress. A job is never lost."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from celery.exceptions import Reject
from fastapi.testclient import TestClient
from sqlalchemy import update

from elis import clock
from elis.api.app import create_app
from elis.config import Settings
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.migrate import upgrade
from elis.storage.models import Job
from elis.tasks import recovery
from elis.tasks.app import configure_celery
from elis.tasks.contracts import Engine, WindowOutput
from elis.tasks.reconcile import reconcile_once
from elis.tasks.runtime import WorkerRuntime, install_runtime
from elis.tasks.scheduling_setup import build_scheduler
from elis.tasks.windows import run_window
from tests.conftest import BROKER_URL, delete_queue, unique_queue
from tests.integration.broker import drain
from tests.integration.test_storage_postgres import new_job
from tests.private_postgres import PrivatePostgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private_pg():
    cluster = PrivatePostgres()
    upgrade(cluster.url)
    yield cluster
    cluster.close()


@pytest.fixture()
def outage_settings(private_pg):
    queue = unique_queue("elis.outage")
    settings = Settings(database_url=private_pg.url, broker_url=BROKER_URL, queue_name=queue, policy="mlfq",
                        outage_wait_s=60.0)
    configure_celery(settings)
    yield settings
    delete_queue(queue)


class CountingEngine(Engine):
    """Deterministic: every window returns `max_new_tokens` copies of token 7."""

    def run_window(self, prompt_ids, generated_ids, max_new_tokens, sampling):
        return WindowOutput(new_ids=[7] * max_new_tokens, finished=False)

    def decode(self, token_ids):
        return "x" * len(token_ids)


def test_the_api_answers_503_with_retry_after_while_the_database_is_away_then_recovers(private_pg,
                                                                                          outage_settings):
    with TestClient(create_app(outage_settings)) as client:
        job_id = client.post("/v1/jobs", json={"prompt": "Name a river.", "max_tokens": 8}).json()["id"]
        private_pg.stop()
        try:
            for method, url, kwargs in [("get", f"/v1/jobs/{job_id}", {}), ("get", "/v1/jobs", {}),
                                        ("delete", f"/v1/jobs/{job_id}", {}),
                                        ("post", "/v1/jobs", {"json": {"prompt": "hi", "max_tokens": 8}})]:
                response = getattr(client, method)(url, **kwargs)
                assert response.status_code == 503, (method, url, response.text)
                assert response.headers["retry-after"] == "5" and "database is unavailable" in response.json()["detail"]
        finally:
            private_pg.start()
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200


def test_a_window_whose_database_goes_away_waits_for_it_and_hands_its_message_back(private_pg, outage_settings):
    with session_scope(outage_settings.resolved_database_url) as session:
        job_id = store.create_job(session, new=new_job(), now=clock.now()).id
    install_runtime(WorkerRuntime(settings=outage_settings, engine=CountingEngine(), worker_name="w",
                                  scheduler=build_scheduler(outage_settings)))
    private_pg.stop()
    restart = threading.Thread(target=private_pg.start_after, args=(3.0,))
    restart.start()
    started = clock.now()
    try:
        with pytest.raises(Reject) as rejected:
            run_window(job_id, 0)
    finally:
        restart.join()
    waited = (clock.now() - started).total_seconds()
    assert rejected.value.requeue is True and waited >= 2.5, waited  # it waited for the database, then requeued
    with session_scope(outage_settings.resolved_database_url) as session:
        job = store.get_job(session, job_id=job_id)
        assert job.status == "queued" and job.error is None and job.generated_ids == []
    assert run_window(job_id, 0) in {"queued", "running", "done"}  # the redelivery runs it


def test_a_purged_queue_is_noticed_and_its_jobs_republished_once(settings):
    configure_celery(settings)
    with TestClient(create_app(settings)) as client:
        ids = [client.post("/v1/jobs", json={"prompt": f"p{i}", "max_tokens": 8}).json()["id"] for i in range(3)]
    assert len(drain(settings)) == 3  # the queue is emptied behind the jobs' backs (a purge)
    scheduler = build_scheduler(settings)
    assert reconcile_once(settings, scheduler)["republished_lost"] == 0  # too recent to call lost
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).values(published_at=clock.now() - timedelta(seconds=settings.lost_after_s + 1)))
    assert reconcile_once(settings, scheduler)["republished_lost"] == 3
    assert sorted(m[0] for m in drain(settings, timeout_s=1.0)) == sorted(ids)


def test_a_long_healthy_backlog_is_not_republished(settings):
    configure_celery(settings)
    with TestClient(create_app(settings)) as client:
        for i in range(3):
            client.post("/v1/jobs", json={"prompt": f"p{i}", "max_tokens": 8})
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).values(published_at=clock.now() - timedelta(hours=1)))
    assert reconcile_once(settings, build_scheduler(settings))["republished_lost"] == 0
    assert len(drain(settings)) == 3


def test_a_running_job_whose_worker_vanished_is_requeued_when_its_lease_runs_out(settings):
    configure_celery(settings)
    with session_scope(settings.resolved_database_url) as session:
        job_id = store.create_job(session, new=new_job(), now=clock.now()).id
    with session_scope(settings.resolved_database_url) as session:
        store.claim_window(session, job_id=job_id, window_index=0, worker="ghost", redelivered=False,
                           now=clock.now(), lease_s=0.5)
    assert recovery.renew(settings, "someone-else") == 0
    assert reconcile_once(settings, build_scheduler(settings))["released"] == 0  # the lease still holds
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).values(lease_until=clock.now() - timedelta(seconds=1)))
    assert reconcile_once(settings, build_scheduler(settings))["released"] == 1
    assert [(m[0], m[1]) for m in drain(settings)] == [(job_id, 0)]
    with session_scope(settings.resolved_database_url) as session:
        job = store.get_job(session, job_id=job_id)
        assert job.status == "queued" and job.worker is None and job.published_window == 0


def test_a_live_worker_renews_its_leases(settings):
    with session_scope(settings.resolved_database_url) as session:
        job_id = store.create_job(session, new=new_job(), now=clock.now()).id
        store.claim_window(session, job_id=job_id, window_index=0, worker="alive", redelivered=False,
                           now=clock.now(), lease_s=0.1)
    assert recovery.renew(settings, "alive") == 1
    with session_scope(settings.resolved_database_url) as session:
        assert store.get_job(session, job_id=job_id).lease_until > clock.now() + timedelta(seconds=60)


def test_a_job_that_cannot_progress_is_failed_with_the_reason_and_counted(settings):
    stuck = settings.model_copy(update={"stuck_after_s": 30.0})
    with session_scope(settings.resolved_database_url) as session:
        old = store.create_job(session, new=new_job(), now=clock.now() - timedelta(seconds=31)).id
        fresh = store.create_job(session, new=new_job(), now=clock.now()).id
    before = recovery.COUNTS["jobs_failed_stuck"]
    assert reconcile_once(stuck, build_scheduler(stuck))["failed_stuck"] == 1
    assert recovery.COUNTS["jobs_failed_stuck"] == before + 1
    with session_scope(settings.resolved_database_url) as session:
        failed = store.get_job(session, job_id=old)
        assert failed.status == "failed" and "no progress for 30 s" in failed.error
        assert store.get_job(session, job_id=fresh).status == "queued"


def test_cancelling_a_stranded_running_job_ends_it_once_its_lease_runs_out(settings):
    configure_celery(settings)
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/v1/jobs", json={"prompt": "stranded", "max_tokens": 8}).json()["id"]
        drain(settings)
        with session_scope(settings.resolved_database_url) as session:  # a worker took it, then vanished
            store.claim_window(session, job_id=job_id, window_index=0, worker="ghost", redelivered=False,
                               now=clock.now(), lease_s=0.0)
        response = client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 202 and response.json()["cancel_requested"] is True
        assert reconcile_once(settings, build_scheduler(settings))["released"] == 1
        [(published_id, window_index, _)] = drain(settings)
        with session_scope(settings.resolved_database_url) as session:  # the re-published message arrives
            assert store.claim_window(session, job_id=published_id, window_index=window_index, worker="w",
                                      redelivered=False, now=clock.now()) is None
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
