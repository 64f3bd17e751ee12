"""A small typed HTTP client over the codeb API: one method per endpoint, answers as the API's
JSON, and one exception (`ApiError`) for every error answer. The CLI and the MCP server are thin
layers over it.

Settings come from the environment (`CODEB_URL`, `CODEB_API_KEY`) or from a TOML file
(`~/.config/codeb/cli.toml`, or the path in `CODEB_CLI_CONFIG`) with `url` and `api_key`; the
environment wins. The API key is never part of a message, a repr or an exception."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from codeb import __version__

Json = dict[str, Any]
DEFAULT_URL = "http://127.0.0.1:8080"
CLIENT_NAMES = ("api", "cli", "mcp")
# The events long poll waits up to this long on the server; the read timeout covers it.
EVENTS_WAIT_S = 10


class ApiError(Exception):
    """An error answer of the API (`{"error": {"code", "message", "details"}}`), or a failure
    to reach it (status 0)."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def body(self) -> Json:
        """The API's error shape (also for connection failures)."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


class ConnectionFailed(ApiError):
    """The API could not be reached (refused, DNS, timeout, TLS)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, "connection_failed", f"cannot reach codeb at {url}: {reason}")


class ConfigError(Exception):
    """The client settings are missing or unreadable."""


@dataclass(frozen=True)
class ClientSettings:
    url: str
    api_key: str | None = field(default=None, repr=False)
    config_path: Path | None = None


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("CODEB_CLI_CONFIG"):
        return Path(env["CODEB_CLI_CONFIG"]).expanduser()
    return Path("~/.config/codeb/cli.toml").expanduser()


def load_settings(environ: Mapping[str, str] | None = None) -> ClientSettings:
    """Environment first, then the config file (if it exists), then the defaults."""
    env = os.environ if environ is None else environ
    path = config_path(env)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    url = env.get("CODEB_URL") or data.get("url") or DEFAULT_URL
    key = env.get("CODEB_API_KEY") or data.get("api_key") or None
    if not isinstance(url, str) or not (key is None or isinstance(key, str)):
        raise ConfigError(f"{path}: url and api_key must be strings")
    return ClientSettings(url.rstrip("/"), key, path if path.is_file() else None)


def _seg(value: str | int) -> str:
    """One path segment, quoted (IPv6 addresses keep their colons)."""
    return quote(str(value), safe=":")


