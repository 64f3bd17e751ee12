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

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from codeb import __version__
from codeb.client import ApiError, CodebClient, Json
from codeb.mcp.hints import annotations_for, default_rules, rules_from_api
from codeb.mcp.results import error_text, operation_brief, outcome
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

    def deploy_staging(self, project: str, image: str) -> Json:
        """Deploy an image to a project's staging environment (app, PostgreSQL, Redis). Starts
        an operation at once; follow it with follow_operation."""
        return self._mutate(self.client.deploy, project, "staging", image)

    def deploy_production(self, project: str, image: str) -> Json:
        """Request a production deploy. The same image must run healthy in staging first, and
        a person confirms it (the answer says how)."""
        return self._mutate(self.client.deploy, project, "production", image)

    def preview_deploy(self, project: str, environment: Environment, image: str) -> Json:
        """What a deploy would change (every unit and file's diff, the restarts), changing
        nothing. Its plan_hash binds the plan to the state it was computed from."""
        return self._call(self.client.deploy, project, environment, image, preview=True)

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
    """Every tool, with the rule of the operation it requests."""
    return [
        ToolSpec("list_projects", "List projects", None, tools.list_projects),
        ToolSpec("show_project", "Show a project", None, tools.show_project),
        ToolSpec("create_project", "Create a project", "project_create", tools.create_project),
        ToolSpec("delete_project", "Request a project delete", "project_delete",
                 tools.delete_project),
        ToolSpec("deploy_staging", "Deploy to staging", "deploy_staging", tools.deploy_staging),
        ToolSpec("deploy_production", "Request a production deploy", "deploy_production",
                 tools.deploy_production),
        ToolSpec("preview_deploy", "Preview a deploy", None, tools.preview_deploy),
        ToolSpec("container_status", "Container status", None, tools.container_status),
        ToolSpec("start_container", "Start a container", "container_start",
                 tools.start_container),
        ToolSpec("stop_container", "Request a container stop", "container_stop",
                 tools.stop_container),
        ToolSpec("restart_container", "Restart a container", "container_restart",
                 tools.restart_container),
        ToolSpec("remove_container", "Request a container removal", "container_remove",
                 tools.remove_container),
        ToolSpec("list_operations", "List operations", None, tools.list_operations),
        ToolSpec("show_operation", "Show an operation", None, tools.show_operation),
        ToolSpec("operation_log", "An operation's events", None, tools.operation_log),
        ToolSpec("follow_operation", "Follow an operation", None, tools.follow_operation),
        ToolSpec("cancel_operation", "Cancel an own operation", "operation_cancel",
                 tools.cancel_operation),
        ToolSpec("list_protection_queue", "List requests waiting for people", None,
                 tools.list_protection_queue),
        ToolSpec("show_protection_entry", "Show a request's state", None,
                 tools.show_protection_entry),
    ]  # fmt: skip


def effective_rules(client: CodebClient) -> dict[str, Rule]:
    """The rules the API applies (configured ones included); the built-in table if the API
    cannot be read now (the hints then say what the defaults say)."""
    try:
        return rules_from_api(client.protection_rules())
    except (ApiError, ValueError) as exc:
        log.warning("cannot read the effective rules (%s); hints follow the built-in table", exc)
        return default_rules()


def build_server(
    client: CodebClient, rules: Mapping[str, Rule] | None = None, name: str = "codeb"
) -> MCPServer:
    """The MCP server over `client` (an agent key). `rules` defaults to the API's own."""
    rules = dict(rules) if rules is not None else effective_rules(client)
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS, version=__version__)
    for spec in tool_specs(Tools(client)):
        rule = None
        if spec.operation is not None:
            rule = rules.get(spec.operation)
            if rule is None:
                raise RuntimeError(f"tool {spec.name}: no rule {spec.operation!r}")
        server.add_tool(
            spec.fn,
            name=spec.name,
            title=spec.title,
            annotations=annotations_for(rule, spec.title),
            meta={"codeb/operation": spec.operation},
        )
    return server
