"""Caddy 2.6: the Caddyfile rendered as a whole from templates/caddy/Caddyfile.j2, `caddy
validate` before `caddy reload` (a file that fails either leaves the running config serving),
and the running config read through the admin API (loopback only)."""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from codeb.errors import CodebError
from codeb.render import template_environment

# Names reach the template only after the domain service validated them; checked again here
# so nothing else (a newline, a brace, a template) can ever end up in the file.
_NAME = re.compile(r"(\*\.)?([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{1,63}")
_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,200}")
_EMAIL = re.compile(r"[^\s@{}\"]+@[^\s@{}\"]+")
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,63}")
TEMPLATE = "caddy/Caddyfile.j2"
TIMEOUT_S = 30


class ProxyError(CodebError):
    status = 502
    code = "proxy_error"


class ProxyConfigRejected(ProxyError):
    """Caddy refused the new configuration; the old one keeps serving."""

    code = "proxy_config_rejected"


@dataclass(frozen=True)
class Site:
    domain: str  # punycode, lower case
    project: str
    environment: str
    upstreams: tuple[str, ...] = ()  # "ip:port" / "[v6]:port"
    health_path: str = "/health"
    # A certificate codeb obtained itself (DNS-01, for wildcards): Caddy serves it from
    # these files on the proxy and asks no CA for this name. None: Caddy's own automation.
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class CaddyOptions:
    admin: str = "localhost:2019"  # loopback only
    tls: str = "acme"  # acme | internal
    acme_email: str = ""
    http_port: int = 80
    https_port: int = 443
    health_interval: str = "10s"
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


def upstream(ip: str, port: int) -> str:
    addr = ipaddress.ip_address(ip)
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"bad upstream port {port!r}")
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def render_caddyfile(templates_dir: Path, sites: list[Site], options: CaddyOptions) -> str:
    """The whole Caddyfile: every site, sorted by name (the same database gives the same
    bytes, so an unchanged configuration is recognised and not reloaded)."""
    if options.tls not in ("acme", "internal"):
        raise ValueError("tls must be 'acme' or 'internal'")
    if options.tls == "acme" and not _EMAIL.fullmatch(options.acme_email):
        raise ProxyError(
            "ACME needs an email address (CODEB_ACME_EMAIL)", {"setting": "acme_email"}
        )
    host, _, port = options.admin.rpartition(":")
    if host not in ("localhost", "127.0.0.1", "[::1]") or not port.isdigit():
        raise ValueError("Caddy's admin API listens on loopback only")
    for site in sites:
        if not _NAME.fullmatch(site.domain) or len(site.domain) > 253:
            raise ValueError(f"not a valid site name: {site.domain!r}")
        if not _PATH.fullmatch(site.health_path):
            raise ValueError(f"not a valid health path: {site.health_path!r}")
        if (site.cert_file is None) != (site.key_file is None) or any(
            f is not None and not _PATH.fullmatch(f) for f in (site.cert_file, site.key_file)
        ):
            raise ValueError(f"bad certificate files for {site.domain!r}")
        if not (_LABEL.fullmatch(site.project) and _LABEL.fullmatch(site.environment)):
            raise ValueError("bad project or environment name")
        for up in site.upstreams:
            host, _, port = up.rpartition(":")
            upstream(host.strip("[]"), int(port))
    template = template_environment(templates_dir).get_template(TEMPLATE)
    ordered = sorted(sites, key=lambda s: s.domain)
    return template.render(sites=ordered, options=options)


def caddyfile_diff(old: str, new: str, name: str = "Caddyfile") -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{name} (running)",
            tofile=f"{name} (new)",
        )
    )


def hosts_in_config(config: Any) -> dict[str, list[str]]:
    """From Caddy's running JSON config: each host a route matches -> its upstreams' dial
    addresses (empty when the route does something else, like a static 503)."""
    out: dict[str, list[str]] = {}
    servers = (((config or {}).get("apps") or {}).get("http") or {}).get("servers") or {}
    for server in servers.values():
        for route in server.get("routes") or []:
            hosts = [h for m in route.get("match") or [] for h in m.get("host") or []]
            dials = sorted(set(_dials(route)))
            for host in hosts:
                out.setdefault(host, [])
                out[host] = sorted(set(out[host]) | set(dials))
    return out


def _dials(node: Any) -> list[str]:
    if isinstance(node, dict):
        ups = node.get("upstreams") or []
        found = [u["dial"] for u in ups if isinstance(u, dict) and "dial" in u]
        for value in node.values():
            found += _dials(value)
        return found
    if isinstance(node, list):
        return [d for item in node for d in _dials(item)]
    return []


