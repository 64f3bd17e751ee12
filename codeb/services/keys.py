"""API keys: random, shown once, stored as a SHA-256 (they carry 256 bits, so a slow hash
adds nothing), with a role and an optional expiry."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from peewee import IntegrityError

from codeb.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from codeb.protection import audit
from codeb.services.context import ROLES, SYSTEM, Actor, Deps
from codeb.services.validation import validate_choice, validate_key_name
from codeb.store.db import ThreadCache
from codeb.store.models import ApiKey

KEY_PREFIX = "cb_"
# last_used_at is bookkeeping: refreshing it at most this often keeps reads from writing.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def key_view(key: ApiKey, now: dt.datetime | None = None) -> dict:
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() + "Z" if value else None

    state = "active"
    if key.revoked_at:
        state = "revoked"
    elif now and key.expires_at and key.expires_at <= now:
        state = "expired"
    return {
        "name": key.name,
        "role": key.role,
        "prefix": key.prefix,
        "state": state,
        "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
        "last_used_at": iso(key.last_used_at),
    }


def create_key(
    deps: Deps, actor: Actor, name: str, role: str, expires_at: dt.datetime | None = None
) -> tuple[dict, str]:
    """Returns the key's record and the key itself, which is never retrievable again."""
    validate_key_name(name)
    validate_choice(role, ROLES, "role")
    now = deps.clock.now()
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed("expires_at must be in the future", {"field": "expires_at"})
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with deps.write():
            if ApiKey.select().where(ApiKey.name == name).exists():
                raise Conflict(f"an API key named {name!r} already exists", {"name": name})
            key = ApiKey.create(
                name=name,
                role=role,
                key_hash=hash_key(plaintext),
                prefix=plaintext[:10],
                created_at=now,
                expires_at=expires_at,
            )
            audit.record(
                deps.db,
                operation="api_key_create",
                danger_level=1,
                status="executed",
                requested_by=actor.requested_by,
                key_name=actor.key_name,
                now=now,
                target=name,
                details={
                    "role": role,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
                executed=True,
            )
    except IntegrityError:
        raise Conflict(f"an API key named {name!r} already exists", {"name": name}) from None
    return key_view(key, now), plaintext


def list_keys(deps: Deps) -> list[dict]:
    now = deps.clock.now()
    return [key_view(k, now) for k in ApiKey.select().order_by(ApiKey.id)]


def revoke_key(deps: Deps, actor: Actor, name: str) -> dict:
    now = deps.clock.now()
    with deps.write():
        key = ApiKey.get_or_none(ApiKey.name == name)
        if key is None:
            raise NotFound(f"API key {name!r} not found", {"name": name})
        if key.revoked_at is None:
            key.revoked_at = now
            key.save()
            audit.record(
                deps.db,
                operation="api_key_revoke",
                danger_level=1,
                status="executed",
                requested_by=actor.requested_by,
                key_name=actor.key_name,
                now=now,
                target=name,
                executed=True,
            )
    return key_view(key, now)


# The ApiKey row per digest, per waitress thread, kept only until the next commit by anyone
# (any thread, the CLI, any process): see codeb.store.db.ThreadCache. Unknown digests are
# cached too (None), so at most this many per thread.
_KEY_CACHE = ThreadCache(max_entries=256)


def authenticate(deps: Deps, plaintext: str | None, requested_by: str = "api") -> Actor:
    """The Actor for a presented key. Every failure says the same thing, so the answer never
    tells whether a key exists."""
    if not plaintext:
        raise Unauthorized("missing X-API-Key header")
    digest = hash_key(plaintext)
    # A revocation is a commit, so the very next request reads the row again; the expiry is
    # checked against the clock every time.
    key = _KEY_CACHE.get(deps.db, digest, lambda: ApiKey.get_or_none(ApiKey.key_hash == digest))
    now = deps.clock.now()
    if (
        key is None
        or not hmac.compare_digest(key.key_hash, digest)
        or key.revoked_at is not None
        or (key.expires_at is not None and key.expires_at <= now)
    ):
        raise Unauthorized("invalid, expired or revoked API key")
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.update(last_used_at=now).where(ApiKey.id == key.id).execute()
    return Actor(key_id=key.id, key_name=key.name, role=key.role, requested_by=requested_by)


def ensure_admin_key(deps: Deps) -> str | None:
    """On first start (no key at all) create an admin key and return it, to be shown once."""
    if ApiKey.select().exists():
        return None
    _, plaintext = create_key(deps, SYSTEM, "admin", "admin")
    return plaintext
