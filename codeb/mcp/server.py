"""codeb's MCP server: curated tools, named for what an assistant means to do, over codeb's
HTTP API (`codeb.client`) with an `agent` key. It never opens the database or an SSH
connection: every change passes the Protection Layer like any other client's, and the API
decides by the key's role. No tool confirms, approves or manages keys.

Each tool is one `ToolSpec`: its function and the rule of the operation it requests (None for
tools that only read). Annotations are derived from that rule (`codeb.mcp.hints`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from codeb import __version__
from codeb.client import ApiError, CodebClient, Json
from codeb.mcp.hints import annotations_for, default_rules, rules_from_api
from codeb.mcp.results import error_text, operation_brief, outcome
from codeb.mcp.scaling import scaling_specs
from codeb.protection.rules import Rule

log = logging.getLogger(__name__)

INSTRUCTIONS = """\
codeb manages projects, their containers and the servers they run on. You act with an agent
key: you may read everything and request changes. Changes that codeb's Protection Layer rates
SAFE or LOW run at once (follow the operation they start with follow_operation). A MEDIUM,
HIGH or CRITICAL request (stopping or removing a container, a production deploy, deleting a
project) comes back as status "needs_a_person": show the person the command in `person_runs`
(e.g. `codeb protection confirm TOKEN`) and poll the entry with show_protection_entry. You
cannot confirm, approve or manage keys; the API refuses it for your key."""

FOLLOW_MAX_S = 600
EVENT_PAGE = 500
Environment = Literal["staging", "production", "preview"]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    operation: str | None  # the rule of the operation the tool requests; None: reads only
    fn: Callable[..., Json]
    # The route the tool calls ("get /api/..."); a tool whose route the API does not serve
    # (a feature not wired into that codeb) is left out.
    route: str | None = None


def _seg(value: str) -> str:
    """One path segment, quoted."""
    return quote(str(value), safe="")


def _event_brief(event: Json) -> Json:
    """One event without Ansible's bulk: what ran where, and how it went."""
    data = event.get("data") or {}
    brief = {k: event.get(k) for k in ("seq", "event", "host", "task", "changed", "failed")}
    if isinstance(event.get("duration"), int | float):
        brief["duration"] = round(event["duration"], 2)
    for key in ("msg", "stdout"):
        if data.get(key):
            brief[key] = str(data[key])[:500]
    return {k: v for k, v in brief.items() if v not in (None, "", False)}


