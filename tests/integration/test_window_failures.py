"""The window task's failure paths against the real PostgreSQL: a job is failed or requeued, never lost."""

from __future__ import annotations

import pytest
from celery.exceptions import Reject

from elis import clock
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.tasks.contracts import Engine, EngineError
from elis.tasks.runtime import WorkerRuntime, install_runtime
from elis.tasks.scheduling_setup import build_scheduler
from elis.tasks.windows import run_job_windows, run_window
from tests.integration.test_storage_postgres import new_job

pytestmark = pytest.mark.integration


class BrokenEngine(Engine):
    """An engine that fails every window with the given error (the failure under test)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def run_window(self, prompt_ids, generated_ids, max_new_tokens, sampling):
        raise self.error

    def decode(self, token_ids):
        return ""


def runtime_with(settings, engine: Engine) -> WorkerRuntime:
    return WorkerRuntime(settings=settings, engine=engine, worker_name="w", scheduler=build_scheduler(settings))


def queued_job(settings) -> str:
    with session_scope(settings.resolved_database_url) as session:
        return store.create_job(session, new=new_job(), now=clock.now()).id


def test_an_engine_error_fails_the_job_with_its_message(settings):
    job_id = queued_job(settings)
    assert run_job_windows(runtime_with(settings, BrokenEngine(EngineError("out of KV cache"))), job_id, 0, False) == "failed"
    with session_scope(settings.resolved_database_url) as session:
        job = store.get_job(session, job_id=job_id)
        assert job.status == "failed" and "out of KV cache" in job.error and job.jct_s is not None


def test_an_unexpected_error_sends_the_window_back_to_the_queue_instead_of_losing_the_job(settings):
    job_id = queued_job(settings)
    install_runtime(runtime_with(settings, BrokenEngine(RuntimeError("database went away"))))
    with pytest.raises(Reject):
        run_window(job_id, 0)
    with session_scope(settings.resolved_database_url) as session:
        job = store.get_job(session, job_id=job_id)
        # Left running with nothing committed: the redelivered message resumes it (claim with redelivered=True).
        assert job.status == "running" and job.generated_ids == [] and job.error is None
        assert store.claim_window(session, job_id=job_id, window_index=0, worker="w2", redelivered=True,
                                  now=clock.now()) is not None
