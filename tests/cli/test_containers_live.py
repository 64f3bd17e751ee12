"""`codeb containers ...` against the real containers API. Servers are registered on
loopback addresses with a closed SSH port: every run codeb starts fails fast, and nothing
outside 127.0.0.0/8 is ever contacted."""

from __future__ import annotations

import pytest

from codeb.store.models import Server
from tests.support import free_port


@pytest.fixture
def ready_servers(cli, api):
    """app, db and cache servers marked ready (as a bootstrap on real hosts would leave them)."""
    port = str(free_port())
    for n, role in enumerate(("app", "db", "cache"), start=1):
        ip = f"127.0.0.{n}"
        r = cli("servers", "add", f"{role}1", ip, role, "--ssh-port", port, "--no-bootstrap")
        assert r.code == 0, r.err
    with api.deps.db.connection_context():
        Server.update(status="ready").execute()
    return port


def test_list_and_show_nothing(cli):
    r = cli("containers", "list")
    assert r.code == 0 and r.out.strip() == "(none)"
    assert cli("containers", "list", "--json").json() == {"containers": []}
    r = cli("containers", "show", "ctr_nope")
    assert r.code == 2 and "[not_found]" in r.err


def test_production_deploy_refused_names_what_is_missing(cli, ready_servers):
    cli("projects", "create", "shop")
    r = cli("containers", "deploy", "shop", "production", "registry.test/shop:1.4")
    assert r.code == 3, r.out + r.err
    assert "[protection_refused]" in r.err
    assert "staging_tested:" in r.err and "health_check_passed:" in r.err


def test_staging_deploy_is_followed_to_its_failure(cli, ready_servers):
    cli("projects", "create", "shop")
    r = cli("containers", "deploy", "shop", "staging", "registry.test/shop:1.4")
    assert r.code == 1, r.out + r.err
    assert "following operation op_" in r.out
    assert "unreachable" in r.out and "Connection refused" in r.out


def test_preview_reaches_the_api(cli, ready_servers):
    """The preview request is accepted (?preview=true); its check run fails on a closed port."""
    cli("projects", "create", "shop")
    r = cli("containers", "deploy", "shop", "staging", "registry.test/shop:1.4", "--preview")
    assert r.code == 2, r.out + r.err
    assert "the preview run failed" in r.err
    assert cli("operations", "list", "--json").json()["operations"] == []