class Tools:
    """The tools' bodies; each returns JSON-able dicts and raises ToolError on an API error."""

    def __init__(self, client: CodebClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock

    def _call(self, fn: Callable[..., Json], *args: Any, **kwargs: Any) -> Json:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise ToolError(error_text(exc)) from None

    def _mutate(self, fn: Callable[..., Json], *args: Any, **kwargs: Any) -> Json:
        return outcome(self._call(fn, *args, **kwargs))

    # --- projects ----------------------------------------------------------------------------

    def list_projects(
        self, status: Literal["active", "archived"] | None = None, limit: int = 100
    ) -> Json:
        """List projects (id, name, type, environments and their ports)."""
        return self._call(self.client.list_projects, status=status, limit=limit)

    def show_project(self, project: str) -> Json:
        """One project by id or name, with its environments (no secrets)."""
        return self._call(self.client.get_project, project)

    def create_project(
        self, name: str, type: str | None = None, git_repo: str | None = None
    ) -> Json:
        """Create a project with its staging and production environments and their ports.
        The answer holds the three .env files (local, staging, production) with the generated
        database and Redis passwords: this is the only time they are ever shown."""
        return self._mutate(self.client.create_project, name, type, git_repo)

    def delete_project(self, project: str) -> Json:
        """Request the deletion of a project (CRITICAL: queued; people confirm, another admin
        approves, a verified backup and 48 hours are needed). Nothing is deleted by this call."""
        return self._mutate(self.client.delete_project, project)

    # --- deploys -----------------------------------------------------------------------------

    def deploy_staging(self, project: str, image: str, repair: bool = False) -> Json:
        """Deploy an image to a project's staging environment (app, PostgreSQL, Redis). Starts
        an operation at once; follow it with follow_operation. Hosts whose part of the plan is
        unchanged and healthy are left untouched; repair=true touches every host (undoes
        drift made by hand)."""
        return self._mutate(self.client.deploy, project, "staging", image, repair=repair)

    def deploy_production(self, project: str, image: str, repair: bool = False) -> Json:
        """Request a production deploy. The same image must run healthy in staging first, and
        a person confirms it (the answer says how). repair=true touches every host."""
        return self._mutate(self.client.deploy, project, "production", image, repair=repair)

    def preview_deploy(
        self, project: str, environment: Environment, image: str, repair: bool = False
    ) -> Json:
        """What a deploy would change (every unit and file's diff, the restarts, the hosts it
        would leave untouched and why), changing nothing. Its plan_hash binds the plan to the
        state it was computed from."""
        return self._call(
            self.client.deploy, project, environment, image, preview=True, repair=repair
        )

    # --- containers --------------------------------------------------------------------------

    def container_status(
        self,
        project: str | None = None,
        environment: Environment | None = None,
        container_id: str | None = None,
        live: bool = False,
    ) -> Json:
        """Containers from the registry (filter by project/environment), or one container by
        id; `live` also reads that container's real state from its host and lists drift."""
        if container_id:
            return self._call(self.client.get_container, container_id, live=live)
        return self._call(self.client.list_containers, project, environment)

    def start_container(self, container_id: str) -> Json:
        """Start a container (an operation; follow it)."""
        return self._mutate(self.client.container_action, container_id, "start")

    def stop_container(self, container_id: str) -> Json:
        """Request a container stop (it takes the service down: a person confirms)."""
        return self._mutate(self.client.container_action, container_id, "stop")

    def restart_container(self, container_id: str) -> Json:
        """Restart a container (an operation; follow it)."""
        return self._mutate(self.client.container_action, container_id, "restart")

    def remove_container(self, container_id: str) -> Json:
        """Request the removal of a stopped container; its volume is kept (a person
        confirms)."""
        return self._mutate(self.client.remove_container, container_id)

    # --- operations --------------------------------------------------------------------------

    def list_operations(
        self, status: str | None = None, kind: str | None = None, limit: int = 20
    ) -> Json:
        """Recent operations (deploys, container actions, bootstraps), newest first."""
        body = self._call(self.client.list_operations, status=status, kind=kind, limit=limit)
        ops = body.get("operations") or []
        return {**body, "operations": [operation_brief(op) for op in ops]}

    def show_operation(self, operation_id: str) -> Json:
        """One operation: status, per-host recap, result, error."""
        return self._call(self.client.get_operation, operation_id)

    def operation_log(self, operation_id: str, after: int = 0, limit: int = 200) -> Json:
        """An operation's events after `after` (task by task, per host), in order."""
        page = self._call(self.client.operation_events, operation_id, after, 0, limit)
        events = [_event_brief(e) for e in page.get("events") or []]
        return {**page, "events": events}

    def follow_operation(self, operation_id: str, wait_seconds: int = 120) -> Json:
        """Wait (at most `wait_seconds`, up to 600) until the operation ends; answers its
        events and the operation. If it is still running, call again with `after`."""
        wait_seconds = max(0, min(int(wait_seconds), FOLLOW_MAX_S))
        deadline = self._clock() + wait_seconds
        after, events, finished = 0, [], False
        while True:
            left = max(0, min(10, int(deadline - self._clock())))
            page = self._call(self.client.operation_events, operation_id, after, left, EVENT_PAGE)
            batch = page.get("events") or []
            events.extend(_event_brief(e) for e in batch)
            after = int(page.get("next_after", after))
            finished = bool(page.get("finished")) and len(batch) < EVENT_PAGE
            if finished or self._clock() >= deadline:
                break
        op = self._call(self.client.get_operation, operation_id)
        return {
            "finished": finished,
            "operation": operation_brief(op),
            "events": events[-200:],
            "events_total": len(events),
            "next_after": after,
        }

    def cancel_operation(self, operation_id: str) -> Json:
        """Cancel a running operation this key started (the run stops within a second and its
        hosts are reconciled). Operations started by others are refused."""
        return self._mutate(self.client.cancel_operation, operation_id)

    # --- domains -----------------------------------------------------------------------------

    def add_domain(
        self, domain: str, project: str, environment: Environment, zone: str | None = None
    ) -> Json:
        """Point a domain at an environment: records on every dns server, then the proxies'
        Caddyfile (certificates by ACME). Starts an operation; follow it."""
        body: Json = {"domain": domain, "project": project, "environment": environment}
        if zone:
            body["zone"] = zone
        return self._mutate(self.client.request, "POST", "/api/domains", json=body)

    def list_domains(self, project: str | None = None) -> Json:
        """Domains, with the certificate last seen and a warning before it expires."""
        params = {"project": project} if project else None
        return self._call(self.client.request, "GET", "/api/domains", params=params)

    def domain_status(self, domain: str) -> Json:
        """Check a domain live: each authoritative DNS server, each proxy's route, TLS, HTTP
        to the app; ok / degraded / down with the reasons."""
        return self._call(self.client.request, "GET", f"/api/domains/{_seg(domain)}/status")

    # --- backups -----------------------------------------------------------------------------

    def create_backup(self, project: str, environment: Environment) -> Json:
        """Take a backup of an environment's database now (an operation; follow it)."""
        body = {"project": project, "environment": environment}
        return self._mutate(self.client.request, "POST", "/api/backups", json=body)

    def list_backups(
        self,
        project: str | None = None,
        environment: Environment | None = None,
        status: Literal["running", "completed", "failed", "deleted"] | None = None,
    ) -> Json:
        """Backups, newest first, with their recoverable window."""
        params = {k: v for k, v in (("project", project), ("environment", environment),
                                     ("status", status)) if v}  # fmt: skip
        return self._call(self.client.request, "GET", "/api/backups", params=params or None)

    def backup_status(self, backup_id: str) -> Json:
        """One backup: status, size, recoverable window, verification."""
        return self._call(self.client.request, "GET", f"/api/backups/{_seg(backup_id)}")

    def request_restore(self, backup_id: str, target_time: str | None = None) -> Json:
        """Restore a backup (to `target_time`, UTC to the second, or everything it holds)
        into a new PostgreSQL container; the live database is not touched."""
        body = {"target_time": target_time} if target_time else {}
        path = f"/api/backups/{_seg(backup_id)}/restore"
        return self._mutate(self.client.request, "POST", path, json=body)

    # --- the Protection Layer (reads only) ---------------------------------------------------

    def list_protection_queue(
        self,
        status: Literal["pending", "executed", "cancelled", "expired", "all"] | None = None,
        operation: str | None = None,
    ) -> Json:
        """Requests waiting for people (or, with `status`, finished ones): what, on what,
        what is still required, cooldowns."""
        return self._call(self.client.protection_queue, status=status, operation=operation)

    def show_protection_entry(self, entry_id: str) -> Json:
        """One request's state: pending (and what it still needs), executed, cancelled or
        expired. Poll this after a "needs_a_person" answer."""
        return self._call(self.client.protection_entry, entry_id)


def tool_specs(tools: Tools) -> list[ToolSpec]:
    """Every tool, with the rule of the operation it requests and the route it calls."""
    t, spec = tools, ToolSpec
    return [
        spec("list_projects", "List projects", None, t.list_projects, "get /api/projects"),
        spec("show_project", "Show a project", None, t.show_project,
             "get /api/projects/{project}"),
        spec("create_project", "Create a project", "project_create", t.create_project,
             "post /api/projects"),
        spec("delete_project", "Request a project delete", "project_delete", t.delete_project,
             "delete /api/projects/{project}"),
        spec("deploy_staging", "Deploy to staging", "deploy_staging", t.deploy_staging,
             "post /api/containers/deploy"),
        spec("deploy_production", "Request a production deploy", "deploy_production",
             t.deploy_production, "post /api/containers/deploy"),
        spec("preview_deploy", "Preview a deploy", None, t.preview_deploy,
             "post /api/containers/deploy"),
        spec("container_status", "Container status", None, t.container_status,
             "get /api/containers"),
        spec("start_container", "Start a container", "container_start", t.start_container,
             "post /api/containers/{container_id}/start"),
        spec("stop_container", "Request a container stop", "container_stop", t.stop_container,
             "post /api/containers/{container_id}/stop"),
        spec("restart_container", "Restart a container", "container_restart",
             t.restart_container, "post /api/containers/{container_id}/restart"),
        spec("remove_container", "Request a container removal", "container_remove",
             t.remove_container, "delete /api/containers/{container_id}"),
        spec("add_domain", "Point a domain at an environment", "domain_set", t.add_domain,
             "post /api/domains"),
        spec("list_domains", "List domains", None, t.list_domains, "get /api/domains"),
        spec("domain_status", "Check a domain live", None, t.domain_status,
             "get /api/domains/{domain}/status"),
        spec("create_backup", "Take a backup", "backup_create", t.create_backup,
             "post /api/backups"),
        spec("list_backups", "List backups", None, t.list_backups, "get /api/backups"),
        spec("backup_status", "Show a backup", None, t.backup_status,
             "get /api/backups/{backup_id}"),
        spec("request_restore", "Restore a backup into a new container", "backup_restore_new",
             t.request_restore, "post /api/backups/{backup_id}/restore"),
        spec("list_operations", "List operations", None, t.list_operations,
             "get /api/operations"),
        spec("show_operation", "Show an operation", None, t.show_operation,
             "get /api/operations/{operation_id}"),
        spec("operation_log", "An operation's events", None, t.operation_log,
             "get /api/operations/{operation_id}/events"),
        spec("follow_operation", "Follow an operation", None, t.follow_operation,
             "get /api/operations/{operation_id}/events"),
        spec("cancel_operation", "Cancel an own operation", "operation_cancel",
             t.cancel_operation, "post /api/operations/{operation_id}/cancel"),
        spec("list_protection_queue", "List requests waiting for people", None,
             t.list_protection_queue, "get /api/protection/queue"),
        spec("show_protection_entry", "Show a request's state", None, t.show_protection_entry,
             "get /api/protection/queue/{entry_id}"),
        *scaling_specs(t, spec),
    ]  # fmt: skip


def served_routes(client: CodebClient) -> set[str] | None:
    """The API's routes ("get /api/..."), from its OpenAPI document; None if unreadable."""
    try:
        document = client.request("GET", "/api/openapi.json")
    except ApiError as exc:
        log.warning("cannot read the API's routes (%s); every tool is offered", exc)
        return None
    return {
        f"{method} {path}"
        for path, item in (document.get("paths") or {}).items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def effective_rules(client: CodebClient) -> dict[str, Rule]:
    """The rules the API applies (configured ones included); the built-in table if the API
    cannot be read now (the hints then say what the defaults say)."""
    try:
        return rules_from_api(client.protection_rules())
    except (ApiError, ValueError) as exc:
        log.warning("cannot read the effective rules (%s); hints follow the built-in table", exc)
        return default_rules()


def build_server(
    client: CodebClient,
    rules: Mapping[str, Rule] | None = None,
    name: str = "codeb",
    routes: set[str] | None = None,
) -> MCPServer:
    """The MCP server over `client` (an agent key). `rules` defaults to the API's effective
    rules, `routes` to the routes the API serves (a tool of a feature that API lacks, or a
    rule it does not know, is left out: the tools follow the codeb they talk to)."""
    rules = dict(rules) if rules is not None else effective_rules(client)
    routes = routes if routes is not None else served_routes(client)
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS, version=__version__)
    for spec in tool_specs(Tools(client)):
        if routes is not None and spec.route is not None and spec.route not in routes:
            log.info("tool %s left out: the API does not serve %s", spec.name, spec.route)
            continue
        rule = None
        if spec.operation is not None:
            rule = rules.get(spec.operation)
            if rule is None:
                log.info("tool %s left out: the API has no rule %s", spec.name, spec.operation)
                continue
        server.add_tool(
            spec.fn,
            name=spec.name,
            title=spec.title,
            annotations=annotations_for(rule, spec.title),
            meta={"codeb/operation": spec.operation, "codeb/route": spec.route},
        )
    return server
