"""Helpers for tests: a real waitress server on a loopback port over a real SQLite file."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import waitress

from codeb.app import build_deps, create_app, start_runtime, stop_background
from codeb.clock import Clock, FrozenClock
from codeb.config import Settings
from codeb.features.keys import service as keys
from codeb.services.context import SYSTEM, Deps


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveApi:
    base_url: str
    deps: Deps
    admin_key: str
    clock: Clock

    def client(self, key: str | None = "admin", **headers: str) -> httpx.Client:
        """An HTTP client; `key` is "admin" (the bootstrap key), None, or a literal key."""
        h = {"Content-Type": "application/json", **headers}
        if key == "admin":
            h["X-API-Key"] = self.admin_key
        elif key is not None:
            h["X-API-Key"] = key
        return httpx.Client(base_url=self.base_url, headers=h, timeout=30)

    def new_key(self, name: str, role: str) -> str:
        with self.deps.db.connection_context():
            _, plaintext = keys.create_key(self.deps, SYSTEM, name, role)
        return plaintext


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    # Tests may only ever connect to loopback or to the fleet they booted themselves.
    overrides.setdefault("allowed_networks", "127.0.0.0/8,::1/128")
    return Settings(data_dir=data_dir, **overrides)  # type: ignore[arg-type]


@contextmanager
def live_api(
    data_dir: Path, clock: Clock | None = None, threads: int = 8, **overrides: object
) -> Iterator[LiveApi]:
    # The scheduler's thread stays off unless a test asks for it (scheduler_tick_s=...): its
    # runs would add log rows and operations to tests that count them. tick() still works.
    overrides.setdefault("scheduler_tick_s", 0)
    settings = make_settings(data_dir, **overrides)
    clock = clock or FrozenClock()
    deps = start_runtime(build_deps(settings, clock))
    with deps.db.connection_context():
        admin = keys.ensure_admin_key(deps)
        if admin is None:  # a data directory opened again: a fresh admin key of its own
            n = len(keys.list_keys(deps))
            _, admin = keys.create_key(deps, SYSTEM, f"admin{n}", "admin")
    server = waitress.create_server(
        create_app(deps),
        host="127.0.0.1",
        port=0,
        threads=threads,
        ident="codeb-test",
        asyncore_loop_timeout=0.05,
    )
    port = server.effective_port  # type: ignore[union-attr]
    try:
        with in_thread(server, "waitress"):
            yield LiveApi(f"http://127.0.0.1:{port}", deps, admin, clock)
    finally:
        stop_background(deps)
        deps.worker.shutdown()
        deps.db.close()


@contextmanager
def in_thread(server: object, name: str) -> Iterator[None]:
    """Run a waitress server (waitress.create_server) in a thread for the block; then stop
    its task threads, close it and join the thread."""
    stopping = threading.Event()

    def serve() -> None:
        try:
            server.run()  # type: ignore[attr-defined]
        except OSError:
            # close() from another thread pulls the sockets from under select(): expected.
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=serve, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        server.task_dispatcher.shutdown(timeout=5)  # type: ignore[attr-defined]
        server.close()  # type: ignore[attr-defined]
        thread.join(timeout=10)
