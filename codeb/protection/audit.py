"""The append-only operation log, as a keyed hash chain anchored outside the database.

Each row carries an HMAC-SHA256 (key in a 0600 file beside the Fernet key, never in the
database) over the previous row's hash and its own fields: whoever can write the database but
not read that file can neither edit a row nor append a believable one. After every commit that
appended rows, the new head (row id and hash) is appended to an anchor file outside the
database: deleting the newest rows (truncation), even followed by new appends, leaves an
anchor line that no longer matches. `verify_report` checks both."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peewee import Database, PostgresqlDatabase

from codeb.secretbox import key_file
from codeb.store.models import OperationLog

GENESIS = "0" * 64


@dataclass
class Chain:
    """What keys and anchors the log of one database."""

    key: bytes
    anchor_file: Path
    _anchored: tuple[int, str] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def entry_hash(self, prev_hash: str, fields: dict[str, Any]) -> str:
        payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self.key, f"{prev_hash}\n{payload}".encode(), hashlib.sha256).hexdigest()

    def append_anchor(self, row_id: int, entry_hash: str) -> None:
        with self._lock:
            if self._anchored == (row_id, entry_hash):
                return
            line = f"{row_id} {entry_hash}\n".encode()
            fd = os.open(self.anchor_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one short write on O_APPEND: atomic between processes
            finally:
                os.close(fd)
            self._anchored = (row_id, entry_hash)

    def anchors(self) -> list[tuple[int, str]] | None:
        """Every anchor line, or None when there is no anchor file."""
        try:
            text = self.anchor_file.read_text()
        except FileNotFoundError:
            return None
        found = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                found.append((int(parts[0]), parts[1]))
        return found


_CHAINS: weakref.WeakKeyDictionary[Database, Chain] = weakref.WeakKeyDictionary()
_pending = threading.local()


def load_key(path: Path) -> tuple[bytes, bool]:
    """The log key, created (0600, atomically) if missing. Returns (key, created now)."""
    key, created = key_file(path, lambda: secrets.token_hex(32).encode())
    return bytes.fromhex(key.decode()), created


def bind(db: Database, key_file: Path, anchor_file: Path) -> Chain:
    """Key the log of `db` and anchor it in `anchor_file`. A database whose rows were chained
    before the log was keyed (no anchor yet, a key made now) is sealed once: its rows are
    chained again with the key, after checking their old chain, and that is logged."""
    key, created = load_key(key_file)
    chain = Chain(key, anchor_file)
    _CHAINS[db] = chain
    with db.connection_context():
        if chain.anchors() is None and created:
            _seal(db, chain)
    return chain


def chain_for(db: Database) -> Chain:
    chain = _CHAINS.get(db)
    if chain is None:
        # Fail closed: an unkeyed row could be forged by anyone who can write the database.
        raise RuntimeError("the operation log of this database has no key (audit.bind)")
    return chain


def _legacy_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


def _seal(db: Database, chain: Chain) -> None:
    rows = list(OperationLog.select().order_by(OperationLog.id))
    if not rows:
        return
    legacy_valid, first_bad, prev = True, None, GENESIS
    for row in rows:
        if legacy_valid and (
            row.prev_hash != prev or row.entry_hash != _legacy_hash(prev, _chained_fields(row))
        ):
            legacy_valid, first_bad = False, row.id
        prev = row.entry_hash
    with db.atomic():
        prev = GENESIS
        for row in rows:
            row.prev_hash = prev
            row.entry_hash = chain.entry_hash(prev, _chained_fields(row))
            row.save()
            prev = row.entry_hash
        record(
            db,
            operation="protection_log_keyed",
            danger_level=0,
            status="executed",
            requested_by="cli",
            key_name="codeb",
            now=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            details={"rows": len(rows), "legacy_chain_valid": legacy_valid,
                     "legacy_first_bad_id": first_bad},
            executed=True,
        )  # fmt: skip
    anchor_pending(db)


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
    row.entry_hash = chain_for(db).entry_hash(prev, _chained_fields(row))
    row.save(force_insert=True)
    _pending.dbs = {*getattr(_pending, "dbs", set()), id(db)}
    return row


def anchor_pending(db: Database) -> None:
    """After a commit: if this thread appended rows, anchor the head the database now has
    (outside any transaction, so it is committed). Called by Deps.write()."""
    pending = getattr(_pending, "dbs", set())
    if id(db) not in pending:
        return
    pending.discard(id(db))
    head = (
        OperationLog.select(OperationLog.id, OperationLog.entry_hash)
        .order_by(OperationLog.id.desc())
        .first()
    )
    if head is not None:
        chain_for(db).append_anchor(head.id, head.entry_hash)


def verify_report(db: Database) -> dict[str, Any]:
    """Checks the chain (edits, deletions in the middle, forged rows) and every anchor line
    (truncation, a rewritten head). `valid` only if nothing is wrong."""
    chain = chain_for(db)
    problems: list[dict[str, Any]] = []
    prev, first_bad, hashes, checked = GENESIS, None, {}, 0
    for row in OperationLog.select().order_by(OperationLog.id).iterator():
        checked += 1
        hashes[row.id] = row.entry_hash
        if first_bad is None and (
            row.prev_hash != prev or row.entry_hash != chain.entry_hash(prev, _chained_fields(row))
        ):
            first_bad = row.id
            problems.append({"problem": "row_does_not_verify", "id": row.id})
        prev = row.entry_hash
    anchors = chain.anchors()
    anchored_through = None
    if anchors is None:
        if checked:
            problems.append({"problem": "anchor_missing", "file": str(chain.anchor_file)})
    else:
        for row_id, anchored_hash in anchors:
            if row_id not in hashes:
                problems.append({"problem": "anchored_row_missing", "id": row_id})
            elif hashes[row_id] != anchored_hash:
                problems.append({"problem": "anchored_row_changed", "id": row_id})
        if anchors:
            anchored_through = max(row_id for row_id, _ in anchors)
    unanchored = sum(
        1 for row_id in hashes if anchored_through is None or row_id > anchored_through
    )
    return {
        "valid": not problems,
        "first_bad_id": first_bad,
        "checked": checked,
        "anchored_through": anchored_through,
        # Rows after the newest anchor: appended by a process that stopped before anchoring.
        "unanchored": unanchored,
        "problems": problems[:20],
    }


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
