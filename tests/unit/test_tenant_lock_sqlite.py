"""The tenant admission lock on SQLite (the embedded default): concurrent admissions never pass a limit."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from elis import clock
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.migrate import upgrade


def _new(i: int) -> store.NewJob:
    return store.NewJob(policy="fcfs", prompt=f"p{i}", messages=[], prompt_ids=[1, 2], max_tokens=8,
                        temperature=0.0, top_p=1.0, stop=[], stop_token_ids=[], tenant="burst")


def _admit_all(url: str, submissions: int, limit: int, lock: bool) -> int:
    """`submissions` threads at once, each: (lock), count the tenant's jobs, wait, insert one if under the
    limit (the admission path's order). Returns how many were stored."""
    start = threading.Barrier(submissions)

    def admit(i: int) -> bool:
        start.wait()
        with session_scope(url) as session:
            if lock:
                store.lock_tenant_admission(session, tenant="burst")
            active, _ = store.tenant_usage(session, tenant="burst")
            time.sleep(0.1)  # the gap a loaded machine leaves between the count and the insert
            if active >= limit:
                return False
            store.create_job(session, new=_new(i), now=clock.now())
            return True

    with ThreadPoolExecutor(submissions) as pool:
        admitted = sum(pool.map(admit, range(submissions)))
    with session_scope(url) as session:
        assert store.tenant_usage(session, tenant="burst")[0] == admitted
    return admitted


@pytest.mark.parametrize("lock", [True, False], ids=["locked", "unlocked"])
def test_concurrent_admissions_on_sqlite_stop_at_the_limit_only_with_the_lock(tmp_path, lock):
    url = f"sqlite:///{tmp_path / 'elis.sqlite3'}"
    upgrade(url)
    admitted = _admit_all(url, submissions=6, limit=2, lock=lock)
    if lock:
        assert admitted == 2
    else:  # the race the lock closes: every thread counts 0 active jobs and inserts
        assert admitted > 2