def _params(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


class CodebClient:
    """`CodebClient(base_url, api_key)`; methods answer the API's JSON bodies as dicts."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        client: str = "cli",
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if client not in CLIENT_NAMES:
            raise ValueError(f"client must be one of {CLIENT_NAMES}")
        headers = {"X-Codeb-Client": client, "User-Agent": f"codeb-{client}/{__version__}"}
        if api_key:
            headers["X-API-Key"] = api_key
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_settings(
        cls, settings: ClientSettings, client: str = "cli", **kwargs: Any
    ) -> CodebClient:
        return cls(settings.url, settings.api_key, client, **kwargs)

    def __repr__(self) -> str:
        return f"CodebClient({self.base_url!r})"

    def __enter__(self) -> CodebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Json:
        """Send one request; answer the JSON body of a 2xx, raise ApiError otherwise."""
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            resp = self._http.request(
                method, path, json=json, params=params, headers=headers, **extra
            )
        except httpx.TimeoutException:
            raise ConnectionFailed(self.base_url, "timed out") from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.base_url, str(exc) or type(exc).__name__) from None
        return _decode(resp)

    # --- projects and environments ---------------------------------------------------------

    def list_projects(
        self, status: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> Json:
        return self.request(
            "GET", "/api/projects", params=_params(status=status, limit=limit, offset=offset)
        )

    def get_project(self, project: str) -> Json:
        return self.request("GET", f"/api/projects/{_seg(project)}")

    def create_project(
        self,
        name: str,
        project_type: str | None = None,
        git_repo: str | None = None,
        preview: bool = False,
    ) -> Json:
        body: Json = {"name": name}
        if project_type:
            body["type"] = project_type
        if git_repo is not None:
            body["git_repo"] = git_repo
        if preview:
            body["preview"] = True
        return self.request("POST", "/api/projects", json=body)

    def update_project(self, project: str, changes: Mapping[str, Any]) -> Json:
        return self.request("PUT", f"/api/projects/{_seg(project)}", json=dict(changes))

    def delete_project(self, project: str) -> Json:
        return self.request("DELETE", f"/api/projects/{_seg(project)}")

    def list_environments(self, project: str) -> Json:
        return self.request("GET", f"/api/projects/{_seg(project)}/environments")

    def get_environment(self, project: str, env: str) -> Json:
        return self.request("GET", f"/api/projects/{_seg(project)}/environments/{_seg(env)}")

    def create_environment(self, project: str, env: str) -> Json:
        return self.request(
            "POST", f"/api/projects/{_seg(project)}/environments", json={"name": env}
        )

    def delete_environment(self, project: str, env: str) -> Json:
        return self.request("DELETE", f"/api/projects/{_seg(project)}/environments/{_seg(env)}")

    # --- servers ---------------------------------------------------------------------------

    def list_servers(self, role: str | None = None) -> Json:
        return self.request("GET", "/api/servers", params=_params(role=role))

    def get_server(self, ip: str) -> Json:
        return self.request("GET", f"/api/servers/{_seg(ip)}")

    def register_server(self, body: Mapping[str, Any]) -> Json:
        return self.request("POST", "/api/servers", json=dict(body))

    def delete_server(self, ip: str) -> Json:
        return self.request("DELETE", f"/api/servers/{_seg(ip)}")

    def server_stats(self, ip: str) -> Json:
        return self.request("GET", f"/api/servers/{_seg(ip)}/stats")

    def bootstrap_server(self, ip: str) -> Json:
        return self.request("POST", f"/api/servers/{_seg(ip)}/bootstrap")

    def ssh_public_key(self) -> Json:
        return self.request("GET", "/api/servers/ssh-key")

    # --- containers ------------------------------------------------------------------------
    # Every mutating call takes `preview` (answers the plan, changes nothing) and `plan_hash`
    # (apply exactly a previewed plan; 409 plan_changed if the state moved).

    def _mutate(
        self,
        method: str,
        path: str,
        json: Any = None,
        preview: bool = False,
        plan_hash: str | None = None,
    ) -> Json:
        headers = {"X-Plan-Hash": plan_hash} if plan_hash else None
        params = {"preview": "true"} if preview else None
        return self.request(method, path, json=json, params=params, headers=headers)

    def deploy(
        self,
        project: str,
        environment: str,
        image: str,
        *,
        preview: bool = False,
        plan_hash: str | None = None,
        repair: bool = False,
    ) -> Json:
        body: dict[str, Any] = {"project": project, "environment": environment, "image": image}
        if repair:
            body["repair"] = True  # every host probed and applied (undoes drift by hand)
        return self._mutate("POST", "/api/containers/deploy", body, preview, plan_hash)

    def list_containers(self, project: str | None = None, environment: str | None = None) -> Json:
        return self.request(
            "GET", "/api/containers", params=_params(project=project, environment=environment)
        )

    def get_container(self, container_id: str, live: bool = False) -> Json:
        params = {"live": "true"} if live else None
        return self.request("GET", f"/api/containers/{_seg(container_id)}", params=params)

    def container_action(
        self,
        container_id: str,
        action: str,
        *,
        preview: bool = False,
        plan_hash: str | None = None,
    ) -> Json:
        """`action` is start, stop or restart."""
        if action not in ("start", "stop", "restart"):
            raise ValueError(f"unknown container action {action!r}")
        path = f"/api/containers/{_seg(container_id)}/{action}"
        return self._mutate("POST", path, None, preview, plan_hash)

    def remove_container(
        self, container_id: str, *, preview: bool = False, plan_hash: str | None = None
    ) -> Json:
        path = f"/api/containers/{_seg(container_id)}"
        return self._mutate("DELETE", path, None, preview, plan_hash)

    def delete_volume(
        self, container_id: str, *, preview: bool = False, plan_hash: str | None = None
    ) -> Json:
        path = f"/api/containers/{_seg(container_id)}/volume"
        return self._mutate("DELETE", path, None, preview, plan_hash)

    # --- operations ------------------------------------------------------------------------

    def list_operations(
        self,
        status: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Json:
        params = _params(status=status, kind=kind, limit=limit, offset=offset)
        return self.request("GET", "/api/operations", params=params)

    def get_operation(self, operation_id: str) -> Json:
        return self.request("GET", f"/api/operations/{_seg(operation_id)}")

    def operation_events(
        self, operation_id: str, after: int = 0, wait: int = 0, limit: int = 500
    ) -> Json:
        """Events after `after`; `wait` long-polls (the server answers early on news)."""
        return self.request(
            "GET",
            f"/api/operations/{_seg(operation_id)}/events",
            params={"after": after, "wait": wait, "limit": limit},
            timeout=wait + 30.0,
        )

    def cancel_operation(self, operation_id: str) -> Json:
        return self.request("POST", f"/api/operations/{_seg(operation_id)}/cancel")

    # --- the Protection Layer ----------------------------------------------------------------

    def protection_queue(
        self,
        status: str | None = None,
        operation: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Json:
        params = _params(status=status, operation=operation, limit=limit, offset=offset)
        return self.request("GET", "/api/protection/queue", params=params)

    def protection_entry(self, entry_id: str) -> Json:
        return self.request("GET", f"/api/protection/queue/{_seg(entry_id)}")

    def confirm(self, token: str, typed_name: str | None = None) -> Json:
        body = {"token": token}
        if typed_name is not None:
            body["typed_name"] = typed_name
        return self.request("POST", "/api/protection/confirm", json=body)

    def approve(self, entry_id: str) -> Json:
        return self.request("POST", "/api/protection/approve", json={"id": entry_id})

    def cancel(self, entry_id: str | None = None, token: str | None = None) -> Json:
        body = {"id": entry_id} if entry_id else {"token": token}
        return self.request("POST", "/api/protection/cancel", json=body)

    def protection_logs(
        self,
        *,
        operation: str | None = None,
        status: str | None = None,
        project: str | None = None,
        key_name: str | None = None,
        target: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        verify: bool = False,
    ) -> Json:
        params = _params(
            operation=operation, status=status, project=project, key_name=key_name,
            target=target, limit=limit, offset=offset, verify=True if verify else None,
        )  # fmt: skip
        return self.request("GET", "/api/protection/logs", params=params)

    def verify_logs(self) -> Json:
        return self.request("GET", "/api/protection/logs/verify")

    def protection_rules(self) -> Json:
        return self.request("GET", "/api/protection/rules")

    # --- the rest --------------------------------------------------------------------------

    def health(self) -> Json:
        return self.request("GET", "/api/health")


def _decode(resp: httpx.Response) -> Json:
    try:
        body = resp.json() if resp.content else {}
    except ValueError:
        body = None
    if resp.is_success:
        if not isinstance(body, dict):
            raise ApiError(resp.status_code, "bad_response", "the API answered something not JSON")
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        details = error.get("details")
        raise ApiError(
            resp.status_code,
            str(error.get("code") or "http_error"),
            str(error.get("message") or resp.reason_phrase),
            details if isinstance(details, dict) else {},
        )
    raise ApiError(
        resp.status_code, "http_error", f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
    )
