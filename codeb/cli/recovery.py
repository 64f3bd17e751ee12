"""`codeb recovery`: survive the loss of the control server.

`export` and `restore` run on the control server itself, on its data directory (they read
and write the key files, which never travel through the API). `status` asks the API."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from codeb.cli.output import pairs
from codeb.cli.session import FAILED, OK, USAGE, Parents, Session, UsageError
from codeb.config import load_settings
from codeb.features.recovery import bundle, service


def _passphrase(args: argparse.Namespace, confirm: bool) -> str:
    """From --passphrase-file (first line) or typed twice; never from the command line."""
    if args.passphrase_file:
        text = Path(args.passphrase_file).read_text().splitlines()
        return text[0] if text else ""
    if not sys.stdin.isatty():
        raise UsageError("type the passphrase at a terminal, or give --passphrase-file")
    first = getpass.getpass("Recovery bundle passphrase: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise UsageError("the passphrases differ")
    return first


def cmd_export(args: argparse.Namespace) -> int:
    from codeb.cli.commands import _deps

    try:
        passphrase = _passphrase(args, confirm=True)
        bundle.check_passphrase(passphrase)
    except (UsageError, bundle.BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    deps = _deps()
    with deps.db.connection_context():
        answer = service.export_bundle(deps, Path(args.out), passphrase, force=args.force)
    if args.json:
        print(json.dumps(answer))
        return OK
    print(f"recovery bundle written to {answer['path']} (sha256 {answer['sha256']})")
    print("Keep it and its passphrase away from this server: together they rebuild codeb.")
    if answer["replica"] is None:
        print("warning: codeb's state is not replicated (CODEB_REPLICA_URL is empty).")
    return OK


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        passphrase = _passphrase(args, confirm=False)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    answer = service.restore_bundle(
        load_settings(), Path(args.bundle), passphrase, force=args.force
    )
    if args.json:
        print(json.dumps(answer))
        return OK
    print(
        pairs(
            [
                ("restored into", answer["data_dir"]),
                ("from replica", f"{answer['replica']['url']} at {answer['replica']['endpoint']}"),
                ("projects", answer["projects"]),
                ("log entries", f"{answer['log_entries']} (chain verified)"),
                ("newer than the bundle", answer["entries_since_bundle"]),
                ("old state moved to", answer["moved_aside"] or "-"),
            ]
        )
    )
    print(
        "Now start codeb (codeb serve, or its service) with the same CODEB_REPLICA_URL and\n"
        "CODEB_REPLICA_ENDPOINT: operations that were running are marked interrupted and\n"
        "reconciled from the hosts at start-up."
    )
    return OK


def recovery_status(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.request("GET", "/api/recovery/status")
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        for part in ("replica", "bundle"):
            item = body[part]
            sess.out.say(f"{part:<8} {item['state']:<8} {item['reason']}")
    return FAILED if body["state"] == "alarm" else OK


def register(sub: argparse._SubParsersAction, p: Parents) -> None:
    rec = sub.add_parser("recovery", help="codeb's own state: replica and recovery bundle")
    cmds = rec.add_subparsers(dest="recovery_command", required=True)
    c = cmds.add_parser(
        "export", parents=[p.json], help="write the recovery bundle (on the control server)"
    )
    c.add_argument("--out", required=True, help="the bundle file to write (0600)")
    c.add_argument("--force", action="store_true", help="overwrite an existing file")
    c.add_argument("--passphrase-file", help="read the passphrase from this file's first line")
    c.set_defaults(func=cmd_export)
    c = cmds.add_parser(
        "restore",
        parents=[p.json],
        help="rebuild codeb here from the replica and the bundle (new control server)",
    )
    c.add_argument("--bundle", required=True)
    c.add_argument(
        "--force", action="store_true", help="restore over existing state (moved aside, logged)"
    )
    c.add_argument("--passphrase-file", help="read the passphrase from this file's first line")
    c.set_defaults(func=cmd_restore)
    c = cmds.add_parser(
        "status", parents=[p.json], help="replica lag and bundle age (exit 1 on alarm)"
    )
    c.set_defaults(remote=recovery_status)
