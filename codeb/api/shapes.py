"""The building blocks of request and response shapes (msgspec Structs), shared by features.

`Request` shapes refuse unknown fields and validate bodies; `Shape` (responses) only describe
what the API answers, for the document. An optional field of a request is `X | UnsetType =
UNSET`: absent stays absent (the service applies its default), and the document shows no
made-up default."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "NAME",
    "NAME_PATTERN",
    "NULLABLE_TIME",
    "STRINGS",
    "TIMESTAMP",
    "UNSET",
    "Error",
    "Meta",
    "Request",
    "Shape",
    "UnsetType",
    "described",
]


class _KeywordFields(msgspec.StructMeta):
    """Every shape's fields are keyword-only: fields read in the order of the answer, required
    or not (msgspec applies `kw_only` per class otherwise)."""

    def __new__(mcls, name: str, bases: tuple, namespace: dict, **options: Any) -> Any:
        options.setdefault("kw_only", True)
        return super().__new__(mcls, name, bases, namespace, **options)


class Shape(msgspec.Struct, metaclass=_KeywordFields):
    """A response shape (documentation: the API answers dicts of this form)."""


class Request(msgspec.Struct, metaclass=_KeywordFields, forbid_unknown_fields=True):
    """A request body: unknown fields are refused (a typo is an error, not ignored). Every
    request shape sets `example` (a ClassVar): a body it accepts, published in the document
    and sent by the tests that sweep every route (tests/protection)."""

    example: ClassVar[dict[str, Any]]


def described(tp: Any, description: str) -> Any:
    return Annotated[tp, Meta(description=description)]


TIMESTAMP = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
NULLABLE_TIME = Annotated[str | None, Meta(extra_json_schema={"format": "date-time"})]
STRINGS = list[str]
NAME_PATTERN = "^[a-z]([a-z0-9-]*[a-z0-9])?$"
NAME = Annotated[str, Meta(min_length=1, max_length=48, pattern=NAME_PATTERN)]


class ErrorBody(Shape):
    code: str
    message: str
    details: dict[str, Any]


class Error(Shape):
    error: ErrorBody
