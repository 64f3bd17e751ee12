"""The `codeb` command.

Server-side commands work on the local state directly: `serve`, `migrate`,
`keys create|list|revoke` and `inventory export`. Every other command is a thin layer over
the HTTP API (`codeb.client`), with the URL and API key from CODEB_URL / CODEB_API_KEY or
~/.config/codeb/cli.toml (CODEB_CLI_CONFIG overrides the path)."""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import sys
from pathlib import Path

from codeb.cli import backups as cli_backups
from codeb.cli import containers as cli_containers
from codeb.cli import domains as cli_domains
from codeb.cli import mcp as cli_mcp
from codeb.cli import metrics as cli_metrics
from codeb.cli import projects as cli_projects
from codeb.cli import protection as cli_protection
from codeb.cli import recovery as cli_recovery
from codeb.cli import scaling as cli_scaling
from codeb.cli.output import Output
from codeb.cli.session import AUTH, EXIT_CODES, INTERRUPTED, USAGE, Session, UsageError, parents
from codeb.cli.session import report_error as report_api_error
from codeb.client.http import ApiError, CodebClient, ConfigError, config_path
from codeb.client.http import load_settings as load_client_settings
from codeb.config import SettingError, content_root, load_settings
from codeb.errors import CodebError
from codeb.features.keys import service as keys
from codeb.services.context import ROLES, SYSTEM, Deps


def _deps() -> Deps:
    from codeb.app import build_deps

    return build_deps(load_settings())


def cmd_serve(args: argparse.Namespace) -> int:
    from codeb.app import create_app, start_runtime, stop_background
    from codeb.cli import serving

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serving.quiet_queue_log()
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
    app = create_app(deps)
    # What start-up made (modules, routes, the OpenAPI document) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it with the GIL held
    # (~90,000 objects, 60 ms per full collection: a tail-latency spike for every thread).
    gc.collect()
    gc.freeze()
    try:
        serving.serve(app, host=host, port=port, threads=settings.threads)
    finally:
        # A scheduled job running now finishes and records its run before the process ends;
        # the replicator ships what it has.
        stop_background(deps)
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
        record, plaintext = keys.create_key(
            deps, SYSTEM, args.name, args.role, expires_at, principal=args.principal
        )
    if args.json:
        print(json.dumps({"key": record, "api_key": plaintext}))
    else:
        print(
            f"API key {record['name']} ({record['role']}, principal {record['principal']}), "
            f"shown once: {plaintext}"
        )
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
    from codeb.features.servers import service as servers

    deps = _deps()
    with deps.db.connection_context():
        path = servers.export_inventory(deps, Path(args.output))
    print(f"inventory written to {path}; run a playbook by hand with:")
    print(f"  ansible-playbook -i {path} playbooks/bootstrap.yml --limit NAME")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codeb",
        description="codeb server manager.\n\n"
        "Remote commands talk to the API at CODEB_URL (default http://127.0.0.1:8080) with\n"
        "CODEB_API_KEY, or url and api_key from ~/.config/codeb/cli.toml (CODEB_CLI_CONFIG\n"
        "overrides the path; the environment wins). Tables by default, --json for scripts.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    shared = parents()
    cli_projects.register(sub, shared)
    cli_containers.register(sub, shared)
    cli_backups.register(sub, shared)
    cli_domains.register(sub, shared)
    cli_protection.register(sub, shared)
    cli_recovery.register(sub, shared)
    cli_scaling.register(sub, shared)
    cli_mcp.register(sub)
    cli_metrics.register(sub, shared)

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
    create.add_argument(
        "--principal",
        help="the person or service the key belongs to (default: the key's name); approvals "
        "need an admin of another principal",
    )
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
    export.add_argument("--output", default=str(content_root() / "inventory" / "hosts.yml"))
    export.set_defaults(func=cmd_inventory_export)
    return parser


def run_remote(args: argparse.Namespace, client: CodebClient | None = None) -> int:
    """A command over the HTTP API; `client` is injected by tests (else built from settings)."""
    out = Output(getattr(args, "json", False))
    owned = client is None
    hint = f"check CODEB_API_KEY (or api_key in {config_path()})"
    try:
        if client is None:
            settings = load_client_settings()
            if not settings.api_key:
                out.warn(f"error: no API key: set CODEB_API_KEY or api_key in {config_path()}")
                return AUTH
            path = settings.config_path
            if path is not None and path.stat().st_mode & 0o077:
                out.warn(f"warning: {path} holds an API key and others can read it (chmod 600)")
            client = CodebClient.from_settings(settings)
        session = Session(
            client,
            out,
            yes=getattr(args, "yes", False),
            follow=not getattr(args, "no_follow", False),
        )
        return args.remote(args, session)
    except ApiError as exc:
        return report_api_error(exc, out, hint)
    except (UsageError, ConfigError) as exc:
        out.warn(f"error: {exc}")
        return USAGE
    except KeyboardInterrupt:
        out.warn("interrupted")
        return INTERRUPTED
    finally:
        if owned and client is not None:
            client.close()


def main(argv: list[str] | None = None, *, client: CodebClient | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "remote", None) is not None:
        return run_remote(args, client)
    try:
        return args.func(args)
    except SettingError as exc:
        # Bad configuration refuses to start, naming the setting; never a traceback.
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    except CodebError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2 if exc.status < 500 else 1


if __name__ == "__main__":
    sys.exit(main())
