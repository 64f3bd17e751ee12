"""A redeploy of a changed app image: through codeb's API vs the same steps by hand over SSH.

On the real 3-host test fleet (app, db, cache: Debian 13 under systemd-nspawn, booted here with
`tests/fleet/fleet.py`'s `session()` and always torn down), with codeb's real server
(`python -m codeb serve` in a subprocess, fresh data dir, on a free loopback port):

1. **API**: `POST /api/containers/deploy` of the staging environment of a project, the app
   image alternating `localhost/codeb-test-app:v1`/`:v2`; wall time from the request until the
   client sees the operation `succeeded` (codeb itself waits for the app's `/health`). A first
   untimed deploy provisions PostgreSQL and Redis; a second one is the API side's warm-up.
2. **By hand** on the same app host, over one SSH ControlMaster connection opened before the
   runs: write the same rendered `.container` unit with the image swapped, `systemctl
   daemon-reload`, `systemctl restart <unit>`, then GET `http://<app ip>:<port>/health` from
   here until it answers 200.
3. **No-op**: the image the host already runs, again through the API, right after (1) (target
   <= 1 s). A deploy leaves untouched the hosts whose part of the plan is unchanged since the
   last deploy and that answer their health check (codeb/features/containers/touch.py): this
   no-op runs no playbook at all, which the report checks.
4. **Repair no-op**: the same with `repair: true`, which probes every host as every no-op did
   before (the way drift made by hand is undone).

Each round runs (1) and (2) in alternating order, (3) and (4) right after (1); every step flips
the image, so each changed redeploy really changes the unit. After (2) an untimed drift check
tells codeb what the hand changed (its record of the app host is forgotten: the next API
deploy touches it, as it would after any change made by hand). Prints the medians, API / by
hand (target <= 3), the no-op medians, the load average, and where the API's time goes:
per-task `duration` from the operation's events, and the gaps request -> first event and last
event -> `succeeded`.

    sudo .venv/bin/python bench/redeploy.py [--runs 5] [--json]

Every process it starts is stopped by its PID, also on errors, Ctrl-C and SIGTERM. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import (
    Api,
    BenchError,
    _ssh_control,
    _stamp,
    base_env,
    close_masters,
    loadavg,
    median,
    say,
    sigterm_as_interrupt,
    start_codeb,
    stop,
    wait_operation,
)

HOSTS = ("app", "db", "cache")
PROJECT = "bench"
ENVIRONMENT = "staging"
APP_IMAGE = "localhost/codeb-test-app"
IMAGES = (f"{APP_IMAGE}:v1", f"{APP_IMAGE}:v2")
UNIT_DIR = "/etc/containers/systemd"
# Issue 15's targets: API / by hand <= 3, then <= 2; a no-op <= 1 s; a first deploy of
# app + db + redis on three hosts <= 6 s.
TARGET_RATIO = 3.0
TARGET_RATIO_NEXT = 2.0
TARGET_NOOP_S = 1.0
TARGET_FIRST_S = 6.0
HEALTH_TIMEOUT_S = 60.0


def other(image: str) -> str:
    return IMAGES[1] if image == IMAGES[0] else IMAGES[0]


# --- processes ---------------------------------------------------------------------------


# --- codeb's HTTP API ---------------------------------------------------------------------


def operation_events(api: Api, op_id: str) -> list[dict]:
    events: list[dict] = []
    after = 0
    while True:
        status, page = api.call("GET", f"/api/operations/{op_id}/events?after={after}&limit=500")
        if status != 200:
            raise BenchError(f"GET /api/operations/{op_id}/events answered {status}: {page}")
        events += page["events"]
        if not page["events"]:
            return events
        after = page["next_after"]


def stored_times(db_path: Path, op_id: str) -> dict[int, float]:
    """{seq: when the event was stored} from codeb's database (read only). The event writer
    flushes every 0.2 s, so a stored time is up to 0.2 s after the event itself."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT seq, created_at FROM operation_events WHERE operation_id = ?", (op_id,)
        ).fetchall()
    finally:
        conn.close()
    return {int(seq): _stamp(str(at).replace(" ", "T")) or 0.0 for seq, at in rows}


