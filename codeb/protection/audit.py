"""The append-only operation log. Each row carries a SHA-256 chained to the previous row, so a
changed or removed row breaks the chain and `verify_chain` says where."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from peewee import Database, PostgresqlDatabase

from codeb.store.models import OperationLog

GENESIS = "0" * 64


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


def _chained_fields(row: OperationLog) -> dict[str, Any]:
    return {
        "project_id": row.project_id,
        "operation": row.operation,
        "danger_level": row.danger_level,
        "requested_by": row.requested_by,
        "key_name": row.key_name,
        "target": row.target,
        "status": row.status,
        "details": row.details,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "executed_at": row.executed_at.isoformat() if row.executed_at else None,
    }


def record(
    db: Database,
    *,
    operation: str,
    danger_level: int,
    status: str,
    requested_by: str,
    key_name: str | None,
    now: dt.datetime,
    project_id: str | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    executed: bool = False,
) -> OperationLog:
    """Append one row inside the caller's write transaction. `details` must hold no secrets."""
    if isinstance(db, PostgresqlDatabase):
        # Serialise appenders so two transactions never chain onto the same previous row.
        db.execute_sql("SELECT pg_advisory_xact_lock(424242)")
    last = OperationLog.select(OperationLog.entry_hash).order_by(OperationLog.id.desc()).first()
    prev = last.entry_hash if last and last.entry_hash else GENESIS
    row = OperationLog(
        project=project_id,
        operation=operation,
        danger_level=danger_level,
        requested_by=requested_by,
        key_name=key_name,
        target=target,
        status=status,
        details=details or {},
        created_at=now,
        executed_at=now if executed else None,
        prev_hash=prev,
    )
    row.entry_hash = entry_hash(prev, _chained_fields(row))
    row.save(force_insert=True)
    return row


def verify_chain() -> tuple[bool, int | None]:
    """(True, None) when every row hashes to what it stores; else (False, first bad id)."""
    prev = GENESIS
    for row in OperationLog.select().order_by(OperationLog.id).iterator():
        if row.prev_hash != prev or row.entry_hash != entry_hash(prev, _chained_fields(row)):
            return False, row.id
        prev = row.entry_hash
    return True, None


def verify_report() -> dict[str, Any]:
    valid, first_bad = verify_chain()
    return {"valid": valid, "first_bad_id": first_bad, "checked": OperationLog.select().count()}


def log_view(row: OperationLog) -> dict[str, Any]:
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() + "Z" if value else None

    return {
        "id": row.id,
        "project_id": row.project_id,
        "operation": row.operation,
        "danger_level": row.danger_level,
        "requested_by": row.requested_by,
        "key_name": row.key_name,
        "target": row.target,
        "status": row.status,
        "details": row.details or {},
        "created_at": iso(row.created_at),
        "executed_at": iso(row.executed_at),
        "prev_hash": row.prev_hash,
        "entry_hash": row.entry_hash,
    }


def list_logs(
    *,
    limit: int,
    offset: int,
    operation: str | None = None,
    status: str | None = None,
    project_id: str | None = None,
    key_name: str | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Newest first, filtered by exact values."""
    query = OperationLog.select()
    for column, value in (
        (OperationLog.operation, operation),
        (OperationLog.status, status),
        (OperationLog.project, project_id),
        (OperationLog.key_name, key_name),
        (OperationLog.target, target),
    ):
        if value is not None:
            query = query.where(column == value)
    total = query.count()
    rows = query.order_by(OperationLog.id.desc()).limit(limit).offset(offset)
    return {"logs": [log_view(r) for r in rows], "total": total, "limit": limit, "offset": offset}
