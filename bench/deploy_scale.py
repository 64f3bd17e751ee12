"""How a deploy's cost grows with the number of app servers: 1 vs N (parallel, so near flat).

On the real test fleet (booted here with `tests/fleet/fleet.py`'s `session()`, always torn
down): app1..appN, db and cache, registered through codeb's API (their first bootstrap), and
codeb's real server in a subprocess (fresh data dir, free loopback port). For each count in
`--apps` (default 1,3) one project is deployed to that many app servers (db and Redis on db
and cache), through `POST /api/containers/deploy` with an explicit placement:

1. **first deploy** (provisions PostgreSQL and Redis, starts the app on every server, codeb
   waits for every replica's `/health`);
2. `--runs` **changed redeploys** (the app image flips v1 <-> v2 on every server);
3. `--runs` **no-op redeploys** (the same image again; nothing may change on any host).

The anchor is the 1-server deploy of the same run: each count's medians are printed with their
ratio to it (target: near flat). Counts are measured in alternating order per round, so load
changes on this shared machine hit both. 10 app servers are 12 guests: too many for a 2-CPU
machine shared with other runs; `--apps 1,3` is what fits (say `--apps 1,3,10` on a larger one).
Beside each time it prints the whole machine's busy CPU-seconds during that deploy and their
share of all its CPUs: a share near 1 says the deploy waited for CPUs (the guests share this
machine's), not for the other hosts, as on a real fleet where each host has its own.

    sudo .venv/bin/python bench/deploy_scale.py [--apps 1,3] [--runs 3] [--json]

Every process it starts is stopped by its PID, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    Api,
    BenchError,
    base_env,
    close_masters,
    loadavg,
    machine_busy_s,
    median,
    say,
    sigterm_as_interrupt,
    start_codeb,
    stop,
    tree_cpu,
    wait_operation,
)

APP_IMAGE = "localhost/codeb-test-app"
IMAGES = (f"{APP_IMAGE}:v1", f"{APP_IMAGE}:v2")
ENVIRONMENT = "staging"
CPUS = os.cpu_count() or 1


def deploy(api: Api, project: str, image: str, apps: list[str], poll_s: float) -> dict:
    body = {
        "project": project,
        "environment": ENVIRONMENT,
        "image": image,
        "servers": {"app": apps, "db": "db", "redis": "cache"},
    }
    busy0, own0, t0 = machine_busy_s(), tree_cpu(api.pid), time.perf_counter()
    status, answer = api.call("POST", "/api/containers/deploy", body)
    if status != 202 or answer.get("status") != "executed":
        raise BenchError(f"POST /api/containers/deploy answered {status}: {answer}")
    op = wait_operation(api, answer["result"]["operation"]["id"], poll_s)
    seconds = time.perf_counter() - t0
    busy, own = machine_busy_s() - busy0, tree_cpu(api.pid) - own0
    if op["status"] != "succeeded":
        raise BenchError(f"deploy of {image} to {project} ended {op['status']}: {op['error']}")
    recap = op["result"].get("recap") or {}
    return {
        "seconds": seconds,
        # The machine's busy CPU-seconds during the deploy (codeb, Ansible, every guest, and
        # whatever else runs here) and that as a share of what its CPUs could give.
        "busy_cpu_s": busy,
        "saturation": busy / (seconds * CPUS),
        # Of it, codeb's processes: the server, its zygote and the Ansible runs it forked (the
        # SSH masters detach from them: their share is only in the machine's figure).
        "codeb_cpu_s": own,
        "changed": {h: r.get("changed", 0) for h, r in recap.items()},
        "servers": op["result"].get("servers"),
    }


def bench(args: argparse.Namespace, workdir: Path, procs: list[subprocess.Popen]) -> dict:
    from codeb.executor.runner import control_dir_for
    from tests.fleet import fleet as fleetlib

    counts = args.apps
    names = [f"app{i}" for i in range(1, max(counts) + 1)] + ["db", "cache"]
    data_dir = (workdir / "codeb-data").resolve()
    api_control = control_dir_for(data_dir / "runs")
    say(f"load average {loadavg()}; booting {len(names)} hosts (waits for the session lock)")
    with fleetlib.session(names) as hosts:
        env = {
            **base_env(),
            "CODEB_DATA_DIR": str(data_dir),
            "CODEB_ALLOWED_NETWORKS": str(fleetlib.Config.from_env().subnet),
            "CODEB_SSH_PRIVATE_KEY_FILE": str(hosts[0].ssh_private_key_path),
        }
        try:
            api = start_codeb(workdir, env, procs)
            say(f"registering {', '.join(names)} (their first bootstrap)")
            ops = []
            for h in hosts:
                role = "app" if h.name.startswith("app") else h.name
                status, reg = api.call(
                    "POST", "/api/servers", {"name": h.name, "ip": h.ip, "role": role}
                )
                if status != 202:
                    raise BenchError(f"POST /api/servers answered {status}: {reg}")
                ops.append(reg["operation"]["id"])
            for op_id in ops:
                op = wait_operation(api, op_id, args.poll)
                if op["status"] != "succeeded":
                    raise BenchError(f"bootstrap {op_id} ended {op['status']}: {op['error']}")
            projects = {n: f"scale{n}" for n in counts}
            for name in projects.values():
                status, created = api.call("POST", "/api/projects", {"name": name})
                if status != 201:
                    raise BenchError(f"POST /api/projects answered {status}: {created}")

            results: dict[int, dict[str, list]] = {
                n: {"first": [], "changed": [], "noop": []} for n in counts
            }
            current = {n: IMAGES[0] for n in counts}
            for n in counts:
                apps = [f"app{k}" for k in range(1, n + 1)]
                r = deploy(api, projects[n], current[n], apps, args.poll)
                results[n]["first"].append(r)
                say(f"{n} app server(s): first deploy {r['seconds']:.2f} s (load {loadavg()})")
            for i in range(args.runs):
                order = counts if i % 2 == 0 else list(reversed(counts))
                for n in order:
                    apps = [f"app{k}" for k in range(1, n + 1)]
                    current[n] = IMAGES[1] if current[n] == IMAGES[0] else IMAGES[0]
                    changed = deploy(api, projects[n], current[n], apps, args.poll)
                    noop = deploy(api, projects[n], current[n], apps, args.poll)
                    if any(noop["changed"].values()):
                        say(f"WARNING: the no-op deploy changed something: {noop['changed']}")
                    results[n]["changed"].append(changed)
                    results[n]["noop"].append(noop)
                    say(
                        f"run {i + 1}/{args.runs}, {n} app server(s): changed "
                        f"{changed['seconds']:.2f} s, no-op {noop['seconds']:.2f} s "
                        f"(load {loadavg()})"
                    )
            api.close()
        finally:
            for p in procs:
                stop(p)
            closed = close_masters(api_control)
            shutil.rmtree(api_control, ignore_errors=True)
            say(f"stopped codeb; closed {closed} of codeb's SSH masters")

    anchor = counts[0]
    out: dict[str, Any] = {"counts": counts, "runs": args.runs, "anchor": anchor, "by_count": {}}
    for n in counts:
        row: dict[str, Any] = {}
        for kind in ("first", "changed", "noop"):
            secs = [r["seconds"] for r in results[n][kind]]
            base = median([r["seconds"] for r in results[anchor][kind]])
            row[kind] = {
                "seconds": secs,
                "median_s": median(secs),
                "vs_anchor": median(secs) / base if base else None,
                "busy_cpu_s": median([r["busy_cpu_s"] for r in results[n][kind]]),
                "saturation": median([r["saturation"] for r in results[n][kind]]),
                "codeb_cpu_s": median([r["codeb_cpu_s"] for r in results[n][kind]]),
            }
        row["noop_unchanged"] = all(not any(r["changed"].values()) for r in results[n]["noop"])
        out["by_count"][str(n)] = row
    return out


KINDS = (("first", "first"), ("changed", "changed"), ("noop", "no-op"))


def table(by_count: dict, width: int, cell: Callable[[dict], str]) -> list[str]:
    """One line per app server count, one column per kind of deploy."""
    lines = [f"{'app servers':>12} " + " ".join(f"{title:>{width}}" for _, title in KINDS)]
    for n, row in by_count.items():
        lines.append(f"{n:>12} " + " ".join(f"{cell(row[k]):>{width}}" for k, _ in KINDS))
    return lines


def cpu_cell(c: dict) -> str:
    return f"{c['busy_cpu_s']:4.1f}/{c['codeb_cpu_s']:4.1f} s {c['saturation']:4.2f}"


def report(r: dict) -> str:
    b = r["bench"]
    return "\n".join(
        [
            f"load average at start: {r['load_start']}, at end: {r['load_end']}",
            f"deploys through the API with 1..N app servers (db and Redis on their own hosts), "
            f"{b['runs']} runs each; ratios are against {b['anchor']} app server(s) in this run",
            "",
            *table(b["by_count"], 14, lambda c: f"{c['median_s']:6.2f} s x{c['vs_anchor']:.2f}"),
            "",
            f"the machine's busy CPU-seconds during each deploy (median), of them codeb's own "
            f"(server, zygote, Ansible), and their share of its {CPUS} CPUs (near 1.00: the "
            "deploy waited for CPUs, not for other hosts)",
            *table(b["by_count"], 19, cpu_cell),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--apps",
        type=lambda s: sorted({int(x) for x in s.split(",")}),
        default=[1, 3],
        help="app server counts (1,3)",
    )
    parser.add_argument("--runs", type=int, default=3, help="changed and no-op runs (3)")
    parser.add_argument("--poll", type=float, default=0.05, help="operation poll (0.05 s)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (codeb's log)")
    args = parser.parse_args(argv)
    if args.runs < 1 or not args.apps or min(args.apps) < 1 or max(args.apps) > 10:
        parser.error("--runs must be >= 1, --apps counts within 1..10")
    if os.geteuid() != 0:
        parser.error("the fleet needs root: run as root")
    workdir = Path(tempfile.mkdtemp(prefix="cb-deploy-scale-"))
    procs: list[subprocess.Popen] = []
    result: dict[str, Any] = {"load_start": loadavg()}
    try:
        with sigterm_as_interrupt():
            result["bench"] = bench(args, workdir, procs)
    except (RuntimeError, KeyboardInterrupt, subprocess.SubprocessError, OSError) as exc:
        say(f"failed: {type(exc).__name__}: {exc}")
        return 2
    finally:
        for p in procs:
            stop(p)
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["load_end"] = loadavg()
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
