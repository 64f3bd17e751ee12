"""A scripted stand-in for API endpoints that do not exist yet, over httpx.MockTransport:
each route answers from a queue of (status, body) and every request is recorded."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Any

import httpx

from codeb.client.http import CodebClient


class FakeApi:
    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], deque] = defaultdict(deque)
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: tuple[int, Any]) -> FakeApi:
        self.answers[(method, path)].extend(answers)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.answers.get((request.method, request.url.path))
        if not queue:
            body = {"error": {"code": "not_found", "message": "no such route", "details": {}}}
            return httpx.Response(404, json=body)
        status, body = queue[0] if len(queue) == 1 else queue.popleft()
        if isinstance(body, BaseException):
            raise body
        return httpx.Response(status, json=body)

    def client(self) -> CodebClient:
        return CodebClient(
            "http://codeb.test", "cb_secret", transport=httpx.MockTransport(self.handle)
        )

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    @staticmethod
    def body(request: httpx.Request) -> Any:
        return json.loads(request.content) if request.content else None


def operation(op_id: str = "op_0000000000000001", status: str = "queued", **extra: Any) -> dict:
    return {
        "id": op_id,
        "kind": "deploy",
        "status": status,
        "targets": ["app1"],
        "created_at": "2026-01-01T12:00:00Z",
        "recap": {},
        "rc": None,
        "error": None,
        "duration_s": None,
        **extra,
    }


def event(seq: int, kind: str, task: str | None = None, **extra: Any) -> dict:
    return {
        "seq": seq,
        "event": kind,
        "host": "app1" if task else None,
        "task": task,
        "changed": False,
        "failed": False,
        "duration": None,
        "data": {},
        **extra,
    }
