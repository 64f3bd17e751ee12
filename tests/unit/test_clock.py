"""SystemClock.now: naive UTC to the microsecond, what `datetime.now(UTC)` says without its
tzinfo (read between two of those, it is never outside them)."""

from __future__ import annotations

import datetime as dt

from codeb.clock import SystemClock


def test_system_clock_is_naive_utc_between_two_reads_of_datetime_now():
    clock = SystemClock()
    for _ in range(1000):
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        now = clock.now()
        after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        assert now.tzinfo is None
        assert before <= now <= after
