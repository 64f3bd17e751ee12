"""Autoscaling's figures for GET /api/metrics, read from the registry at scrape time (no cloud
call, no playbook): whether it is enabled and configured, the app pool (ready app servers, of
which autoscaled, against min/max), the latest load sample, the last decision, the scale
actions by kind and outcome with the last one's duration, a scale in flight, and the monthly
cost estimate of the autoscaled servers against the cap."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from peewee import fn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from codeb.features.scaling import service
from codeb.metrics import FeatureCollector
from codeb.store.models import ScalingEvent, ScalingSample

ACTIONS = ("up", "down", "none")
# What an action can end as (an orphan: deleted, or failed to delete).
ACTION_KINDS = ("up", "down", "orphan")


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _collect(deps: Any) -> Iterable[Any]:
    policy, cloud, has_key = service.current(deps)
    pool = service.pool(policy)
    now = deps.clock.now()
    out: list[Any] = [
        _gauge("codeb_scaling_enabled", "1 if autoscaling acts on its decisions",
               1.0 if policy.enabled else 0.0),
        _gauge("codeb_scaling_configured", "1 if an API key and the cloud's region, plan and "
               "image are set (a scale-up can run)", 1.0 if has_key and cloud.complete else 0.0),
        _gauge("codeb_scaling_app_servers", "ready app servers: the pool the policy sizes",
               float(pool.servers)),
        _gauge("codeb_scaling_autoscaled_servers",
               "app servers autoscaling added (the only ones it may remove)",
               float(pool.autoscaled)),
        _gauge("codeb_scaling_monthly_cost", "monthly cost estimate of the autoscaled servers",
               float(pool.monthly_cost)),
        _gauge("codeb_scaling_monthly_cost_cap", "the policy's monthly cost cap",
               float(policy.monthly_cost_cap)),
    ]  # fmt: skip
    limits = GaugeMetricFamily(
        "codeb_scaling_servers_limit", "the policy's minimum and maximum app servers",
        labels=["bound"],
    )  # fmt: skip
    limits.add_metric(["min"], float(policy.min_servers))
    limits.add_metric(["max"], float(policy.max_servers))
    out.append(limits)

    sample = ScalingSample.select().order_by(ScalingSample.at.desc()).first()
    if sample is not None:
        load = GaugeMetricFamily(
            "codeb_scaling_pool_load_percent",
            "the app pool's mean load at the latest sample", labels=["resource"],
        )  # fmt: skip
        load.add_metric(["cpu"], float(sample.cpu_pct))
        load.add_metric(["memory"], float(sample.mem_pct))
        out.append(load)
        out.append(_gauge("codeb_scaling_sample_age_seconds", "age of the latest load sample",
                          max(0.0, (now - sample.at).total_seconds())))  # fmt: skip

    decided = (
        ScalingEvent.select()
        .where((ScalingEvent.kind == "check") & (ScalingEvent.status == "decided"))
        .order_by(ScalingEvent.id.desc())
        .first()
    )
    if decided is not None and isinstance(decided.decision, dict):
        last = GaugeMetricFamily(
            "codeb_scaling_last_decision",
            "1 for the action the latest decision named (up, down, none)", labels=["action"],
        )  # fmt: skip
        for action in ACTIONS:
            last.add_metric([action], 1.0 if decided.decision.get("action") == action else 0.0)
        out.append(last)
        at = decided.finished_at or decided.started_at
        if at is not None:
            out.append(_gauge("codeb_scaling_last_decision_timestamp_seconds",
                              "when the latest decision was made (Unix time)",
                              at.replace(tzinfo=dt.UTC).timestamp()))  # fmt: skip

    actions = CounterMetricFamily(
        "codeb_scaling_actions",
        "scale actions (up, down, orphan deletions) by how they ended or stand (succeeded, "
        "failed, canceled, refused, awaiting_person, queued, running, deleted)",
        labels=["kind", "outcome"],
    )
    counts = (
        ScalingEvent.select(ScalingEvent.kind, ScalingEvent.status, fn.COUNT(ScalingEvent.id))
        .where(ScalingEvent.kind.in_(list(ACTION_KINDS)))
        .group_by(ScalingEvent.kind, ScalingEvent.status)
        .tuples()
    )
    for kind, status, count in counts:
        actions.add_metric([kind, status], float(count))
    out.append(actions)

    duration = GaugeMetricFamily(
        "codeb_scaling_last_action_duration_seconds",
        "how long the latest finished scale up or down took", labels=["kind", "outcome"],
    )  # fmt: skip
    for kind in ("up", "down"):
        done = (
            ScalingEvent.select()
            .where((ScalingEvent.kind == kind) & ScalingEvent.finished_at.is_null(False)
                   & ScalingEvent.started_at.is_null(False)
                   & ScalingEvent.status.in_(["succeeded", "failed", "canceled"]))
            .order_by(ScalingEvent.finished_at.desc())
            .first()
        )  # fmt: skip
        if done is not None:
            seconds = (done.finished_at - done.started_at).total_seconds()
            duration.add_metric([kind, done.status], max(0.0, seconds))
    out.append(duration)
    out.append(_gauge("codeb_scaling_in_flight", "1 while a scale up or down is queued or running",
                      1.0 if service.in_flight() is not None else 0.0))  # fmt: skip
    return out


METRICS = FeatureCollector(
    name="scaling",
    collect=_collect,
    description="the app pool and its limits, the last decision, scale actions by outcome, "
    "monthly cost against the cap",
)
