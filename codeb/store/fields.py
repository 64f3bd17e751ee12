"""Field types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from peewee import TextField


class JSONField(TextField):
    """JSON stored as text: portable across backends, compact, key order kept."""

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), sort_keys=False)

    def python_value(self, value: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        return json.loads(value)
