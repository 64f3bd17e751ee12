"""Migrating an empty database gives exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from peewee import Database

from codeb.store.db import migrate, open_database
from codeb.store.models import ALL_MODELS
from tests.services import fresh_database

HISTORY = "schema_migration"


def sqlite_schema(db: Database) -> set[tuple]:
    rows = db.execute_sql(
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite_%' AND tbl_name != ?",
        (HISTORY,),
    ).fetchall()
    return {tuple(r) for r in rows}


def postgres_schema(db: Database) -> set[tuple]:
    columns = db.execute_sql(
        "SELECT table_name, column_name, data_type, is_nullable, character_maximum_length, "
        "column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name != %s",
        (HISTORY,),
    ).fetchall()
    indexes = db.execute_sql(
        "SELECT tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public' AND tablename != %s",
        (HISTORY,),
    ).fetchall()
    constraints = db.execute_sql(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text != %s",
        (HISTORY,),
    ).fetchall()
    return (
        {("col", *r) for r in columns}
        | {("idx", *r) for r in indexes}
        | {("con", *r) for r in constraints}
    )


def test_sqlite_migrations_match_models(tmp_path):
    migrated = open_database(f"sqlite:///{tmp_path / 'migrated.db'}")
    assert migrate(migrated)  # something was applied
    assert migrate(migrated) == []  # and a second start applies nothing
    with migrated.connection_context():
        got = sqlite_schema(migrated)
    migrated.close()

    direct = open_database(f"sqlite:///{tmp_path / 'direct.db'}")
    with direct.connection_context():
        direct.create_tables(ALL_MODELS)
        want = sqlite_schema(direct)
    direct.close()
    assert got == want


def test_sqlite_pragmas(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'p.db'}", busy_timeout_ms=4321)
    with db.connection_context():
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 4321


@pytest.mark.postgres
def test_postgres_migrations_match_models(postgres_url):
    migrated_url = fresh_database(postgres_url, f"m_{uuid.uuid4().hex[:8]}")
    direct_url = fresh_database(postgres_url, f"d_{uuid.uuid4().hex[:8]}")
    migrated = open_database(migrated_url)
    assert migrate(migrated)
    with migrated.connection_context():
        got = postgres_schema(migrated)
    migrated.close()
    direct = open_database(direct_url)
    with direct.connection_context():
        direct.create_tables(ALL_MODELS)
        want = postgres_schema(direct)
    direct.close()
    assert got and got == want
