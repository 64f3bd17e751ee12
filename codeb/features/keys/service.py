"""API keys: random, shown once, stored as a SHA-256 (they carry 256 bits, so a slow hash
adds nothing), with a role and an optional expiry."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from peewee import IntegrityError

from codeb.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from codeb.protection import audit
from codeb.protection.tokens import Target
from codeb.services import gate
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
        "principal": key.principal or key.name,
        "created_by": key.created_by,
        "prefix": key.prefix,
        "state": state,
        "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
        "last_used_at": iso(key.last_used_at),
    }


def _insert_key(
    deps: Deps,
    actor: Actor,
    name: str,
    role: str,
    principal: str,
    expires_at: dt.datetime | None,
) -> tuple[ApiKey, str]:
    """Inside the caller's write transaction; logging is the caller's (or the gate's)."""
    if ApiKey.select().where(ApiKey.name == name).exists():
        raise Conflict(f"an API key named {name!r} already exists", {"name": name})
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.create(
        name=name,
        role=role,
        key_hash=hash_key(plaintext),
        prefix=plaintext[:10],
        created_at=deps.clock.now(),
        expires_at=expires_at,
        principal=principal,
        created_by=None if actor.key_id is None else actor.key_name,
    )
    return key, plaintext


def _checked(name: object, role: object, principal: object) -> tuple[str, str, str | None]:
    validate_key_name(name)
    validate_choice(role, ROLES, "role")
    if principal is not None:
        validate_key_name(principal, "principal")
    return str(name), str(role), None if principal is None else str(principal)


def create_key(
    deps: Deps,
    actor: Actor,
    name: str,
    role: str,
    expires_at: dt.datetime | None = None,
    principal: str | None = None,
) -> tuple[dict, str]:
    """On the server (`codeb keys create`, the first admin key): shell access to the control
    server is the root of trust, so no gate, but logged. Returns the key's record and the key
    itself, which is never retrievable again. The principal defaults to the key's name."""
    name, role, principal = _checked(name, role, principal)
    now = deps.clock.now()
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed("expires_at must be in the future", {"field": "expires_at"})
    try:
        with deps.write():
            key, plaintext = _insert_key(deps, actor, name, role, principal or name, expires_at)
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
                    "principal": key.principal,
                    "on_server": actor.key_id is None,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
                executed=True,
            )
    except IntegrityError:
        raise Conflict(f"an API key named {name!r} already exists", {"name": name}) from None
    return key_view(key, now), plaintext


