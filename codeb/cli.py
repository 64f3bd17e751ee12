"""The `codeb` command. Server-side commands work on the local state directly: `serve`,
`migrate`, and `keys create|list|revoke`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

from codeb.config import REPO_ROOT, load_settings
from codeb.errors import CodebError
from codeb.services import keys
from codeb.services.context import ROLES, SYSTEM, Deps


def _deps() -> Deps:
    from codeb.app import build_deps

    return build_deps(load_settings())


def cmd_serve(args: argparse.Namespace) -> int:
    import waitress

    from codeb.app import create_app, start_runtime

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    deps = _deps()
    with deps.db.connection_context():
        first_key = keys.ensure_admin_key(deps)
    if first_key:
        # Printed, not logged: logs must never hold a secret.
        print(f"Created the first admin API key (shown once, store it now): {first_key}")
        sys.stdout.flush()
    deps = start_runtime(deps)
    host = args.host or settings.host
    port = args.port or settings.port
    print(f"codeb serving on http://{host}:{port}", flush=True)
    waitress.serve(create_app(deps), host=host, port=port, threads=settings.threads, ident="codeb")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _deps()
    print("database is up to date")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    deps = _deps()
    expires_at = None
    if args.expires_in_days:
        expires_at = deps.clock.now() + dt.timedelta(days=args.expires_in_days)
    with deps.db.connection_context():
        record, plaintext = keys.create_key(deps, SYSTEM, args.name, args.role, expires_at)
    if args.json:
        print(json.dumps({"key": record, "api_key": plaintext}))
    else:
        print(f"API key {record['name']} ({record['role']}), shown once: {plaintext}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    deps = _deps()
    with deps.db.connection_context():
        rows = keys.list_keys(deps)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'NAME':<24} {'ROLE':<9} {'STATE':<8} {'PREFIX':<11} EXPIRES")
    for row in rows:
        print(
            f"{row['name']:<24} {row['role']:<9} {row['state']:<8} {row['prefix']:<11} "
            f"{row['expires_at'] or '-'}"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    deps = _deps()
    with deps.db.connection_context():
        row = keys.revoke_key(deps, SYSTEM, args.name)
    print(f"API key {row['name']} revoked")
    return 0


def cmd_inventory_export(args: argparse.Namespace) -> int:
    from codeb.services import servers

    deps = _deps()
    with deps.db.connection_context():
        path = servers.export_inventory(deps, Path(args.output))
    print(f"inventory written to {path}; run a playbook by hand with:")
    print(f"  ansible-playbook -i {path} playbooks/bootstrap.yml --limit NAME")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeb", description="codeb server manager")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API with waitress")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    keys_cmd = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys_cmd.add_parser("create", help="create a key (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--expires-in-days", type=int)
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_keys_create)
    listing = keys_cmd.add_parser("list", help="list keys")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys_cmd.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_keys_revoke)
    inventory = sub.add_parser("inventory", help="the Ansible inventory").add_subparsers(
        dest="inventory_command", required=True
    )
    export = inventory.add_parser("export", help="write the inventory for runs made by hand")
    export.add_argument("--output", default=str(REPO_ROOT / "inventory" / "hosts.yml"))
    export.set_defaults(func=cmd_inventory_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CodebError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2 if exc.status < 500 else 1


if __name__ == "__main__":
    sys.exit(main())
