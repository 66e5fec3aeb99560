"""`elis keys create | revoke | list`: API keys for ELIS_AUTH=keys (stored hashed; a secret is shown once)."""

from __future__ import annotations

from typing import Annotated

import typer

keys_app = typer.Typer(help="API keys: one tenant per key; admins see every tenant's jobs.", no_args_is_help=True)


def _url() -> str:
    from elis.config import get_settings

    return get_settings().resolved_database_url


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="the tenant the key's jobs belong to")],
    name: Annotated[str, typer.Option(help="a label (who or what uses the key)")] = "",
    admin: Annotated[bool, typer.Option(help="sees, lists and cancels every tenant's jobs")] = False,
    max_active_jobs: Annotated[int | None, typer.Option(help="jobs queued or running [ELIS_TENANT_MAX_ACTIVE_JOBS]")] = None,
    max_tokens_in_flight: Annotated[int | None, typer.Option(
        help="tokens its active jobs may still generate [ELIS_TENANT_MAX_TOKENS_IN_FLIGHT]")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="max_tokens of one job [ELIS_MAX_TOKENS_LIMIT]")] = None,
) -> None:
    """Create a key and print it once (only its hash is stored: keep it)."""
    from elis import clock
    from elis.storage.db import session_scope
    from elis.storage.keys import KeyLimits, create_key

    if not tenant.strip() or len(tenant) > 64:
        raise typer.BadParameter("the tenant is 1-64 characters", param_hint="--tenant")
    limits = KeyLimits(max_active_jobs=max_active_jobs, max_tokens_in_flight=max_tokens_in_flight,
                       max_tokens=max_tokens)
    with session_scope(_url()) as session:
        key, secret = create_key(session, tenant=tenant, name=name or tenant, is_admin=admin, now=clock.now(),
                                 limits=limits)
        key_id = key.id
    typer.echo(secret)
    typer.echo(f"key {key_id} for tenant {tenant!r}{' (admin)' if admin else ''}: send it as "
               "'Authorization: Bearer <key>'; it is not shown again", err=True)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the key's id (`elis keys list`)")]) -> None:
    """Revoke a key at once: its next request answers 401."""
    from elis import clock
    from elis.storage.db import session_scope
    from elis.storage.keys import revoke_key

    with session_scope(_url()) as session:
        revoked = revoke_key(session, key_id=key_id, now=clock.now())
    if not revoked:
        typer.secho(f"error: no live key with id {key_id!r}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    typer.echo(f"revoked {key_id}")


@keys_app.command("list", short_help="Every key: id, tenant, name, admin, limits, revoked.")
def list_command() -> None:
    """Every key: id, tenant, name, admin, limits, created, revoked (never the secret)."""
    from elis.storage.db import session_scope
    from elis.storage.keys import list_keys

    with session_scope(_url()) as session:
        rows = [(k.id, k.tenant, k.name, "admin" if k.is_admin else "", k.max_active_jobs or "-",
                 k.max_tokens_in_flight or "-", k.max_tokens or "-", k.created_at.isoformat(timespec="seconds"),
                 k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "") for k in list_keys(session)]
    typer.echo("id\ttenant\tname\trole\tmax_active_jobs\tmax_tokens_in_flight\tmax_tokens\tcreated\trevoked")
    for row in rows:
        typer.echo("\t".join(str(c) for c in row))
