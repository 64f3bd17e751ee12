"""Vultr API v2, with plain httpx (the PyPI clients are unfinished or for the retired v1 API).

Bearer key in a header (never in a URL, a log line or an error); retries with exponential
backoff and jitter on 429 and 5xx, honouring Retry-After, a bounded number of times; cursor
paging for lists. Create is idempotent by label and tags: before creating, and again after a
failed create whose outcome is unknown, the instances with codeb's tag are searched for one
with the same label."""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from codeb.providers.cloud.base import (
    CloudAuthFailed,
    CloudError,
    CloudRejected,
    CloudUnavailable,
    Instance,
    InstanceSpec,
)

log = logging.getLogger(__name__)

API_URL = "https://api.vultr.com/v2"
RETRIED = {429, 500, 502, 503, 504}
PER_PAGE = 100
MAX_PAGES = 50


def _instance(body: Mapping[str, Any]) -> Instance:
    return Instance(
        id=str(body.get("id", "")),
        label=str(body.get("label", "")),
        status=str(body.get("status", "")),
        power_status=str(body.get("power_status", "")),
        server_status=str(body.get("server_status", "")),
        main_ip=str(body.get("main_ip", "")),
        region=str(body.get("region", "")),
        plan=str(body.get("plan", "")),
        tags=tuple(body.get("tags") or ()),
        date_created=str(body.get("date_created", "")),
    )


class Vultr:
    """The real client. `transport` lets tests point it at a contract fake on loopback."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = API_URL,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 12.0,
        timeout_s: float = 30.0,
        page_size: int = PER_PAGE,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._page_size = page_size
        self.attempts = 0  # every HTTP request sent, retries included (for tests and metrics)

    def __repr__(self) -> str:  # never show the key
        return f"Vultr({self._http.base_url!s})"

    def close(self) -> None:
        self._http.close()

    def _delay(self, attempt: int, answer: httpx.Response | None) -> float:
        if answer is not None and answer.headers.get("Retry-After", "").isdigit():
            return min(float(answer.headers["Retry-After"]), self._max_backoff_s)
        base = min(self._backoff_s * 2**attempt, self._max_backoff_s)
        return base / 2 + random.uniform(0, base / 2)  # noqa: S311 - jitter, not a secret

    def _request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        last = "no answer"
        for attempt in range(self._retries + 1):
            answer = None
            try:
                self.attempts += 1
                answer = self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
            else:
                if answer.status_code not in RETRIED:
                    return answer
                last = f"HTTP {answer.status_code}"
            if attempt < self._retries:
                delay = self._delay(attempt, answer)
                log.info("Vultr %s %s: %s, retrying in %.1f s", method, path, last, delay)
                self._sleep(delay)
        raise CloudUnavailable(
            f"the Vultr API did not answer {method} {path} after {self._retries + 1} tries ({last})"
        )

    @staticmethod
    def _check(answer: httpx.Response, what: str) -> Any:
        if answer.status_code in (401, 403):
            raise CloudAuthFailed(f"Vultr refused the API key ({what}: HTTP {answer.status_code})")
        if answer.status_code >= 400:
            try:
                message = str(answer.json().get("error", ""))[:300]
            except ValueError:
                message = ""
            error = CloudRejected if answer.status_code < 500 else CloudError
            raise error(
                f"Vultr refused {what}: HTTP {answer.status_code} {message}".strip(),
                {"status": answer.status_code},
            )
        if answer.status_code == 204 or not answer.content:
            return None
        try:
            return answer.json()
        except ValueError:
            raise CloudError(f"Vultr answered {what} with something that is not JSON") from None

    def list_instances(self, tag: str) -> list[Instance]:
        found: list[Instance] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"tag": tag, "per_page": self._page_size}
            if cursor:
                params["cursor"] = cursor
            body = self._check(self._request("GET", "/instances", params=params), "a list")
            found.extend(_instance(item) for item in body.get("instances", []))
            cursor = ((body.get("meta") or {}).get("links") or {}).get("next") or ""
            if not cursor:
                return found
        raise CloudError(f"Vultr listed more than {MAX_PAGES} pages of instances tagged {tag}")

    def _find(self, spec: InstanceSpec) -> Instance | None:
        want = set(spec.tags)
        for instance in self.list_instances(spec.tags[0]):
            if instance.label == spec.label and want <= set(instance.tags):
                return instance
        return None

    def create_instance(self, spec: InstanceSpec) -> Instance:
        body = {
            "region": spec.region,
            "plan": spec.plan,
            "os_id": spec.os_id,
            "label": spec.label,
            "hostname": spec.hostname,
            "sshkey_id": list(spec.ssh_key_ids),
            "tags": list(spec.tags),
            "activation_email": False,
        }
        if spec.user_data:
            body["user_data"] = base64.b64encode(spec.user_data.encode()).decode()
        last = "no answer"
        # A create is never re-sent blindly: after a failure whose outcome is unknown (a 5xx,
        # a lost connection), codeb looks for the instance by label and tags first.
        for attempt in range(self._retries + 1):
            existing = self._find(spec)
            if existing is not None:
                return existing
            answer = None
            try:
                self.attempts += 1
                answer = self._http.post("/instances", json=body)
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if answer.status_code not in RETRIED:
                    created = self._check(answer, "the instance create")
                    return _instance(created["instance"])
                last = f"HTTP {answer.status_code}"
            if attempt < self._retries:
                self._sleep(self._delay(attempt, answer))
        existing = self._find(spec)
        if existing is not None:
            return existing
        raise CloudUnavailable(
            f"the Vultr API did not create {spec.label} after {self._retries + 1} tries ({last})"
        )

    def get_instance(self, instance_id: str) -> Instance | None:
        answer = self._request("GET", f"/instances/{instance_id}")
        if answer.status_code == 404:
            return None
        return _instance(self._check(answer, "an instance read")["instance"])

    def delete_instance(self, instance_id: str) -> None:
        answer = self._request("DELETE", f"/instances/{instance_id}")
        if answer.status_code == 404:
            return
        self._check(answer, "the instance delete")
