from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from codeb.clock import FrozenClock
from tests.support import LiveApi, live_api

# project_update made MEDIUM (a stricter rule, allowed by configuration): a MEDIUM operation
# with parameters, reachable over HTTP today.
MEDIUM_UPDATE = {"project_update": {"level": "MEDIUM"}}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def papi(tmp_path: Path, clock: FrozenClock) -> Iterator[LiveApi]:
    """A live API with a frozen clock, over a fresh SQLite file."""
    with live_api(tmp_path / "data", clock=clock) as live:
        yield live


@pytest.fixture
def mapi(tmp_path: Path, clock: FrozenClock) -> Iterator[LiveApi]:
    """Like papi, with project_update raised to MEDIUM."""
    with live_api(tmp_path / "data", clock=clock, protection_rules=MEDIUM_UPDATE) as live:
        yield live
