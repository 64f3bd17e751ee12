"""`codeb backups ...`: create, list, show, restore, delete (PostgreSQL backups on the storage
server).

`create` takes a base backup now (the first one of a db also sets up its WAL streaming) and
follows it; `restore BACKUP --target-time 2026-11-30T15:18:42Z` restores it to that second into
a new PostgreSQL container on the storage server (the live database is not touched);
`delete` is HIGH (queued: confirmations, a backup, a cooldown); `verify` runs a restore drill
(a scratch container on the storage server); `status` exits 1 when anything is in alarm.
`restore BACKUP --into project` restores a deleted project's retained backup as a new project.

`redis copy|list|restore|verify`: copies of a cache component's Redis data on the storage
server (an RDB, or the whole appendonlydir/ of a cache running with appendonly yes),
restored into a new container (LOW) or in place (HIGH: queued), and drilled."""

from __future__ import annotations

import argparse

from codeb.cli.output import pairs, table
from codeb.cli.session import FAILED, OK, Parents, Session

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
    if args.type != "full":
        body["type"] = args.type
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
    if args.project:
        body["project"] = args.project
    return sess.finish(sess.client.request("POST", _path(args.backup) + "/restore", json=body))


def backups_delete(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.request("DELETE", _path(args.backup)))


def backups_verify(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.request("POST", _path(args.backup) + "/verify"))


def backups_status(args: argparse.Namespace, sess: Session) -> int:
    """Exit 1 when anything is in alarm (usable from cron or a monitor); warnings exit 0."""
    params = {"project": args.project} if args.project else None
    body = sess.client.request("GET", "/api/backups/status", params=params)
    out = sess.out
    if out.json_mode:
        out.data(body)
    else:
        colours = {"ok": "green", "warning": "yellow", "alarm": "red"}
        overall = body.get("status")
        out.say(out.paint(f"backups: {overall}", colours.get(overall, "bold")))
        for env in body.get("environments") or []:
            for comp in env.get("components") or []:
                level = comp.get("status")
                out.say(
                    out.paint(
                        f"  {env.get('project')}/{env.get('environment')} "
                        f"{comp.get('component')} ({comp.get('name')}): {level}",
                        colours.get(level, "bold"),
                    )
                )
                for part in ("backup", "wal", "drill"):
                    section = comp.get(part)
                    if isinstance(section, dict):
                        why = f": {section['reason']}" if section.get("reason") else ""
                        out.say(f"      {part:<6} {section.get('status')}{why}")
    return FAILED if body.get("status") == "alarm" else OK


COPY_COLUMNS = [
    ("ID", "id"),
    ("SOURCE", "source"),
    ("ENV", "environment"),
    ("FORMAT", "format"),
    ("STATUS", "status"),
    ("KEYS", "keys"),
    ("FINISHED", "finished_at"),
    ("VERIFIED", "verified_at"),
    ("SIZE", lambda c: _size(c.get("size_bytes"))),
]


def _copy_path(copy_id: str) -> str:
    return f"/api/backups/redis/{copy_id}"


def redis_copy(args: argparse.Namespace, sess: Session) -> int:
    body = {"project": args.project, "environment": args.environment}
    return sess.finish(sess.client.request("POST", "/api/backups/redis", json=body))


def redis_list(args: argparse.Namespace, sess: Session) -> int:
    params = {k: v for k, v in (("project", args.project), ("environment", args.environment)) if v}
    body = sess.client.request("GET", "/api/backups/redis", params=params or None)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(table(body.get("copies") or [], COPY_COLUMNS))
    return OK


def redis_restore(args: argparse.Namespace, sess: Session) -> int:
    body = {"into": args.into}
    return sess.finish(sess.client.request("POST", _copy_path(args.copy) + "/restore", json=body))


def redis_verify(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.request("POST", _copy_path(args.copy) + "/verify"))


def _register_redis(cmds: argparse._SubParsersAction, p: Parents) -> None:
    redis = cmds.add_parser("redis", help="copies of Redis data (cache components)")
    rcmds = redis.add_subparsers(dest="redis_command", required=True)
    c = rcmds.add_parser("copy", parents=[p.json, p.act], help="copy a cache's data now (LOW)")
    c.add_argument("project", help="the project's id or name")
    c.add_argument("environment", choices=ENVIRONMENTS)
    c.set_defaults(remote=redis_copy)
    c = rcmds.add_parser("list", parents=[p.json], help="list Redis copies, newest first")
    c.add_argument("--project")
    c.add_argument("--environment", choices=ENVIRONMENTS)
    c.set_defaults(remote=redis_list)
    c = rcmds.add_parser(
        "restore",
        parents=[p.json, p.act],
        help="restore a copy into a new Redis container (LOW), or in place (HIGH: queued)",
    )
    c.add_argument("copy")
    c.add_argument("--into", choices=("new", "in_place"), default="new")
    c.set_defaults(remote=redis_restore)
    c = rcmds.add_parser(
        "verify", parents=[p.json, p.act], help="a restore drill of a copy (scratch container)"
    )
    c.add_argument("copy")
    c.set_defaults(remote=redis_verify)


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
    c.add_argument(
        "--type",
        choices=("full", "incremental", "differential"),
        default="full",
        help="incremental: PostgreSQL 17 block-level, on the latest backup; differential: "
        "the same on the latest full backup",
    )
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
        "restore",
        parents=[p.json, p.act],
        help="restore a backup (to a time) into a new db, or in place (HIGH: queued)",
    )
    c.add_argument("backup")
    c.add_argument("--target-time", help="UTC to the second, e.g. 2026-11-30T15:18:42Z")
    c.add_argument("--into", choices=("new", "in_place", "project"), default="new")
    c.add_argument(
        "--project",
        help="into project: the new project's name (the deleted project's; the default)",
    )
    c.set_defaults(remote=backups_restore)
    c = cmds.add_parser(
        "verify", parents=[p.json, p.act], help="a restore drill of a backup (scratch container)"
    )
    c.add_argument("backup")
    c.set_defaults(remote=backups_verify)
    c = cmds.add_parser(
        "status", parents=[p.json], help="backup alarms per component; exit 1 on any alarm"
    )
    c.add_argument("--project")
    c.set_defaults(remote=backups_status)
    c = cmds.add_parser("delete", parents=[p.json, p.act], help="delete a backup (HIGH)")
    c.add_argument("backup")
    c.set_defaults(remote=backups_delete)
    _register_redis(cmds, p)
