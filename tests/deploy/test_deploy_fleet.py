"""Deploying one environment (app, PostgreSQL, Redis) with playbooks/deploy.yml and managing
its containers with playbooks/container.yml, through the real runner, on the real fleet.

The tests of this module run in order and build on each other (one environment, deployed
once, then changed); the module's fixture removes everything it deployed at the end."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest

from codeb.executor.events import EventRecord, host_recap, reported
from codeb.executor.inventory import Host, SshSettings
from codeb.executor.runner import PlaybookRun, run_playbook
from codeb.render import EnvFileValues, render_env_file
from codeb.render.units import EnvironmentUnits, plan_environment
from tests.deploy.values import TEMPLATES

pytestmark = pytest.mark.fleet

APP_IMAGE = "localhost/codeb-test-app"
QUADLET = "/usr/libexec/podman/quadlet"
# The one task that places the files, reloads systemd and restarts (codeb_quadlet_apply).
APPLY_TASK = "Place the files, reload systemd and restart what changed"
TIMINGS_FILE = os.environ.get("CODEB_DEPLOY_TIMINGS")  # where to write the figures, if set


@dataclass
class Run:
    status: str
    records: list[EventRecord]
    seconds: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return host_recap(self.records)

    def changed(self, host: str) -> int:
        return self.recap.get(host, {}).get("changed", 0)

    def task_seconds(self, host: str) -> dict[str, float]:
        return {
            r.task or "": round(r.duration or 0, 2)
            for r in self.records
            if r.host == host and r.event in ("runner_on_ok", "runner_on_skipped")
        }

    def tasks_changed(self, host: str) -> list[str]:
        return [
            r.task or ""
            for r in self.records
            if r.host == host and r.changed and r.event == "runner_on_ok"
        ]


@dataclass
class Deployer:
    fleet: object
    targets: list[Host]
    ssh: SshSettings
    work_dir: Path
    values: EnvironmentUnits
    timings: dict[str, float] = field(default_factory=dict)

    def host(self, name: str):
        return self.fleet[name]  # type: ignore[index]

    def ip(self, name: str) -> str:
        return self.host(name).ip

    def run(self, playbook: str, extravars: dict, *, secrets: tuple[str, ...] = (), **kw) -> Run:
        records: list[EventRecord] = []
        t0 = time.monotonic()
        outcome = run_playbook(
            PlaybookRun(playbook, self.targets, extravars=extravars, secrets=secrets, **kw),
            ssh=self.ssh,
            work_dir=self.work_dir,
            on_event=records.append,
        )
        return Run(outcome.status, records, time.monotonic() - t0)

    def deploy(self, values: EnvironmentUnits | None = None, **kw) -> Run:
        values = values or self.values
        plan = plan_environment(TEMPLATES, values)
        kw.setdefault("secrets", values.secrets)
        return self.run("deploy.yml", {"codeb_plan": plan}, **kw)

    def container(self, host: str, action: str, **extra: object) -> Run:
        extravars = {"codeb_container_host": host, "codeb_container_action": action, **extra}
        return self.run("container.yml", extravars, limit=host, secrets=self.values.secrets)

    def started_at(self, host: str, component: str) -> str:
        """When the unit last became active, and its container's id: both change on restart."""
        name = self.values.name(component)
        out = self.host(host).ssh(
            f"systemctl show -p ActiveEnterTimestampMonotonic --value {name}.service; "
            f"podman inspect --format '{{{{.Id}}}}' {name} 2>/dev/null || true",
            check=True,
        )
        return out.stdout.strip()

    def states(self) -> dict[str, str]:
        return {
            c: self.started_at(h, c) for h, c in (("app", "app"), ("db", "db"), ("cache", "redis"))
        }


