"""Containers end to end on the real fleet, through the HTTP API: a project gets a running
app with its own PostgreSQL and Redis, safely."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from urllib.parse import urlsplit

import httpx
import pytest

from codeb.clock import SystemClock
from tests.executor.helpers import register_fleet, wait_operation
from tests.support import live_api

pytestmark = pytest.mark.fleet
APP = "localhost/codeb-test-app"


def env_var(env_file: str, name: str) -> str:
    return re.search(rf"^{name}=(.*)$", env_file, re.M).group(1)


@pytest.fixture(scope="module")
def stack(fleet, tmp_path_factory):
    net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
    with live_api(
        tmp_path_factory.mktemp("ctr"),
        clock=SystemClock(),
        allowed_networks=net,
        ssh_private_key_file=fleet.key_path,
    ) as api:
        with api.client() as c:
            register_fleet(c, fleet)
            created = c.post("/api/projects", json={"name": "shop", "type": "nodejs"})
            assert created.status_code == 201, created.text
        yield api, created.json()
        # Leave the shared hosts as we found them.
        for host in fleet:
            host.ssh(
                "systemctl stop 'shop-*' 2>/dev/null; rm -f /etc/containers/systemd/shop-*; "
                "systemctl daemon-reload; podman rm -af >/dev/null 2>&1; "
                "podman volume prune -f >/dev/null 2>&1; rm -rf /etc/codeb/env/shop-* "
                "/etc/codeb/redis/shop-*"
            )


def started_operation(r: httpx.Response) -> str:
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "executed", body
    return body["result"]["operation"]["id"]


def deploy(c, env: str, image: str, **kw) -> httpx.Response:
    # A preview answers only after its check-mode run: at a 1-min load of ~30 on this shared
    # 2-CPU machine that took over the client's default 30 s.
    kw.setdefault("timeout", 180)
    return c.post(
        "/api/containers/deploy", json={"project": "shop", "environment": env, "image": image}, **kw
    )


def confirm_token(c, r: httpx.Response) -> httpx.Response:
    assert r.status_code == 202 and r.json()["status"] == "confirmation_required", r.text
    return c.post("/api/protection/confirm", json={"token": r.json()["confirm_token"]})


def container(c, component: str, env: str = "staging") -> dict:
    rows = c.get("/api/containers", params={"project": "shop", "environment": env}).json()
    return next(x for x in rows["containers"] if x["server_type"] == component)


def test_end_to_end(fleet, stack):
    api, created = stack
    app, db, cache = fleet["app"], fleet["db"], fleet["cache"]
    staging_env = created["env_files"]["staging"]
    with api.client() as c:
        # 1. First staging deploy provisions app, PostgreSQL and Redis.
        op = wait_operation(c, started_operation(deploy(c, "staging", f"{APP}:v1")))
        assert op["status"] == "succeeded", op
        assert op["result"]["healthy"] is True
        page = httpx.get(f"http://{app.ip}:3001/", timeout=5)
        assert "v1" in page.text
        database_url = env_var(staging_env, "DATABASE_URL")
        assert f"@{db.ip}:15432/shop_staging" in database_url
        psql = subprocess.run(
            [
                "psql",
                database_url,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                "CREATE TABLE orders (id int); INSERT INTO orders VALUES (42); "
                "SELECT count(*) FROM orders",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert psql.returncode == 0 and psql.stdout.strip().endswith("1"), psql.stderr
        redis_url = env_var(staging_env, "REDIS_URL")
        assert f"@{cache.ip}:16379/0" in redis_url
        # redis-cli 7.0 turns the URL's empty user into `AUTH "" pw`; authenticate the way a
        # client library does with this URL: the password alone, sent on stdin.
        parsed = urlsplit(redis_url)
        pong = subprocess.run(
            ["redis-cli", "-h", parsed.hostname, "-p", str(parsed.port)],
            input=f"AUTH {parsed.password}\nPING\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert pong.stdout.split() == ["OK", "PONG"], pong.stdout + pong.stderr
        wrong = subprocess.run(
            ["redis-cli", "-h", cache.ip, "-p", "16379", "ping"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "NOAUTH" in wrong.stdout + wrong.stderr
        # The .env on the app server is 0600.
        mode = app.ssh("stat -c %a /etc/codeb/env/shop-staging-app.env", check=True)
        assert mode.stdout.strip() == "600"

        # 2. The same image again: nothing changes, nothing restarts.
        since = app.ssh(
            "systemctl show -p ActiveEnterTimestampMonotonic shop-staging-app", check=True
        ).stdout
        op = wait_operation(c, started_operation(deploy(c, "staging", f"{APP}:v1")))
        assert op["status"] == "succeeded"
        assert all(h["changed"] == 0 for h in op["recap"].values()), op["recap"]
        assert (
            app.ssh(
                "systemctl show -p ActiveEnterTimestampMonotonic shop-staging-app", check=True
            ).stdout
            == since
        )

        # 3. Production: an image not tested in staging is refused, naming what is missing.
        r = deploy(c, "production", f"{APP}:v2")
        assert r.status_code == 403, r.text
        unmet = {u["requirement"] for u in r.json()["error"]["details"]["unmet"]}
        assert {"staging_tested", "health_check_passed"} <= unmet
        r = confirm_token(c, deploy(c, "production", f"{APP}:v1"))
        op = wait_operation(c, started_operation(r))
        assert op["status"] == "succeeded", op
        assert "v1" in httpx.get(f"http://{app.ip}:4001/", timeout=5).text

        # By digest: once v1 names another image, production refuses it until staging
        # tests it again.
        app.ssh(f"podman tag {APP}:v1 {APP}:v1-orig && podman tag {APP}:v2 {APP}:v1", check=True)
        try:
            r = confirm_token(c, deploy(c, "production", f"{APP}:v1"))
            op = wait_operation(c, started_operation(r))
            assert op["status"] == "failed" and "passed in staging" in op["error"], op
        finally:
            app.ssh(f"podman tag {APP}:v1-orig {APP}:v1 && podman rmi {APP}:v1-orig", check=True)
        assert "v1" in httpx.get(f"http://{app.ip}:4001/", timeout=5).text

        # 4. A version failing its health check is rolled back; the old one keeps serving.
        op = wait_operation(c, started_operation(deploy(c, "staging", f"{APP}:broken")))
        assert op["status"] == "failed" and "rolled back" in op["error"], op
        assert op["result"]["rolled_back_to"] == f"{APP}:v1"
        assert "v1" in httpx.get(f"http://{app.ip}:3001/", timeout=5).text
        assert container(c, "app")["image"] == f"{APP}:v1"

        # 5. Preview shows the diff and changes nothing on the host.
        unit = "/etc/containers/systemd/shop-staging-app.container"
        before = app.ssh(f"cat {unit}", check=True).stdout
        r = deploy(c, "staging", f"{APP}:v2", params={"preview": "true"})
        assert r.status_code == 200, r.text
        preview = r.json()
        assert preview["changed"] and preview["restarts"]
        assert any("v2" in str(ch["diff"]) for ch in preview["changes"]), preview
        assert app.ssh(f"cat {unit}", check=True).stdout == before
        assert "v1" in httpx.get(f"http://{app.ip}:3001/", timeout=5).text
        # Applying exactly the previewed plan works; a stale plan is refused.
        r = deploy(c, "staging", f"{APP}:v2", headers={"X-Plan-Hash": preview["plan_hash"]})
        assert wait_operation(c, started_operation(r))["status"] == "succeeded"
        assert "v2" in httpx.get(f"http://{app.ip}:3001/", timeout=5).text
        r = deploy(c, "staging", f"{APP}:v1", headers={"X-Plan-Hash": preview["plan_hash"]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "plan_changed"

        # 6. Stop then remove the staging db under the confirm flow: its volume survives.
        dbc = container(c, "db")
        r = c.delete(f"/api/containers/{dbc['id']}")
        assert r.status_code == 403 and "container_stopped" in r.text  # running: refused
        r = confirm_token(c, c.post(f"/api/containers/{dbc['id']}/stop"))
        assert wait_operation(c, started_operation(r))["status"] == "succeeded"
        r = confirm_token(c, c.delete(f"/api/containers/{dbc['id']}"))
        assert wait_operation(c, started_operation(r))["status"] == "succeeded"
        assert db.ssh("podman volume exists shop-staging-db-data").returncode == 0
        assert db.ssh("test -e /etc/containers/systemd/shop-staging-db.container").returncode
        # A new deploy brings the database back with its old rows.
        op = wait_operation(c, started_operation(deploy(c, "staging", f"{APP}:v2")))
        assert op["status"] == "succeeded", op
        rows = subprocess.run(
            ["psql", database_url, "-tAc", "SELECT id FROM orders"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert rows.stdout.strip() == "42", rows.stderr

        # 7. Deleting a volume is HIGH: queued, never immediate.
        dbc = container(c, "db")
        r = c.delete(f"/api/containers/{dbc['id']}/volume")
        assert r.status_code in (202, 403), r.text
        assert db.ssh("podman volume exists shop-staging-db-data").returncode == 0

        # Live state is read from the host on request.
        live = c.get(
            f"/api/containers/{container(c, 'app')['id']}", params={"live": "true"}
        ).json()["live"]
        assert live["unit"]["ActiveState"] == "active"
        assert live["container"]["image"].endswith(":v2")


def cli(api, *args: str) -> subprocess.CompletedProcess:
    import os
    import sys

    env = {**os.environ, "CODEB_URL": api.base_url, "CODEB_API_KEY": api.admin_key, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "codeb", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_deploy_follow_and_confirm(fleet, stack):
    """The same product through the `codeb` CLI: live progress, the confirm flow, exit codes."""
    import json

    api, _ = stack
    app = fleet["app"]
    r = cli(api, "containers", "deploy", "shop", "staging", f"{APP}:v1")
    assert r.returncode == 0, r.stdout + r.stderr
    progress = r.stdout + r.stderr
    assert "Place the files, reload systemd and restart what changed" in progress, progress
    assert "succeeded" in progress
    assert "v1" in httpx.get(f"http://{app.ip}:3001/", timeout=5).text

    listed = json.loads(cli(api, "containers", "list", "--project", "shop", "--json").stdout)
    app_id = next(
        x["id"]
        for x in listed["containers"]
        if x["server_type"] == "app" and x["environment"] == "staging"
    )
    # MEDIUM without a TTY and without --yes: nothing happens, exit 3, the token is shown.
    r = cli(api, "containers", "stop", app_id)
    assert r.returncode == 3, r.stdout + r.stderr
    assert app.ssh("systemctl is-active shop-staging-app").stdout.strip() == "active"
    r = cli(api, "containers", "stop", app_id, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert app.ssh("systemctl is-active shop-staging-app").stdout.strip() != "active"
    r = cli(api, "containers", "start", app_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert app.ssh("systemctl is-active shop-staging-app").stdout.strip() == "active"
    # A production deploy of an untested image is refused by protection: exit 3.
    r = cli(api, "containers", "deploy", "shop", "production", f"{APP}:broken", "--yes")
    assert r.returncode == 3 and "staging_tested" in r.stdout + r.stderr
