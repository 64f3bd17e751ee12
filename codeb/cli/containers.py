"""`codeb containers ...`: deploy, list, show, start, stop, restart, remove, volume-delete.

Preview is a flag of every mutating command: `--preview` asks the API for the plan
(`?preview=true`: the diff of every unit and file, the restarts; nothing changes), `--apply`
then sends the real request bound to that plan (`X-Plan-Hash`), and `--plan-hash HASH` applies
a plan previewed earlier. A real request still goes through the confirm flow."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable

from codeb.cli.output import diff_lines, pairs, table
from codeb.cli.session import OK, Parents, Session, UsageError
from codeb.client.http import Json

ENVIRONMENTS = ("staging", "production", "preview")
CONTAINER_COLUMNS = [
    ("ID", "id"),
    ("PROJECT", lambda c: c.get("project") or c.get("project_id")),
    ("ENV", "environment"),
    ("SERVER", "server_ip"),
    ("NAME", "container_name"),
    ("IMAGE", "image"),
    ("PORTS", lambda c: _ports(c)),
    ("STATUS", "status"),
    ("HEALTH", "health_status"),
]
# A mutating call: preview and plan_hash as keywords, the API's answer back.
Call = Callable[..., Json]


def _ports(container: Json) -> str:
    ext, internal = container.get("port_external"), container.get("port_internal")
    if ext is None and internal is None:
        return "-"
    return f"{ext or '-'}->{internal or '-'}"


def change_title(change: Json) -> str:
    """`[host] action path`, or `[host] TASK name (item)` for a check-mode task result."""
    words = [f"[{change.get('host')}]"]
    if change.get("action"):
        words.append(str(change["action"]))
    if change.get("task"):
        words.append(f"TASK {change['task']}")
    label = change.get("path") or change.get("item")
    if label:
        words.append(f"({label})" if change.get("task") else str(label))
    return " ".join(words)


def show_preview(sess: Session, plan: Json, again: str | None) -> None:
    out = sess.out
    out.say(out.paint(f"PREVIEW: nothing was changed (plan {plan.get('plan_hash')})", "bold"))
    changes = plan.get("changes") or []
    if not changes:
        out.say("no file would change")
    for change in changes:
        out.say(change_title(change))
        for line in diff_lines(change.get("diff"), out):
            out.say(f"    {line}")
    restarts = plan.get("restarts") or []
    out.say("would restart: " + (", ".join(restarts) if restarts else "nothing"))
    if again:
        out.say(f"apply exactly this plan: {again} --plan-hash {plan.get('plan_hash')}")


def run_mutation(args: argparse.Namespace, sess: Session, call: Call, again: str) -> int:
    """The real request, or its preview (then perhaps the real one bound to the plan)."""
    if args.apply and not args.preview:
        raise UsageError("--apply goes with --preview")
    if args.plan_hash and args.preview:
        raise UsageError("--plan-hash applies a plan; it does not go with --preview")
    if not args.preview:
        return sess.finish(call(preview=False, plan_hash=args.plan_hash))
    plan = call(preview=True, plan_hash=None)
    if not args.apply:
        if sess.out.json_mode:
            sess.out.data(plan)
        show_preview(sess, plan, again)
        return OK
    show_preview(sess, plan, None)
    sess.out.say("applying this plan")
    answer = call(preview=False, plan_hash=plan["plan_hash"])
    return sess.finish(answer)


def _quoted(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


def containers_deploy(args: argparse.Namespace, sess: Session) -> int:
    def call(preview: bool = False, plan_hash: str | None = None) -> Json:
        return sess.client.deploy(
            args.project,
            args.environment,
            args.image,
            preview=preview,
            plan_hash=plan_hash,
            repair=args.repair,
        )

    words = ["codeb", "containers", "deploy", args.project, args.environment, args.image]
    again = _quoted(*words, *(["--repair"] if args.repair else []))
    return run_mutation(args, sess, call, again)


def containers_action(args: argparse.Namespace, sess: Session) -> int:
    client, action, cid = sess.client, args.containers_command, args.container
    calls: dict[str, Call] = {
        "start": lambda **kw: client.container_action(cid, "start", **kw),
        "stop": lambda **kw: client.container_action(cid, "stop", **kw),
        "restart": lambda **kw: client.container_action(cid, "restart", **kw),
        "remove": lambda **kw: client.remove_container(cid, **kw),
        "volume-delete": lambda **kw: client.delete_volume(cid, **kw),
    }
    return run_mutation(args, sess, calls[action], _quoted("codeb", "containers", action, cid))


def containers_list(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.list_containers(args.project, args.environment)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(table(body.get("containers") or [], CONTAINER_COLUMNS))
    return OK


def containers_show(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.get_container(args.container, live=args.live)
    if sess.out.json_mode:
        sess.out.data(body)
        return OK
    sess.out.say(pairs((k, v) for k, v in body.items() if k != "live"))
    live = body.get("live")
    if isinstance(live, dict):
        sess.out.say("live (read from the host):")
        sess.out.say("\n".join(f"  {line}" for line in pairs(live.items()).splitlines()))
    return OK


def register(sub: argparse._SubParsersAction, p: Parents) -> None:
    containers = sub.add_parser(
        "containers",
        help="deploy and run containers",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmds = containers.add_subparsers(dest="containers_command", required=True)
    mutating = [p.json, p.act, p.preview]
    c = cmds.add_parser("deploy", parents=mutating, help="deploy an image to an environment")
    c.add_argument("project", help="the project's id or name")
    c.add_argument("environment", choices=ENVIRONMENTS)
    c.add_argument("image", help="an image reference, e.g. ghcr.io/acme/shop:1.4")
    c.add_argument(
        "--repair",
        action="store_true",
        help="probe and apply every host, also those a deploy would leave untouched (their "
        "plan unchanged and healthy): undoes drift made by hand",
    )
    c.set_defaults(remote=containers_deploy)
    c = cmds.add_parser("list", parents=[p.json], help="list containers")
    c.add_argument("--project")
    c.add_argument("--environment", "--env", choices=ENVIRONMENTS)
    c.set_defaults(remote=containers_list)
    c = cmds.add_parser("show", parents=[p.json], help="one container")
    c.add_argument("container")
    c.add_argument("--live", action="store_true", help="also read its state from the host")
    c.set_defaults(remote=containers_show)
    for action, text in (
        ("start", "start a container"),
        ("stop", "stop a container (MEDIUM)"),
        ("restart", "restart a container"),
        ("remove", "remove a stopped container, keeping its volume (MEDIUM)"),
        ("volume-delete", "delete a container's data volume (HIGH: queued)"),
    ):
        c = cmds.add_parser(action, parents=mutating, help=text)
        c.add_argument("container")
        c.set_defaults(remote=containers_action)
