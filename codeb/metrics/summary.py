"""The metrics as JSON (`GET /api/metrics?format=json`, `codeb metrics`): headline numbers a
person reads first, then every metric family with its samples."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

# Families a person does not need in a summary (Prometheus has them in the exposition).
HIDDEN_PREFIXES = ("process_", "python_")


def _value(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 6)


def _samples(family: Metric) -> list[dict[str, Any]]:
    out = []
    for sample in family.samples:
        if family.type == "histogram" and sample.name.endswith("_bucket"):
            continue  # count and sum say enough here; buckets are in the exposition
        item: dict[str, Any] = {"value": _value(sample.value)}
        suffix = sample.name[len(family.name) :]
        if suffix:
            item["sample"] = suffix.lstrip("_")
        if sample.labels:
            item["labels"] = dict(sample.labels)
        out.append(item)
    return out


def _sum(families: dict[str, Metric], name: str, sample: str | None = None, **match: str) -> float:
    family = families.get(name)
    if family is None:
        return 0
    total = 0.0
    for s in family.samples:
        if sample is not None and s.name != sample:
            continue
        if all(s.labels.get(k) == v for k, v in match.items()):
            total += s.value
    return _value(total)


def overview(families: dict[str, Metric]) -> dict[str, Any]:
    ops_by_status: dict[str, float] = defaultdict(float)
    for s in families["codeb_operations"].samples if "codeb_operations" in families else ():
        ops_by_status[s.labels["status"]] += s.value
    servers = families.get("codeb_server_reachable")
    reachable = [s for s in servers.samples] if servers else []
    jobs = families.get("codeb_scheduler_job_last_run_failed")
    failing = sorted(s.labels["job"] for s in jobs.samples if s.value) if jobs else []
    collectors = families.get("codeb_metrics_collector_up")
    down = (
        sorted(s.labels["collector"] for s in collectors.samples if not s.value)
        if collectors
        else []
    )
    return {
        "http_requests": _sum(families, "codeb_http_requests", "codeb_http_requests_total"),
        "http_server_errors": sum(
            _value(s.value)
            for s in (
                families["codeb_http_requests"].samples if "codeb_http_requests" in families else ()
            )
            if s.name == "codeb_http_requests_total" and s.labels.get("status", "").startswith("5")
        ),
        "operations": {k: _value(v) for k, v in sorted(ops_by_status.items())},
        "runner": {
            "queued": _sum(families, "codeb_runner_operations", state="queued"),
            "running": _sum(families, "codeb_runner_operations", state="running"),
        },
        "protection_queue_pending": _sum(families, "codeb_protection_queue_pending"),
        "servers": {
            "total": len(reachable),
            "unreachable": sorted(s.labels["server"] for s in reachable if not s.value),
        },
        "scheduled_jobs_failing": failing,
        "collectors_failing": down,
    }


def summarize(collected: Iterable[Metric], took_s: float) -> dict[str, Any]:
    families = {f.name: f for f in collected}
    return {
        "overview": overview(families),
        "metrics": {
            name: {"type": f.type, "help": f.documentation, "samples": _samples(f)}
            for name, f in sorted(families.items())
            if not name.startswith(HIDDEN_PREFIXES)
        },
        "collected_in_s": round(took_s, 4),
    }
