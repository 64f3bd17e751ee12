"""`codeb metrics`: the overall figures of `GET /api/metrics?format=json` (requests,
operations, the runner and protection queues, servers, scheduled jobs); `--all` adds every
metric family, `--json` prints the API's answer. (Prometheus scrapes the exposition format
from the same route without `format`.)"""

from __future__ import annotations

import argparse

from codeb.cli.output import pairs, table
from codeb.cli.session import OK, Parents, Session
from codeb.client.http import Json


def _overview_pairs(o: Json) -> list[tuple[str, object]]:
    ops = o.get("operations") or {}
    servers = o.get("servers") or {}
    runner = o.get("runner") or {}
    return [
        ("http requests", o.get("http_requests")),
        ("http 5xx answers", o.get("http_server_errors")),
        ("operations", " ".join(f"{k}={v}" for k, v in ops.items()) or "none"),
        ("runner", f"queued={runner.get('queued', 0)} running={runner.get('running', 0)}"),
        ("protection queue pending", o.get("protection_queue_pending")),
        ("servers", servers.get("total")),
        ("servers unreachable", servers.get("unreachable") or "none"),
        ("scheduled jobs failing", o.get("scheduled_jobs_failing") or "none"),
        ("metric collectors failing", o.get("collectors_failing") or "none"),
    ]


def _family_rows(metrics: Json) -> list[dict]:
    rows = []
    for name, family in metrics.items():
        for sample in family.get("samples") or []:
            labels = sample.get("labels") or {}
            suffix = sample.get("sample")
            rows.append(
                {
                    "metric": f"{name}_{suffix}" if suffix else name,
                    "labels": " ".join(f"{k}={v}" for k, v in labels.items()) or "-",
                    "value": sample.get("value"),
                }
            )
    return rows


def metrics_show(args: argparse.Namespace, sess: Session) -> int:
    answer = sess.client.request("GET", "/api/metrics", params={"format": "json"})
    if sess.out.json_mode:
        sess.out.data(answer)
        return OK
    sess.out.say(pairs(_overview_pairs(answer.get("overview") or {})))
    if args.all:
        sess.out.say("")
        columns = [("METRIC", "metric"), ("LABELS", "labels"), ("VALUE", "value")]
        sess.out.say(table(_family_rows(answer.get("metrics") or {}), columns))
    return OK


def register(sub: argparse._SubParsersAction, p: Parents) -> None:
    c = sub.add_parser(
        "metrics", parents=[p.json], help="codeb's overall figures (GET /api/metrics)"
    )
    c.add_argument("--all", action="store_true", help="also every metric and its labels")
    c.set_defaults(remote=metrics_show)
