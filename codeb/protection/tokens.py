"""Confirm tokens, what they are bound to, and keeping secrets out of what is stored (pure)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

TOKEN_PREFIX = "cbt_"  # noqa: S105 (a prefix, not a secret)
TOKEN_BYTES = 32  # 256 bits of randomness
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api_?key|private_?key|credential", re.IGNORECASE
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """What an operation acts on. `name` is what a human types to confirm it."""

    kind: str
    ref: str
    name: str
    project_id: str | None = None
    environment: str | None = None
    server_ip: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    # 256 random bits: a fast hash is enough, and makes lookup by hash possible.
    return hashlib.sha256(token.encode()).hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def binding_hash(operation: str, target: Target, params: dict[str, Any]) -> str:
    """What a token is bound to: the exact operation, target and parameters."""
    payload = canonical({"operation": operation, "kind": target.kind, "ref": target.ref,
                         "params": params})  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()


def secret_names(value: Any, path: str = "") -> list[str]:
    """Parameter names that look like secrets, anywhere in a nested structure."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SECRET_NAME.search(str(key)):
                found.append(where)
            found.extend(secret_names(item, where))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(secret_names(item, f"{path}[{index}]"))
    return found


def has_url_credentials(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_URL_CREDENTIALS.search(value))
    if isinstance(value, dict):
        return any(has_url_credentials(v) for v in value.values())
    if isinstance(value, list):
        return any(has_url_credentials(v) for v in value)
    return False


def redacted(value: Any) -> Any:
    """A copy fit for the log: credentials inside URLs replaced by ***."""
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(r"\g<scheme>***@", value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value
