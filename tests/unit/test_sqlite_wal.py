"""The embedded SQLite database: WAL is switched on without ever failing a connection."""

from __future__ import annotations

import sqlite3

from sqlalchemy import text

from elis.storage.db import get_engine


def test_a_connection_opened_while_another_holds_the_write_lock_connects_and_wal_follows(tmp_path):
    """Switching to WAL needs a lock the busy timeout does not wait for: a connection opened during another's
    write (a burst of admissions) used to fail with "database is locked" (seen in CI). It now connects in the
    file's journal mode, and the next connection opened after the write switches it to WAL."""
    path = tmp_path / "jobs.sqlite3"
    writer = sqlite3.connect(path)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.commit()
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    engine = get_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0  # the uncommitted row is not seen
    writer.rollback()
    writer.close()
    engine.dispose()  # a new connection, not the pooled one
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
