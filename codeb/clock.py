"""Time is injected so that cooldowns and expiries are tested by moving a clock, not sleeping."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        # Naive UTC: stored as-is by SQLite and PostgreSQL alike.
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class FrozenClock:
    """A clock for tests: stands still until advanced."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, 12, 0, 0)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, **delta: float) -> None:
        self._now += dt.timedelta(**delta)
