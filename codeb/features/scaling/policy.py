"""The autoscaling policy as a pure decision: live stats, the pool and the last actions in; a
decision with every input and reason out. Nothing here acts.

Anchors: out when the app pool's CPU or memory stayed above 75 % for 3 minutes; in when both
stayed below 30 % for 15 minutes (Kubernetes' HPA stabilises scale-down over 300 s; this is
stricter, servers being slower and dearer than pods); one server per action; no action for
10 minutes after adding one (cluster-autoscaler's scale-down-delay-after-add) or 5 after
removing one; within min/max servers and a monthly cost cap. "Stayed" means every sample in
the window agrees, the last one taken at or before its start included, and the samples cover
it: one quiet minute in a busy quarter of an
hour resets the scale-in clock, so load that flaps does not flap servers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Action = Literal["up", "down", "none"]


@dataclass(frozen=True)
class Policy:
    enabled: bool = False
    out_cpu_pct: float = 75.0
    out_mem_pct: float = 75.0
    out_for_s: int = 180
    in_cpu_pct: float = 30.0
    in_mem_pct: float = 30.0
    in_for_s: int = 900
    cooldown_after_add_s: int = 600
    cooldown_after_remove_s: int = 300
    min_servers: int = 1
    max_servers: int = 5
    monthly_cost_cap: float = 100.0
    server_monthly_cost: float = 10.0
    # How often the pool's stats are sampled. A window counts as covered when a sample was
    # taken at or before its start (the load as it opened) and no two samples since are more
    # than two intervals apart (a missed poll is tolerated, a silent minute is not).
    sample_interval_s: int = 30

    def __post_init__(self) -> None:
        if not 0 <= self.in_cpu_pct < self.out_cpu_pct <= 100:
            raise ValueError("the scale-in CPU threshold must be below the scale-out one")
        if not 0 <= self.in_mem_pct < self.out_mem_pct <= 100:
            raise ValueError("the scale-in memory threshold must be below the scale-out one")
        if not 0 <= self.min_servers <= self.max_servers:
            raise ValueError("min_servers must be at most max_servers")
        if self.out_for_s <= 0 or self.in_for_s <= 0 or self.sample_interval_s <= 0:
            raise ValueError("the windows and the sample interval must be positive")
        if self.monthly_cost_cap < 0 or self.server_monthly_cost < 0:
            raise ValueError("costs cannot be negative")

    def view(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sample:
    """The app pool's load at one moment: the mean over its servers."""

    at: dt.datetime
    cpu_pct: float
    mem_pct: float


@dataclass(frozen=True)
class Pool:
    servers: int  # app servers serving now
    autoscaled: int  # of which codeb created by autoscaling (the only ones it may remove)
    monthly_cost: float  # of the autoscaled servers
    last_added_at: dt.datetime | None = None
    last_removed_at: dt.datetime | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...]
    inputs: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons), "inputs": self.inputs}


def _window(samples: Sequence[Sample], now: dt.datetime, seconds: int) -> list[Sample]:
    """The samples that say how the window went: the last one taken at or before its start
    (the load as the window opened) and every one since. Without the first, the load was
    not seen for the whole window (a window begun between two samples is not covered by the
    later one)."""
    start = now - dt.timedelta(seconds=seconds)
    ordered = sorted((s for s in samples if s.at <= now), key=lambda s: s.at)
    before = [s for s in ordered if s.at <= start]
    if not before:
        return []
    return [before[-1], *(s for s in ordered if s.at > start)]


def _covers(window: list[Sample], now: dt.datetime, interval_s: int) -> bool:
    """Seen throughout: no two samples (nor the last and now) more than two intervals apart
    (a missed poll is tolerated, a silent minute is not)."""
    if not window:
        return False
    moments = [s.at for s in window]
    steps = zip(moments, [*moments[1:], now], strict=True)
    return all((b - a).total_seconds() <= 2 * interval_s for a, b in steps)


def _sample_view(sample: Sample) -> dict[str, Any]:
    return {"at": sample.at.isoformat(), "cpu_pct": sample.cpu_pct, "mem_pct": sample.mem_pct}


def decide(policy: Policy, samples: Sequence[Sample], pool: Pool, now: dt.datetime) -> Decision:
    """What the policy says now, and why."""
    recent = sorted(samples, key=lambda s: s.at)[-1:] if samples else []
    inputs: dict[str, Any] = {
        "now": now.isoformat(),
        "servers": pool.servers,
        "autoscaled": pool.autoscaled,
        "monthly_cost": pool.monthly_cost,
        "latest": _sample_view(recent[0]) if recent else None,
        "samples": len(samples),
    }

    def none(*reasons: str) -> Decision:
        return Decision("none", reasons, inputs)

    if not policy.enabled:
        return none("autoscaling is disabled")
    if not samples:
        return none("no stats from the app pool")
    for moment, pause, what in (
        (pool.last_added_at, policy.cooldown_after_add_s, "adding"),
        (pool.last_removed_at, policy.cooldown_after_remove_s, "removing"),
    ):
        if moment is not None:
            left = pause - (now - moment).total_seconds()
            if left > 0:
                return none(f"cooling down after {what} a server: {left:.0f} s left")

    hot = _window(samples, now, policy.out_for_s)
    if _covers(hot, now, policy.sample_interval_s) and all(
        s.cpu_pct > policy.out_cpu_pct or s.mem_pct > policy.out_mem_pct for s in hot
    ):
        why = (
            f"CPU or memory above {policy.out_cpu_pct:g} %/{policy.out_mem_pct:g} % "
            f"for {policy.out_for_s} s ({len(hot)} samples)"
        )
        if pool.servers >= policy.max_servers:
            return none(why, f"already at the maximum of {policy.max_servers} servers")
        cost = pool.monthly_cost + policy.server_monthly_cost
        if cost > policy.monthly_cost_cap:
            return none(
                why,
                f"another server would cost {cost:g} a month, over the cap of "
                f"{policy.monthly_cost_cap:g}",
            )
        return Decision("up", (why,), inputs)

    cool = _window(samples, now, policy.in_for_s)
    if _covers(cool, now, policy.sample_interval_s) and all(
        s.cpu_pct < policy.in_cpu_pct and s.mem_pct < policy.in_mem_pct for s in cool
    ):
        why = (
            f"CPU and memory below {policy.in_cpu_pct:g} %/{policy.in_mem_pct:g} % "
            f"for {policy.in_for_s} s ({len(cool)} samples)"
        )
        if pool.servers <= policy.min_servers:
            return none(why, f"already at the minimum of {policy.min_servers} servers")
        if pool.autoscaled == 0:
            return none(why, "no server was added by autoscaling: none may be removed")
        return Decision("down", (why,), inputs)
    return none("load within the thresholds, or not for long enough")
