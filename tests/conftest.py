from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import LiveApi, live_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    """A real waitress server on a loopback port over a fresh SQLite file."""
    with live_api(tmp_path / "data") as live:
        yield live
