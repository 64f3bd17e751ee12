"""`codeb domains ...`: add, list, status, remove (and `codeb domains zones`).

`add` and `remove` take `--preview`: the API answers the Caddyfile diff of each proxy and the
rrset changes on each dns server, and nothing changes; `--plan-hash HASH` (the preview's
plan) applies only that plan (refused with plan_changed if anything moved in between).
`remove` takes a site offline: it asks (MEDIUM) unless `--yes`. `status` checks every part
live and exits 1 when the domain is not `ok` (degraded or down), so scripts and monitors can
use it."""

from __future__ import annotations

import argparse
from urllib.parse import quote

import idna

from codeb.cli.output import diff_lines, table
from codeb.cli.session import OK, Parents, Session
from codeb.client.http import Json

FAILED = 1
DOMAIN_COLUMNS = [
    ("DOMAIN", "domain"),
    ("PROJECT", "project"),
    ("ENV", "environment"),
    ("ZONE", "zone"),
    ("STATUS", "status"),
    ("APPLIED", "applied_at"),
]


def _path(name: str) -> str:
    return "/api/domains/" + quote(name, safe="")


def show_preview(sess: Session, plan: Json) -> None:
    out = sess.out
    out.say(
        out.paint(
            f"PREVIEW ({plan.get('action')} {plan.get('domain')}): nothing was changed", "bold"
        )
    )
    for proxy in plan.get("caddyfile") or []:
        out.say(f"[{proxy.get('server')}] Caddyfile")
        lines = diff_lines(proxy.get("diff") or "", out)
        for line in lines or ["(no change)"]:
            out.say(f"    {line}")
    for server in plan.get("rrsets") or []:
        out.say(f"[{server.get('server')}] zone {plan.get('zone')}")
        if server.get("error"):
            out.say(f"    cannot read it: {server['error']}")
        for change in server.get("changes") or []:
            records = " ".join(change.get("records") or [])
            out.say(f"    {change['changetype']} {change.get('name', change['zone'])} "
                    f"{change.get('type', '')} {records}".rstrip())  # fmt: skip
    cert = plan.get("certificate")
    if cert:
        out.say(f"certificate: ordered by codeb (ACME DNS-01) from {cert.get('directory')}")
    if plan.get("plan_hash"):
        out.say(f"apply exactly this plan: --plan-hash {plan['plan_hash']}")


def _plan_header(args: argparse.Namespace) -> dict[str, str] | None:
    return {"X-Plan-Hash": args.plan_hash} if getattr(args, "plan_hash", None) else None


def ascii_name(name: str) -> str:
    """A Unicode name as the API takes it (punycode, UTS #46); anything that does not
    convert is sent as typed, for the API to refuse with its reason."""
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return name


def domains_add(args: argparse.Namespace, sess: Session) -> int:
    body = {
        "domain": ascii_name(args.domain),
        "project": args.project,
        "environment": args.environment,
    }
    params = {"preview": "true"} if args.preview else None
    answer = sess.client.request(
        "POST", "/api/domains", json=body, params=params, headers=_plan_header(args)
    )
    if args.preview:
        if sess.out.json_mode:
            sess.out.data(answer)
        else:
            show_preview(sess, answer)
        return OK
    return sess.finish(answer)


def domains_remove(args: argparse.Namespace, sess: Session) -> int:
    params = {"preview": "true"} if args.preview else None
    answer = sess.client.request(
        "DELETE", _path(ascii_name(args.domain)), params=params, headers=_plan_header(args)
    )
    if args.preview:
        if sess.out.json_mode:
            sess.out.data(answer)
        else:
            show_preview(sess, answer)
        return OK
    return sess.finish(answer)


def domains_list(args: argparse.Namespace, sess: Session) -> int:
    params = {"project": args.project} if args.project else None
    body = sess.client.request("GET", "/api/domains", params=params)
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        sess.out.say(table(body.get("domains") or [], DOMAIN_COLUMNS))
    return OK


def domains_zones(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.request("GET", "/api/dns/zones")
    if sess.out.json_mode:
        sess.out.data(body)
    else:
        columns = [("ZONE", "zone"), ("DOMAINS", "domains"),
                   ("NAMESERVERS", lambda z: " ".join(z.get("nameservers") or []))]  # fmt: skip
        sess.out.say(table(body.get("zones") or [], columns))
    return OK


def domains_status(args: argparse.Namespace, sess: Session) -> int:
    body = sess.client.request("GET", _path(ascii_name(args.domain)) + "/status", timeout=120)
    out = sess.out
    if out.json_mode:
        out.data(body)
    else:
        colour = {"ok": "green", "degraded": "yellow", "down": "red"}.get(
            body.get("status"), "bold"
        )
        out.say(out.paint(f"{body.get('domain')}: {body.get('status')}", colour))
        for part in ("dns", "proxy", "tls", "http"):
            section = body.get(part) or {}
            out.say(f"  {part:<5} {section.get('status')} (checked {section.get('checked_at')})")
            for server in section.get("servers") or []:
                shown = {
                    k: v for k, v in server.items() if k != "server" and not isinstance(v, dict)
                }
                out.say(
                    f"        [{server.get('server')}] "
                    + ", ".join(f"{k}={v}" for k, v in shown.items())
                )
        issuance = (body.get("tls") or {}).get("issuance") or {}
        if issuance.get("last_error"):
            out.say(f"  last issuance error ({issuance.get('last_error_at')}): "
                    f"{issuance['last_error']}")  # fmt: skip
        for reason in body.get("reasons") or []:
            out.say(f"  - {reason}")
    return OK if body.get("status") == "ok" else FAILED


def register(sub: argparse._SubParsersAction, p: Parents) -> None:
    domains = sub.add_parser(
        "domains",
        help="domains served by the proxies, with their DNS records",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmds = domains.add_subparsers(dest="domains_command", required=True)
    c = cmds.add_parser("add", parents=[p.json, p.act], help="point a domain at an environment")
    c.add_argument("domain", help="e.g. shop.example.com (Unicode names are stored as punycode)")
    c.add_argument("project", help="the project's id or name")
    c.add_argument("environment", help="staging, production, ...")
    c.add_argument("--preview", action="store_true", help="show what would change; change nothing")
    c.add_argument("--plan-hash", help="apply only the plan a preview showed (its plan_hash)")
    c.set_defaults(remote=domains_add)
    c = cmds.add_parser("list", parents=[p.json], help="list domains")
    c.add_argument("--project")
    c.set_defaults(remote=domains_list)
    c = cmds.add_parser("status", parents=[p.json], help="check a domain live (exit 1 unless ok)")
    c.add_argument("domain")
    c.set_defaults(remote=domains_status)
    c = cmds.add_parser("remove", parents=[p.json, p.act], help="take a domain offline (MEDIUM)")
    c.add_argument("domain")
    c.add_argument("--preview", action="store_true", help="show what would change; change nothing")
    c.add_argument("--plan-hash", help="apply only the plan a preview showed (its plan_hash)")
    c.set_defaults(remote=domains_remove)
    c = cmds.add_parser("zones", parents=[p.json], help="the DNS zones codeb holds")
    c.set_defaults(remote=domains_zones)