def _environment_values(fleet, project: str, **overrides: object) -> EnvironmentUnits:
    # Ports from the staging ranges, away from the first ones other tests take.
    offset = secrets.randbelow(400) + 500
    app_port, db_port, redis_port = 3000 + offset, 15432 + offset, 16379 + offset
    db_password, redis_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    user = project.replace("-", "_")
    app_env = render_env_file(
        TEMPLATES,
        EnvFileValues(
            environment="staging",
            app_port=app_port,
            db_user=user,
            db_password=db_password,
            db_name=f"{user}_staging",
            db_host=fleet["db"].ip,
            db_port=db_port,
            cache_host=fleet["cache"].ip,
            redis_port=redis_port,
            redis_password=redis_password,
        ),
    )
    values = EnvironmentUnits(
        project=project,
        environment="staging",
        app_image=f"{APP_IMAGE}:v1",
        app_port=app_port,
        app_env=app_env,
        db_user=user,
        db_password=db_password,
        db_name=f"{user}_staging",
        db_port=db_port,
        redis_password=redis_password,
        redis_port=redis_port,
    )
    return replace(values, **overrides) if overrides else values


def _cleanup(fleet, values: EnvironmentUnits) -> None:
    """Remove every unit, file and volume of the environment (best effort, by hand over ssh:
    a failing playbook must not leave the shared fleet dirty)."""
    for host, component in (("app", "app"), ("db", "db"), ("cache", "redis")):
        name = values.name(component)
        fleet[host].ssh(
            f"systemctl stop {name}.service; "
            f"rm -f /etc/containers/systemd/{name}.container /etc/codeb/env/{name}.env "
            f"/etc/codeb/redis/{name}.conf; systemctl daemon-reload; "
            f"podman rm -f --ignore {name}; podman volume rm --force {name}-data; true",
            timeout=120,
        )


