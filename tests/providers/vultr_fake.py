"""A stateful fake of Vultr's published API v2 contract for instances, served over real HTTP
on loopback (waitress). The only fake codeb allows: the Vultr cloud cannot be reached here.

Follows the contract in ../shared/docs/components.md ("Vultr API v2"): Bearer key; `POST
/v2/instances {region, plan, os_id, label, hostname, sshkey_id[], user_data (base64), tags[]}`
→ 202 `{instance}`; `GET /v2/instances/{id}` with `status` pending→active, `power_status`
running, `server_status` none→installingbooting→ok and `main_ip` 0.0.0.0 until assigned, each
after a delay; `GET /v2/instances?tag=&label=&per_page=&cursor=` with `meta.links.next` cursor
paging; `DELETE /v2/instances/{id}` → 204; errors as `{"error": ..., "status": N}`. It can
inject 429 (with Retry-After) and 503 answers, lose the answer of a create it performed, and
call a hook on create (to boot a real fleet host and hand out its address). Every request is
checked against the documented shapes; violations are kept for the tests to assert on."""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import waitress

from tests.support import in_thread

CREATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "region": str,
    "plan": str,
    "os_id": int,
    "label": str,
    "hostname": str,
    "sshkey_id": list,
    "user_data": str,
    "tags": list,
    "activation_email": bool,
    "enable_ipv6": bool,
    "backups": str,
    "firewall_group_id": str,
}


@dataclass
class FakeInstance:
    body: dict[str, Any]
    created: float
    # The address, or a Future of it (a host still booting: main_ip stays 0.0.0.0 and
    # server_status short of ok until it resolves).
    ip: str | Future | None = None
    deleted: bool = False

    def address(self) -> str | None:
        if isinstance(self.ip, Future):
            if not self.ip.done() or self.ip.exception() is not None:
                return None
            return self.ip.result()
        return self.ip


