"""Settings, read once: environment variables win over an optional TOML file, which wins
over the defaults. Every setting is listed in SETTINGS so the README can be checked against it."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# What codeb reads at run time besides its package: the Ansible content and the templates.
CONTENT = ("ansible.cfg", "playbooks", "roles", "plugins", "templates", "inventory")
# Where a built wheel carries them (setup.py copies them there at build time).
PACKAGED_CONTENT = Path(__file__).resolve().parent / "_content"


@functools.cache
def content_root() -> Path:
    """The directory holding playbooks/, roles/, plugins/, templates/ and ansible.cfg: inside
    the installed distribution (codeb/_content/, from a wheel), else the checkout codeb runs
    from (development, tests, `make run`, an editable install)."""
    for root in (PACKAGED_CONTENT, REPO_ROOT):
        if (root / "playbooks").is_dir() and (root / "ansible.cfg").is_file():
            return root
    raise RuntimeError(
        f"codeb's playbooks are neither in {PACKAGED_CONTENT} nor in {REPO_ROOT}: "
        "install codeb from a wheel built with `pip wheel .`, or run it from its checkout"
    )


class SettingError(ValueError):
    """A setting that codeb refuses to start with; the message names it (CODEB_<NAME>)."""


# Numeric settings and their sane ranges: beyond them a value is a typo, not a wish (a queue
# window of 99999999999 hours overflowed every date computed from it).
BOUNDS: dict[str, tuple[int, int]] = {
    "port": (1, 65535),
    "threads": (1, 256),
    "sqlite_busy_timeout_ms": (0, 3_600_000),
    "protection_token_ttl_minutes": (1, 24 * 60),
    "protection_queue_window_hours": (1, 24 * 366),
    "worker_threads": (1, 64),
    "run_timeout_s": (1, 7 * 24 * 3600),
    "lock_wait_s": (0, 7 * 24 * 3600),
    "stats_cache_s": (0, 24 * 3600),
    "scheduler_tick_s": (0, 3600),
    "replica_max_lag_s": (5, 7 * 24 * 3600),
    "recovery_bundle_max_age_days": (1, 3660),
    "backup_verified_max_age_hours": (1, 24 * 366),
}
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# A periodic job runs at most this often and at least this rarely (CODEB_SCHEDULES).
SCHEDULE_BOUNDS = (dt.timedelta(seconds=10), dt.timedelta(days=31))
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(value: Any) -> dt.timedelta | None:
    """A job's interval as an operator writes it: "30s", "15m", "6h", "1d", a number of
    seconds, or "off" (None: the job does not run)."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an interval")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}[smhd]", value.strip()):
        text = value.strip()
        seconds = int(text[:-1]) * _UNITS[text[-1]]
    else:
        raise ValueError(f"{value!r} is not an interval (like 30s, 15m, 6h, 1d, or off)")
    interval = dt.timedelta(seconds=seconds)
    low, high = SCHEDULE_BOUNDS
    if not low <= interval <= high:
        raise ValueError(f"{value!r} is outside {low} .. {high}")
    return interval


def env_name(setting: str) -> str:
    return f"CODEB_{setting.upper()}"


