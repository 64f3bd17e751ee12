"""Placement on the real fleet: two app servers and two db servers. An environment's app runs
on both app servers (one container each, placed by one run), its .env files name the placed
db and Redis hosts, a db goes to the least loaded db server, an explicit choice is followed,
and removing a replica takes that server out of the environment."""

from __future__ import annotations

import ipaddress
import re
import subprocess

import httpx
import pytest

from codeb.clock import SystemClock
from tests.executor.helpers import wait_operation
from tests.fleet import fleet as fleetlib
from tests.support import live_api

pytestmark = pytest.mark.fleet
APP = "localhost/codeb-test-app"
EXTRA = [("app2", "full"), ("db2", "full")]
ROLES = {"app": "app", "app2": "app", "db": "db", "db2": "db", "cache": "cache"}


@pytest.fixture(scope="module")
def stack(fleet, tmp_path_factory):
    cfg = fleet.config
    try:
        extra = {h.name: h for h in fleetlib.add_hosts(EXTRA, cfg)}
        hosts = {**{h.name: h for h in fleet if h.name in ROLES}, **extra}
        net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
        with live_api(
            tmp_path_factory.mktemp("placement"),
            clock=SystemClock(),
            allowed_networks=net,
            ssh_private_key_file=fleet.key_path,
        ) as api:
            with api.client() as c:
                ops = [
                    c.post(
                        "/api/servers", json={"name": name, "ip": h.ip, "role": ROLES[name]}
                    ).json()["operation"]["id"]
                    for name, h in sorted(hosts.items())
                ]
                for op in ops:
                    done = wait_operation(c, op, timeout=600)
                    assert done["status"] == "succeeded", done
            yield api, hosts
    finally:
        for h in fleet:
            h.ssh(
                "systemctl stop 'pl-*' 2>/dev/null; rm -f /etc/containers/systemd/pl-*; "
                "systemctl daemon-reload; podman rm -af >/dev/null 2>&1; "
                "podman volume prune -f >/dev/null 2>&1; rm -rf /etc/codeb/env/pl-* "
                "/etc/codeb/redis/pl-*"
            )
        fleetlib.remove_hosts([n for n, _ in EXTRA], cfg)


def env_var(env_file: str, name: str) -> str:
    return re.search(rf"^{name}=(.*)$", env_file, re.M).group(1)


def started(r: httpx.Response) -> str:
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "executed", body
    return body["result"]["operation"]["id"]


def deploy(c, env: str, image: str, **fields) -> httpx.Response:
    return c.post(
        "/api/containers/deploy",
        json={"project": "pl", "environment": env, "image": image, **fields},
    )


def rows(c, env: str) -> list[dict]:
    listed = c.get("/api/containers", params={"project": "pl", "environment": env}).json()
    return listed["containers"]


def serves(ip: str, port: int, version: str) -> bool:
    try:
        return version in httpx.get(f"http://{ip}:{port}/", timeout=5).text
    except httpx.HTTPError:
        return False


def started_at(host, unit: str) -> str:
    out = host.ssh(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}", check=True)
    return out.stdout.strip()