def playbook_runs(events: list[dict], times: dict[int, float]) -> list[dict]:
    """The operation's events cut into its ansible-playbook runs (each ends with
    playbook_on_stats): playbook, first and last event time, per-task durations by host."""
    runs: list[dict] = []
    current: dict | None = None
    for ev in events:
        if current is None:
            current = {"playbook": "?", "first": times.get(ev["seq"]), "tasks": {}}
            runs.append(current)
        current["last"] = times.get(ev["seq"])
        if ev["event"] == "playbook_on_start" and ev.get("data", {}).get("playbook"):
            current["playbook"] = Path(str(ev["data"]["playbook"])).name
        if ev.get("duration") is not None and ev.get("task"):
            # Two tasks of one name in a run (a one-step deploy whose image was missing runs
            # the apply task again): their times add up.
            per_host = current["tasks"].setdefault(ev["task"], {})
            host = ev.get("host") or "?"
            per_host[host] = per_host.get(host, 0.0) + ev["duration"]
        if ev["event"] == "playbook_on_stats":
            current = None
    return runs


def deploy(api: Api, image: str, poll_s: float, db_path: Path, repair: bool = False) -> dict:
    """One deploy through the API, timed from the request to `succeeded` seen by the client."""
    body: dict[str, Any] = {"project": PROJECT, "environment": ENVIRONMENT, "image": image}
    if repair:
        body["repair"] = True
    wall0, t0 = time.time(), time.perf_counter()
    status, answer = api.call("POST", "/api/containers/deploy", body)
    answered = time.perf_counter() - t0
    if status != 202 or answer.get("status") != "executed":
        raise BenchError(f"POST /api/containers/deploy answered {status}: {answer}")
    op = wait_operation(api, answer["result"]["operation"]["id"], poll_s)
    elapsed = time.perf_counter() - t0
    seen = wall0 + elapsed
    if op["status"] != "succeeded":
        raise BenchError(f"deploy of {image} ended {op['status']}: {op['error']}")
    events = operation_events(api, op["id"])
    runs = playbook_runs(events, stored_times(db_path, op["id"]))
    started, finished = _stamp(op["started_at"]), _stamp(op["finished_at"])

    def gap(a: float | None, b: float | None) -> float | None:
        return (b - a) if a is not None and b is not None else None

    # Consecutive phases from the request to `succeeded` seen (they add up to the wall time).
    phases: list[tuple[str, float | None]] = [
        ("request -> started", gap(wall0, started)),
        ("started -> first event", gap(started, runs[0]["first"] if runs else None)),
    ]
    for i, run in enumerate(runs):
        if i:
            prev = runs[i - 1]
            phases.append(
                (
                    f"{prev['playbook']} last event -> {run['playbook']} first event",
                    gap(prev["last"], run["first"]),
                )
            )
        phases.append((f"{run['playbook']} first -> last event", gap(run["first"], run["last"])))
    last_ev = runs[-1]["last"] if runs else None
    phases += [("last event -> finished", gap(last_ev, finished))]
    phases += [("finished -> seen by client", gap(finished, seen))]
    tasks = {
        f"{run['playbook']}: {name}": hosts for run in runs for name, hosts in run["tasks"].items()
    }
    return {
        "image": image,
        "operation": op["id"],
        "seconds": elapsed,
        "changed": {h: r.get("changed", 0) for h, r in op["recap"].items()},
        "events": len(events),
        "playbooks": [r["playbook"] for r in runs],
        "untouched": [u["host"] for u in (op.get("result") or {}).get("untouched", [])],
        "tasks": tasks,
        "phases": dict(phases),
        "gaps": {
            "request_to_answer": answered,
            "request_to_first_event": gap(wall0, runs[0]["first"] if runs else None),
            "last_event_to_succeeded_seen": gap(last_ev, seen),
        },
        "tasks_sum_of_max": {
            r["playbook"]: sum(max(h.values(), default=0.0) for h in r["tasks"].values())
            for r in runs
        },
        "load1": os.getloadavg()[0],
    }


# --- by hand over one SSH master ------------------------------------------------------------


