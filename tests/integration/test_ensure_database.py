"""`ensure_database` against the real PostgreSQL: `elis compare --database-url` creates a missing database."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

from elis.storage.migrate import ensure_database
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.integration


def _exists(name: str) -> bool:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return bool(conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}))
    finally:
        admin.dispose()


def _drop(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@pytest.mark.parametrize("prefix", ["elis_ensure_", "elis-ensure-Mixed-"])
def test_a_missing_database_is_created_once_and_an_existing_one_is_left_alone(prefix):
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    assert not _exists(name)
    try:
        assert ensure_database(url) is True
        assert _exists(name)
        assert ensure_database(url) is False
        assert _exists(name)
    finally:
        _drop(name)


def test_sqlite_urls_are_left_to_sqlite(tmp_path):
    assert ensure_database(f"sqlite:///{tmp_path}/jobs.db") is False
    assert not (tmp_path / "jobs.db").exists()
