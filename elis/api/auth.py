"""Who is calling: API keys (one tenant each, admins see every tenant) or no authentication for local use.

ELIS_AUTH=keys  every request but /healthz needs `Authorization: Bearer <key>` (keys from `elis keys create`).
ELIS_AUTH=none  no keys: every caller is the admin of tenant "local" (a laptop, the demo, the tests).
ELIS_AUTH=auto  (default) "none" when the API is bound to a loopback address, else "keys".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from elis.config import Settings
from elis.storage import keys as key_store
from elis.storage.db import session_scope

LOCAL_TENANT = "local"
# Secrets that ship in examples and defaults: a service reachable from the network must not run with them.
DEFAULT_SECRETS = ("guest:guest", "elis:elis", "admin:admin", "postgres:postgres")

bearer = HTTPBearer(auto_error=False, description="An API key from `elis keys create` (ELIS_AUTH=keys).")


class UnsafeExposure(ValueError):
    """The service would be reachable beyond this host with no authentication or a default secret."""


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, whether it sees every tenant, its admission limits, and the key it
    presented (None without keys)."""

    tenant: str
    is_admin: bool
    max_active_jobs: int
    max_tokens_in_flight: int
    max_tokens: int
    key_id: str | None = None

    @property
    def visible_tenant(self) -> str | None:
        """The tenant filter of reads, lists and cancels (None: every tenant, for an admin)."""
        return None if self.is_admin else self.tenant


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_mode(settings: Settings) -> str:
    mode = settings.auth.lower()
    if mode not in ("auto", "keys", "none"):
        raise ValueError(f"ELIS_AUTH is {settings.auth!r}: use keys, none or auto")
    if mode == "auto":
        return "none" if is_loopback(settings.api_host) else "keys"
    return mode


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond localhost without keys, or with a default secret in a broker or database URL."""
    if is_loopback(settings.api_host):
        return
    if auth_mode(settings) == "none":
        raise UnsafeExposure(f"ELIS_AUTH=none while bound to {settings.api_host}: anyone on the network could "
                             "read and cancel every job. Use ELIS_AUTH=keys (elis keys create) or bind 127.0.0.1.")
    for name, url in (("ELIS_BROKER_URL", settings.broker_url), ("ELIS_DATABASE_URL", settings.database_url)):
        used = [secret for secret in DEFAULT_SECRETS if f"//{secret}@" in url]
        if used:
            raise UnsafeExposure(f"{name} uses the default credentials {used[0].split(':')[0]}:*** while the API "
                                 f"is bound to {settings.api_host}; set a password of your own.")


def tenant_caller(settings: Settings, tenant: str, is_admin: bool = False) -> Caller:
    """A caller of `tenant` with the service's default limits (no key: ELIS_AUTH=none)."""
    return Caller(tenant=tenant, is_admin=is_admin, max_active_jobs=settings.tenant_max_active_jobs,
                  max_tokens_in_flight=settings.tenant_max_tokens_in_flight, max_tokens=settings.max_tokens_limit)


def _caller_of_key(settings: Settings, key) -> Caller:
    return Caller(
        tenant=key.tenant, is_admin=key.is_admin,
        max_active_jobs=key.max_active_jobs or settings.tenant_max_active_jobs,
        max_tokens_in_flight=key.max_tokens_in_flight or settings.tenant_max_tokens_in_flight,
        max_tokens=min(key.max_tokens or settings.max_tokens_limit, settings.max_tokens_limit),
        key_id=key.id,
    )


def creator_caller(settings: Settings, session, *, tenant: str, key_id: str | None) -> Caller | None:
    """The caller that a batch's requests are admitted as: the key that created the batch, with its limits as
    they are now (a batch created without a key gets the tenant's default limits). None: that key was revoked
    since, so the batch's requests not yet queued must not run."""
    if key_id is None:
        return tenant_caller(settings, tenant)
    key = key_store.live_key(session, key_id=key_id)
    return None if key is None else _caller_of_key(settings, key)


def get_caller(request: Request,
               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    settings: Settings = request.app.state.settings
    if request.app.state.auth_mode == "none":
        return tenant_caller(settings, LOCAL_TENANT, is_admin=True)
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "an API key is required: send 'Authorization: Bearer <key>' "
                                 "(an operator creates one with `elis keys create`)", headers=challenge)
    with session_scope(settings.resolved_database_url) as session:
        key = key_store.find_key(session, presented=credentials.credentials)
        caller = None if key is None else _caller_of_key(settings, key)
    if caller is None:
        raise HTTPException(401, "the API key is unknown or revoked", headers=challenge)
    return caller


def require_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """For operator endpoints (e.g. metrics): an admin key, or any caller when ELIS_AUTH=none."""
    if not caller.is_admin:
        raise HTTPException(403, "this needs an admin key")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def document_auth(app, mode: str) -> None:
    """The OpenAPI spec tells the truth about the mode: with ELIS_AUTH=none no operation needs a key."""
    if mode != "none":
        return
    build = app.openapi

    def openapi() -> dict:
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.pop("security", None)
        schema.get("components", {}).pop("securitySchemes", None)
        return schema

    app.openapi = openapi
