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


def test_a_fresh_local_database_replaces_an_earlier_one_unless_kept():
    """`elis demo` and `elis compare` get a fresh database of their own on the local PostgreSQL: an earlier
    run's tables are gone, and with keep they stay."""
    from elis.storage.migrate import fresh_local_database

    name = f"elis_fresh_{uuid.uuid4().hex[:8]}"
    try:
        url, why = fresh_local_database(PG_ADMIN_URL, name)
        assert url is not None and why == "" and url.endswith(f"/{name}") and _exists(name)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE earlier_run (x int)"))
        engine.dispose()

        def tables(database_url: str) -> set[str]:
            engine = create_engine(database_url)
            try:
                with engine.connect() as conn:
                    return set(conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
            finally:
                engine.dispose()

        assert fresh_local_database(PG_ADMIN_URL, name, keep=True)[0] == url
        assert tables(url) == {"earlier_run"}
        assert fresh_local_database(PG_ADMIN_URL, name)[0] == url
        assert tables(url) == set()
    finally:
        _drop(name)


@pytest.mark.parametrize("server, reason", [
    ("postgresql+psycopg2://postgres@127.0.0.1:1/postgres", "no PostgreSQL answers at"),
    ("postgresql+nosuchdriver://postgres@127.0.0.1/postgres", "ELIS_LOCAL_POSTGRES_URL is not usable"),
    ("sqlite:///x.db", "not a PostgreSQL URL"),
    ("", "ELIS_LOCAL_POSTGRES_URL is empty"),
])
def test_no_local_postgres_means_none_and_a_reason(server, reason):
    from elis.storage.migrate import fresh_local_database

    url, why = fresh_local_database(server, "elis_never_made")
    assert url is None and reason in why


def test_database_names_are_valid_and_distinct_for_folders_of_one_name(tmp_path):
    from elis.storage.migrate import database_name_for

    a, b = database_name_for(tmp_path / "x" / "Run 1"), database_name_for(tmp_path / "y" / "Run 1")
    assert a != b and a.startswith("elis_run_1_") and len(a) <= 63
    assert database_name_for(tmp_path / "x" / "Run 1") == a


def test_a_database_in_use_is_never_dropped_and_the_run_stops_with_why():
    """A stack still running on the database (here: one open connection) keeps it; the caller gets the reason
    instead of a silent fall back to SQLite, which would make the run incomparable with earlier ones."""
    from elis.storage.migrate import LocalDatabaseError, fresh_local_database

    name = f"elis_inuse_{uuid.uuid4().hex[:8]}"
    try:
        url, _ = fresh_local_database(PG_ADMIN_URL, name)
        engine = create_engine(url)
        with engine.connect() as held:
            held.execute(text("SELECT 1"))
            with pytest.raises(LocalDatabaseError, match=f"would not give a fresh database {name}"):
                fresh_local_database(PG_ADMIN_URL, name)
        engine.dispose()
        assert _exists(name)
    finally:
        _drop(name)


def test_own_database_falls_back_to_a_fresh_sqlite_file_where_no_postgresql_answers(tmp_path):
    from elis.storage.migrate import own_database

    path = tmp_path / "run.sqlite3"
    path.write_text("an earlier run")
    url, what = own_database("postgresql+psycopg2://postgres@127.0.0.1:1/postgres", "elis_x", path)
    assert url == f"sqlite:///{path}" and "SQLite; no PostgreSQL answers" in what and not path.exists()
    name = f"elis_own_{uuid.uuid4().hex[:8]}"
    try:
        url, what = own_database(PG_ADMIN_URL, name, path)
        assert url.endswith(f"/{name}") and what == f"{name} on the local PostgreSQL"
    finally:
        _drop(name)
