"""The operation log cannot be rewritten by whoever can write the database (finding 6 of the
trust issue): an HMAC chain with its key outside the database, and each new head anchored in
a file outside it. Edits, deletions, truncation and forged appends are each detected."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat

import peewee

from codeb.protection import audit
from codeb.store.models import OperationLog
from tests.protection.helpers import make_project
from tests.support import live_api


def _verify(api) -> dict:
    with api.client() as c:
        r = c.get("/api/protection/logs/verify")
        assert r.status_code == 200, r.text
        return r.json()


def _append_forged(api, key: bytes | None) -> None:
    """Append a row the way the published recipe says, with `key` (None: plain SHA-256)."""
    with api.deps.db.connection_context():
        last = OperationLog.select().order_by(OperationLog.id.desc()).first()
        row = OperationLog(
            operation="project_delete", danger_level=4, requested_by="api", key_name="admin",
            target="shop", status="executed", details={}, created_at=last.created_at,
            executed_at=last.created_at, prev_hash=last.entry_hash,
        )  # fmt: skip
        payload = json.dumps(audit._chained_fields(row), sort_keys=True, separators=(",", ":"))
        message = f"{last.entry_hash}\n{payload}".encode()
        row.entry_hash = (
            hmac.new(key, message, hashlib.sha256).hexdigest()
            if key
            else hashlib.sha256(message).hexdigest()
        )
        row.save(force_insert=True)


def _seed(api) -> None:
    with api.client() as c:
        make_project(c, "shop")
        make_project(c, "blog")
        r = c.delete("/api/projects/shop/environments/staging")
        assert r.status_code == 202


def test_key_and_anchor_live_outside_the_database_owner_only(papi):
    _seed(papi)
    settings = papi.deps.settings
    for path in (settings.resolved_log_key_file, settings.resolved_log_anchor_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    key = settings.resolved_log_key_file.read_text().strip()
    db_bytes = settings.data_dir.joinpath("codeb.db").read_bytes()
    assert key.encode() not in db_bytes
    report = _verify(papi)
    assert report["valid"] and report["unanchored"] == 0 and report["problems"] == []
    with papi.deps.db.connection_context():
        newest = OperationLog.select().order_by(OperationLog.id.desc()).first()
    assert report["anchored_through"] == newest.id


def test_an_edited_row_is_detected(papi):
    _seed(papi)
    with papi.deps.db.connection_context():
        papi.deps.db.execute_sql(
            "UPDATE operation_logs SET key_name = 'someone' WHERE operation = 'project_create'"
        )
    report = _verify(papi)
    assert not report["valid"]
    assert report["problems"][0]["problem"] == "row_does_not_verify"


def test_truncating_the_newest_rows_is_detected(papi):
    """Deleting the newest rows leaves a chain that verifies on its own: the anchor says more."""
    _seed(papi)
    with papi.deps.db.connection_context():
        newest = OperationLog.select().order_by(OperationLog.id.desc()).first().id
        papi.deps.db.execute_sql("DELETE FROM operation_logs WHERE id > ?", (newest - 2,))
    report = _verify(papi)
    assert not report["valid"] and report["first_bad_id"] is None
    assert {"problem": "anchored_row_missing", "id": newest} in report["problems"]


def test_truncation_followed_by_new_appends_is_detected(papi):
    """Rows deleted, then codeb appends again (reusing ids): the old anchor lines disagree."""
    _seed(papi)
    with papi.deps.db.connection_context():
        newest = OperationLog.select().order_by(OperationLog.id.desc()).first().id
        papi.deps.db.execute_sql("DELETE FROM operation_logs WHERE id > ?", (newest - 3,))
    with papi.client() as c:
        make_project(c, "again")
    report = _verify(papi)
    assert not report["valid"]
    assert any(p["problem"] in ("anchored_row_changed", "anchored_row_missing")
               for p in report["problems"])  # fmt: skip


def test_forged_appends_are_detected_with_the_published_recipe_or_a_guessed_key(papi):
    _seed(papi)
    for key in (None, b"0" * 32):
        _append_forged(papi, key)
        report = _verify(papi)
        assert not report["valid"]
        assert report["problems"][0]["problem"] == "row_does_not_verify"


def test_a_deleted_middle_row_is_detected(papi):
    _seed(papi)
    with papi.deps.db.connection_context():
        papi.deps.db.execute_sql(
            "DELETE FROM operation_logs WHERE id = (SELECT MIN(id) + 1 FROM operation_logs)"
        )
    assert not _verify(papi)["valid"]


def test_a_removed_anchor_is_reported(papi):
    _seed(papi)
    papi.deps.settings.resolved_log_anchor_file.unlink()
    report = _verify(papi)
    assert not report["valid"]
    assert report["problems"][0]["problem"] == "anchor_missing"


def test_a_log_chained_before_keys_is_sealed_once_and_says_so(tmp_path):
    """Upgrading: rows from before the key are checked against their old SHA-256 chain, chained
    again with the key, and the seal is itself a log row."""
    data = tmp_path / "data"
    with live_api(data) as api:
        _seed(api)
    # The state an older codeb left: plain SHA-256 chain, no key, no anchor.
    settings_key = data / "log.key"
    settings_anchor = data / "log.anchor"
    db = peewee.SqliteDatabase(str(data / "codeb.db"))
    rows = db.execute_sql(
        "SELECT id, project_id, operation, danger_level, requested_by, key_name, target, status, "
        "details, created_at, executed_at FROM operation_logs ORDER BY id"
    ).fetchall()
    prev = audit.GENESIS
    for r in rows:
        with db.bind_ctx([OperationLog]):
            row = OperationLog.get_by_id(r[0])
        fields = audit._chained_fields(row)
        h = audit._legacy_hash(prev, fields)
        db.execute_sql(
            "UPDATE operation_logs SET prev_hash = ?, entry_hash = ? WHERE id = ?", (prev, h, r[0])
        )
        prev = h
    db.close()
    settings_key.unlink()
    settings_anchor.unlink()
    with live_api(data) as api:
        report = _verify(api)
        assert report["valid"], report
        with api.deps.db.connection_context():
            seal = OperationLog.get(OperationLog.operation == "protection_log_keyed")
        assert seal.details["legacy_chain_valid"] is True
        assert seal.details["rows"] == len(rows)