@pytest.fixture(scope="module")
def deployer(fleet, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    known_hosts = tmp / "known_hosts"
    known_hosts.touch(mode=0o600)
    role = {"app": "app", "db": "db", "cache": "cache"}
    targets = [Host(h.name, h.ip, role[h.name]) for h in fleet]
    project = f"cbt{secrets.token_hex(3)}"
    values = _environment_values(fleet, project)
    d = Deployer(
        fleet=fleet,
        targets=targets,
        ssh=SshSettings(private_key=fleet.key_path, known_hosts=known_hosts),
        work_dir=tmp / "runs",
        values=values,
    )
    try:
        yield d
    finally:
        _cleanup(fleet, values)
        if TIMINGS_FILE:
            Path(TIMINGS_FILE).write_text(json.dumps(d.timings, indent=2))


def _wait(check, what: str, timeout: float = 120, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, subprocess.SubprocessError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not ready after {timeout}s (last error: {last!r})")


def _app_page(d: Deployer) -> str:
    r = httpx.get(f"http://{d.ip('app')}:{d.values.app_port}/", timeout=3)
    return r.text if r.status_code == 200 else ""


def _psql(d: Deployer, sql: str) -> subprocess.CompletedProcess:
    v = d.values
    return subprocess.run(
        [
            "psql",
            "-h",
            d.ip("db"),
            "-p",
            str(v.db_port),
            "-U",
            v.db_user,
            "-d",
            v.db_name,
            "-v",
            "ON_ERROR_STOP=1",
            "-tAc",
            sql,
        ],
        env={**os.environ, "PGPASSWORD": v.db_password, "PGCONNECT_TIMEOUT": "3"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _redis(d: Deployer, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if password is not None:
        env["REDISCLI_AUTH"] = password  # not on the command line
    return subprocess.run(
        ["redis-cli", "-h", d.ip("cache"), "-p", str(d.values.redis_port), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _wait_all_ready(d: Deployer, version: str) -> None:
    _wait(lambda: f"version={version}" in _app_page(d), f"app {version}")
    _wait(lambda: _psql(d, "select 1").stdout.strip() == "1", "postgres")
    _wait(
        lambda: _redis(d, "PING", password=d.values.redis_password).stdout.strip() == "PONG",
        "redis",
    )


# --------------------------------------------------------------------------- the tests


def _quadlet_dryrun(host, files: dict[str, str]):
    script = "set -e; d=$(mktemp -d); trap 'rm -rf $d' EXIT; "
    for name, content in files.items():
        script += f"printf %s {shlex.quote(content)} > $d/{name}; "
    return host.ssh(script + f"QUADLET_UNIT_DIRS=$d {QUADLET} -dryrun")


def test_rendered_units_pass_the_quadlet_generator(fleet, deployer):
    """Quadlet silently generates nothing for a unit it rejects: ask its generator."""
    plan = plan_environment(TEMPLATES, deployer.values)
    units = [f for h in plan.values() for f in h["files"] if f["path"].endswith(".container")]
    out = _quadlet_dryrun(fleet["app"], {Path(f["path"]).name: f["content"] for f in units})
    assert out.returncode == 0, out.stderr
    for f in units:
        service = Path(f["path"]).name.replace(".container", ".service")
        assert f"---{service}---" in out.stdout, out.stderr
    assert "converting" not in out.stderr, out.stderr
    # The check can fail: a unit Quadlet 5.4 rejects is missing from its output.
    rejected = "[Container]\nImage=localhost/codeb-test-app:v1\nMemory=64m\n"
    out = _quadlet_dryrun(fleet["app"], {"rejected.container": rejected})
    assert out.returncode != 0 and "---rejected.service---" not in out.stdout
    assert "unsupported key 'Memory'" in out.stderr


def test_first_deploy_serves_app_db_and_redis(fleet, deployer):
    d, v = deployer, deployer.values
    # No scrubbing in this run: nothing secret may reach an event in the first place.
    run = d.deploy(secrets=())
    d.timings["first_deploy_s"] = round(run.seconds, 2)
    assert run.status == "successful", [r.data for r in run.records if r.failed]
    assert set(run.recap) == {"app", "db", "cache"}
    dumped = json.dumps([r.data for r in run.records])
    for secret in v.secrets:
        assert secret not in dumped
    # Secret files: named as placed (their contents travel in a no_log parameter, so the
    # check above found none of them in any event).
    applied = {r.host: r.data for r in run.records if r.task == APPLY_TASK and r.changed}
    assert f"/etc/codeb/env/{v.name('db')}.env" in applied["db"]["placed"]

    _wait_all_ready(d, "v1")
    assert _psql(d, "create table notes (body text)").returncode == 0
    assert _psql(d, "insert into notes values ('kept')").returncode == 0
    assert _psql(d, "select body from notes").stdout.strip() == "kept"
    assert _redis(d, "SET", "k", "v", password=v.redis_password).stdout.strip() == "OK"
    assert "NOAUTH" in _redis(d, "PING").stdout  # the password is required
    bad = _redis(d, "PING", password="wrong-password-123456")
    assert "PONG" not in bad.stdout

    # Modes on the hosts; the passwords are in no unit and on no command line.
    app, db, cache = fleet["app"], fleet["db"], fleet["cache"]
    stat = "stat -c '%a %U' "
    assert app.ssh(stat + f"/etc/codeb/env/{v.name('app')}.env").stdout.strip() == "600 root"
    assert db.ssh(stat + f"/etc/codeb/env/{v.name('db')}.env").stdout.strip() == "600 root"
    unit = f"/etc/containers/systemd/{v.name('redis')}.container"
    assert cache.ssh(stat + unit).stdout.strip() == "644 root"
    assert cache.ssh(stat + "/etc/codeb/redis").stdout.strip() == "700 root"
    for host in (db, cache):
        body = host.ssh("cat /etc/containers/systemd/*.container; ps -eo args").stdout
        assert v.db_password not in body and v.redis_password not in body
    # The health checks the units define pass (podman runs them itself too).
    for host, component in ((app, "app"), (db, "db"), (cache, "redis")):
        name = v.name(component)
        _wait(
            lambda h=host, n=name: h.ssh(f"podman healthcheck run {n}").returncode == 0,
            f"{name} healthcheck",
            timeout=60,
        )


def test_same_deploy_again_changes_and_restarts_nothing(deployer):
    d = deployer
    before = d.states()
    run = d.deploy()
    d.timings["noop_deploy_s"] = round(run.seconds, 2)
    print("no-op deploy, per task:", run.task_seconds("db"))
    assert run.status == "successful"
    assert {h: r["changed"] for h, r in run.recap.items()} == {"app": 0, "db": 0, "cache": 0}
    assert d.states() == before


def test_new_app_image_restarts_only_the_app(deployer):
    d = deployer
    before = d.states()
    d.values = replace(d.values, app_image=f"{APP_IMAGE}:v2")
    run = d.deploy()
    d.timings["app_only_deploy_s"] = round(run.seconds, 2)
    assert run.status == "successful"
    assert run.changed("db") == 0 and run.changed("cache") == 0
    assert run.tasks_changed("app") == [APPLY_TASK]
    applied = next(r for r in run.records if r.host == "app" and r.task == APPLY_TASK and r.changed)
    assert applied.data["placed"] == [f"/etc/containers/systemd/{d.values.name('app')}.container"]
    assert applied.data["reloaded"] is True
    assert applied.data["restarted"] == [f"{d.values.name('app')}.service"]
    print("app-only deploy, per task:", run.task_seconds("app"))
    after = d.states()
    assert after["app"] != before["app"]
    assert after["db"] == before["db"] and after["redis"] == before["redis"]
    _wait(lambda: "version=v2" in _app_page(d), "app v2", timeout=60)


def test_a_hand_edit_is_undone_and_only_that_unit_restarts(fleet, deployer):
    d, v = deployer, deployer.values
    unit = f"/etc/containers/systemd/{v.name('redis')}.container"
    fleet["cache"].ssh(f"echo '# edited by hand' >> {unit} && chmod 600 {unit}", check=True)
    before = d.states()
    run = d.deploy()
    assert run.status == "successful"
    assert run.changed("app") == 0 and run.changed("db") == 0 and run.changed("cache") > 0
    after = d.states()
    assert after["redis"] != before["redis"]
    assert after["app"] == before["app"] and after["db"] == before["db"]
    assert "edited by hand" not in fleet["cache"].ssh(f"cat {unit}", check=True).stdout
    assert fleet["cache"].ssh(f"stat -c %a {unit}").stdout.strip() == "644"


def test_check_mode_reports_the_diff_and_changes_nothing(fleet, deployer):
    d, v = deployer, deployer.values
    unit = f"/etc/containers/systemd/{v.name('app')}.container"
    before_file = fleet["app"].ssh(f"cat {unit}", check=True).stdout
    before = d.states()
    proposed = replace(v, app_image=f"{APP_IMAGE}:v1", db_password=secrets.token_urlsafe(18))
    run = d.deploy(proposed, check=True, diff=True)
    d.timings["check_mode_deploy_s"] = round(run.seconds, 2)
    assert run.status == "successful"
    diffs = [
        r.data["diff"] for r in run.records if r.host == "app" and r.changed and r.data.get("diff")
    ]
    text = json.dumps(diffs)
    assert unit in text and f"Image={APP_IMAGE}:v2" in text and f"Image={APP_IMAGE}:v1" in text
    # The changed db password: reported as a change, never shown.
    db_changed = [r for r in run.records if r.host == "db" and r.changed]
    assert db_changed
    assert proposed.db_password not in json.dumps([r.data for r in run.records])
    # It says which units it would restart.
    restarts = [r for r in run.records if r.task == APPLY_TASK and r.data.get("restarted")]
    assert {r.host for r in restarts} == {"app", "db"}
    assert all(r.data["placed"] for r in restarts)  # ... and which files it would place
    # And nothing moved on the hosts.
    assert fleet["app"].ssh(f"cat {unit}", check=True).stdout == before_file
    assert d.states() == before
    assert "version=v2" in _app_page(d)
    env = fleet["db"].ssh(f"cat /etc/codeb/env/{v.name('db')}.env", check=True).stdout
    assert v.db_password in env


def test_a_missing_image_fails_its_pull_before_anything_changes(deployer):
    """Images are pulled by containers.podman's podman_image, only those the probe found
    missing: in check mode it reports the pull it would make; for real, a pull that fails
    stops the deploy on every host before any file or unit changed."""
    d = deployer
    before = d.states()
    missing = replace(d.values, app_image=f"{APP_IMAGE}:never-built")
    preview = d.deploy(missing, check=True, diff=True)
    assert preview.status == "successful"
    pulls = [r for r in preview.records if r.task == "Pull missing images" and r.changed]
    assert {r.host for r in pulls} == {"app"}
    assert d.states() == before

    run = d.deploy(missing)
    assert run.status == "failed"
    assert {r.task for r in run.records if r.failed} == {"Pull missing images"}
    assert not [r for r in run.records if r.task == APPLY_TASK and r.event == "runner_on_ok"]
    assert {h: r["changed"] for h, r in run.recap.items()} == {"app": 0, "db": 0, "cache": 0}
    assert d.states() == before


PROBE_TASK = "Compare the host with the plan"


def _ran(run: Run, host: str, task: str) -> list[EventRecord]:
    return [
        r
        for r in run.records
        if r.host == host and r.task == task and r.event in ("runner_on_ok", "runner_on_failed")
    ]


def test_one_host_probes_and_applies_in_one_call(deployer):
    """A play of one host (what codeb runs when only the app host's part of the plan
    changed): codeb_quadlet_apply probes and applies in one module call, with the probe's
    checks (a stale preview, a missing image) before anything changes and the same changes
    and report as the two steps. Check mode still runs the two steps."""
    d = deployer
    before = d.states()
    v1 = replace(d.values, app_image=f"{APP_IMAGE}:v1")
    plan = plan_environment(TEMPLATES, v1)

    # A preview of one host: the probe task, then the apply in check mode.
    preview = d.deploy(v1, limit="app", check=True, diff=True)
    assert preview.status == "successful"
    assert _ran(preview, "app", PROBE_TASK)
    restarts = [r.data.get("restarted") for r in _ran(preview, "app", APPLY_TASK)]
    assert restarts == [[f"{v1.name('app')}.service"]]
    assert d.states() == before

    # Not in the state the preview saw: fails in the one call, nothing changed.
    stale = d.run(
        "deploy.yml",
        {"codeb_plan": plan, "codeb_expected_state": {"app": "0" * 64}},
        secrets=v1.secrets,
        limit="app",
    )
    assert stale.status == "failed"
    failed = [r for r in stale.records if r.failed]
    assert [(r.task, r.changed) for r in failed] == [(APPLY_TASK, False)]
    assert "changed since the preview" in failed[0].data["msg"]
    assert not _ran(stale, "app", PROBE_TASK)
    assert d.states() == before

    # A missing image: nothing changed by the one call, then its pull fails.
    missing = d.deploy(replace(d.values, app_image=f"{APP_IMAGE}:never-built"), limit="app")
    assert missing.status == "failed"
    assert {r.task for r in missing.records if r.failed} == {"Pull missing images"}
    assert not missing.tasks_changed("app")
    assert d.states() == before

    # The change itself: one module call placed, reloaded and restarted; the report is there.
    # No scrubbing: the app's secret env file travels in the call, never into an event.
    run = d.deploy(v1, limit="app", secrets=())
    assert run.status == "successful"
    dumped = json.dumps([r.data for r in run.records])
    assert all(secret not in dumped for secret in v1.secrets)
    assert not _ran(run, "app", PROBE_TASK)
    assert run.tasks_changed("app") == [APPLY_TASK]
    [applied] = [r for r in _ran(run, "app", APPLY_TASK)]
    assert applied.data["placed"] == [f"/etc/containers/systemd/{v1.name('app')}.container"]
    assert applied.data["reloaded"] is True
    assert applied.data["restarted"] == [f"{v1.name('app')}.service"]
    assert set(reported(run.records, "codeb_state")) == {"app"}
    assert set(reported(run.records, "codeb_images")["app"]) == {f"{APP_IMAGE}:v1"}
    probe = reported(run.records, "codeb_probe")["app"][v1.name("app")]
    assert probe["wanted_image"] == f"{APP_IMAGE}:v1" and probe["image"] == f"{APP_IMAGE}:v2"
    after = d.states()
    assert after["app"] != before["app"]
    assert after["db"] == before["db"] and after["redis"] == before["redis"]
    _wait(lambda: "version=v1" in _app_page(d), "app v1", timeout=60)

    # Again: the one call finds nothing to do and changes nothing.
    again = d.deploy(v1, limit="app")
    assert again.status == "successful" and again.changed("app") == 0
    assert d.states() == after

    # Back to the module's environment (v2) for the tests that follow.
    back = d.deploy(limit="app")
    assert back.status == "successful" and back.tasks_changed("app") == [APPLY_TASK]
    _wait(lambda: "version=v2" in _app_page(d), "app v2", timeout=60)


def test_check_mode_of_a_new_environment_creates_nothing(fleet, deployer):
    values = _environment_values(fleet, f"cbn{secrets.token_hex(3)}")
    run = deployer.deploy(values, check=True, diff=True)
    assert run.status == "successful", [r.data for r in run.records if r.failed]
    for host in ("app", "db", "cache"):
        assert run.changed(host) > 0
        listing = fleet[host].ssh(
            f"ls /etc/containers/systemd/ /etc/codeb/*/ | grep {values.project}"
        )
        assert listing.stdout == ""


def test_stop_and_remove_keep_the_volume_and_the_data(fleet, deployer):
    d, v = deployer, deployer.values
    db = fleet["db"]
    name = v.name("db")
    run = d.container("db", "stop", codeb_container_unit=name)
    assert run.status == "successful" and run.changed("db") == 1
    assert db.ssh(f"systemctl is-active {name}.service").stdout.strip() == "inactive"
    # A container stopped by systemd is a clean stop, not a failure.
    assert db.ssh(f"systemctl is-failed {name}.service").stdout.strip() != "failed"
    run = d.container(
        "db",
        "remove",
        codeb_container_unit=f"{name}.container",
        codeb_container_remove_files=[v.env_file("db")],
    )
    assert run.status == "successful"
    assert db.ssh(f"test -e /etc/containers/systemd/{name}.container").returncode != 0
    assert db.ssh(f"test -e {v.env_file('db')}").returncode != 0
    assert db.ssh(f"systemctl cat {name}.service").returncode != 0  # gone after the reload
    assert db.ssh(f"podman volume exists {v.volume('db')}").returncode == 0
    # Removing again is a no-op.
    again = d.container("db", "remove", codeb_container_unit=name)
    assert again.status == "successful" and again.changed("db") == 0

    run = d.deploy()
    assert run.status == "successful"
    assert run.changed("app") == 0 and run.changed("cache") == 0
    _wait(lambda: _psql(d, "select body from notes").stdout.strip() == "kept", "old row")


def test_start_and_restart(fleet, deployer):
    d, v = deployer, deployer.values
    cache = fleet["cache"]
    before = d.started_at("cache", "redis")
    run = d.container("cache", "restart", codeb_container_unit=v.name("redis"))
    assert run.status == "successful" and d.started_at("cache", "redis") != before
    assert d.container("cache", "stop", codeb_container_unit=v.name("redis")).status == (
        "successful"
    )
    run = d.container("cache", "start", codeb_container_unit=v.name("redis"))
    assert run.status == "successful" and run.changed("cache") == 1
    assert cache.ssh(f"systemctl is-active {v.name('redis')}.service").stdout.strip() == "active"
    # AOF kept the key across restarts.
    _wait(
        lambda: _redis(d, "GET", "k", password=v.redis_password).stdout.strip() == "v",
        "redis data",
    )


def test_volume_delete_refuses_while_used_then_deletes(fleet, deployer):
    d, v = deployer, deployer.values
    db = fleet["db"]
    volume = v.volume("db")
    run = d.container("db", "volume_delete", codeb_container_volume=volume)
    assert run.status == "failed"
    assert "in use" in json.dumps([r.data for r in run.records if r.failed])
    assert db.ssh(f"podman volume exists {volume}").returncode == 0

    assert d.container("db", "stop", codeb_container_unit=v.name("db")).status == "successful"
    run = d.container("db", "volume_delete", codeb_container_volume=volume)
    assert run.status == "failed", "a unit still names the volume"
    assert db.ssh(f"podman volume exists {volume}").returncode == 0

    assert d.container("db", "remove", codeb_container_unit=v.name("db")).status == "successful"
    run = d.container("db", "volume_delete", codeb_container_volume=volume)
    assert run.status == "successful" and run.changed("db") == 1
    assert db.ssh(f"podman volume exists {volume}").returncode == 1
    again = d.container("db", "volume_delete", codeb_container_volume=volume)
    assert again.status == "successful" and again.changed("db") == 0


def test_bad_action_is_refused(deployer):
    run = deployer.container("app", "destroy", codeb_container_unit="x")
    assert run.status == "failed"
