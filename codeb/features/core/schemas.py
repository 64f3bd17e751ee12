"""What the core routes answer."""

from __future__ import annotations

from typing import Literal

from codeb.api.shapes import UNSET, Shape, UnsetType


class Health(Shape):
    status: Literal["ok", "degraded"]
    version: str
    database: str | UnsetType = UNSET
