"""`codeb scaling ...`: check, up, down, history, policy.

`check` evaluates the policy on live stats and prints the decision with its inputs and
reasons (nothing acts). `up` adds an app server (LOW); `down` removes one autoscaling added
(MEDIUM: it asks unless `--yes`). `policy` shows the policy, or changes it with `--set
policy.max_servers=4 --set cloud.region=ams`, `--enable`/`--disable`, and `--api-key-stdin`
(the Vultr API key read from standard input, never from argv)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from codeb.cli.output import pairs, table
from codeb.cli.session import OK, Parents, Session, UsageError

EVENT_COLUMNS = [
    ("ID", "id"),
    ("KIND", "kind"),
    ("TRIGGER", "trigger"),
    ("STATUS", "status"),
    ("SERVER", lambda e: e.get("server") or e.get("label") or ""),
    ("FAILED AT", lambda e: e.get("failed_step") or ""),
    ("COST/MO", lambda e: "" if e.get("monthly_cost") is None else f"{e['monthly_cost']:g}"),
    ("SECONDS", lambda e: "" if e.get("duration_s") is None else f"{e['duration_s']:.0f}"),
    ("STARTED", "started_at"),
]


def _show_decision(sess: Session, decision: dict[str, Any]) -> None:
    out = sess.out
    colour = {"up": "yellow", "down": "yellow"}.get(decision.get("action"), "green")
    out.say(out.paint(f"decision: {decision.get('action')}", colour))
    for reason in decision.get("reasons") or []:
        out.say(f"  - {reason}")
    inputs = {k: v for k, v in (decision.get("inputs") or {}).items() if k != "policy"}
    out.say(pairs((k, json.dumps(v) if isinstance(v, dict) else v) for k, v in inputs.items()))


def scaling_check(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.request("POST", "/api/scaling/check", timeout=120)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        _show_decision(sess, body.get("decision") or {})
    return OK


def scaling_up(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.request("POST", "/api/scaling/up", json={}))


def scaling_down(args: argparse.Namespace, sess: Session) -> int:
    body = {"server": args.server} if args.server else {}
    return sess.finish(sess.client.request("POST", "/api/scaling/down", json=body))


def scaling_history(args: argparse.Namespace, sess: Session) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.kind:
        params["kind"] = args.kind
    body = sess.client.request("GET", "/api/scaling/history", params=params)
    if sess.out.json_mode:
        sess.out.data(body)
        return OK
    sess.out.say(table(body.get("events") or [], EVENT_COLUMNS))
    for event in body.get("events") or []:
        if event.get("error"):
            sess.out.say(f"  #{event['id']}: {event['error']}")
    return OK


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def scaling_policy(args: argparse.Namespace, sess: Session) -> int:
    body: dict[str, Any] = {}
    for item in args.set or []:
        name, sep, raw = item.partition("=")
        section, dot, field = name.partition(".")
        if not sep or not dot or section not in ("policy", "cloud") or not field:
            raise UsageError(f"--set takes policy.NAME=VALUE or cloud.NAME=VALUE, not {item!r}")
        body.setdefault(section, {})[field] = _value(raw)
    if args.enable or args.disable:
        body["enabled"] = bool(args.enable)
    if args.api_key_stdin:
        key = sys.stdin.readline().strip()
        if not key:
            raise UsageError("--api-key-stdin read an empty line")
        body["api_key"] = key
    if body:
        return sess.finish(sess.client.request("PUT", "/api/scaling/policy", json=body),
                           render=lambda inner: _show_policy(sess, inner))  # fmt: skip
    answer = sess.client.request("GET", "/api/scaling/policy")
    if sess.out.json_mode:
        sess.out.data(answer)
    else:
        _show_policy(sess, answer)
    return OK


def _show_policy(sess: Session, view: dict[str, Any]) -> None:
    out = sess.out
    out.say(out.paint("policy", "bold"))
    out.say(pairs((k, v) for k, v in (view.get("policy") or {}).items()))
    out.say(out.paint("cloud", "bold"))
    out.say(pairs((k, v) for k, v in (view.get("cloud") or {}).items()))
    out.say(pairs((("api key stored", view.get("api_key_set")),
                   ("configured", view.get("configured")))))  # fmt: skip
    pool = view.get("pool") or {}
    out.say(out.paint("pool", "bold"))
    out.say(pairs((k, v) for k, v in pool.items()))


def register(sub: argparse._SubParsersAction, p: Parents) -> None:
    scaling = sub.add_parser(
        "scaling",
        help="autoscaling of the app pool (Vultr)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmds = scaling.add_subparsers(dest="scaling_command", required=True)
    c = cmds.add_parser(
        "check", parents=[p.json], help="the policy's decision now (acts on nothing)"
    )
    c.set_defaults(remote=scaling_check)
    c = cmds.add_parser("up", parents=[p.json, p.act], help="add one app server (LOW)")
    c.set_defaults(remote=scaling_up)
    c = cmds.add_parser("down", parents=[p.json, p.act],
                        help="remove one autoscaled app server (MEDIUM)")  # fmt: skip
    c.add_argument("--server", help="which one (default: the newest autoscaled)")
    c.set_defaults(remote=scaling_down)
    c = cmds.add_parser("history", parents=[p.json], help="every decision and action")
    c.add_argument("--kind", choices=["check", "up", "down", "orphan"])
    c.add_argument("--limit", type=int, default=50)
    c.set_defaults(remote=scaling_history)
    c = cmds.add_parser("policy", parents=[p.json, p.act], help="show or change the policy")
    c.add_argument("--set", action="append", metavar="SECTION.NAME=VALUE")
    c.add_argument("--enable", action="store_true")
    c.add_argument("--disable", action="store_true")
    c.add_argument("--api-key-stdin", action="store_true",
                   help="read the Vultr API key from standard input")  # fmt: skip
    c.set_defaults(remote=scaling_policy)
