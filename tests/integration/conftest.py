from __future__ import annotations

import pytest

from tests.conftest import BROKER_URL, delete_queue, ensure_database, reset_schema, truncate, unique_queue


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = ensure_database("elis_test")
    reset_schema(url)
    return url


@pytest.fixture()
def db_url(pg_url: str) -> str:
    truncate(pg_url)
    return pg_url


@pytest.fixture()
def settings(db_url: str):
    from elis.config import Settings

    queue = unique_queue("elis.test")
    yield Settings(database_url=db_url, broker_url=BROKER_URL, queue_name=queue, policy="mlfq",
                   reconcile_interval_s=0.5)
    delete_queue(queue)
