"""Run Alembic programmatically: `elis db upgrade` and the prestart step of API and workers."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> Config:
    ini = PROJECT_ROOT / "alembic.ini"
    if not ini.exists():
        raise FileNotFoundError(f"alembic.ini not found at {ini}: install elis from its source tree (pip install -e .)")
    config = Config(str(ini))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database the URL names when it does not exist yet; True when it was created.

    Comparisons want a fresh database per experiment (the quality guard judges the finished jobs it holds), and
    `createdb` is one more step to forget. Other backends (SQLite creates its file itself) are left alone."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    target = make_url(url)
    if not target.drivername.startswith("postgresql") or not target.database:
        return False
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return _make_database(conn, target.database, replace=False)
    finally:
        admin.dispose()


def _make_database(conn, name: str, replace: bool) -> bool:
    """Create the database `name` over an AUTOCOMMIT connection to its server, dropping an existing one first
    when `replace`; True when it was created (False: it existed and was kept)."""
    from sqlalchemy import text

    exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).scalar()
    if exists and not replace:
        return False
    # NOTE: CREATE and DROP DATABASE take no bind parameter; the name is quoted as an identifier.
    quoted = conn.dialect.identifier_preparer.quote_identifier(name)
    if exists:
        conn.execute(text(f"DROP DATABASE {quoted}"))
    conn.execute(text(f"CREATE DATABASE {quoted}"))
    return True


class LocalDatabaseError(RuntimeError):
    """The local PostgreSQL answered but would not give a fresh database (one in use, no right to create)."""


def fresh_local_database(server_url: str, name: str, keep: bool = False) -> tuple[str | None, str]:
    """A fresh database `name` on the PostgreSQL server `server_url` (any database URL on it): (its URL, "") or,
    when no server answers there, (None, why). An existing database of that name is dropped first unless
    `keep`. A server that answers but refuses (the database is in use, e.g. by a stack still running, or the
    user may not create databases) raises LocalDatabaseError: silently running on SQLite instead would make the
    run incomparable with the earlier ones.

    `elis demo` and `elis compare` run on the real PostgreSQL wherever one answers, and on a SQLite file only
    where none does (a fresh machine before `scripts/services.sh`)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    if not server_url:
        return None, "no local PostgreSQL configured (ELIS_LOCAL_POSTGRES_URL is empty)"
    try:
        server = make_url(server_url)
        if not server.drivername.startswith("postgresql"):
            return None, f"ELIS_LOCAL_POSTGRES_URL is not a PostgreSQL URL ({server.drivername})"
        connect_args = {"connect_timeout": 3} if server.drivername in ("postgresql", "postgresql+psycopg2") else {}
        admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT",
                              connect_args=connect_args)
    except Exception as exc:  # noqa: BLE001 - a malformed setting or a missing driver is reported, not raised
        return None, f"ELIS_LOCAL_POSTGRES_URL is not usable ({exc})"
    shown = server.render_as_string(hide_password=True)
    try:
        try:
            conn = admin.connect()
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            return None, f"no PostgreSQL answers at {shown}: {reason}"
        with conn:
            try:
                _make_database(conn, name, replace=not keep)
            except SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise LocalDatabaseError(f"PostgreSQL at {shown} would not give a fresh database {name}: {reason}. "
                                         "Stop what uses it, or pick another with ELIS_DATABASE_URL") from None
    finally:
        admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False), ""


def own_database(server_url: str, name: str, sqlite_path: Path, keep: bool = False) -> tuple[str, str]:
    """A fresh database of one's own for `elis demo` or `elis compare`: `name` on the local PostgreSQL, or where
    none answers the SQLite file `sqlite_path` (started afresh unless `keep`). Returns its URL and what it is,
    for the console. Raises LocalDatabaseError as `fresh_local_database` does."""
    url, why = fresh_local_database(server_url, name, keep=keep)
    if url is not None:
        return url, f"{name} on the local PostgreSQL"
    if not keep:
        sqlite_path.unlink(missing_ok=True)
    return f"sqlite:///{sqlite_path}", f"{sqlite_path} (SQLite; {why})"


def database_name_for(folder: Path, prefix: str = "elis_") -> str:
    """A PostgreSQL database name for an output folder: readable, and distinct for two folders of one name."""
    import hashlib
    import re

    resolved = str(Path(folder).resolve())
    stem = re.sub(r"[^a-z0-9]+", "_", Path(resolved).name.lower()).strip("_")[:40] or "run"
    return f"{prefix}{stem}_{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
    if url.startswith("sqlite"):
        # Alembic created the file without the service's engine: open one connection now, while nothing else
        # is connected, so its WAL journal is set before a burst of API connections races for the switch.
        from elis.storage.db import get_engine

        with get_engine(url).connect():
            pass


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
