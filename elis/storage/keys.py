"""API keys: created, found, revoked and listed. Only a SHA-256 hash of each key's secret is stored.

A key reads `elis_<id>_<secret>`: the id finds the row, the secret is checked against its hash in constant
time. Keys carry 256 random bits, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from elis.storage.models import ApiKey

PREFIX = "elis"


@dataclass(frozen=True)
class KeyLimits:
    """Per-key admission limits; None: the service's default."""

    max_active_jobs: int | None = None
    max_tokens_in_flight: int | None = None
    max_tokens: int | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, *, tenant: str, name: str, is_admin: bool, now: datetime,
               limits: KeyLimits = KeyLimits()) -> tuple[ApiKey, str]:
    """A new key for the tenant. Returns the row and the full key (shown once; never stored)."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    key = ApiKey(id=key_id, tenant=tenant, name=name, key_hash=_hash(secret), is_admin=is_admin,
                 max_active_jobs=limits.max_active_jobs, max_tokens_in_flight=limits.max_tokens_in_flight,
                 max_tokens=limits.max_tokens, created_at=now)
    session.add(key)
    session.flush()
    return key, f"{PREFIX}_{key_id}_{secret}"


def find_key(session: Session, *, presented: str) -> ApiKey | None:
    """The live key a client presented; None when malformed, unknown, wrong or revoked."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 12:
        return None
    key = live_key(session, key_id=parts[1])
    if key is None:
        return None
    return key if hmac.compare_digest(key.key_hash, _hash(parts[2])) else None


def live_key(session: Session, *, key_id: str) -> ApiKey | None:
    """The key with this id unless it is revoked (or unknown)."""
    key = session.get(ApiKey, key_id)
    return None if key is None or key.revoked_at is not None else key


def revoke_key(session: Session, *, key_id: str, now: datetime) -> bool:
    """Revoke at once (the next request with it answers 401). False when no live key has that id."""
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = now
    session.flush()
    return True


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)))