def _default_data_dir() -> Path:
    """./var beside the checkout (development, `make run`); installed from a wheel, the state
    directory systemd gives the service (StateDirectory=), else the user's state directory,
    never a directory inside site-packages."""
    if content_root() == REPO_ROOT:
        return REPO_ROOT / "var"
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "codeb"


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Environment names are CODEB_<FIELD> upper-cased."""

    data_dir: Path = field(default_factory=_default_data_dir)
    # Empty means sqlite:///<data_dir>/codeb.db.
    database_url: str = ""
    # Fernet key used for stored passwords; kept outside the database.
    secret_key_file: Path | None = None
    # HMAC key of the operation log's chain (never in the database) and the append-only file
    # where each new head of the chain is anchored.
    log_key_file: Path | None = None
    log_anchor_file: Path | None = None
    templates_dir: Path = field(default_factory=lambda: content_root() / "templates")
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 8
    sqlite_busy_timeout_ms: int = 10_000
    log_level: str = "INFO"
    # Shown in .env files until servers with these roles are registered.
    default_db_host: str = "127.0.0.1"
    default_cache_host: str = "127.0.0.1"
    # Protection Layer. A MEDIUM confirm token lives this long.
    protection_token_ttl_minutes: int = 15
    # A HIGH/CRITICAL queue entry expires this long after its cooldown ended.
    protection_queue_window_hours: int = 168
    # Stricter rules: {"operation": {"level": "HIGH", "requires": [...]}}; only adds.
    protection_rules: dict[str, Any] = field(default_factory=dict, hash=False)
    # Weaker rules: replaces a rule outright; every start-up logs each one applied.
    protection_rule_overrides: dict[str, Any] = field(default_factory=dict, hash=False)

    # Executor. codeb's own SSH key (generated on first start unless this points to one).
    ssh_private_key_file: Path | None = None
    # Networks codeb may open SSH connections to (comma-separated CIDRs).
    allowed_networks: str = "0.0.0.0/0,::/0"
    worker_threads: int = 4
    run_timeout_s: int = 1800
    # How long a run waits for another run on the same server to finish.
    lock_wait_s: int = 900
    stats_cache_s: int = 10
    # apt proxy URL that bootstrap writes on servers (http://host:port); empty: each server
    # uses its own apt sources directly. codeb never adds repositories.
    apt_proxy: str = ""
    # Scheduler: how often the serving process looks for due jobs (0: this process runs
    # none), and per job an interval that replaces the job's default ("15m", "off", ...).
    scheduler_tick_s: int = 5
    schedules: dict[str, Any] = field(default_factory=dict, hash=False)
    # Domains: certificates for proxied sites from ACME (production; needs the email) or
    # from Caddy's internal CA (tests). Wildcards need DNS-01, which Debian's Caddy cannot
    # do: `powerdns` here makes codeb issue them itself (ACME DNS-01 through its own dns
    # servers) from `acme_directory`, trusting `acme_ca_bundle` for it if set (a test CA).
    tls: str = "acme"
    acme_email: str = ""
    acme_dns_provider: str = ""
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_bundle: Path | None = None
    # codeb's own SQLite database replicated by Litestream (empty URL: no replica): an
    # s3://bucket/path on an S3 endpoint (the storage server's store), with its key pair in a
    # 0600 file (default <data_dir>/replica.credentials). Status alarms past the lag.
    replica_url: str = ""
    replica_endpoint: str = ""
    replica_region: str = "us-east-1"
    replica_credentials_file: Path | None = None
    replica_max_lag_s: int = 60
    # Status warns when the recovery bundle (codeb recovery export) is older than this.
    recovery_bundle_max_age_days: int = 90
    # PostgreSQL base backups per environment, run by the storage server's own timers
    # (systemd OnCalendar expressions, or "off"): {"production": {"full": "weekly",
    # "incremental": "daily"}}; an environment or kind not named keeps the default
    # (full weekly, incremental daily: PostgreSQL 17 block-level incrementals via Barman).
    backup_schedules: dict[str, Any] = field(default_factory=dict, hash=False)
    # A CRITICAL delete (project, server, production environment, db_drop) needs, for every
    # database concerned, a drill-verified backup taken no longer ago than this.
    backup_verified_max_age_hours: int = 168

    def __post_init__(self) -> None:
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise SettingError(f"{env_name(name)} must be an integer from {low} to {high}")
        if str(self.log_level).upper() not in LOG_LEVELS:
            raise SettingError(f"{env_name('log_level')} must be one of {', '.join(LOG_LEVELS)}")
        # Bootstrap writes it into an apt.conf line: a URL, nothing that could end the string.
        if self.apt_proxy and not re.fullmatch(r"https?://[^\s\"';\\{}]+", self.apt_proxy):
            raise SettingError(f"{env_name('apt_proxy')} must be an http:// or https:// URL")
        try:
            for cidr in self.allowed_networks.split(","):
                ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise SettingError(
                f"{env_name('allowed_networks')} must be comma-separated CIDRs"
            ) from None
        if self.replica_url and not re.fullmatch(
            r"s3://[a-z0-9][a-z0-9.-]{1,62}/[\w./-]+", self.replica_url
        ):
            raise SettingError(f"{env_name('replica_url')} must look like s3://bucket/path")
        if self.replica_url and not re.fullmatch(
            r"https?://[^\s\"';\\{}/]+/?", self.replica_endpoint
        ):
            raise SettingError(
                f"{env_name('replica_endpoint')} must be the S3 endpoint's http(s)://host:port"
            )
        if self.tls not in ("acme", "internal"):
            raise SettingError(f"{env_name('tls')} must be acme or internal")
        if self.acme_email and not re.fullmatch(r"[^\s@{}\"]+@[^\s@{}\"]+", self.acme_email):
            raise SettingError(f"{env_name('acme_email')} must be an email address")
        if self.acme_dns_provider not in ("", "powerdns"):
            raise SettingError(
                f"{env_name('acme_dns_provider')} must be powerdns (codeb's own dns servers) "
                "or empty"
            )
        if not re.fullmatch(r"https://[^\s\"';\\{}]+", self.acme_directory):
            raise SettingError(f"{env_name('acme_directory')} must be an https:// URL")
        for env, kinds in self.backup_schedules.items():
            if not isinstance(kinds, dict) or not set(kinds) <= {"full", "incremental"}:
                raise SettingError(
                    f"{env_name('backup_schedules')}: {env} must be a table of full and/or "
                    "incremental"
                )
            for kind, when in kinds.items():
                if not isinstance(when, str) or not re.fullmatch(
                    r"off|[A-Za-z0-9 :*/,.~-]{1,64}", when
                ):
                    raise SettingError(
                        f"{env_name('backup_schedules')}: {env}.{kind} must be a systemd "
                        "OnCalendar expression (e.g. daily, Sun *-*-* 03:00) or off"
                    )
        # Job names are checked when the scheduler starts (jobs are declared by features).
        for job, value in self.schedules.items():
            try:
                parse_interval(value)
            except ValueError as exc:
                raise SettingError(f"{env_name('schedules')}: {job}: {exc}") from None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'codeb.db'}"

    @property
    def resolved_secret_key_file(self) -> Path:
        return self.secret_key_file or (self.data_dir / "secret.key")

    @property
    def resolved_log_key_file(self) -> Path:
        return self.log_key_file or (self.data_dir / "log.key")

    @property
    def resolved_log_anchor_file(self) -> Path:
        return self.log_anchor_file or (self.data_dir / "log.anchor")

    @property
    def resolved_replica_credentials_file(self) -> Path:
        return self.replica_credentials_file or (self.data_dir / "replica.credentials")

    @property
    def resolved_ssh_key_file(self) -> Path:
        return self.ssh_private_key_file or (self.data_dir / "ssh" / "id_ed25519")


def _json_table(value: Any) -> dict[str, Any]:
    """A table from TOML arrives as a dict; from an environment variable as JSON text."""
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict):
        raise ValueError("expected a table of rules (a JSON object)")
    return parsed


_CASTS: dict[str, Any] = {
    "data_dir": Path,
    "secret_key_file": Path,
    "log_key_file": Path,
    "log_anchor_file": Path,
    "acme_ca_bundle": Path,
    "templates_dir": Path,
    "port": int,
    "threads": int,
    "sqlite_busy_timeout_ms": int,
    "protection_token_ttl_minutes": int,
    "protection_queue_window_hours": int,
    "protection_rules": _json_table,
    "protection_rule_overrides": _json_table,
    "ssh_private_key_file": Path,
    "worker_threads": int,
    "run_timeout_s": int,
    "lock_wait_s": int,
    "stats_cache_s": int,
    "scheduler_tick_s": int,
    "schedules": _json_table,
    "backup_schedules": _json_table,
    "replica_credentials_file": Path,
    "replica_max_lag_s": int,
    "recovery_bundle_max_age_days": int,
    "backup_verified_max_age_hours": int,
}

SETTINGS = tuple(f.name for f in fields(Settings))


def load_settings(
    environ: dict[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Build Settings from a TOML file (CODEB_CONFIG or `config_file`) and CODEB_* variables."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (Path(env["CODEB_CONFIG"]) if env.get("CODEB_CONFIG") else None)
    if path is not None:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        unknown = set(raw) - set(SETTINGS)
        if unknown:
            raise SettingError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
        values.update(raw)
    for name in SETTINGS:
        key = f"CODEB_{name.upper()}"
        if key in env and env[key] != "":
            values[name] = env[key]
    for name, cast in _CASTS.items():
        if name in values and values[name] is not None:
            try:
                values[name] = cast(values[name])
            except (ValueError, TypeError) as exc:
                raise SettingError(f"{env_name(name)}: {exc}") from None
    return Settings(**values)