def psql(url: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_replicas_env_files_least_loaded_explicit_and_removal(stack):
    api, hosts = stack
    app, app2, db, db2, cache = (hosts[n] for n in ("app", "app2", "db", "db2", "cache"))
    with api.client() as c:
        created = c.post("/api/projects", json={"name": "pl", "type": "nodejs"})
        assert created.status_code == 201, created.text
        env_files = created.json()["env_files"]
        # 1. Each environment's db on the least loaded db server (staging first: db, then
        #    production: db2), Redis on the only cache server; the .env files say so.
        place = {
            e: c.get(f"/api/projects/pl/environments/{e}").json()["placement"]
            for e in ("staging", "production")
        }
        assert place["staging"] == {"db": ["db"], "redis": ["cache"]}
        assert place["production"] == {"db": ["db2"], "redis": ["cache"]}
        assert f"@{db.ip}:15432/" in env_var(env_files["staging"], "DATABASE_URL")
        assert f"@{db2.ip}:25432/" in env_var(env_files["production"], "DATABASE_URL")
        assert f"@{cache.ip}:16379/" in env_var(env_files["staging"], "REDIS_URL")

        # 2. A first deploy places the app on the least loaded app server (a tie: the first
        #    registered), the db and Redis where they were placed.
        op = wait_operation(c, started(deploy(c, "staging", f"{APP}:v1")))
        assert op["status"] == "succeeded", op
        assert sorted(op["targets"]) == ["app", "cache", "db"]
        assert serves(app.ip, 3001, "v1") and not serves(app2.ip, 3001, "v1")
        staging_url = env_var(env_files["staging"], "DATABASE_URL")
        made = psql(staging_url, "CREATE TABLE t (id int); INSERT INTO t VALUES (7)")
        assert made.returncode == 0, made.stderr
        first = started_at(app, "pl-staging-app")

        # 3. Two replicas: the second goes to the least loaded other app server; one run
        #    places both; the replica that already ran is not restarted.
        op = wait_operation(c, started(deploy(c, "staging", f"{APP}:v1", replicas=2)))
        assert op["status"] == "succeeded", op
        assert op["result"]["servers"] == ["app", "app2"] and op["result"]["healthy"], op
        assert serves(app.ip, 3001, "v1") and serves(app2.ip, 3001, "v1")
        assert started_at(app, "pl-staging-app") == first
        # The host that already ran it holds its part of the plan and is healthy: the deploy
        # leaves it untouched, no task runs there (README: which hosts a deploy touches).
        assert "app" in {u["host"] for u in op["result"]["untouched"]}, op["result"]
        assert "app" not in op["recap"], op["recap"]
        assert "app2" in {t["host"] for t in op["result"]["touched"]}, op["result"]
        staging = rows(c, "staging")
        apps = sorted(r["server_ip"] for r in staging if r["server_type"] == "app")
        assert apps == sorted([app.ip, app2.ip])
        assert {r["server_type"]: r["server_ip"] for r in staging if r["server_type"] != "app"} == {
            "db": db.ip,
            "redis": cache.ip,
        }
        # Each replica's .env file names the placed db and Redis, and reaches them.
        for h in (app, app2):
            placed_env = h.ssh("cat /etc/codeb/env/pl-staging-app.env", check=True).stdout
            assert env_var(placed_env, "DATABASE_URL") == staging_url
            assert f"@{cache.ip}:16379/" in env_var(placed_env, "REDIS_URL")
        assert psql(staging_url, "SELECT id FROM t").stdout.strip() == "7"

        # 4. Production on an explicitly chosen server (MEDIUM: confirmed by the person whose
        #    key asked); its db on db2, as placed at creation.
        r = deploy(c, "production", f"{APP}:v1", servers={"app": ["app2"]})
        assert r.status_code == 202 and r.json()["status"] == "confirmation_required", r.text
        assert "on app2" in r.text, r.text  # the warning names where it will run
        r = c.post("/api/protection/confirm", json={"token": r.json()["confirm_token"]})
        op = wait_operation(c, started(r))
        assert op["status"] == "succeeded", op
        assert sorted(op["targets"]) == ["app2", "cache", "db2"]
        assert serves(app2.ip, 4001, "v1") and not serves(app.ip, 4001, "v1")
        prod_url = env_var(env_files["production"], "DATABASE_URL")
        assert psql(prod_url, "SELECT 40 + 2").stdout.strip() == "42"
        assert db.ssh("test -e /etc/containers/systemd/pl-production-db.container").returncode
        assert db2.ssh("systemctl is-active pl-production-db").stdout.strip() == "active"

        # 5. What placement refuses, before any host is read: moving a database that has
        #    data, dropping a replica that still has a container, a server that holds
        #    placed components changing its role.
        for fields, reason in (
            ({"servers": {"db": "db2"}}, "data lives there"),
            ({"servers": {"app": "app"}}, "still has a container"),
            ({"replicas": 1}, "replicas only adds"),
        ):
            r = deploy(c, "staging", f"{APP}:v1", **fields)
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "placement_refused"
            assert reason in r.json()["error"]["message"], r.text
        r = deploy(c, "staging", f"{APP}:v1", servers={"app": "db2"})
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "servers.app"
        r = c.put(f"/api/servers/{app2.ip}", json={"role": "cache", "bootstrap": False})
        assert r.status_code == 409, r.text

        # 6. Removing a replica (MEDIUM, confirmed) releases its placement: the environment
        #    runs on the other server only, and the next deploy leaves app2 alone.
        replica = next(
            r for r in rows(c, "staging") if r["server_type"] == "app" and r["server_ip"] == app2.ip
        )
        r = c.delete(f"/api/containers/{replica['id']}")
        assert r.status_code == 403 and "container_stopped" in r.text  # running: stop first
        r = c.post(f"/api/containers/{replica['id']}/stop")
        r = c.post("/api/protection/confirm", json={"token": r.json()["confirm_token"]})
        assert wait_operation(c, started(r))["status"] == "succeeded"
        r = c.delete(f"/api/containers/{replica['id']}")
        r = c.post("/api/protection/confirm", json={"token": r.json()["confirm_token"]})
        assert wait_operation(c, started(r))["status"] == "succeeded"
        assert app2.ssh("test -e /etc/containers/systemd/pl-staging-app.container").returncode
        placed = c.get("/api/projects/pl/environments/staging").json()["placement"]
        assert placed["app"] == ["app"], placed
        assert serves(app.ip, 3001, "v1") and not serves(app2.ip, 3001, "v1")
        op = wait_operation(c, started(deploy(c, "staging", f"{APP}:v2")))
        assert op["status"] == "succeeded", op
        assert "app2" not in op["targets"] and "app2" not in op["recap"], op
        assert serves(app.ip, 3001, "v2") and serves(app2.ip, 4001, "v1")
        assert [r["server_ip"] for r in rows(c, "staging") if r["server_type"] == "app"] == [app.ip]