@dataclass
class VultrFake:
    api_key: str
    # Seconds after the create at which each state is reached.
    ip_after_s: float = 0.2
    active_after_s: float = 0.4
    ok_after_s: float = 0.6
    # Called with the create request (user_data decoded) when an instance is created; returns
    # its address, a Future of it (e.g. a fleet host booting), or None for a made-up
    # TEST-NET-3 address.
    on_create: Callable[[dict[str, Any]], str | Future | None] | None = None
    # Called when an instance is deleted (e.g. to stop the fleet host).
    on_delete: Callable[[dict[str, Any]], None] | None = None
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    _inject: list[tuple[int, int | None]] = field(default_factory=list)
    _lose_next_create: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_ip: int = 10

    # --- what tests steer -----------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1, retry_after: int | None = None) -> None:
        with self._lock:
            self._inject.extend([(status, retry_after)] * times)

    def lose_next_create_answer(self) -> None:
        """The next create happens but its caller gets a 503 (a lost answer)."""
        with self._lock:
            self._lose_next_create += 1

    def live(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._view(i) for i in self.instances.values() if not i.deleted]

    # --- the contract ---------------------------------------------------------------------

    def _view(self, inst: FakeInstance) -> dict[str, Any]:
        age = time.monotonic() - inst.created
        body = dict(inst.body)
        address = inst.address()
        if age >= self.ip_after_s and address is not None:
            body["main_ip"] = address
        body["status"] = "active" if age >= self.active_after_s else "pending"
        if age >= self.ok_after_s and (address is not None or inst.ip is None):
            body["server_status"] = "ok"
        elif age >= self.active_after_s:
            body["server_status"] = "installingbooting"
        return body

    def _error(self, start_response: Callable, status: int, message: str, headers=()) -> list:
        reasons = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                   429: "Too Many Requests", 503: "Service Unavailable"}  # fmt: skip
        start_response(
            f"{status} {reasons.get(status, 'Error')}",
            [("Content-Type", "application/json"), *headers],
        )
        return [json.dumps({"error": message, "status": status}).encode()]

    def _json(self, start_response: Callable, status: str, body: Any) -> list:
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    def _check_create(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        for name, value in body.items():
            kind = CREATE_FIELDS.get(name)
            if kind is None:
                self.violations.append(f"undocumented create field {name!r}")
            elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                return f"{name} has the wrong type"
        for name in ("region", "plan"):
            if not body.get(name):
                return f"Invalid {name}"
        if "os_id" not in body:
            return "one of os_id, iso_id, snapshot_id, app_id or image_id is required"
        if not all(isinstance(t, str) for t in body.get("tags", [])):
            return "tags must be strings"
        if not all(isinstance(k, str) for k in body.get("sshkey_id", [])):
            return "sshkey_id must be a list of ids"
        if "user_data" in body:
            try:
                base64.b64decode(body["user_data"], validate=True)
            except (binascii.Error, ValueError):
                return "user_data must be base64"
        return None

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        with self._lock:
            self.requests.append((method, path))
            injected = self._inject.pop(0) if self._inject else None
        if environ.get("HTTP_AUTHORIZATION") != f"Bearer {self.api_key}":
            return self._error(start_response, 401, "Invalid API token.")
        if injected is not None:
            status, retry_after = injected
            headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
            return self._error(start_response, status, "injected", headers)
        if path == "/v2/instances" and method == "POST":
            return self._create(environ, start_response)
        if path == "/v2/instances" and method == "GET":
            return self._list(environ, start_response)
        if path.startswith("/v2/instances/") and path.count("/") == 3:
            instance_id = path.rsplit("/", 1)[1]
            with self._lock:
                inst = self.instances.get(instance_id)
            if inst is None or inst.deleted:
                return self._error(start_response, 404, "Instance not found.")
            if method == "GET":
                return self._json(start_response, "200 OK", {"instance": self._view(inst)})
            if method == "DELETE":
                with self._lock:
                    inst.deleted = True
                if self.on_delete is not None:
                    self.on_delete(self._view(inst))
                start_response("204 No Content", [])
                return [b""]
        return self._error(start_response, 404, "Not found")

    def _create(self, environ: dict[str, Any], start_response: Callable) -> list:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"null")
        except ValueError:
            return self._error(start_response, 400, "Invalid JSON")
        problem = self._check_create(body)
        if problem:
            return self._error(start_response, 400, problem)
        instance_id = str(uuid.uuid4())
        request = dict(body)
        if "user_data" in request:
            request["user_data"] = base64.b64decode(request["user_data"]).decode()
        ip = self.on_create(request) if self.on_create is not None else None
        with self._lock:
            if ip is None:
                ip = f"203.0.113.{self._next_ip}"  # TEST-NET-3: never routed
                self._next_ip += 1
            inst = FakeInstance(
                body={
                    "id": instance_id,
                    "os": "Debian 13 x64 (trixie)",
                    "ram": 2048,
                    "disk": 55,
                    "main_ip": "0.0.0.0",
                    "vcpu_count": 1,
                    "region": body["region"],
                    "plan": body["plan"],
                    "date_created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                    "status": "pending",
                    "power_status": "running",
                    "server_status": "none",
                    "label": body.get("label", ""),
                    "hostname": body.get("hostname", ""),
                    "tags": list(body.get("tags", [])),
                    "os_id": body["os_id"],
                    "default_password": "not-used-codeb-logs-in-by-key",
                },
                created=time.monotonic(),
                ip=ip,
            )
            self.instances[instance_id] = inst
            lose = self._lose_next_create > 0
            if lose:
                self._lose_next_create -= 1
        if lose:
            return self._error(start_response, 503, "lost answer")
        return self._json(start_response, "202 Accepted", {"instance": self._view(inst)})

    def _list(self, environ: dict[str, Any], start_response: Callable) -> list:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        tag = query.get("tag", [None])[0]
        label = query.get("label", [None])[0]
        per_page = min(int(query.get("per_page", ["100"])[0]), 500)
        cursor = query.get("cursor", [""])[0]
        start = int(base64.b64decode(cursor).decode()) if cursor else 0
        with self._lock:
            matching = [
                self._view(i)
                for i in self.instances.values()
                if not i.deleted
                and (tag is None or tag in i.body["tags"])
                and (label is None or label == i.body["label"])
            ]
        page = matching[start : start + per_page]
        following = start + per_page
        next_cursor = (
            base64.b64encode(str(following).encode()).decode() if following < len(matching) else ""
        )
        return self._json(
            start_response,
            "200 OK",
            {
                "instances": page,
                "meta": {"total": len(matching), "links": {"next": next_cursor, "prev": ""}},
            },
        )


@contextmanager
def serve(fake: VultrFake) -> Iterator[str]:
    """Serve the fake on a free loopback port; yields its base URL (`.../v2`)."""
    server = waitress.create_server(
        fake, host="127.0.0.1", port=0, threads=4, asyncore_loop_timeout=0.05
    )
    port = server.effective_port  # type: ignore[union-attr]
    with in_thread(server, "vultr-fake"):
        yield f"http://127.0.0.1:{port}/v2"