def request_key(
    deps: Deps,
    actor: Actor,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """`POST /api/keys` through the gate. A key for the caller's own principal below admin is
    `api_key_create` (LOW); an admin key, or a key for any other principal, is `api_key_grant`,
    which another admin must approve: otherwise one admin could mint a second "person" and
    approve their own CRITICAL request with it."""
    name, role, principal = _checked(body.get("name"), body.get("role"), body.get("principal"))
    principal = principal or actor.who
    operation = "api_key_create"
    if role == "admin" or principal != actor.who:
        operation = "api_key_grant"
    params = {"name": name, "role": role, "principal": principal}
    if body.get("expires_in_days") is not None:
        params["expires_in_days"] = int(body["expires_in_days"])
    effect = f"creates the {role} API key {name!r} for {principal!r}."
    return gate.guard(
        deps,
        actor,
        operation,
        Target("api_key", name, name),
        params,
        effect=effect,
        confirmation=confirmation,
        success_status=201,
    )


def _execute_create(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    expires_at = None
    if params.get("expires_in_days"):
        expires_at = deps.clock.now() + dt.timedelta(days=params["expires_in_days"])
    try:
        with deps.db.atomic():
            key, plaintext = _insert_key(
                deps, actor, params["name"], params["role"], params["principal"], expires_at
            )
    except IntegrityError:
        raise Conflict(f"an API key named {params['name']!r} already exists") from None
    return {"key": key_view(key, deps.clock.now()), "api_key": plaintext}


def list_keys(deps: Deps) -> list[dict]:
    now = deps.clock.now()
    return [key_view(k, now) for k in ApiKey.select().order_by(ApiKey.id)]


def _revoke(deps: Deps, name: str) -> tuple[ApiKey, bool]:
    key = ApiKey.get_or_none(ApiKey.name == name)
    if key is None:
        raise NotFound(f"API key {name!r} not found", {"name": name})
    if key.revoked_at is not None:
        return key, False
    key.revoked_at = deps.clock.now()
    key.save()
    return key, True


def revoke_key(deps: Deps, actor: Actor, name: str) -> dict:
    """On the server (`codeb keys revoke`): logged, no gate."""
    now = deps.clock.now()
    with deps.write():
        key, revoked = _revoke(deps, name)
        if revoked:
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


def request_revoke(
    deps: Deps, actor: Actor, name: str, confirmation: gate.Confirmation | None = None
) -> gate.Answer:
    """`DELETE /api/keys/:name` through the gate (`api_key_revoke`)."""
    if ApiKey.get_or_none(ApiKey.name == name) is None:
        raise NotFound(f"API key {name!r} not found", {"name": name})
    return gate.guard(
        deps,
        actor,
        "api_key_revoke",
        Target("api_key", name, name),
        {"name": name},
        effect=f"revokes the API key {name!r}.",
        confirmation=confirmation,
    )


def _execute_revoke(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    key, _ = _revoke(deps, params["name"])
    return key_view(key, deps.clock.now())


# The verified key per (digest, client), per waitress thread, kept only until the next commit
# by anyone (any thread, the CLI, any process): see codeb.store.db.ThreadCache. A revocation
# or rotation is a commit, so the very next request reads the row again. Unknown and revoked
# digests are cached too (None), so at most this many per thread.
_KEY_CACHE = ThreadCache(max_entries=256)


Verified = tuple[Actor, dt.datetime | None, dt.datetime | None]


def _verified(digest: str, requested_by: str) -> Verified | None:
    """The Actor of the key whose digest this is, its expiry and last use; None when there is
    no such key or it is revoked. The row is read once per commit, not once per request
    (issue 15: ~10 field reads and an Actor per request were a tenth of a cached read)."""
    key = ApiKey.get_or_none(ApiKey.key_hash == digest)
    if key is None or not hmac.compare_digest(key.key_hash, digest) or key.revoked_at is not None:
        return None
    actor = Actor(
        key_id=key.id,
        key_name=key.name,
        role=key.role,
        requested_by=requested_by,
        principal=key.principal or key.name,
        key_created_at=key.created_at,
    )
    # last_used_at rides along: it is the row's too, and refreshing it is a commit.
    return actor, key.expires_at, key.last_used_at


def authenticate(deps: Deps, plaintext: str | None, requested_by: str = "api") -> Actor:
    """The Actor for a presented key. Every failure says the same thing, so the answer never
    tells whether a key exists."""
    if not plaintext:
        raise Unauthorized("missing X-API-Key header")
    digest = hash_key(plaintext)
    verified = _KEY_CACHE.get(
        deps.db, (digest, requested_by), lambda: _verified(digest, requested_by)
    )
    if verified is None:
        raise Unauthorized("invalid, expired or revoked API key")
    actor, expires_at, last_used_at = verified
    # The expiry is checked against the clock every time.
    now = deps.clock.now()
    if expires_at is not None and expires_at <= now:
        raise Unauthorized("invalid, expired or revoked API key")
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        ApiKey.update(last_used_at=now).where(ApiKey.id == actor.key_id).execute()
    return actor


def ensure_admin_key(deps: Deps) -> str | None:
    """On first start (no key at all) create an admin key and return it, to be shown once."""
    if ApiKey.select().exists():
        return None
    _, plaintext = create_key(deps, SYSTEM, "admin", "admin")
    return plaintext


APPLIERS: dict[str, gate.Applier] = {
    "api_key_create": _execute_create,
    "api_key_grant": _execute_create,
    "api_key_revoke": _execute_revoke,
}
