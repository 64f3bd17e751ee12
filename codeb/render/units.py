"""The files of one environment's containers (Podman Quadlet units, the db env file, the Redis
config), rendered from `templates/` into a per-host plan that `roles/codeb_quadlet` places as
is. The app may run on several servers (replicas: the same files and container on each); the
db and Redis on one each. Pure: no I/O besides reading templates."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

from codeb.render import template_environment

UNIT_DIR = PurePosixPath("/etc/containers/systemd")
CODEB_DIR = PurePosixPath("/etc/codeb")
ENV_DIR = CODEB_DIR / "env"
REDIS_DIR = CODEB_DIR / "redis"
# Where the Redis config appears inside the container (the official image's documented path).
REDIS_CONF_IN_CONTAINER = "/usr/local/etc/redis/redis.conf"
COMPONENTS = ("app", "db", "redis")

# Values land in unit files, env files and redis.conf unquoted: anything else could inject a
# directive or break the line. Passwords codeb generates are URL-safe tokens.
# Checked with fullmatch(): `$` would also match before a final newline.
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DB_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PASSWORD = re.compile(r"[A-Za-z0-9_.~-]{16,256}")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_ONE_LINE = re.compile(r"[^\x00-\x1f\x7f]+")


class PlanFile(TypedDict):
    path: str
    content: str
    mode: str
    secret: bool
    unit: str  # the unit restarted when this file changes
    sha1: str  # of content: the role compares it with the host's file without sending content


class PlanContainer(TypedDict):
    unit: str  # x.container
    name: str  # the container's name (and the unit's base name)
    image: str  # the image it must run


class HostPlan(TypedDict):
    dirs: list[dict[str, str]]
    files: list[PlanFile]
    units: list[str]
    images: list[str]
    # What each unit must run: the probe compares it with what the container does run.
    containers: list[PlanContainer]


@dataclass(frozen=True)
class EnvironmentUnits:
    """Everything the containers of one environment are rendered from."""

    project: str
    environment: str
    app_image: str
    app_port: int
    app_env: str  # the environment's .env file, rendered by `codeb.render.render_env_file`
    db_user: str
    db_password: str
    db_name: str
    db_port: int
    redis_password: str
    redis_port: int
    # Registry names of the servers the containers run on (the keys of the plan): the app on
    # each of `app_servers` (replicas), the db and Redis on one server each.
    app_servers: tuple[str, ...] = ("app",)
    db_server: str = "db"
    cache_server: str = "cache"
    postgres_image: str = "docker.io/library/postgres:17"
    redis_image: str = "docker.io/library/redis:8"
    # missing: use a local image if present (tests), pull it otherwise (production).
    pull: str = "missing"
    # Runs inside the app container through /bin/sh; empty means GET /health on the port.
    # No `$` here: systemd would expand it in the generated ExecStart.
    app_health_cmd: str = ""
    health_interval: str = "10s"

    def __post_init__(self) -> None:
        checks: list[tuple[str, Any, re.Pattern[str]]] = [
            ("project", self.project, _NAME),
            ("environment", self.environment, _NAME),
            ("app_image", self.app_image, _IMAGE),
            ("postgres_image", self.postgres_image, _IMAGE),
            ("redis_image", self.redis_image, _IMAGE),
            ("db_user", self.db_user, _DB_IDENT),
            ("db_name", self.db_name, _DB_IDENT),
            ("db_password", self.db_password, _PASSWORD),
            ("redis_password", self.redis_password, _PASSWORD),
            ("health_interval", self.health_interval, re.compile(r"[0-9]+(ms|s|m)")),
        ]
        if self.app_health_cmd:
            checks.append(("app_health_cmd", self.app_health_cmd, _ONE_LINE))
        for field, value, pattern in checks:
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ValueError(f"{field} is not valid for a unit file: {value!r}")
        if "$" in self.app_health_cmd:
            raise ValueError("app_health_cmd must not contain `$` (systemd expands it)")
        for field in ("app_port", "db_port", "redis_port"):
            port = getattr(self, field)
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"{field} must be a port number: {port!r}")
        if self.pull not in ("always", "missing", "never", "newer"):
            raise ValueError(f"pull must be always, missing, never or newer: {self.pull!r}")
        if (
            not isinstance(self.app_servers, tuple)
            or not self.app_servers
            or len(set(self.app_servers)) != len(self.app_servers)
        ):
            raise ValueError(f"app_servers must be distinct names: {self.app_servers!r}")

    def servers_of(self, component: str) -> tuple[str, ...]:
        """The servers a component runs on."""
        if component == "app":
            return self.app_servers
        if component == "db":
            return (self.db_server,)
        if component == "redis":
            return (self.cache_server,)
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")

    @property
    def servers(self) -> list[str]:
        """Every server of the environment, sorted (a run's hosts)."""
        return sorted({s for c in COMPONENTS for s in self.servers_of(c)})

    def name(self, component: str) -> str:
        """Container name, and the unit's base name: `<project>-<env>-<component>`."""
        return f"{self.project}-{self.environment}-{component}"

    def unit(self, component: str) -> str:
        return f"{self.name(component)}.container"

    def volume(self, component: str) -> str:
        return f"{self.name(component)}-data"

    def env_file(self, component: str) -> str:
        return str(ENV_DIR / f"{self.name(component)}.env")

    @property
    def redis_conf(self) -> str:
        return str(REDIS_DIR / f"{self.name('redis')}.conf")

    @property
    def health_cmd(self) -> str:
        return self.app_health_cmd or (
            f"wget -q -O /dev/null http://127.0.0.1:{self.app_port}/health"
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to scrub from run events (`PlaybookRun.secrets`)."""
        return (self.db_password, self.redis_password)


def _render(templates_dir: Path, template: str, **values: Any) -> str:
    return template_environment(templates_dir).get_template(template).render(**values)


def _common(values: EnvironmentUnits, component: str) -> dict[str, Any]:
    return {
        "project": values.project,
        "environment": values.environment,
        "name": values.name(component),
        "unit": values.unit(component),
        "health_interval": values.health_interval,
        "pull": values.pull,
    }


def render_app_unit(templates_dir: Path, values: EnvironmentUnits) -> str:
    return _render(
        templates_dir,
        "quadlet/app.container.j2",
        **_common(values, "app"),
        image=values.app_image,
        port=values.app_port,
        env_file=values.env_file("app"),
        health_cmd=values.health_cmd,
    )


def render_db_unit(templates_dir: Path, values: EnvironmentUnits) -> str:
    return _render(
        templates_dir,
        "quadlet/db.container.j2",
        **_common(values, "db"),
        image=values.postgres_image,
        port=values.db_port,
        env_file=values.env_file("db"),
        volume=values.volume("db"),
        user=values.db_user,
        database=values.db_name,
    )


def render_db_env(templates_dir: Path, values: EnvironmentUnits) -> str:
    return _render(
        templates_dir,
        "quadlet/db.env.j2",
        unit=values.unit("db"),
        user=values.db_user,
        password=values.db_password,
        database=values.db_name,
    )


def render_redis_unit(templates_dir: Path, values: EnvironmentUnits) -> str:
    return _render(
        templates_dir,
        "quadlet/redis.container.j2",
        **_common(values, "redis"),
        image=values.redis_image,
        port=values.redis_port,
        volume=values.volume("redis"),
        conf_host_path=values.redis_conf,
        conf_path=REDIS_CONF_IN_CONTAINER,
    )


def render_redis_conf(templates_dir: Path, values: EnvironmentUnits) -> str:
    return _render(
        templates_dir,
        "redis/redis.conf.j2",
        unit=values.unit("redis"),
        password=values.redis_password,
    )


def _file(path: str, content: str, mode: str, unit: str, *, secret: bool) -> PlanFile:
    digest = hashlib.sha1(content.encode()).hexdigest()  # noqa: S324 -- what Ansible's copy uses
    return {
        "path": path,
        "content": content,
        "mode": mode,
        "secret": secret,
        "unit": unit,
        "sha1": digest,
    }


def component_files(
    templates_dir: Path, values: EnvironmentUnits, component: str
) -> tuple[list[PlanFile], str]:
    """(files, image) of one component, the same on each of its servers; the unit file comes
    last."""
    unit = values.unit(component)
    unit_path = str(UNIT_DIR / unit)
    if component == "app":
        return (
            [
                _file(values.env_file("app"), values.app_env, "0600", unit, secret=True),
                _file(
                    unit_path, render_app_unit(templates_dir, values), "0644", unit, secret=False
                ),
            ],
            values.app_image,
        )
    if component == "db":
        return (
            [
                _file(
                    values.env_file("db"),
                    render_db_env(templates_dir, values),
                    "0600",
                    unit,
                    secret=True,
                ),
                _file(unit_path, render_db_unit(templates_dir, values), "0644", unit, secret=False),
            ],
            values.postgres_image,
        )
    if component == "redis":
        return (
            [
                # 0644 inside a 0700 directory: only root on the host can reach it, and the
                # server reads it after dropping root inside the container; 0600 root would
                # be unreadable to it (the image picks the uid, so codeb cannot chown it).
                _file(
                    values.redis_conf,
                    render_redis_conf(templates_dir, values),
                    "0644",
                    unit,
                    secret=True,
                ),
                _file(
                    unit_path, render_redis_unit(templates_dir, values), "0644", unit, secret=False
                ),
            ],
            values.redis_image,
        )
    raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")


def _dir_mode(path: str) -> str:
    return "0755" if PurePosixPath(path) == UNIT_DIR else "0700"


def plan_environment(
    templates_dir: Path,
    values: EnvironmentUnits,
    components: tuple[str, ...] = COMPONENTS,
) -> dict[str, HostPlan]:
    """`{server: {"dirs", "files", "units", "images", "containers"}}`, the `codeb_plan` extra var of
    playbooks/deploy.yml. Components sharing a server share its entry; an app on several
    servers has the same entry on each."""
    plan: dict[str, HostPlan] = {}
    for component in components:
        files, image = component_files(templates_dir, values, component)
        for server in values.servers_of(component):
            _add(plan.setdefault(server, _empty()), values, component, files, image)
    return plan


def _empty() -> HostPlan:
    return {"dirs": [], "files": [], "units": [], "images": [], "containers": []}


def _add(
    host: HostPlan, values: EnvironmentUnits, component: str, files: list[PlanFile], image: str
) -> None:
    for f in files:
        parent = PurePosixPath(f["path"]).parent
        # /etc/codeb itself too: on a server bootstrap never saw it would be 0755.
        wanted = [parent.parent, parent] if parent.parent == CODEB_DIR else [parent]
        for d in map(str, wanted):
            if d not in (x["path"] for x in host["dirs"]):
                host["dirs"].append({"path": d, "mode": _dir_mode(d)})
    host["files"].extend(PlanFile(**f) for f in files)  # a copy per host
    host["units"].append(values.unit(component))
    host["containers"].append(
        {"unit": values.unit(component), "name": values.name(component), "image": image}
    )
    if image not in host["images"]:
        host["images"].append(image)
