"""What codeb's executor costs on top of Ansible itself.

1. **API vs by hand**: `playbooks/bootstrap.yml` against one real fleet host (Debian 13 under
   systemd-nspawn, booted here with `tests/fleet/fleet.py` and always torn down), run
   `--runs` times each way, alternating:
   (a) through codeb's real server (`python -m codeb serve` in a subprocess): POST
       `/api/servers/{ip}/bootstrap`, poll `GET /api/operations/{id}` until the status is
       final; wall time from the request to the final status seen by the client;
   (b) by hand: `ansible-playbook -i <inventory written by codeb inventory export>
       playbooks/bootstrap.yml --limit app`, with codeb's ansible.cfg (pipelining,
       ControlMaster=auto, ControlPersist=60s), the same key and the same known_hosts.
   SSH masters are warm in both (a master of each side from the warm-up runs is alive before
   every timed run, checked) unless `--cold`, which closes every master of both sides before
   each timed run. Target: median(API) / median(by hand) <= 1.05.
2. **Event storage on vs off**: a debug loop that emits `--events` (10,000) runner events
   against 127.0.0.1 with `connection: local`, run through `codeb.executor.runner.run_playbook`
   with the worker's real `EventWriter` (SQLite database built by codeb's `build_deps`, events
   in `operation_events`) vs a no-op `on_event`, alternating. Target: <= 5 % slower. Checks that
   every event was stored, in order.

    sudo .venv/bin/python bench/executor_overhead.py [--runs 7] [--event-runs 5] [--json]

Needs root for the fleet (part 1; `--part events` runs without it). Every process it starts
is stopped by its PID, also on errors, Ctrl-C and SIGTERM. See bench/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    REPO_ROOT,
    RUN_TIMEOUT_S,
    Api,
    BenchError,
    _stamp,
    base_env,
    close_masters,
    loadavg,
    masters,
    median,
    say,
    sigterm_as_interrupt,
    start_codeb,
    stop,
    tree_cpu,
    wait_operation,
)

BENCH_PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
EVENTS_PLAYBOOK = BENCH_PLAYBOOKS / "events.yml"
PLAYBOOK = "bootstrap.yml"
HOST_NAME = "app"
# playbook_on_start, play_start, task_start, runner_on_start, runner_on_ok, stats: the rest
# are loop items.
FIXED_EVENTS = 6
TARGET_API_RATIO = 1.05
TARGET_EVENTS_SLOWDOWN = 0.05


# --- processes ---------------------------------------------------------------------------


# --- SSH masters (ControlPersist) --------------------------------------------------------


# --- codeb's HTTP API ---------------------------------------------------------------------


def children_cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def run_api(api: Api, ip: str, poll_s: float) -> dict:
    """One bootstrap through the API: seconds from the request to the final status seen."""
    cpu0 = tree_cpu(api.pid)
    wall0, t0 = time.time(), time.perf_counter()
    status, answer = api.call("POST", f"/api/servers/{ip}/bootstrap")
    if status != 202:
        raise BenchError(f"POST /api/servers/{ip}/bootstrap answered {status}: {answer}")
    op = wait_operation(api, answer["id"], poll_s)
    elapsed = time.perf_counter() - t0
    seen = time.time()
    cpu = tree_cpu(api.pid) - cpu0
    if op["status"] != "succeeded":
        raise BenchError(f"operation {op['id']} ended {op['status']}: {op['error']}")
    started, finished = _stamp(op["started_at"]), _stamp(op["finished_at"])
    return {
        "seconds": elapsed,
        "cpu_s": cpu,
        # Where the wall time went, by the server's clock (the same machine's).
        "to_start_s": (started - wall0) if started else None,
        "run_s": op["duration_s"],
        "after_finish_s": (seen - finished) if finished else None,
    }


def run_by_hand(inventory: Path, env: dict[str, str], log_path: Path) -> dict:
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(inventory),
        str(REPO_ROOT / "playbooks" / PLAYBOOK),
        "--limit",
        HOST_NAME,
    ]
    cpu0, t0 = children_cpu(), time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
            timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
    elapsed, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise BenchError(f"ansible-playbook exited with {proc.returncode}:\n{tail}")
    return {"seconds": elapsed, "cpu_s": cpu}


# --- part 1 ---------------------------------------------------------------------------------


def bench_api(args: argparse.Namespace, workdir: Path, procs: list[subprocess.Popen]) -> dict:
    from codeb.executor.runner import control_dir_for
    from tests.fleet import fleet as fleetlib

    data_dir = (workdir / "codeb-data").resolve()
    api_control = control_dir_for(data_dir / "runs")
    # Short, like codeb's: a long ControlPath silently disables ControlPersist.
    hand_control = Path(tempfile.mkdtemp(prefix="cbh-", dir="/tmp"))
    say(f"load average {loadavg()}; waiting for the fleet session lock if another run holds it")
    with fleetlib.session([HOST_NAME]) as hosts:
        host = hosts[0]
        subnet = str(fleetlib.Config.from_env().subnet)
        codeb_env = {
            **base_env(),
            "CODEB_DATA_DIR": str(data_dir),
            "CODEB_ALLOWED_NETWORKS": subnet,
            "CODEB_SSH_PRIVATE_KEY_FILE": str(host.ssh_private_key_path),
        }
        try:
            api = start_codeb(workdir, codeb_env, procs)
            # Registering runs the first bootstrap: the API side's warm-up (and it pins the
            # host key in codeb's known_hosts, which the exported inventory then uses).
            status, reg = api.call(
                "POST", "/api/servers", {"name": HOST_NAME, "ip": host.ip, "role": "app"}
            )
            if status != 202:
                raise BenchError(f"POST /api/servers answered {status}: {reg}")
            first = wait_operation(api, reg["operation"]["id"], args.poll)
            if first["status"] != "succeeded":
                raise BenchError(f"the first bootstrap ended {first['status']}: {first['error']}")
            inventory = workdir / "inventory" / "hosts.yml"
            subprocess.run(
                [sys.executable, "-m", "codeb", "inventory", "export", "--output", str(inventory)],
                cwd=REPO_ROOT, env=codeb_env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            hand_env = {
                **base_env(),
                "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(hand_control),
                # codeb's runs turn the journal of manual runs off: the same work on both sides.
                "CODEB_JOURNAL": "off",
                "CODEB_JOURNAL_DIR": str(workdir / "journal"),
            }
            hand_log = workdir / "by-hand.log"
            run_by_hand(inventory, hand_env, hand_log)  # the by-hand side's warm-up
            results: dict[str, list[dict]] = {"api": [], "hand": []}
            warm: dict[str, list[bool]] = {"api": [], "hand": []}
            sides: dict[str, tuple[Path, Callable[[], dict]]] = {
                "api": (api_control, lambda: run_api(api, host.ip, args.poll)),
                "hand": (hand_control, lambda: run_by_hand(inventory, hand_env, hand_log)),
            }
            for i in range(args.runs):
                order = ("api", "hand") if i % 2 == 0 else ("hand", "api")
                for side in order:
                    control_dir, run = sides[side]
                    if args.cold:
                        close_masters(api_control)
                        close_masters(hand_control)
                    warm[side].append(bool(masters(control_dir)))
                    results[side].append(run())
                say(
                    f"run {i + 1}/{args.runs}: API {results['api'][-1]['seconds']:.2f} s, "
                    f"by hand {results['hand'][-1]['seconds']:.2f} s (load {loadavg()})"
                )
            api.close()
        finally:
            closed = close_masters(api_control) + close_masters(hand_control)
            for p in procs:
                stop(p)
            shutil.rmtree(api_control, ignore_errors=True)
            shutil.rmtree(hand_control, ignore_errors=True)
            say(f"closed {closed} ssh master(s); stopped codeb")
    api_s = [r["seconds"] for r in results["api"]]
    hand_s = [r["seconds"] for r in results["hand"]]
    ratio = median(api_s) / median(hand_s)

    def part(key: str) -> float | None:
        values = [r[key] for r in results["api"] if r[key] is not None]
        return median(values) if values else None

    return {
        "playbook": f"playbooks/{PLAYBOOK}",
        "host": {"name": host.name, "ip": host.ip},
        "runs": args.runs,
        "ssh_masters": "cold (closed before every run)" if args.cold else "warm in both",
        "masters_alive_before_runs": {k: f"{sum(v)}/{len(v)}" for k, v in warm.items()},
        "poll_s": args.poll,
        "api_s": api_s,
        "hand_s": hand_s,
        "api_median_s": median(api_s),
        "hand_median_s": median(hand_s),
        "ratio": ratio,
        # Each round's API ÷ by hand: steadier than the ratio of medians on a busy machine.
        "paired_ratio_median": median([x / y for x, y in zip(api_s, hand_s, strict=True)]),
        "target_ratio": TARGET_API_RATIO,
        "met": ratio <= TARGET_API_RATIO,
        # CPU per run (steadier than wall time on a busy machine): codeb's server process with
        # its ansible-playbook (+ forks), vs the by-hand ansible-playbook (+ forks).
        "cpu_median_s": {
            "api": median([r["cpu_s"] for r in results["api"]]),
            "hand": median([r["cpu_s"] for r in results["hand"]]),
        },
        "api_breakdown_median_s": {
            "request_to_started": part("to_start_s"),
            "started_to_finished": part("run_s"),
            "finished_to_seen": part("after_finish_s"),
        },
    }


# --- part 2 -----------------------------------------------------------------------------------


def bench_events(args: argparse.Namespace, workdir: Path) -> dict:
    from codeb.app import build_deps
    from codeb.config import load_settings
    from codeb.executor.inventory import Host, SshSettings
    from codeb.executor.runner import PlaybookRun, run_playbook
    from codeb.executor.worker import EventWriter
    from codeb.services import operations
    from codeb.services.context import SYSTEM
    from codeb.store.models import OperationEvent

    data_dir = (workdir / "events-data").resolve()
    deps = build_deps(load_settings(environ={"CODEB_DATA_DIR": str(data_dir)}))
    items = max(1, args.events - FIXED_EVENTS)
    run = PlaybookRun(
        playbook=str(EVENTS_PLAYBOOK),
        targets=[Host("localhost", HOST, "control")],
        extravars={"codeb_bench_items": items},
        timeout_s=int(RUN_TIMEOUT_S),
    )
    ssh = SshSettings(private_key=data_dir / "unused-key", known_hosts=data_dir / "known_hosts")
    work = data_dir / "runs"

    def cpu() -> tuple[float, float]:
        """CPU seconds of this process (runner's event loop, the writer) and of its children
        (ansible-playbook and its forks): steadier than wall time on a busy machine."""
        me, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime

    def once(store: bool) -> dict:
        if not store:
            c0, t0 = cpu(), time.perf_counter()
            outcome = run_playbook(run, ssh=ssh, work_dir=work, on_event=lambda record: None)
            elapsed, c1 = time.perf_counter() - t0, cpu()
            if outcome.status != "successful":
                raise BenchError(f"the events playbook ended {outcome.status} (rc={outcome.rc})")
            return {"seconds": elapsed, "cpu_self": c1[0] - c0[0], "cpu_children": c1[1] - c0[1]}
        with deps.db.connection_context(), deps.write():
            op = operations.create_operation(deps, SYSTEM, "bench_events", [])
        c0, t0 = cpu(), time.perf_counter()
        writer = EventWriter(deps, op.id)  # as the worker does: made before, closed after
        try:
            outcome = run_playbook(run, ssh=ssh, work_dir=work, on_event=writer.put)
        finally:
            writer.close()
        elapsed, c1 = time.perf_counter() - t0, cpu()
        if outcome.status != "successful":
            raise BenchError(f"the events playbook ended {outcome.status} (rc={outcome.rc})")
        with deps.db.connection_context():
            stored = [
                e.seq
                for e in OperationEvent.select(OperationEvent.seq)
                .where(OperationEvent.operation == op.id)
                .order_by(OperationEvent.id)
            ]
        emitted = [r.seq for r in writer.records]
        return {
            "seconds": elapsed,
            "cpu_self": c1[0] - c0[0],
            "cpu_children": c1[1] - c0[1],
            "emitted": len(emitted),
            "stored": len(stored),
            "in_order": stored == emitted and all(a < b for a, b in itertools.pairwise(stored)),
            "contiguous": stored == list(range(1, len(stored) + 1)),
        }

    say(f"events: warm-up, then {args.event_runs} runs each way (load {loadavg()})")
    once(store=False)
    results: dict[str, list[dict]] = {"on": [], "off": []}
    for i in range(args.event_runs):
        for store in (True, False) if i % 2 == 0 else (False, True):
            results["on" if store else "off"].append(once(store))
        say(
            f"events run {i + 1}/{args.event_runs}: on {results['on'][-1]['seconds']:.2f} s, "
            f"off {results['off'][-1]['seconds']:.2f} s, stored {results['on'][-1]['stored']} "
            f"(load {loadavg()})"
        )
    deps.db.close()
    on_s = [r["seconds"] for r in results["on"]]
    off_s = [r["seconds"] for r in results["off"]]
    slowdown = median(on_s) / median(off_s) - 1
    return {
        "playbook": str(EVENTS_PLAYBOOK.relative_to(REPO_ROOT)),
        "target": "127.0.0.1 (connection: local)",
        "loop_items": items,
        "runs": args.event_runs,
        "on_s": on_s,
        "off_s": off_s,
        "on_median_s": median(on_s),
        "off_median_s": median(off_s),
        "slowdown": slowdown,
        "paired_slowdown_median": median([x / y - 1 for x, y in zip(on_s, off_s, strict=True)]),
        "target_slowdown": TARGET_EVENTS_SLOWDOWN,
        "met": slowdown <= TARGET_EVENTS_SLOWDOWN,
        "cpu_median_s": {
            side: {
                "runner_process": median([r["cpu_self"] for r in results[side]]),
                "ansible_playbook": median([r["cpu_children"] for r in results[side]]),
            }
            for side in ("on", "off")
        },
        "events_emitted": [r["emitted"] for r in results["on"]],
        "events_stored": [r["stored"] for r in results["on"]],
        "all_stored_in_order": all(
            r["in_order"] and r["stored"] == r["emitted"] for r in results["on"]
        ),
        "seq_contiguous_from_1": all(r["contiguous"] for r in results["on"]),
    }


# --- report -------------------------------------------------------------------------------


def report(result: dict) -> str:
    lines = [f"load average at start: {result['load_start']}, at end: {result['load_end']}"]
    a = result.get("api")
    if a:
        b = a["api_breakdown_median_s"]
        lines += [
            "",
            f"1. API vs by hand: {a['playbook']} on {a['host']['ip']}, {a['runs']} runs each, "
            f"alternating; SSH masters {a['ssh_masters']} "
            f"(alive before runs: API {a['masters_alive_before_runs']['api']}, "
            f"by hand {a['masters_alive_before_runs']['hand']})",
            "   API      " + " ".join(f"{x:.2f}" for x in a["api_s"]),
            "   by hand  " + " ".join(f"{x:.2f}" for x in a["hand_s"]),
            f"   median API {a['api_median_s']:.3f} s, by hand {a['hand_median_s']:.3f} s, "
            f"ratio {a['ratio']:.3f} (target <= {a['target_ratio']}): "
            + ("met" if a["met"] else "MISSED")
            + f"; median of per-round ratios {a['paired_ratio_median']:.3f}",
            f"   API breakdown (medians): request->started {b['request_to_started']:.3f} s, "
            f"started->finished {b['started_to_finished']:.3f} s, "
            f"finished->seen by client {b['finished_to_seen']:.3f} s (poll {a['poll_s']} s)",
            f"   CPU per run (medians): codeb server + its ansible-playbook "
            f"{a['cpu_median_s']['api']:.2f} s, by hand {a['cpu_median_s']['hand']:.2f} s",
        ]
    e = result.get("events")
    if e:
        lines += [
            "",
            f"2. Event storage on vs off: {e['playbook']} ({e['loop_items']} debug items) "
            f"against {e['target']}, {e['runs']} runs each, alternating",
            "   on   " + " ".join(f"{x:.2f}" for x in e["on_s"]),
            "   off  " + " ".join(f"{x:.2f}" for x in e["off_s"]),
            f"   median on {e['on_median_s']:.3f} s, off {e['off_median_s']:.3f} s, "
            f"slowdown {e['slowdown'] * 100:+.1f} % (target <= "
            f"{e['target_slowdown'] * 100:.0f} %): "
            + ("met" if e["met"] else "MISSED")
            + f"; median of per-round slowdowns {e['paired_slowdown_median'] * 100:+.1f} %",
            "   CPU medians (s): this process (runner's event loop + writer) on "
            f"{e['cpu_median_s']['on']['runner_process']:.2f} / "
            f"off {e['cpu_median_s']['off']['runner_process']:.2f}; ansible-playbook on "
            f"{e['cpu_median_s']['on']['ansible_playbook']:.2f} / "
            f"off {e['cpu_median_s']['off']['ansible_playbook']:.2f}",
            f"   events stored per run: {sorted(set(e['events_stored']))} "
            f"(emitted {sorted(set(e['events_emitted']))}); all stored in order: "
            f"{e['all_stored_in_order']}; seq 1..N without gaps: {e['seq_contiguous_from_1']}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="API and by-hand runs each (7)")
    parser.add_argument(
        "--event-runs", type=int, default=5, help="event storage on and off runs each (5)"
    )
    parser.add_argument("--events", type=int, default=10_000, help="events per run (10000)")
    parser.add_argument("--part", choices=("all", "api", "events"), default="all")
    parser.add_argument("--cold", action="store_true", help="close SSH masters before each run")
    parser.add_argument("--poll", type=float, default=0.05, help="status poll interval (0.05 s)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.event_runs < 1 or not 10 <= args.events <= 100_000:
        parser.error("--runs and --event-runs must be >= 1, --events within 10..100000")
    if args.part in ("all", "api") and os.geteuid() != 0:
        parser.error("the fleet needs root: run as root, or use --part events")

    workdir = Path(tempfile.mkdtemp(prefix="cb-exec-bench-"))
    procs: list[subprocess.Popen] = []
    result: dict[str, Any] = {"load_start": loadavg()}
    try:
        with sigterm_as_interrupt():
            if args.part in ("all", "api"):
                result["api"] = bench_api(args, workdir, procs)
            if args.part in ("all", "events"):
                result["events"] = bench_events(args, workdir)
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
    missed = [k for k in ("api", "events") if k in result and not result[k]["met"]]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
