"""The confirm flow through the CLI: MEDIUM asks (or needs --yes), HIGH/CRITICAL show what is
still required; protection queue, show, confirm, cancel, approve, logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.cli.conftest import REPO
from tests.protection.helpers import add_backup

TOKEN = re.compile(r"cbt_[A-Za-z0-9_-]{20,}")
ENTRY = re.compile(r"pq_[0-9a-f]+")


def project_type(cli, name: str) -> str:
    return cli("projects", "show", name, "--json").json()["type"]


def test_medium_with_yes_confirms_and_shows_the_result(cli):
    cli("projects", "create", "shop")
    r = cli("projects", "update", "shop", "--type", "static", "--yes")
    assert r.code == 0, r.err
    assert "MEDIUM: Changes type of project 'shop'" in r.out
    assert "project_update: executed" in r.out and "type:       static" in r.out
    assert project_type(cli, "shop") == "static"


def test_medium_without_a_terminal_exits_3_with_the_token(cli, sub):
    cli("projects", "create", "shop")
    r = sub("projects", "update", "shop", "--type", "remix")
    assert r.code == 3, r.out + r.err
    assert "MEDIUM" in r.out and "not confirmed" in r.out
    token = TOKEN.search(r.out).group(0)
    assert f"codeb protection confirm {token}" in r.out
    assert project_type(cli, "shop") == "nodejs"  # nothing changed

    r = sub("protection", "confirm", token)
    assert r.code == 0, r.err
    assert "executed" in r.out
    assert project_type(cli, "shop") == "remix"
    # The token is single use.
    r = sub("protection", "confirm", token)
    assert r.code == 3 and "protection_entry_closed" in r.err


def test_medium_json_without_a_terminal_prints_the_pending_answer(cli):
    cli("projects", "create", "shop")
    r = cli("projects", "update", "shop", "--type", "remix", "--json")
    assert r.code == 3
    body = r.json()
    assert body["status"] == "confirmation_required" and body["confirm_token"]
    assert "not confirmed" in r.err  # people's words go to stderr in --json mode


def _on_a_terminal(cli_env: dict, answer: bytes, *argv: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin and type `answer`."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codeb", *argv],
            env={**os.environ, **cli_env},
            cwd=REPO,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        os.write(master, answer)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    return proc.returncode, out.decode()


def test_medium_on_a_terminal_asks(cli, cli_env):
    cli("projects", "create", "shop")
    code, out = _on_a_terminal(cli_env, b"y\n", "projects", "update", "shop", "--type", "remix")
    assert code == 0, out
    assert "Proceed? [y/N]" in out and "executed" in out
    assert project_type(cli, "shop") == "remix"

    code, out = _on_a_terminal(cli_env, b"\n", "projects", "update", "shop", "--type", "static")
    assert code == 3, out
    assert "not confirmed: nothing was changed" in out
    assert project_type(cli, "shop") == "remix"
    # Declining withdraws the request: no live token is left behind.
    entries = cli("protection", "queue", "--status", "all", "--json").json()["entries"]
    assert sorted(e["status"] for e in entries) == ["cancelled", "executed"]


def test_high_environment_delete_shows_what_is_required_then_runs(cli, api, clock):
    project = cli("projects", "create", "shop", "--json").json()["project"]
    r = cli("environments", "delete", "shop", "staging")
    assert r.code == 3, r.err
    token, entry_id = TOKEN.search(r.out).group(0), ENTRY.search(r.out).group(0)
    for needed in ("backup_exists", "user_confirmation", "name_confirmation", "cooldown_24h"):
        assert needed in r.out
    assert "24h 00m left" in r.out and "2026-01-02T12:00:00Z" in r.out
    assert f"codeb protection confirm {token} --name shop/staging" in r.out
    assert f"codeb protection cancel {entry_id}" in r.out

    r = cli("protection", "queue")
    assert r.code == 0
    row = r.out.splitlines()[1]
    assert row.split()[:5] == [entry_id, "environment_delete", "HIGH", "shop/staging", "pending"]
    r = cli("protection", "show", entry_id)
    assert r.code == 0 and "cooldown left:" in r.out and "still required:" in r.out

    r = cli("protection", "confirm", token)
    assert r.code == 0, r.err
    assert "confirmation recorded" in r.out and "24h 00m left" in r.out

    add_backup(api, project["id"], "staging")
    clock.advance(hours=24)
    r = cli("protection", "confirm", token, "--name", "shop/wrong")
    assert r.code == 3 and "typed_name_mismatch" in r.err
    r = cli("protection", "confirm", token, "--name", "shop/staging")
    assert r.code == 0, r.err
    assert "environment_delete: executed" in r.out
    assert cli("environments", "show", "shop", "staging").code == 2
    assert cli("protection", "queue").out.strip() == "(none)"


def test_cancel_then_confirm_is_refused(cli):
    cli("projects", "create", "shop")
    r = cli("environments", "delete", "shop", "production")
    token, entry_id = TOKEN.search(r.out).group(0), ENTRY.search(r.out).group(0)
    r = cli("protection", "cancel", entry_id)
    assert r.code == 0 and f"cancelled: entry {entry_id}" in r.out
    r = cli("protection", "confirm", token)
    assert r.code == 3 and "protection_entry_closed" in r.err
    assert cli("protection", "cancel").code == 2  # an id or --token is needed


def test_critical_needs_another_admin_to_approve(cli, api):
    cli("projects", "create", "shop")
    r = cli("projects", "delete", "shop")
    assert r.code == 3
    entry_id = ENTRY.search(r.out).group(0)
    assert "admin_approval" in r.out and f"codeb protection approve {entry_id}" in r.out
    r = cli("protection", "approve", entry_id)
    assert r.code == 3 and "protection_refused" in r.err  # not the requester's own key
    other = api.new_key("second-admin", "admin")
    r = cli("protection", "approve", entry_id, key=other)
    assert r.code == 0, r.err
    assert "approved (not executed yet)" in r.out and "cooldown_48h" in r.out
    operator = api.new_key("ops", "operator")
    assert cli("protection", "approve", entry_id, key=operator).code == 4


def test_logs_rules_and_chain(cli):
    cli("projects", "create", "shop")
    cli("projects", "update", "shop", "--type", "remix", "--yes")
    r = cli("protection", "logs", "--operation", "project_update", "--verify")
    assert r.code == 0, r.err
    statuses = [line.split()[4] for line in r.out.splitlines()[1:-1]]
    assert statuses == ["executed", "confirmed", "token_issued", "requested"]
    assert "chain valid" in r.out
    body = cli("protection", "logs", "--verify", "--json").json()
    assert body["chain"]["valid"] is True and body["logs"][0]["requested_by"] == "cli"
    r = cli("protection", "rules")
    assert re.search(r"^project_update +MEDIUM +token", r.out, re.MULTILINE), r.out
    rules = {r["operation"]: r for r in cli("protection", "rules", "--json").json()["rules"]}
    assert rules["project_update"]["flow"] == "token"