class SshMaster:
    """One ControlMaster connection to a host (ssh -M -N in the foreground, our child), and
    commands sent over it."""

    def __init__(self, host: Any, control_path: Path) -> None:
        self.control_path = control_path
        checking = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        if host.known_hosts is not None and Path(host.known_hosts).exists():
            checking = ["-o", "StrictHostKeyChecking=yes"]
            checking += ["-o", f"UserKnownHostsFile={host.known_hosts}"]
        self.common = ["ssh", "-F", "/dev/null", "-i", str(host.ssh_private_key_path), *checking]
        self.common += ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
        self.common += ["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
        self.common += ["-o", f"ControlPath={control_path}"]
        self.target = f"{host.ssh_user}@{host.ip}"
        self.proc: subprocess.Popen | None = None

    def open(self, procs: list[subprocess.Popen]) -> None:
        argv = [*self.common, "-M", "-N", "-o", "ControlPersist=no", self.target]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        procs.append(self.proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BenchError(f"the SSH master exited {self.proc.returncode}: {err}")
            if self.alive():
                return
            time.sleep(0.05)
        raise BenchError("the SSH master did not come up within 30 s")

    def alive(self) -> bool:
        return _ssh_control(self.control_path, "check").returncode == 0

    def run(self, command: str, stdin: bytes | None = None) -> bytes:
        argv = [*self.common, "-o", "ControlMaster=no", self.target, command]
        res = subprocess.run(
            argv,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if res.returncode != 0:
            raise BenchError(f"ssh `{command}` exited {res.returncode}: {res.stderr!r}")
        return res.stdout

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _ssh_control(self.control_path, "exit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        stop(self.proc)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def wait_health(url: str, poll_s: float) -> int:
    """GET /health until 200; returns the number of attempts."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(url)[0] == 200:
                return attempts
        time.sleep(poll_s)
    raise BenchError(f"{url} did not answer 200 within {HEALTH_TIMEOUT_S:.0f} s")


def by_hand(
    master: SshMaster, unit: str, content: str, base_url: str, poll_s: float, image: str
) -> dict:
    path = f"{UNIT_DIR}/{unit}.container"
    marks = [time.perf_counter()]
    master.run(f"umask 022 && cat > {path}.bench && mv -f {path}.bench {path}", content.encode())
    marks.append(time.perf_counter())
    master.run("systemctl daemon-reload")
    marks.append(time.perf_counter())
    master.run(f"systemctl restart {unit}.service")
    marks.append(time.perf_counter())
    attempts = wait_health(base_url + "health", poll_s)
    marks.append(time.perf_counter())
    steps = ("write", "daemon_reload", "restart", "health")
    return {
        "image": image,
        "seconds": marks[-1] - marks[0],
        "steps": {s: marks[i + 1] - marks[i] for i, s in enumerate(steps)},
        "health_attempts": attempts,
        "load1": os.getloadavg()[0],
    }


def unit_for(template: str, image: str) -> str:
    lines = template.splitlines(keepends=True)
    hits = [i for i, ln in enumerate(lines) if ln.startswith("Image=")]
    if len(hits) != 1:
        raise BenchError(f"expected one Image= line in the unit, found {len(hits)}")
    lines[hits[0]] = f"Image={image}\n"
    return "".join(lines)


def check_serving(base_url: str, image: str) -> None:
    """The app answers with the version of the image just deployed (untimed)."""
    tag = image.rsplit(":", 1)[1]
    status, text = http_get(base_url)
    if status != 200 or tag not in text:
        raise BenchError(f"{base_url} should serve {tag}: {status} {text[:200]!r}")


# --- the benchmark --------------------------------------------------------------------------


def task_table(runs: list[dict], top: int) -> list[dict]:
    """Per task over the runs: median of the slowest host's duration (the play waits for it)
    and of the sum over hosts (module work on all three)."""
    names: list[str] = []
    for r in runs:
        names += [t for t in r["tasks"] if t not in names]
    rows = []
    for name in names:
        per = [r["tasks"].get(name, {}) for r in runs]
        rows.append(
            {
                "task": name,
                "max_host_s": median([max(p.values(), default=0.0) for p in per]),
                "sum_hosts_s": median([sum(p.values()) for p in per]),
                "hosts": len(max(per, key=len)),
            }
        )
    rows.sort(key=lambda r: r["max_host_s"], reverse=True)
    return rows[:top]


def medians(dicts: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Median of each key over the runs, keys in first-seen order."""
    keys: list[str] = []
    for d in dicts:
        keys += [k for k in d if k not in keys]
    out: dict[str, float | None] = {}
    for k in keys:
        values = [v for d in dicts if (v := d.get(k)) is not None]
        out[k] = median(values) if values else None
    return out


def drift_check(api: Api, poll_s: float) -> None:
    """Untimed: codeb reads the hosts after a change made by hand (and forgets what it had
    applied where it sees drift)."""
    status, answer = api.call("POST", "/api/containers/drift-check", {})
    if status != 202 or answer.get("status") != "executed":
        raise BenchError(f"POST /api/containers/drift-check answered {status}: {answer}")
    op = wait_operation(api, answer["result"]["operation"]["id"], poll_s)
    if op["status"] != "succeeded":
        raise BenchError(f"drift check ended {op['status']}: {op['error']}")


def summary(runs: list[dict], top: int) -> dict:
    secs = [r["seconds"] for r in runs]
    return {
        "seconds": secs,
        "median_s": median(secs),
        "phases_median_s": medians([r["phases"] for r in runs]),
        "gaps_median_s": medians([r["gaps"] for r in runs]),
        "tasks_sum_of_max_median_s": medians([r["tasks_sum_of_max"] for r in runs]),
        "top_tasks": task_table(runs, top),
        "playbooks": sorted({" + ".join(r["playbooks"]) for r in runs}),
        "events_per_run": sorted({r["events"] for r in runs}),
    }


def bench(args: argparse.Namespace, workdir: Path, procs: list[subprocess.Popen]) -> dict:
    from codeb.executor.runner import control_dir_for
    from tests.fleet import fleet as fleetlib

    data_dir = (workdir / "codeb-data").resolve()
    db_path = data_dir / "codeb.db"
    api_control = control_dir_for(data_dir / "runs")
    hand_control = Path(tempfile.mkdtemp(prefix="cbr-", dir="/tmp"))
    master: SshMaster | None = None
    say(f"load average {loadavg()}; waiting for the fleet session lock if another run holds it")
    with fleetlib.session(list(HOSTS)) as hosts:
        by_name = {h.name: h for h in hosts}
        app = by_name["app"]
        subnet = str(fleetlib.Config.from_env().subnet)
        env = {
            **base_env(),
            "CODEB_DATA_DIR": str(data_dir),
            "CODEB_ALLOWED_NETWORKS": subnet,
            "CODEB_SSH_PRIVATE_KEY_FILE": str(app.ssh_private_key_path),
        }
        try:
            api = start_codeb(workdir, env, procs)
            say("registering app, db and cache (their first bootstrap)")
            ops = []
            for h in hosts:
                body = {"name": h.name, "ip": h.ip, "role": h.name}
                status, reg = api.call("POST", "/api/servers", body)
                if status != 202:
                    raise BenchError(f"POST /api/servers answered {status}: {reg}")
                ops.append(reg["operation"]["id"])
            for op_id in ops:
                op = wait_operation(api, op_id, args.poll)
                if op["status"] != "succeeded":
                    raise BenchError(f"bootstrap {op_id} ended {op['status']}: {op['error']}")
            status, created = api.call("POST", "/api/projects", {"name": PROJECT})
            if status != 201:
                raise BenchError(f"POST /api/projects answered {status}: {created}")

            say("warm-up: first deploy (provisions PostgreSQL and Redis)")
            current = IMAGES[0]
            first = deploy(api, current, args.poll, db_path)
            status, full = api.call("GET", f"/api/operations/{first['operation']}")
            base_url = full["result"]["url"]
            check_serving(base_url, current)
            say(f"first deploy {first['seconds']:.2f} s; app at {base_url}")
            unit = f"{PROJECT}-{ENVIRONMENT}-app"
            template = app.ssh(f"cat {UNIT_DIR}/{unit}.container", check=True).stdout
            unit_for(template, current)  # exactly one Image= line

            master = SshMaster(app, hand_control / "m")
            master.open(procs)
            # Warm-ups of both sides: one changed redeploy each.
            current = other(current)
            warm_api = deploy(api, current, args.poll, db_path)
            check_serving(base_url, current)
            current = other(current)
            content = unit_for(template, current)
            warm_hand = by_hand(master, unit, content, base_url, args.hand_poll, current)
            check_serving(base_url, current)
            drift_check(api, args.poll)
            say(
                f"warm-up: API {warm_api['seconds']:.2f} s, by hand {warm_hand['seconds']:.2f} s"
                f" (load {loadavg()})"
            )

            results: dict[str, list[dict]] = {"api": [], "hand": [], "noop": [], "repair": []}
            master_alive: list[bool] = []
            for i in range(args.runs):
                for side in ("api", "hand") if i % 2 == 0 else ("hand", "api"):
                    current = other(current)
                    if side == "api":
                        results["api"].append(deploy(api, current, args.poll, db_path))
                        check_serving(base_url, current)
                        noop = deploy(api, current, args.poll, db_path)
                        results["noop"].append(noop)
                        if any(noop["changed"].values()) or noop["playbooks"]:
                            say(f"WARNING: the no-op ran {noop['playbooks']}: {noop['changed']}")
                        fixed = deploy(api, current, args.poll, db_path, repair=True)
                        results["repair"].append(fixed)
                        if any(fixed["changed"].values()):
                            say(f"WARNING: the repair no-op changed something: {fixed['changed']}")
                    else:
                        master_alive.append(master.alive())
                        content = unit_for(template, current)
                        results["hand"].append(
                            by_hand(master, unit, content, base_url, args.hand_poll, current)
                        )
                        drift_check(api, args.poll)
                    check_serving(base_url, current)
                say(
                    f"run {i + 1}/{args.runs}: API {results['api'][-1]['seconds']:.2f} s, "
                    f"by hand {results['hand'][-1]['seconds']:.2f} s, "
                    f"no-op {results['noop'][-1]['seconds']:.2f} s, repair no-op "
                    f"{results['repair'][-1]['seconds']:.2f} s (load {loadavg()})"
                )
            api.close()
        finally:
            if master is not None:
                master.close()
            for p in procs:
                stop(p)
            closed = close_masters(api_control)
            shutil.rmtree(api_control, ignore_errors=True)
            shutil.rmtree(hand_control, ignore_errors=True)
            say(f"stopped codeb; closed our SSH master and {closed} of codeb's")

    api_s = [r["seconds"] for r in results["api"]]
    hand_s = [r["seconds"] for r in results["hand"]]
    noop_s = [r["seconds"] for r in results["noop"]]
    repair_s = [r["seconds"] for r in results["repair"]]
    ratio = median(api_s) / median(hand_s)
    return {
        "host": {"name": app.name, "ip": app.ip},
        "unit": f"{unit}.service",
        "url": base_url,
        "runs": args.runs,
        "poll_s": args.poll,
        "hand_poll_s": args.hand_poll,
        "first_deploy_s": first["seconds"],
        "api": summary(results["api"], args.top),
        "hand": {
            "seconds": hand_s,
            "median_s": median(hand_s),
            "steps_median_s": {
                s: median([r["steps"][s] for r in results["hand"]])
                for s in ("write", "daemon_reload", "restart", "health")
            },
            "health_attempts": [r["health_attempts"] for r in results["hand"]],
            "master_alive_before_runs": f"{sum(master_alive)}/{len(master_alive)}",
        },
        "noop": {
            **summary(results["noop"], args.top),
            "changed": [r["changed"] for r in results["noop"]],
            "all_unchanged": all(not any(r["changed"].values()) for r in results["noop"]),
            "no_playbook": all(not r["playbooks"] for r in results["noop"]),
            "untouched": sorted({h for r in results["noop"] for h in r["untouched"]}),
        },
        "repair": {
            **summary(results["repair"], args.top),
            "changed": [r["changed"] for r in results["repair"]],
            "all_unchanged": all(not any(r["changed"].values()) for r in results["repair"]),
            "median_s": median(repair_s),
        },
        "ratio": ratio,
        "paired_ratio_median": median([a / h for a, h in zip(api_s, hand_s, strict=True)]),
        "target_ratio": TARGET_RATIO,
        "ratio_met": ratio <= TARGET_RATIO,
        "target_ratio_next": TARGET_RATIO_NEXT,
        "ratio_next_met": ratio <= TARGET_RATIO_NEXT,
        "target_first_s": TARGET_FIRST_S,
        "first_met": first["seconds"] <= TARGET_FIRST_S,
        "target_noop_s": TARGET_NOOP_S,
        "noop_met": median(noop_s) <= TARGET_NOOP_S,
        "load1_during_runs": [
            r["load1"] for side in ("api", "hand", "noop", "repair") for r in results[side]
        ],
    }


# --- report -----------------------------------------------------------------------------------


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _breakdown(s: dict) -> list[str]:
    g, sums = s["gaps_median_s"], s["tasks_sum_of_max_median_s"]
    lines = [
        f"     request -> first event {_f(g['request_to_first_event'])} s, last event -> "
        f"succeeded seen {_f(g['last_event_to_succeeded_seen'])} s (POST answered in "
        f"{_f(g['request_to_answer'])} s); playbooks: {', '.join(s['playbooks'])}",
        "     phases (medians, consecutive; event times are when codeb stored them, <= 0.2 s "
        "late):",
    ]
    for name, value in s["phases_median_s"].items():
        extra = ""
        if name.endswith(" first -> last event"):
            pb = name.removesuffix(" first -> last event")
            extra = f"  (its tasks' slowest-host durations add up to {_f(sums.get(pb))} s)"
        lines.append(f"       {_f(value):>7}  {name}{extra}")
    lines.append("     top tasks (median s: slowest host / sum over hosts):")
    for t in s["top_tasks"]:
        lines.append(
            f"       {t['max_host_s']:6.3f} / {t['sum_hosts_s']:6.3f}  {t['task']} "
            f"({t['hosts']} host{'s' if t['hosts'] != 1 else ''})"
        )
    return lines


def report(r: dict) -> str:
    b = r["bench"]
    a, h, n = b["api"], b["hand"], b["noop"]
    hs = h["steps_median_s"]
    loads = b["load1_during_runs"]
    lines = [
        f"load average at start: {r['load_start']}, at end: {r['load_end']}; 1-min load during "
        f"runs {min(loads):.2f}..{max(loads):.2f}",
        f"redeploy of {b['unit']} on {b['host']['ip']} ({b['url']}), {b['runs']} runs each, "
        f"alternating; first deploy (provisions db + redis) {b['first_deploy_s']:.2f} s "
        f"(target <= {b.get('target_first_s', TARGET_FIRST_S):g} s: "
        + ("met" if b.get("first_met") else "MISSED")
        + ")",
        "",
        "1. API (POST /api/containers/deploy -> succeeded, codeb waits for /health)",
        "   " + " ".join(f"{x:.2f}" for x in a["seconds"]),
        f"   median {a['median_s']:.3f} s",
        *_breakdown(a),
        "",
        f"2. by hand over one SSH master (alive before runs {h['master_alive_before_runs']}): "
        "write unit, daemon-reload, restart, poll /health",
        "   " + " ".join(f"{x:.2f}" for x in h["seconds"]),
        f"   median {h['median_s']:.3f} s (write {hs['write']:.3f}, daemon-reload "
        f"{hs['daemon_reload']:.3f}, restart {hs['restart']:.3f}, health {hs['health']:.3f}; "
        f"health attempts {h['health_attempts']}, poll {b['hand_poll_s']} s)",
        "",
        f"   API / by hand: {b['ratio']:.2f} (target <= {b['target_ratio']:g}, then <= "
        f"{b.get('target_ratio_next', TARGET_RATIO_NEXT):g}): "
        + ("met" if b["ratio_met"] else "MISSED")
        + (", next met" if b.get("ratio_next_met") else ", next missed")
        + f"; median of per-round ratios {b['paired_ratio_median']:.2f}",
        "",
        "3. no-op redeploy through the API (same image)",
        "   " + " ".join(f"{x:.2f}" for x in n["seconds"]),
        f"   median {n['median_s']:.3f} s (target <= {b['target_noop_s']:g} s): "
        + ("met" if b["noop_met"] else "MISSED")
        + f"; nothing changed on any host: {n['all_unchanged']}; no playbook ran: "
        f"{n.get('no_playbook')} (untouched: {', '.join(n.get('untouched', [])) or 'none'})",
        *_breakdown(n),
    ]
    if "repair" in b:
        p = b["repair"]
        lines += [
            "",
            "4. repair no-op through the API (same image, repair: true: every host probed)",
            "   " + " ".join(f"{x:.2f}" for x in p["seconds"]),
            f"   median {p['median_s']:.3f} s; nothing changed on any host: {p['all_unchanged']}",
            *_breakdown(p),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each kind (5)")
    parser.add_argument("--poll", type=float, default=0.05, help="operation poll (0.05 s)")
    parser.add_argument(
        "--hand-poll", type=float, default=0.05, help="by hand: /health poll (0.05 s)"
    )
    parser.add_argument("--top", type=int, default=8, help="tasks listed (8)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (codeb's log)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.poll <= 0 or args.hand_poll <= 0 or args.top < 1:
        parser.error("--runs and --top must be >= 1, the polls > 0")
    if os.geteuid() != 0:
        parser.error("the fleet needs root: run as root")

    workdir = Path(tempfile.mkdtemp(prefix="cb-redeploy-bench-"))
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
    missed = not (result["bench"]["ratio_met"] and result["bench"]["noop_met"])
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
