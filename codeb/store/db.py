"""Opening the database: one URL picks the backend (SQLite by default, PostgreSQL for larger
installations); migrations run at start-up."""

from __future__ import annotations

from pathlib import Path

from peewee import Database, SqliteDatabase
from playhouse.db_url import connect as connect_url
from playhouse.migrations import Runner

from codeb.store.models import database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def open_database(url: str, *, busy_timeout_ms: int = 10_000) -> Database:
    """Create the Database for `url` and bind every model to it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
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