class ProxyProvider(Protocol):
    """A Caddy codeb drives."""

    def apply(self, caddyfile: str) -> bool:
        """Validate, then make `caddyfile` the running configuration; False when it already
        was. Raises ProxyConfigRejected (the old configuration keeps serving)."""
        ...

    def running_config(self) -> dict[str, Any]:
        """The configuration Caddy runs now (JSON, from its admin API)."""
        ...


class LocalCaddy:
    """A Caddy on this machine: `config` is the Caddyfile it runs, `admin` its admin address,
    `env` its environment (HOME/XDG_* where it keeps its data)."""

    def __init__(self, config: Path, admin: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.admin = admin
        self.env = dict(env if env is not None else os.environ)

    def _caddy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["caddy", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=TIMEOUT_S,
            check=False,
        )

    def validate(self, caddyfile: str) -> None:
        with tempfile.TemporaryDirectory(prefix="codeb-caddy-") as tmp:
            candidate = Path(tmp) / "Caddyfile"
            candidate.write_text(caddyfile)
            done = self._caddy("validate", "--config", str(candidate), "--adapter", "caddyfile")
        if done.returncode != 0:
            raise ProxyConfigRejected(
                "Caddy refused the configuration: " + caddy_message(done.stderr),
                {"stage": "validate"},
            )

    def apply(self, caddyfile: str) -> bool:
        old = self.config.read_text() if self.config.exists() else None
        if old == caddyfile:
            return False
        self.validate(caddyfile)
        tmp = self.config.with_name(self.config.name + ".codeb-new")
        tmp.write_text(caddyfile)
        os.replace(tmp, self.config)
        done = self._caddy(
            "reload", "--config", str(self.config), "--adapter", "caddyfile",
            "--address", self.admin, "--force",
        )  # fmt: skip
        if done.returncode != 0:
            # Caddy kept its running config; the file on disk says so again.
            if old is None:
                self.config.unlink()
            else:
                self.config.write_text(old)
            raise ProxyConfigRejected(
                "Caddy refused to load the configuration: " + caddy_message(done.stderr),
                {"stage": "reload"},
            )
        return True

    def running_config(self) -> dict[str, Any]:
        try:
            response = httpx.get(f"http://{self.admin}/config/", timeout=5)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ProxyError(f"cannot read Caddy's running config: {type(exc).__name__}") from None
        return response.json() or {}


def caddy_message(stderr: str) -> str:
    """Caddy's own reason, from its last error line (JSON log lines carry it in "error")."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("Error:"):
            return line[len("Error:") :].strip()[:1000]
    return (lines[-1] if lines else "no message")[:1000]


_ISSUANCE_FAILED = ("could not get certificate from issuer", "will retry", "job failed")
_BRACKETED = re.compile(r"^\[([^\]\s]+)\] ")
_PREFIXED = re.compile(r"^([a-z0-9*.-]+): obtaining certificate")


def issuance_errors(lines: list[str]) -> dict[str, dict[str, Any]]:
    """From Caddy's JSON log lines (its journal, or its stderr): per name the last error of
    its certificate automation (the CA's or the network's message, when, the attempt and when
    Caddy tries again), unless a certificate was obtained for it after that. Shutdown
    cancellations are not errors."""
    out: dict[str, dict[str, Any]] = {}
    obtained: dict[str, float] = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{") or '"logger":"tls' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        ts = entry.get("ts")
        if not isinstance(ts, int | float):
            continue
        msg, error = str(entry.get("msg", "")), str(entry.get("error", ""))
        name = entry.get("identifier")
        if not isinstance(name, str):
            found = _BRACKETED.match(error) or _PREFIXED.match(error)
            name = found.group(1) if found else None
        if not name:
            continue
        if msg == "certificate obtained successfully":
            obtained[name] = max(ts, obtained.get(name, 0))
            continue
        if entry.get("level") != "error" or msg not in _ISSUANCE_FAILED:
            continue
        if error.endswith("context canceled"):
            continue
        if name in out and out[name]["ts"] > ts:
            continue
        out[name] = {
            "ts": ts,
            "at": dt.datetime.fromtimestamp(ts, dt.UTC).replace(tzinfo=None).isoformat() + "Z",
            "error": error[:1000],
            "issuer": entry.get("issuer") or (out.get(name) or {}).get("issuer"),
            "attempt": entry.get("attempt"),
            "retrying_in_s": entry.get("retrying_in"),
        }
    return {name: e for name, e in out.items() if obtained.get(name, 0) < e["ts"]}
