"""Where and what autoscaling creates (no secret here: the API key is stored encrypted beside
these settings). Checked as a whole: a bad value is a ValueError naming the field."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from codeb.features.scaling.policy import Policy

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_ENV = re.compile(r"[a-z][a-z0-9-]{0,19}")
_KEY_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,30}")


@dataclass(frozen=True)
class CloudSettings:
    provider: str = "vultr"
    api_url: str = "https://api.vultr.com/v2"
    region: str = ""
    plan: str = ""
    os_id: int = 0  # Vultr's id of a Debian 13 image; 0: not configured (scale-up refused)
    ssh_key_ids: tuple[str, ...] = ()
    # The environments whose app gets a replica on every added server.
    environments: tuple[str, ...] = ("production",)
    label_prefix: str = "codeb-app"
    ssh_port: int = 22
    ready_timeout_s: int = 900  # create -> ready (cloud says so and SSH answers)
    poll_s: float = 10.0
    drain_s: float = 10.0  # after the proxies stopped sending requests, before stopping

    def __post_init__(self) -> None:
        if self.provider != "vultr":
            raise ValueError("cloud.provider: only vultr is supported")
        url = urlsplit(self.api_url)
        if url.scheme not in ("http", "https") or not url.hostname or url.username:
            raise ValueError("cloud.api_url must be an http(s) URL without credentials")
        for name in ("region", "plan"):
            value = getattr(self, name)
            if value and not _SLUG.fullmatch(value):
                raise ValueError(f"cloud.{name} is not a valid Vultr id")
        if isinstance(self.os_id, bool) or not isinstance(self.os_id, int) or self.os_id < 0:
            raise ValueError("cloud.os_id must be a non-negative integer")
        if not all(isinstance(k, str) and _KEY_ID.fullmatch(k) for k in self.ssh_key_ids):
            raise ValueError("cloud.ssh_key_ids must be Vultr SSH key ids")
        if not self.environments or not all(
            isinstance(e, str) and _ENV.fullmatch(e) for e in self.environments
        ):
            raise ValueError("cloud.environments must name one or more environments")
        if not _PREFIX.fullmatch(self.label_prefix):
            raise ValueError("cloud.label_prefix must be a short DNS label")
        if isinstance(self.ssh_port, bool) or not 1 <= self.ssh_port <= 65535:
            raise ValueError("cloud.ssh_port must be 1-65535")
        if not 1 <= self.ready_timeout_s <= 7200:
            raise ValueError("cloud.ready_timeout_s must be 1-7200")
        if not 0.05 <= self.poll_s <= 300 or not 0 <= self.drain_s <= 3600:
            raise ValueError("cloud.poll_s must be 0.05-300 and cloud.drain_s 0-3600")

    @property
    def complete(self) -> bool:
        return bool(self.region and self.plan and self.os_id)

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        out["ssh_key_ids"] = list(self.ssh_key_ids)
        out["environments"] = list(self.environments)
        return out


def _merged(cls: type, current: Any, changes: dict[str, Any], what: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"{what} has unknown fields: {', '.join(unknown)}")
    values = {**asdict(current), **changes}
    for name in ("ssh_key_ids", "environments"):
        if name in values and isinstance(values[name], list):
            values[name] = tuple(values[name])
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"{what}: {exc}") from None


def merge_policy(current: Policy, changes: dict[str, Any]) -> Policy:
    policy = _merged(Policy, current, changes, "policy")
    for f in dataclasses.fields(Policy):
        value = getattr(policy, f.name)
        if f.name == "enabled":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"policy.{f.name} must be a number")
    return policy


def merge_cloud(current: CloudSettings, changes: dict[str, Any]) -> CloudSettings:
    return _merged(CloudSettings, current, changes, "cloud")


def cloud_from(stored: dict[str, Any] | None) -> CloudSettings:
    return merge_cloud(CloudSettings(), stored or {})


def policy_from(stored: dict[str, Any] | None) -> Policy:
    return merge_policy(Policy(), stored or {})


__all__ = ["CloudSettings", "cloud_from", "merge_cloud", "merge_policy", "policy_from"]
