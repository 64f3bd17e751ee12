"""Opening the database: one URL picks the backend (SQLite by default, PostgreSQL for larger
installations); migrations run at start-up."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TypeVar

from peewee import Database, SqliteDatabase
from playhouse.db_url import connect as connect_url
from playhouse.migrations import Runner

from codeb.store import walindex
from codeb.store.models import database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")


def open_database(url: str, *, busy_timeout_ms: int = 10_000) -> Database:
    """Create the Database for `url` and bind every model to it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The database holds key hashes and encrypted passwords: owner only. SQLite gives
        # its -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db: Database = connect_url(
            url,
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": busy_timeout_ms,
                # WAL + NORMAL is durable against application crashes, and fast.
                "synchronous": "normal",
            },
            timeout=busy_timeout_ms / 1000,
        )
    else:
        db = connect_url(url)
    database.initialize(db)
    return db


def is_sqlite(db: Database) -> bool:
    return isinstance(db, SqliteDatabase)


def migrate(db: Database) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    with db.connection_context():
        return Runner(db, directory=str(MIGRATIONS_DIR)).up()


# Change tokens and per-thread caches (SQLite only).
#
# `PRAGMA data_version` is per connection: it moves whenever ANY OTHER connection commits
# (another thread's connection, the CLI, another process), never on this connection's own
# commits. `total_changes` counts this connection's own inserted, updated and deleted rows
# (committed or not). The pair therefore changes whenever the data this connection sees may
# have changed; a value computed from the database after the pair was read stays valid while
# the pair is unchanged. The WAL-index header stands in for data_version where it can be read
# (it moves on every commit, this connection's too): see codeb.store.walindex.

Token = tuple[bytes | int, int]

_request = threading.local()


def _data_version(conn: sqlite3.Connection) -> bytes | int:
    """What moves when another connection commits: the WAL-index header when it can be read
    without a system call (codeb.store.walindex), else `PRAGMA data_version`."""
    header = walindex.header(conn)
    if header is not None:
        return header
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return version


def begin_request(db: Database) -> None:
    """Read this connection's data_version once, at the start of a request and before any
    data: every cache lookup of the request uses it, so it costs one statement per request."""
    if isinstance(db, SqliteDatabase):
        conn = db.connection()
        _request.conn, _request.version = conn, _data_version(conn)


def end_request() -> None:
    _request.conn = None


def _current(db: Database) -> tuple[sqlite3.Connection, Token] | None:
    if not isinstance(db, SqliteDatabase):
        return None
    conn = db.connection()
    if conn.in_transaction:
        # Inside a transaction the data may be uncommitted (and later rolled back, which
        # total_changes does not undo) or an older snapshot: never cached.
        return None
    if getattr(_request, "conn", None) is conn:
        version = _request.version
    else:
        version = _data_version(conn)
    return conn, (version, conn.total_changes)


def change_token(db: Database) -> Token | None:
    """(data_version, total_changes) as seen by this thread's connection: it changes whenever
    any connection (this one, another thread's, another process's) may have changed the data.
    Inside a request (begin_request .. end_request) data_version is the one read at its
    start. None when nothing may be cached: on other backends, or inside a transaction."""
    current = _current(db)
    return None if current is None else current[1]


class ThreadCache:
    """Values computed from the database, kept per thread and per connection, valid only while
    `change_token` is unchanged. The token is read before the data, so an entry may be newer
    than its token but never older: after a commit by anyone, nothing stale is served. On
    other backends (and inside a transaction) every call computes. Callers must not mutate
    the values they get."""

    def __init__(self, max_entries: int = 64) -> None:
        self._local = threading.local()
        self._max = max_entries

    def get(self, db: Database, key: Hashable, compute: Callable[[], T]) -> T:
        current = _current(db)
        if current is None:
            return compute()
        conn, token = current
        local = self._local
        if getattr(local, "conn", None) is not conn or local.token != token:
            local.conn, local.token, local.values = conn, token, {}
        values: dict = local.values
        if key in values:
            return values[key]
        value = compute()
        if len(values) >= self._max:
            values.clear()
        values[key] = value
        return value

    def clear(self) -> None:
        """Forget this thread's entries."""
        self._local.__dict__.clear()
