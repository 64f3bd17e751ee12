"""An app's `/health`, asked from the controller: the one client every check uses, and the one
wait loop of every job that waits for an app (a deploy, a restore, a placed replica)."""

from __future__ import annotations

import functools
import time

import httpx

from codeb.executor.worker import RunContext


@functools.cache
def health_client() -> httpx.Client:
    """One client for every plain-HTTP health check from the controller (thread-safe).
    `httpx.get` builds a new client, and with it a TLS context, for every call: 36 ms of CPU
    each, which a 0.05 s health poll paid on every try while the restarted app competed for
    the same CPUs. No keep-alive: every check opens its own connection, so a check never
    reuses a connection to a container that has since been replaced."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def wait_for_health(
    url: str, ctx: RunContext, deadline_s: float, poll_s: float, try_timeout_s: float
) -> int | None:
    """GET `url` until it answers 200, the deadline passes or the run is canceled (the wait
    between tries is on the cancel flag, so a cancel ends it at once). The last status seen:
    200 when healthy, None when nothing answered."""
    deadline = time.monotonic() + deadline_s
    status = None
    while time.monotonic() < deadline and not ctx.canceled:
        try:
            status = health_client().get(url, timeout=try_timeout_s).status_code
        except httpx.HTTPError:
            status = None
        if status == 200:
            break
        ctx.cancel.wait(poll_s)
    return status
