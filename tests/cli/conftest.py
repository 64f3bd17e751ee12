"""CLI tests: the real `codeb` command against a real API (a waitress server on loopback over
a fresh SQLite file), in-process through `codeb.cli.main` and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from codeb.cli import main
from codeb.clock import FrozenClock
from tests.support import LiveApi, live_api

REPO = Path(__file__).resolve().parents[2]
# project_update raised to MEDIUM: a MEDIUM operation with parameters, reachable today.
MEDIUM_UPDATE = {"project_update": {"level": "MEDIUM"}}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def api(tmp_path: Path, clock: FrozenClock) -> Iterator[LiveApi]:
    with live_api(tmp_path / "data", clock=clock, protection_rules=MEDIUM_UPDATE) as live:
        yield live


@pytest.fixture
def cli_env(api: LiveApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment a user of the CLI would have; also applied to this process."""
    env = {
        "CODEB_URL": api.base_url,
        "CODEB_API_KEY": api.admin_key,
        # Never the developer's own config file.
        "CODEB_CLI_CONFIG": str(tmp_path / "no-such-cli.toml"),
        "NO_COLOR": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def cli(cli_env, capsys):
    """Run `codeb ...` in-process; `key=` runs it with another API key."""

    def run(*argv: str, key: str | None = None) -> Result:
        if key is not None:
            os.environ["CODEB_API_KEY"] = key
        try:
            code = main(list(argv))
        finally:
            os.environ["CODEB_API_KEY"] = cli_env["CODEB_API_KEY"]
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def sub(cli_env):
    """Run `python -m codeb ...` as a subprocess (stdin is not a terminal)."""

    def run(*argv: str, stdin: int | None = subprocess.DEVNULL, **env: str) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "codeb", *argv],
            env={**os.environ, **cli_env, **env},
            cwd=REPO,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
