"""Shared fixtures. Integration and end-to-end tests use the real RabbitMQ and PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import os
import time
import uuid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_ADMIN_URL = os.environ.get("ELIS_TEST_PG_ADMIN", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
BROKER_URL = os.environ.get("ELIS_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672//")


def ensure_database(name: str) -> str:
    """Create a PostgreSQL database for the tests if missing; return its URL.

    ELIS_TEST_DB_SUFFIX keeps two checkouts testing at once on one server out of each other's tables.
    """
    from elis.storage.migrate import ensure_database as create_if_missing

    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name + os.environ.get("ELIS_TEST_DB_SUFFIX", "")
    create_if_missing(url)
    return url


def reset_schema(url: str) -> None:
    """Downgrade to nothing and upgrade to head: every run tests the migration both ways."""
    from elis.storage.migrate import downgrade, upgrade

    upgrade(url)
    downgrade(url, "base")
    upgrade(url)


def truncate(url: str) -> None:
    from sqlalchemy import text

    from elis.storage.db import get_engine

    from sqlalchemy.exc import OperationalError

    # An earlier test's API may still be finishing a guard refresh (reads of jobs, then windows, in one
    # transaction): PostgreSQL then breaks the deadlock by aborting the TRUNCATE. Try again.
    for attempt in range(5):
        try:
            with get_engine(url).begin() as connection:
                connection.execute(text("TRUNCATE windows, jobs, api_keys, batches, files, worker_profiles"))
            return
        except OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.5)


def unique_queue(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def delete_queue(name: str) -> None:
    from amqp.exceptions import NotFound
    from kombu import Connection

    with Connection(BROKER_URL, connect_timeout=5) as connection:
        try:
            connection.default_channel.queue_delete(name)
        except NotFound:
            pass  # the test never declared it: nothing to clean up
