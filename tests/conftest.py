from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import LiveApi, live_api

# The session-scoped `fleet` fixture (real nspawn hosts) and the `fleet` marker.
pytest_plugins = ["tests.fleet.fixtures"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (from Debian's packages)."""
    from tests.services import postgres_available, postgres_server

    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests; make test installs PostgreSQL")
        pytest.skip("PostgreSQL needs root and Debian's postgresql package (make test)")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveApi]:
    """A real waitress server on a loopback port, over a fresh SQLite file or a fresh
    PostgreSQL database: the same models and behaviour on both."""
    overrides: dict[str, object] = {}
    if request.param == "postgres":
        from tests.services import fresh_database

        base = request.getfixturevalue("postgres_url")
        overrides["database_url"] = fresh_database(base, f"t_{uuid.uuid4().hex[:12]}")
    with live_api(tmp_path / "data", **overrides) as live:
        yield live


@pytest.fixture
def sqlite_api(tmp_path: Path) -> Iterator[LiveApi]:
    """For tests that look inside the SQLite file itself."""
    with live_api(tmp_path / "data") as live:
        yield live
