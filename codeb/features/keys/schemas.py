"""API keys: request and response shapes. The roles come from one constant
(codeb.services.context.ROLES)."""

from __future__ import annotations

from typing import Annotated, Literal

from codeb.api.shapes import (
    NULLABLE_TIME,
    TIMESTAMP,
    UNSET,
    Meta,
    Request,
    Shape,
    UnsetType,
    described,
)
from codeb.services.context import ROLES

KeyRole = Literal[ROLES]  # type: ignore[valid-type]
KEY_NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ApiKey(Shape):
    name: str
    role: KeyRole
    principal: described(str, "the person or service it belongs to") | UnsetType = UNSET  # type: ignore[valid-type]
    created_by: (
        described(  # type: ignore[valid-type]
            str | None, "the key that created it (null: made on the server)"
        )
        | UnsetType
    ) = UNSET
    prefix: str
    state: Literal["active", "expired", "revoked"]
    created_at: TIMESTAMP
    expires_at: NULLABLE_TIME | UnsetType = UNSET
    revoked_at: NULLABLE_TIME | UnsetType = UNSET
    last_used_at: NULLABLE_TIME | UnsetType = UNSET


class ApiKeyCreate(Request):
    example = {"name": "ci", "role": "readonly"}
    name: Annotated[str, Meta(pattern=KEY_NAME)]
    role: KeyRole
    principal: (
        Annotated[
            str,
            Meta(
                pattern=KEY_NAME,
                description="the person or service the key belongs to (default: the caller's). "
                "An admin key, or a key for another principal, is queued for another admin's "
                "approval",
            ),
        ]
        | UnsetType
    ) = UNSET
    expires_in_days: Annotated[int, Meta(ge=1, le=3650)] | UnsetType = UNSET


class ApiKeyCreated(Shape):
    key: ApiKey
    api_key: Annotated[str, Meta(description="shown once, never again")]


class ApiKeyList(Shape):
    keys: list[ApiKey]
