"""`codeb projects|environments|servers ...`: thin commands over the client."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from codeb.cli.output import pairs, table
from codeb.cli.session import OK, Parents, Session, UsageError
from codeb.client.http import Json

PROJECT_TYPES = ("nextjs", "remix", "nodejs", "static")
ENVIRONMENTS = ("staging", "production", "preview")
SERVER_ROLES = ("control", "app", "db", "cache", "storage", "proxy", "dns")
ENV_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # fullmatch only


# --- .env files ----------------------------------------------------------------------------


def env_paths(directory: Path, names: Iterable[str]) -> dict[str, Path]:
    paths = {}
    for name in names:
        if not ENV_NAME.fullmatch(name):
            raise UsageError(f"refusing to write an .env file named {name!r}")
        paths[name] = directory / f".env.{name}"
    return paths


def check_env_dir(directory: Path, names: Iterable[str]) -> None:
    """Before the request: the files must not exist (the answer cannot be fetched again)."""
    taken = [str(p) for p in env_paths(directory, names).values() if p.exists()]
    if taken:
        raise UsageError("these files exist already, nothing was created: " + ", ".join(taken))
    if directory.exists() and not os.access(directory, os.W_OK):
        raise UsageError(f"{directory} is not writable, nothing was created")


def write_env_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write each file with mode 0600 (never replacing one); the directory is made 0700."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for name, path in env_paths(directory, files).items():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(files[name])
        written.append(path)
    return written


def show_env_files(sess: Session, files: Mapping[str, str], directory: str | None) -> None:
    out = sess.out
    if out.json_mode:
        return
    if directory:
        out.say(".env files (with the generated passwords; codeb never shows them again):")
        for path in write_env_files(Path(directory), files):
            out.say(f"  {path}  (mode 0600)")
        return
    out.say(
        out.paint(
            ".env files: codeb shows them only in this answer (passwords included) and keeps no "
            "copy you can fetch later. Store them now; next time use --write-env-dir DIR "
            "(files of mode 0600) or --json.",
            "yellow",
        )
    )
    for name, content in files.items():
        out.say(f"==> .env.{name} <==")
        out.say(content.rstrip("\n"))


# --- projects ------------------------------------------------------------------------------

ENV_PORT_COLUMNS = [
    ("ENVIRONMENT", "name"),
    ("APP_PORT", "app_port"),
    ("DB_PORT", "db_port"),
    ("REDIS_PORT", "redis_port"),
    ("REDIS_DB", "redis_db"),
]


def _ports_rows(environments: Mapping[str, Json]) -> list[Json]:
    return [{"name": name, **ports} for name, ports in environments.items()]


def show_project(sess: Session, project: Json) -> None:
    sess.out.say(
        pairs(
            (k, project.get(k))
            for k in ("id", "name", "type", "status", "git_repo", "created_at", "updated_at")
        )
    )
    sess.out.say(table(_ports_rows(project.get("environments") or {}), ENV_PORT_COLUMNS))


def projects_list(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.list_projects(args.status, args.limit, args.offset)
    if sess.out.json_mode:
        sess.out.data(body)
        return OK
    columns = [
        ("ID", "id"),
        ("NAME", "name"),
        ("TYPE", "type"),
        ("STATUS", "status"),
        ("ENVIRONMENTS", lambda p: list(p.get("environments") or {})),
        ("CREATED", "created_at"),
    ]
    sess.out.say(table(body["projects"], columns))
    if body.get("total", 0) > len(body["projects"]):
        sess.out.say(f"({len(body['projects'])} of {body['total']}; use --limit/--offset)")
    return OK


def projects_show(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.get_project(args.project)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        show_project(sess, body)
    return OK


def projects_create(args: argparse.Namespace, sess: Session) -> int:
    wanted = ["local", "staging", "production"] + (["preview"] if args.with_preview else [])
    if args.write_env_dir:
        check_env_dir(Path(args.write_env_dir), wanted)
    body = sess.client.create_project(args.name, args.type, args.git_repo, args.with_preview)
    if sess.out.json_mode:
        sess.out.data(body)
        if args.write_env_dir:
            write_env_files(Path(args.write_env_dir), body.get("env_files") or {})
        return OK
    project = body["project"]
    sess.out.say(f"project {project['name']} created ({project['id']}, {project['type']})")
    sess.out.say(table(_ports_rows(body.get("environments") or {}), ENV_PORT_COLUMNS))
    show_env_files(sess, body.get("env_files") or {}, args.write_env_dir)
    return OK


def projects_update(args: argparse.Namespace, sess: Session) -> int:
    changes: Json = {}
    if args.type:
        changes["type"] = args.type
    if args.git_repo is not None:
        changes["git_repo"] = args.git_repo or None
    if not changes:
        raise UsageError("nothing to change: give --type and/or --git-repo")
    answer = sess.client.update_project(args.project, changes)
    return sess.finish(answer, lambda project: show_project(sess, project))


def projects_delete(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.delete_project(args.project))


# --- environments --------------------------------------------------------------------------

ENV_COLUMNS = [
    ("NAME", "name"),
    ("STATUS", "status"),
    ("APP_PORT", "app_port"),
    ("DB_PORT", "db_port"),
    ("REDIS_PORT", "redis_port"),
    ("REDIS_DB", "redis_db"),
    ("DOMAIN", "domain"),
]


def environments_list(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.list_environments(args.project)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(table(body["environments"], ENV_COLUMNS))
    return OK


def environments_show(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.get_environment(args.project, args.env)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(pairs(body.items()))
    return OK


def environments_create(args: argparse.Namespace, sess: Session) -> int:
    if args.write_env_dir:
        check_env_dir(Path(args.write_env_dir), [args.env])
    body = sess.client.create_environment(args.project, args.env)
    env = body["environment"]
    if sess.out.json_mode:
        sess.out.data(body)
        if args.write_env_dir:
            write_env_files(Path(args.write_env_dir), {env["name"]: body["env_file"]})
        return OK
    sess.out.say(f"environment {env['name']} of {env['project']} created")
    sess.out.say(table([env], ENV_COLUMNS))
    show_env_files(sess, {env["name"]: body["env_file"]}, args.write_env_dir)
    return OK


def environments_delete(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.delete_environment(args.project, args.env))


# --- servers -------------------------------------------------------------------------------

SERVER_COLUMNS = [
    ("NAME", "name"),
    ("IP", "ip"),
    ("ROLE", "role"),
    ("STATUS", "status"),
    ("SSH_USER", "ssh_user"),
    ("SSH_PORT", "ssh_port"),
    ("PROVIDER", "provider"),
]


def servers_add(args: argparse.Namespace, sess: Session) -> int:
    body: Json = {"name": args.name, "ip": args.ip, "role": args.role}
    for key in ("ssh_user", "ssh_port", "provider", "provider_id"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.no_bootstrap:
        body["bootstrap"] = False
    answer = sess.client.register_server(body)

    def render(registered: Json) -> None:
        server = registered["server"]
        sess.out.say(
            f"server {server['name']} ({server['ip']}, {server['role']}) registered: "
            f"{server['status']}"
        )

    return sess.finish(answer, render)


def servers_list(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.list_servers(args.role)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(table(body["servers"], SERVER_COLUMNS))
    return OK


def servers_show(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.get_server(args.ip)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(pairs(body.items()))
    return OK


def servers_stats(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.server_stats(args.ip)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(pairs(body.items()))
    return OK


def servers_bootstrap(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.bootstrap_server(args.ip))


def servers_ssh_key(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.ssh_public_key()
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(body["public_key"])
    return OK


def servers_delete(args: argparse.Namespace, sess: Session) -> int:
    return sess.finish(sess.client.delete_server(args.ip))


# --- the parser ----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction, p: Parents) -> None:
    """Add `projects`, `environments` and `servers` to the top-level subparsers."""
    projects = sub.add_parser("projects", help="projects (and their .env files at creation)")
    cmds = projects.add_subparsers(dest="projects_command", required=True)
    c = cmds.add_parser("list", parents=[p.json], help="list projects")
    c.add_argument("--status", choices=("active", "archived"))
    c.add_argument("--limit", type=int)
    c.add_argument("--offset", type=int)
    c.set_defaults(remote=projects_list)
    c = cmds.add_parser("show", parents=[p.json], help="one project (id or name)")
    c.add_argument("project")
    c.set_defaults(remote=projects_show)
    c = cmds.add_parser(
        "create",
        parents=[p.json],
        help="create a project, its environments, ports and .env files",
        description="The .env files (with the generated passwords) exist only in the "
        "creation answer: --write-env-dir writes them (mode 0600), otherwise they are printed.",
    )
    c.add_argument("name")
    c.add_argument("--type", choices=PROJECT_TYPES)
    c.add_argument("--git-repo")
    c.add_argument("--with-preview", action="store_true", help="also a preview environment")
    c.add_argument("--write-env-dir", metavar="DIR", help="write .env.<environment> files here")
    c.set_defaults(remote=projects_create)
    c = cmds.add_parser("update", parents=[p.json, p.act], help="change type or repository")
    c.add_argument("project")
    c.add_argument("--type", choices=PROJECT_TYPES)
    c.add_argument("--git-repo", help="the repository URL ('' clears it)")
    c.set_defaults(remote=projects_update)
    c = cmds.add_parser("delete", parents=[p.json, p.act], help="delete a project (CRITICAL)")
    c.add_argument("project")
    c.set_defaults(remote=projects_delete)

    envs = sub.add_parser("environments", help="a project's environments")
    cmds = envs.add_subparsers(dest="environments_command", required=True)
    c = cmds.add_parser("list", parents=[p.json], help="a project's environments")
    c.add_argument("project")
    c.set_defaults(remote=environments_list)
    c = cmds.add_parser("show", parents=[p.json], help="one environment")
    c.add_argument("project")
    c.add_argument("env", choices=ENVIRONMENTS)
    c.set_defaults(remote=environments_show)
    c = cmds.add_parser("create", parents=[p.json], help="add an environment (e.g. preview)")
    c.add_argument("project")
    c.add_argument("env", choices=ENVIRONMENTS)
    c.add_argument("--write-env-dir", metavar="DIR", help="write its .env file here (0600)")
    c.set_defaults(remote=environments_create)
    c = cmds.add_parser("delete", parents=[p.json, p.act], help="delete an environment (HIGH)")
    c.add_argument("project")
    c.add_argument("env", choices=ENVIRONMENTS)
    c.set_defaults(remote=environments_delete)

    servers = sub.add_parser("servers", help="the server registry")
    cmds = servers.add_subparsers(dest="servers_command", required=True)
    c = cmds.add_parser("add", parents=[p.json, p.act], help="register (and bootstrap) a server")
    c.add_argument("name")
    c.add_argument("ip")
    c.add_argument("role", choices=SERVER_ROLES)
    c.add_argument("--ssh-user")
    c.add_argument("--ssh-port", type=int)
    c.add_argument("--provider")
    c.add_argument("--provider-id")
    c.add_argument("--no-bootstrap", action="store_true", help="only register; run nothing")
    c.set_defaults(remote=servers_add)
    c = cmds.add_parser("list", parents=[p.json], help="list servers")
    c.add_argument("--role", choices=SERVER_ROLES)
    c.set_defaults(remote=servers_list)
    for name, func, text in (
        ("show", servers_show, "one server"),
        ("stats", servers_stats, "live CPU, load, memory, disk, containers"),
        ("delete", servers_delete, "delete a server (CRITICAL)"),
    ):
        shared = [p.json, p.act] if name == "delete" else [p.json]
        c = cmds.add_parser(name, parents=shared, help=text)
        c.add_argument("ip")
        c.set_defaults(remote=func)
    c = cmds.add_parser("bootstrap", parents=[p.json, p.act], help="run the bootstrap again")
    c.add_argument("ip")
    c.set_defaults(remote=servers_bootstrap)
    c = cmds.add_parser("ssh-key", parents=[p.json], help="codeb's SSH public key")
    c.set_defaults(remote=servers_ssh_key)
