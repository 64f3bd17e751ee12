"""Following real operations: a bootstrap of 127.0.0.1 on a closed port fails fast."""

from __future__ import annotations

import re

from tests.support import free_port

OPERATION = re.compile(r"op_[0-9a-f]{16}")


def test_servers_add_follows_the_bootstrap_to_its_failure(cli):
    port = str(free_port())  # nothing listens there: the connection is refused at once
    r = cli("servers", "add", "lo", "127.0.0.1", "app", "--ssh-port", port)
    assert r.code == 1, r.out + r.err
    assert "server lo (127.0.0.1, app) registered: bootstrapping" in r.out
    assert "[lo] TASK Probe the host ... unreachable (" in r.out
    assert f"port {port}: Connection refused" in r.out
    lines = r.out.splitlines()
    recap = lines.index("RECAP")
    assert lines[recap + 1].split() == ["HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED"]
    host, _ok, changed, failed, unreachable, _ = lines[recap + 2].split()
    # The role's checks of its own inputs run on the controller; the first remote task fails.
    assert (host, changed, failed, unreachable) == ("lo", "0", "0", "1")
    assert re.search(r"operation op_\w+ failed \(rc 4\)", r.out)
    assert "error: host lo is unreachable" in r.out
    assert cli("servers", "show", "127.0.0.1", "--json").json()["status"] == "unreachable"


def test_no_follow_then_operations_follow_show_list(cli):
    r = cli("servers", "add", "lo", "127.0.0.1", "app", "--ssh-port", str(free_port()),
            "--no-follow")  # fmt: skip
    assert r.code == 0, r.err
    op_id = OPERATION.search(r.out).group(0)
    assert f"codeb operations follow {op_id}" in r.out

    r = cli("operations", "follow", op_id)
    assert r.code == 1
    assert "unreachable" in r.out and f"operation {op_id} failed" in r.out
    # Following a finished operation again prints the same story; --json the final state.
    r = cli("operations", "follow", op_id, "--json")
    assert r.code == 1 and r.json()["status"] == "failed"
    assert "[lo] TASK Probe the host" in r.err

    r = cli("operations", "show", op_id)
    assert r.code == 0 and "status:       failed" in r.out and "RECAP" in r.out
    r = cli("operations", "list", "--json")
    assert [o["id"] for o in r.json()["operations"]] == [op_id]
    r = cli("operations", "list", "--status", "failed")
    assert op_id in r.out.splitlines()[1]
    r = cli("operations", "cancel", op_id)
    assert r.code == 2 and "already finished" in r.err


def test_servers_bootstrap_again_is_followed(cli):
    port = str(free_port())
    cli("servers", "add", "lo", "127.0.0.1", "app", "--ssh-port", port, "--no-bootstrap")
    r = cli("servers", "bootstrap", "127.0.0.1", "--json")
    assert r.code == 1
    assert r.json()["kind"] == "server_bootstrap"  # stdout: the API's answer, parsed
    assert "Connection refused" in r.err and "failed (rc 4)" in r.err  # progress: stderr
