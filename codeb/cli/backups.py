"""`codeb backups ...`: create, list, show, restore, delete (PostgreSQL backups on the storage
server).

`create` takes a base backup now (the first one of a db also sets up its WAL streaming) and
follows it; `restore BACKUP --target-time 2026-11-30T15:18:42Z` restores it to that second into
a new PostgreSQL container on the storage server (the live database is not touched);
`delete` is HIGH (queued: confirmations, a backup, a cooldown)."""

from __future__ import annotations

import argparse

from codeb.cli.output import pairs, table
from codeb.cli.session import OK, Parents, Session

ENVIRONMENTS = ("staging", "production", "preview")
STATUSES = ("running", "completed", "failed", "deleted")
BACKUP_COLUMNS = [
    ("ID", "id"),
    ("PROJECT", "project_id"),
    ("ENV", "environment"),
    ("KIND", "kind"),
    ("STATUS", "status"),
    ("END", "end_time"),
    ("SIZE", lambda b: _size(b.get("size_bytes"))),
]


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _path(backup_id: str) -> str:
    return f"/api/backups/{backup_id}"


def backups_create(args: argparse.Namespace, sess: Session) -> int:
    body = {"project": args.project, "environment": args.environment}
    return sess.finish(sess.client.request("POST", "/api/backups", json=body))


def backups_list(args: argparse.Namespace, sess: Session) -> int:
    params = {
        k: v
        for k, v in (
            ("project", args.project),
            ("environment", args.environment),
            ("status", args.status),
        )
        if v
    }
    body = sess.client.request("GET", "/api/backups", params=params or None)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(table(body.get("backups") or [], BACKUP_COLUMNS))
    return OK


def backups_show(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.request("GET", _path(args.backup))
    if sess.out.json_mode:
        sess.out.data(body)
        return OK
    sess.out.say(pairs((k, v) for k, v in body.items() if not isinstance(v, dict)))
    window = body.get("recoverable_window") or {}
    sess.out.say(f"recoverable: {window.get('earliest')} .. {window.get('latest')}")
    return OK


def backups_restore(args: argparse.Namespace, sess: Session) -> int:
    body = {"into": args.into}
    if args.target_time:
        body["target_time"] = args.target_time
    return sess.finish(sess.client.request("POST", _path(args.backup) + "/restore", json=body))


def backups_delete(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.request("DELETE", _path(args.backup)))


def register(sub: argparse._SubParsersAction, p: Parents) -> None:
    backups = sub.add_parser(
        "backups",
        help="PostgreSQL backups on the storage server",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmds = backups.add_subparsers(dest="backups_command", required=True)
    c = cmds.add_parser("create", parents=[p.json, p.act], help="take a base backup now")
    c.add_argument("project", help="the project's id or name")
    c.add_argument("environment", choices=ENVIRONMENTS)
    c.set_defaults(remote=backups_create)
    c = cmds.add_parser("list", parents=[p.json], help="list backups, newest first")
    c.add_argument("--project")
    c.add_argument("--environment", choices=ENVIRONMENTS)
    c.add_argument("--status", choices=STATUSES)
    c.set_defaults(remote=backups_list)
    c = cmds.add_parser("show", parents=[p.json], help="a backup and its recoverable window")
    c.add_argument("backup")
    c.set_defaults(remote=backups_show)
    c = cmds.add_parser(
        "restore", parents=[p.json, p.act], help="restore a backup (to a time) into a new db"
    )
    c.add_argument("backup")
    c.add_argument("--target-time", help="UTC to the second, e.g. 2026-11-30T15:18:42Z")
    c.add_argument("--into", choices=("new", "in_place"), default="new")
    c.set_defaults(remote=backups_restore)
    c = cmds.add_parser("delete", parents=[p.json, p.act], help="delete a backup (HIGH)")
    c.add_argument("backup")
    c.set_defaults(remote=backups_delete)
