"""Rendered Quadlet units and their files: golden files, the plan's shape, and no secret in
any unit. (That Podman's Quadlet generator accepts them is checked on the fleet.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codeb.render.units import (
    EnvironmentUnits,
    plan_environment,
    render_app_unit,
    render_db_env,
    render_db_unit,
    render_redis_conf,
    render_redis_unit,
)
from tests.deploy.values import DB_PASSWORD, REDIS_PASSWORD, TEMPLATES, golden_values

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "units"
RENDERERS = {
    "my-project-staging-app.container": render_app_unit,
    "my-project-staging-db.container": render_db_unit,
    "my-project-staging-redis.container": render_redis_unit,
    "my-project-staging-db.env": render_db_env,
    "my-project-staging-redis.conf": render_redis_conf,
}


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_matches_golden(name):
    rendered = RENDERERS[name](TEMPLATES, golden_values())
    golden = GOLDEN / name
    if os.environ.get("CODEB_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_plan_per_host():
    values = golden_values()
    plan = plan_environment(TEMPLATES, values)
    assert sorted(plan) == ["app", "cache", "db"]
    app = plan["app"]
    assert app["units"] == ["my-project-staging-app.container"]
    assert app["images"] == ["registry.example.com/my-project:1.4.2"]
    assert [(f["path"], f["mode"], f["secret"]) for f in app["files"]] == [
        ("/etc/codeb/env/my-project-staging-app.env", "0600", True),
        ("/etc/containers/systemd/my-project-staging-app.container", "0644", False),
    ]
    assert app["files"][0]["content"] == values.app_env
    assert all(f["unit"] == "my-project-staging-app.container" for f in app["files"])
    assert app["dirs"] == [
        {"path": "/etc/codeb", "mode": "0700"},
        {"path": "/etc/codeb/env", "mode": "0700"},
        {"path": "/etc/containers/systemd", "mode": "0755"},
    ]
    assert [f["path"] for f in plan["db"]["files"]] == [
        "/etc/codeb/env/my-project-staging-db.env",
        "/etc/containers/systemd/my-project-staging-db.container",
    ]
    cache_files = {f["path"]: f for f in plan["cache"]["files"]}
    conf = cache_files["/etc/codeb/redis/my-project-staging-redis.conf"]
    assert conf["secret"] and f"requirepass {REDIS_PASSWORD}\n" in conf["content"]
    assert {"path": "/etc/codeb/redis", "mode": "0700"} in plan["cache"]["dirs"]


def test_components_and_shared_server():
    only_app = plan_environment(TEMPLATES, golden_values(), components=("app",))
    assert list(only_app) == ["app"]
    one_box = golden_values(app_servers=("box",), db_server="box", cache_server="box")
    plan = plan_environment(TEMPLATES, one_box)
    assert list(plan) == ["box"]
    assert len(plan["box"]["units"]) == 3 and len(plan["box"]["files"]) == 6
    paths = [d["path"] for d in plan["box"]["dirs"]]
    assert len(paths) == len(set(paths))


def test_app_replicas_get_the_same_files_on_each_server():
    values = golden_values(app_servers=("app", "app2"))
    plan = plan_environment(TEMPLATES, values)
    assert sorted(plan) == ["app", "app2", "cache", "db"]
    assert plan["app2"] == plan["app"]
    assert plan["app2"]["files"] is not plan["app"]["files"]
    assert values.servers == ["app", "app2", "cache", "db"]
    assert values.servers_of("app") == ("app", "app2")
    # One server per role: exactly the plan it always was.
    single = plan_environment(TEMPLATES, golden_values())
    assert {h: single[h] for h in ("app", "db", "cache")} == {
        h: plan[h] for h in ("app", "db", "cache")
    }
    for bad in ((), ("app", "app"), ["app"]):
        with pytest.raises(ValueError, match="app_servers"):
            golden_values(app_servers=bad)


def test_no_secret_in_any_unit_file():
    values = golden_values()
    plan = plan_environment(TEMPLATES, values)
    units = [f for host in plan.values() for f in host["files"] if f["path"].endswith(".container")]
    assert len(units) == 3
    for f in units:
        assert not f["secret"]
        for secret in (DB_PASSWORD, REDIS_PASSWORD, *values.secrets):
            assert secret not in f["content"], f["path"]
    # Every file that holds a secret is marked so (the role hides it from logs and diffs).
    for host in plan.values():
        for f in host["files"]:
            if any(s in f["content"] for s in values.secrets):
                assert f["secret"], f["path"]


def test_unit_header_and_essentials():
    values = golden_values()
    app = render_app_unit(TEMPLATES, values)
    assert app.startswith("# my-project-staging-app.container: managed by codeb")
    for line in (
        "StartLimitIntervalSec=0",
        "RunInit=yes",
        "Restart=always",
        "SuccessExitStatus=143",
        "Pull=missing",
        "WantedBy=multi-user.target",
        "PublishPort=3001:3001",
        "Environment=PORT=3001",
        "EnvironmentFile=/etc/codeb/env/my-project-staging-app.env",
        "HealthCmd=wget -q -O /dev/null http://127.0.0.1:3001/health",
    ):
        assert f"\n{line}\n" in app, line
    db = render_db_unit(TEMPLATES, values)
    assert "\nVolume=my-project-staging-db-data:/var/lib/postgresql/data\n" in db
    assert "\nPublishPort=15432:5432\n" in db
    redis = render_redis_unit(TEMPLATES, values)
    assert "\nVolume=my-project-staging-redis-data:/data\n" in redis
    assert "\nExec=redis-server /usr/local/etc/redis/redis.conf\n" in redis
    assert "\nPublishPort=16379:6379\n" in redis


@pytest.mark.parametrize(
    "field,value",
    [
        ("project", "My_Project"),
        ("environment", "staging\nExec=evil"),
        ("app_image", "img\n[Service]"),
        ("db_password", "short"),
        ("db_password", "has space in it 1234567"),
        ("redis_password", "new\nline-0123456789abcdef"),
        ("db_user", "drop;table"),
        ("app_port", 0),
        ("redis_port", True),
        ("app_health_cmd", "wget http://127.0.0.1:$PORT/health"),
        ("pull", "sometimes"),
    ],
)
def test_values_that_could_break_a_file_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        golden_values(**{field: value})


def test_health_command_is_a_value():
    values = golden_values(app_health_cmd="wget -q -O /dev/null http://127.0.0.1:3001/ready")
    assert "\nHealthCmd=wget -q -O /dev/null http://127.0.0.1:3001/ready\n" in render_app_unit(
        TEMPLATES, values
    )
    assert isinstance(values, EnvironmentUnits)
