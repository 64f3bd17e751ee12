"""`codeb operations ...` and `codeb protection ...`: follow runs; the queue, confirm, approve,
cancel, the hash-chained log and the rules."""

from __future__ import annotations

import argparse
import sys

from codeb.cli.output import duration, pairs, table
from codeb.cli.session import FAILED, OK, Parents, Session, UsageError, unmet_lines
from codeb.client.http import Json

OPERATION_STATUSES = (
    "queued", "running", "succeeded", "failed", "canceled", "timeout", "interrupted",
)  # fmt: skip
QUEUE_STATUSES = ("pending", "executed", "cancelled", "expired", "failed", "all")
LOG_STATUSES = (
    "requested", "token_issued", "confirmed", "approved", "rejected", "cancelled", "expired",
    "executed", "failed",
)  # fmt: skip


# --- operations ----------------------------------------------------------------------------


def operations_list(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.list_operations(args.status, args.kind, args.limit, args.offset)
    if sess.out.json_mode:
        sess.out.data(body)
        return OK
    columns = [
        ("ID", "id"),
        ("KIND", "kind"),
        ("STATUS", "status"),
        ("TARGETS", "targets"),
        ("CREATED", "created_at"),
        ("DURATION", lambda o: duration(o.get("duration_s"))),
        ("KEY", "key_name"),
    ]
    sess.out.say(table(body["operations"], columns))
    return OK


def operations_show(args: argparse.Namespace, sess: Session) -> int:
    op = sess.client.get_operation(args.operation)
    if sess.out.json_mode:
        sess.out.data(op)
        return OK
    keys = ("id", "kind", "status", "targets", "requested_by", "key_name", "created_at",
            "started_at", "finished_at", "duration_s", "rc", "error")  # fmt: skip
    sess.out.say(pairs((k, op.get(k)) for k in keys))
    if op.get("recap"):
        sess.show_outcome({"recap": op["recap"], "id": op["id"], "status": op["status"]})
    return OK


def operations_follow(args: argparse.Namespace, sess: Session) -> int:
    return sess.follow_operation(args.operation, emit_final=True)


def operations_cancel(args: argparse.Namespace, sess: Session) -> int:
    answer = sess.client.cancel_operation(args.operation)
    if "kind" not in answer:  # not executed yet: a stricter rule asks for a confirmation
        return sess.finish(answer)
    if sess.out.json_mode:
        sess.out.data(answer)
    else:
        sess.out.say(f"cancel requested: operation {answer['id']} is {answer['status']}")
    return OK


# --- protection ----------------------------------------------------------------------------


def _target(entry: Json) -> str:
    return str((entry.get("target") or {}).get("name") or "-")


def protection_queue(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.protection_queue(args.status, args.operation, args.limit, args.offset)
    if sess.out.json_mode:
        sess.out.data(body)
        return OK
    columns = [
        ("ID", "id"),
        ("OPERATION", "operation"),
        ("LEVEL", "level"),
        ("TARGET", _target),
        ("STATUS", "status"),
        ("CONFIRMED", "confirmations"),
        ("COOLDOWN_LEFT", lambda e: duration(e.get("cooldown_remaining_seconds"))),
        ("STILL_REQUIRED", lambda e: [u.get("requirement") for u in e.get("unmet") or []]),
        ("KEY", "key_name"),
    ]
    sess.out.say(table(body["entries"], columns))
    return OK


def show_entry(sess: Session, entry: Json) -> None:
    keys = ("id", "operation", "level", "status", "warning", "key_name", "requested_by",
            "created_at", "cooldown_ends_at", "expires_at", "confirmations", "approved_by",
            "approved_at", "finished_at")  # fmt: skip
    items = [(k, entry.get(k)) for k in keys]
    items.insert(3, ("target", _target(entry)))
    items.insert(10, ("cooldown left", duration(entry.get("cooldown_remaining_seconds"))))
    sess.out.say(pairs(items))
    lines = unmet_lines(entry.get("unmet"))
    if lines:
        sess.out.say("still required:")
        sess.out.say("\n".join(lines))


def protection_show(args: argparse.Namespace, sess: Session) -> int:
    entry = sess.client.protection_entry(args.entry)
    if sess.out.json_mode:
        sess.out.data(entry)
    else:
        show_entry(sess, entry)
    return OK


def protection_confirm(args: argparse.Namespace, sess: Session) -> int:
    from_stdin = args.token == "-"  # noqa: S105 (not a password: "-" means stdin)
    token = sys.stdin.readline().strip() if from_stdin else args.token
    if not token:
        raise UsageError("no confirm token given")
    return sess.finish(sess.client.confirm(token, args.name))


def _entry_answer(sess: Session, answer: Json, verb: str) -> int:
    if sess.out.json_mode:
        sess.out.data(answer)
        return OK
    entry = answer.get("entry") or {}
    sess.out.say(f"{verb}: entry {entry.get('id')} ({entry.get('operation')} of {_target(entry)})")
    lines = unmet_lines(entry.get("unmet"))
    if lines and entry.get("status") == "pending":
        sess.out.say("still required:")
        sess.out.say("\n".join(lines))
    return OK


def protection_cancel(args: argparse.Namespace, sess: Session) -> int:
    if bool(args.entry) == bool(args.token):
        raise UsageError("give the entry id or --token TOKEN (one of them)")
    return _entry_answer(sess, sess.client.cancel(args.entry, args.token), "cancelled")


def protection_approve(args: argparse.Namespace, sess: Session) -> int:
    return _entry_answer(sess, sess.client.approve(args.entry), "approved (not executed yet)")


def protection_logs(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.protection_logs(
        operation=args.operation, status=args.status, project=args.project,
        key_name=args.key, target=args.target, limit=args.limit, offset=args.offset,
        verify=args.verify,
    )  # fmt: skip
    chain = body.get("chain")
    valid = not isinstance(chain, dict) or bool(chain.get("valid"))
    if sess.out.json_mode:
        sess.out.data(body)
        return OK if valid else FAILED
    columns = [
        ("ID", "id"),
        ("CREATED", "created_at"),
        ("OPERATION", "operation"),
        ("LEVEL", "danger_level"),
        ("STATUS", "status"),
        ("KEY", "key_name"),
        ("CLIENT", "requested_by"),
        ("TARGET", "target"),
    ]
    sess.out.say(table(body["logs"], columns))
    if isinstance(chain, dict):
        if valid:
            sess.out.say(sess.out.paint(f"chain valid ({chain.get('checked')} rows)", "green"))
        else:
            sess.out.say(sess.out.paint(f"chain BROKEN at row {chain.get('first_bad_id')}", "red"))
    return OK if valid else FAILED


def protection_rules(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.protection_rules()
    if sess.out.json_mode:
        sess.out.data(body)
        return OK
    columns = [
        ("OPERATION", "operation"),
        ("LEVEL", "level"),
        ("FLOW", "flow"),
        ("REQUIRES", "requires"),
    ]
    sess.out.say(table(body["rules"], columns))
    if body.get("overrides"):
        sess.out.say("overridden by configuration: " + ", ".join(body["overrides"]))
    return OK


def register(sub: argparse._SubParsersAction, p: Parents) -> None:
    ops = sub.add_parser("operations", help="long-running operations")
    cmds = ops.add_subparsers(dest="operations_command", required=True)
    c = cmds.add_parser("list", parents=[p.json], help="operations, newest first")
    c.add_argument("--status", choices=OPERATION_STATUSES)
    c.add_argument("--kind")
    c.add_argument("--limit", type=int)
    c.add_argument("--offset", type=int)
    c.set_defaults(remote=operations_list)
    for name, func, text in (
        ("show", operations_show, "an operation with its per-host recap"),
        ("follow", operations_follow, "print its progress until it ends (exit 1 if it failed)"),
        ("cancel", operations_cancel, "cancel a queued or running operation"),
    ):
        c = cmds.add_parser(name, parents=[p.json], help=text)
        c.add_argument("operation", help="the operation's id")
        c.set_defaults(remote=func)

    prot = sub.add_parser("protection", help="the Protection Layer: queue, confirm, approve, logs")
    cmds = prot.add_subparsers(dest="protection_command", required=True)
    c = cmds.add_parser("queue", parents=[p.json], help="queue entries (pending by default)")
    c.add_argument("--status", choices=QUEUE_STATUSES)
    c.add_argument("--operation")
    c.add_argument("--limit", type=int)
    c.add_argument("--offset", type=int)
    c.set_defaults(remote=protection_queue)
    c = cmds.add_parser("show", parents=[p.json], help="one queue entry, with what it still needs")
    c.add_argument("entry")
    c.set_defaults(remote=protection_show)
    c = cmds.add_parser(
        "confirm", parents=[p.json, p.act], help="confirm with a token (same API key)"
    )
    c.add_argument("token", help="the confirm token ('-' reads it from stdin)")
    c.add_argument("--name", help="the target's name, typed (the second HIGH/CRITICAL confirm)")
    c.set_defaults(remote=protection_confirm)
    c = cmds.add_parser("cancel", parents=[p.json], help="withdraw a pending entry")
    c.add_argument("entry", nargs="?")
    c.add_argument("--token")
    c.set_defaults(remote=protection_cancel)
    c = cmds.add_parser("approve", parents=[p.json], help="approve a CRITICAL entry (admin)")
    c.add_argument("entry")
    c.set_defaults(remote=protection_approve)
    c = cmds.add_parser("logs", parents=[p.json], help="the hash-chained operation log")
    c.add_argument("--operation")
    c.add_argument("--status", choices=LOG_STATUSES)
    c.add_argument("--project")
    c.add_argument("--key", help="the API key's name")
    c.add_argument("--target")
    c.add_argument("--limit", type=int)
    c.add_argument("--offset", type=int)
    c.add_argument("--verify", action="store_true", help="check the chain (exit 1 if broken)")
    c.set_defaults(remote=protection_logs)
    c = cmds.add_parser("rules", parents=[p.json], help="levels and requirements per operation")
    c.set_defaults(remote=protection_rules)
