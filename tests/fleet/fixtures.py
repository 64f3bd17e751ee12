"""pytest fixtures for the test fleet (real Debian 13 hosts under systemd-nspawn).

Use with ``pytest_plugins = ["tests.fleet.fixtures"]`` in the root conftest, or import
``fleet`` and ``pytest_configure`` from here. Tests that need it are marked ``@pytest.mark.fleet``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from . import fleet as fleetlib
from .fleet import Config, Host

__all__ = ["Config", "Fleet", "Host", "fleet", "fleet_unavailable_reason", "pytest_configure"]


@dataclass
class Fleet:
    """The running fleet: ``fleet.hosts`` in boot order, ``fleet["db"]`` by name."""

    hosts: list[Host]
    config: Config

    def __getitem__(self, key: str | int) -> Host:
        if isinstance(key, int):
            return self.hosts[key]
        for h in self.hosts:
            if h.name == key:
                return h
        raise KeyError(key)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def key_path(self) -> Path:
        return self.config.key_path

    @property
    def inventory_path(self) -> Path:
        """Ansible inventory (host keys pinned via the fleet's known_hosts)."""
        return self.config.state_dir / "inventory.ini"

    @property
    def known_hosts_path(self) -> Path:
        return self.config.state_dir / "known_hosts"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fleet: needs the real test fleet (nspawn hosts booted by the suite)"
    )


def fleet_unavailable_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the test fleet needs root (systemd-nspawn, a bridge, iptables)"
    return None


def _down_quietly(cfg: Config) -> None:
    with contextlib.suppress(Exception):
        fleetlib.down(cfg)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    """Boots the hosts once per session (CODEB_FLEET_HOSTS, default app,db,cache) and always
    tears them down: after the tests, on failure, Ctrl-C, SIGTERM, at exit as a last resort."""
    reason = fleet_unavailable_reason()
    if reason:
        pytest.skip(reason)
    cfg = Config.from_env()
    names = [n for n in os.environ.get("CODEB_FLEET_HOSTS", "app,db,cache").split(",") if n]
    atexit.register(_down_quietly, cfg)
    # Default SIGTERM would kill the interpreter without running finally blocks.
    old_term = signal.getsignal(signal.SIGTERM)
    if old_term == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        # session() waits while another test run holds the fleet, and always runs down().
        with fleetlib.session(names, cfg) as hosts:
            yield Fleet(hosts=hosts, config=cfg)
    finally:
        atexit.unregister(_down_quietly)
        if old_term == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
