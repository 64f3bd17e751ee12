"""Autoscaling over HTTP: request and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from codeb.api.declare import paging, query
from codeb.api.shapes import NULLABLE_TIME, Meta, Request, Shape

ACTION = Literal["up", "down", "none"]
API_URL = r"^https?://[^\s@\u0000-\u001f\u007f]+$"
KeyId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
EnvName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,19}$")]


class PolicyChanges(Request):
    """Any of the policy's fields (GET /api/scaling/policy shows them all)."""

    enabled: bool | None = None
    out_cpu_pct: Annotated[float, Meta(ge=0, le=100)] | None = None
    out_mem_pct: Annotated[float, Meta(ge=0, le=100)] | None = None
    out_for_s: Annotated[int, Meta(ge=1, le=86400)] | None = None
    in_cpu_pct: Annotated[float, Meta(ge=0, le=100)] | None = None
    in_mem_pct: Annotated[float, Meta(ge=0, le=100)] | None = None
    in_for_s: Annotated[int, Meta(ge=1, le=86400)] | None = None
    cooldown_after_add_s: Annotated[int, Meta(ge=0, le=86400)] | None = None
    cooldown_after_remove_s: Annotated[int, Meta(ge=0, le=86400)] | None = None
    min_servers: Annotated[int, Meta(ge=0, le=100)] | None = None
    max_servers: Annotated[int, Meta(ge=0, le=100)] | None = None
    monthly_cost_cap: Annotated[float, Meta(ge=0, le=1e6)] | None = None
    server_monthly_cost: Annotated[float, Meta(ge=0, le=1e5)] | None = None
    sample_interval_s: Annotated[int, Meta(ge=1, le=3600)] | None = None

    example = {"out_cpu_pct": 75, "in_cpu_pct": 30, "max_servers": 4}


class CloudChanges(Request):
    # No control characters (the body check refuses them), so the schema says so too.
    api_url: Annotated[str, Meta(max_length=200, pattern=API_URL)] | None = None
    region: Annotated[str, Meta(max_length=40, pattern=r"^[a-z0-9][a-z0-9-]*$")] | None = None
    plan: Annotated[str, Meta(max_length=40, pattern=r"^[a-z0-9][a-z0-9-]*$")] | None = None
    os_id: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    ssh_key_ids: Annotated[list[KeyId], Meta(max_length=10)] | None = None
    environments: Annotated[list[EnvName], Meta(min_length=1, max_length=10)] | None = None
    label_prefix: Annotated[str, Meta(max_length=31, pattern=r"^[a-z][a-z0-9-]*$")] | None = None
    ssh_port: Annotated[int, Meta(ge=1, le=65535)] | None = None
    ready_timeout_s: Annotated[int, Meta(ge=1, le=7200)] | None = None
    poll_s: Annotated[float, Meta(ge=0.05, le=300)] | None = None
    drain_s: Annotated[float, Meta(ge=0, le=3600)] | None = None

    example = {"region": "ams", "plan": "vc2-1c-2gb", "os_id": 2625}


class ScalingConfigure(Request):
    enabled: bool | None = None
    policy: PolicyChanges | None = None
    cloud: CloudChanges | None = None
    api_key: Annotated[
        str,
        Meta(min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_\-.=+/]+$",
             description="the Vultr API key; stored encrypted, never answered"),
    ] | None = None  # fmt: skip

    example = {
        "enabled": True,
        "policy": {"max_servers": 4, "monthly_cost_cap": 60},
        "cloud": {"region": "ams", "plan": "vc2-1c-2gb", "os_id": 2625},
    }


class ScaleUp(Request):
    example = {}


class ScaleDown(Request):
    server: Annotated[
        str,
        Meta(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
             description="which autoscaled server (default: the newest)"),
    ] | None = None  # fmt: skip

    example = {"server": "codeb-app-1a2b3c4d"}


class PoolView(Shape):
    servers: int
    autoscaled: list[str]
    monthly_cost: float
    last_added_at: NULLABLE_TIME
    last_removed_at: NULLABLE_TIME


class PolicyView(Shape):
    policy: dict[str, Any]
    cloud: dict[str, Any]
    api_key_set: bool
    configured: bool
    pool: PoolView


class DecisionView(Shape):
    action: ACTION
    reasons: list[str]
    inputs: dict[str, Any]


class Event(Shape):
    id: int
    kind: Literal["check", "up", "down", "orphan"]
    trigger: str
    requested_by: str | None
    status: str
    decision: dict[str, Any] | None
    steps: list[dict[str, Any]]
    failed_step: str | None
    error: str | None
    label: str | None
    instance_id: str | None
    server: str | None
    operation_id: str | None
    monthly_cost: float | None
    started_at: NULLABLE_TIME
    finished_at: NULLABLE_TIME
    duration_s: float | None


class CheckAnswer(Shape):
    decision: DecisionView
    event: Event


class History(Shape):
    events: list[Event]
    total: int


class Started(Shape):
    status: str
    operation: str
    level: str
    result: dict[str, Any]


HISTORY_QUERY = (*paging(50, 500), query("kind", enum=["check", "up", "down", "orphan"]))
