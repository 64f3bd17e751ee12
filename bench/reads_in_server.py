"""Where a cached `GET /api/projects` spends its time inside the server, under wrk's load.

bench/projects_throughput.py prices codeb against bare waitress; this one says what the gap is
made of. Three servers, each a real `codeb serve` (same process, same waitress settings, same
background threads) whose WSGI app is, in turn:

- `codeb`: codeb's own app (the 100-project page, as projects_throughput.py builds it);
- `falcon`: a bare Falcon app answering the same bytes from one route;
- `plain`: a WSGI function answering the same bytes (what bare waitress serves).

Each app is wrapped to add up the thread CPU time (CLOCK_THREAD_CPUTIME_ID) of every call, so
the figure is what the app costs where it runs: among waitress's threads, wrk and the kernel
sharing the CPUs. A second figure replays the last request's environ 2,000 times with no other
load (the "isolated" cost a microbenchmark sees); their quotient shows how much dearer the same
Python is inside a loaded server.

    .venv/bin/python bench/reads_in_server.py [--rounds 3] [--duration 5] [--json]

Every process it starts is stopped by its PID, also on errors and Ctrl-C. See bench/README.md.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _common import BenchError, free_port, loadavg, say, stop
from projects_throughput import (
    HOST,
    KEY_LINE,
    check_listing,
    child_env,
    create_projects,
    default_threads,
    ensure_wrk,
    measured_and_printed,
    run_wrk,
    start,
    wait_listening,
)

MODES = ("plain", "falcon", "codeb")
PROJECTS = 100
REPLAYS = 2000
TIMED = "timed "


# --- the server side (`--serve MODE`, a child process) ---------------------------------------


def timed(inner):  # type: ignore[no-untyped-def]
    """`inner` adding up its calls' thread CPU time. SIGUSR1 prints and resets the sums
    (the measuring side sends it between wrk runs, when no thread is adding); SIGUSR2
    replays the last environ REPLAYS times in five batches (with no load applied) and
    prints the best batch's mean."""
    lock = threading.Lock()
    sums: list[list[int]] = []  # one [calls, cpu_ns] per thread, added up on a signal
    local = threading.local()
    last: dict = {}

    def app(environ: dict, start_response):  # type: ignore[no-untyped-def]
        t0 = time.thread_time_ns()
        result = inner(environ, start_response)
        spent = time.thread_time_ns() - t0
        mine = getattr(local, "sums", None)
        if mine is None:
            mine = local.sums = [0, 0]
            with lock:
                sums.append(mine)
        mine[0] += 1
        mine[1] += spent
        last["environ"] = environ
        return result

    def report(signum: int, frame: object) -> None:
        calls = sum(s[0] for s in sums)
        cpu = sum(s[1] for s in sums)
        for s in sums:
            s[0] = s[1] = 0
        print(f"{TIMED}calls={calls} cpu_ns={cpu}", flush=True)

    def replay(signum: int, frame: object) -> None:
        environ = last.get("environ")
        if environ is None:
            print(f"{TIMED}isolated_ns=nan", flush=True)
            return

        def start_response(status: str, headers: list, exc_info: object = None) -> None:
            pass

        # The best of five batches, as timeit advises: the others met a disturbance.
        batches = []
        for _ in range(5):
            spent = 0
            for _ in range(REPLAYS // 5):
                env = dict(environ, **{"wsgi.input": io.BytesIO(b"")})
                t0 = time.thread_time_ns()
                inner(env, start_response)
                spent += time.thread_time_ns() - t0
            batches.append(spent / (REPLAYS // 5))
        print(f"{TIMED}isolated_ns={min(batches):.0f}", flush=True)

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGUSR2, replay)
    return app


def serve(mode: str, port: int, page: Path | None) -> int:
    import falcon

    from codeb import app as codeb_app
    from codeb.cli import commands

    real_create_app = codeb_app.create_app

    def create_app(deps):  # type: ignore[no-untyped-def]
        app = real_create_app(deps)
        if mode == "codeb":
            return timed(app)
        assert page is not None  # parse_args requires --page for these modes
        body = page.read_bytes()
        if mode == "falcon":

            class Page:
                def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
                    resp.data = body
                    resp.content_type = falcon.MEDIA_JSON

            bare = falcon.App()
            bare.add_route("/api/projects", Page())
            return timed(bare)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]

        def plain(environ: dict, start_response):  # type: ignore[no-untyped-def]
            start_response("200 OK", headers)
            return [body]

        return timed(plain)

    # `codeb serve` as it is, with only the app it serves swapped (cmd_serve imports
    # create_app when it runs, so it gets this one).
    codeb_app.create_app = create_app
    return commands.main(["serve", "--host", HOST, "--port", str(port)])


# --- the measuring side ----------------------------------------------------------------------


def ask(server, signum: int, timeout: float = 30.0) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Signal the server and wait for the line it prints in answer: its fields."""
    before = server.log_text().count(TIMED)
    os.kill(server.proc.pid, signum)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [ln for ln in server.log_text().splitlines() if ln.startswith(TIMED)]
        if len(lines) > before:
            return {
                k: float(v) for k, v in (f.split("=", 1) for f in lines[-1][len(TIMED) :].split())
            }
        time.sleep(0.05)
    raise BenchError(f"{server.name} did not answer signal {signum} within {timeout:.0f} s")


def start_mode(mode: str, workdir: Path, threads: int, page: Path | None, procs: list):  # type: ignore[no-untyped-def]
    port = free_port()
    env = child_env(workdir / f"data-{mode}", threads)
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", mode, "--port", str(port)]
    if page is not None:
        argv += ["--page", str(page)]
    server = start(mode, argv, env, workdir, port)
    procs.append(server.proc)
    wait_listening(server)
    return server


def measure(args: argparse.Namespace) -> dict:
    wrk = ensure_wrk()
    threads = default_threads()
    procs: list[subprocess.Popen] = []
    load_before = loadavg()
    rps: dict[str, list[float]] = {m: [] for m in MODES}
    cpu_us: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="codeb-reads-") as tmp:
        workdir = Path(tmp)
        try:
            codeb = start_mode("codeb", workdir, threads, None, procs)
            match = KEY_LINE.search(codeb.log_text())
            if not match:
                raise BenchError("codeb did not print its first admin key")
            key = match.group(1)
            say(f"creating {PROJECTS} projects")
            create_projects(codeb, key, PROJECTS)
            url = f"{codeb.base_url}/api/projects"
            check_listing(url, key, PROJECTS)
            request = urllib.request.Request(url, headers={"X-API-Key": key})
            page = workdir / "page.json"
            with urllib.request.urlopen(request, timeout=30) as resp:
                page.write_bytes(resp.read())
            servers = {
                "codeb": codeb,
                "falcon": start_mode("falcon", workdir, threads, page, procs),
                "plain": start_mode("plain", workdir, threads, page, procs),
            }
            urls = {m: f"{s.base_url}/api/projects" for m, s in servers.items()}
            for mode in MODES:  # warm-up, not counted
                run_wrk(wrk, urls[mode], key, 2, args.connections, 2)
            for i in range(args.rounds):
                # Each round another order: no app always first or after the same one.
                order = MODES[i % 3 :] + MODES[: i % 3]
                for mode in order:
                    server = servers[mode]
                    ask(server, signal.SIGUSR1)  # resets the sums
                    sample = run_wrk(wrk, urls[mode], key, args.duration, args.connections, 2)
                    sums = ask(server, signal.SIGUSR1)
                    rps[mode].append(sample.rps)
                    cpu_us[mode].append(sums["cpu_ns"] / max(sums["calls"], 1) / 1000)
                    say(f"round {i + 1} {mode}: {sample.rps:,.0f} req/s, "
                        f"app {cpu_us[mode][-1]:.1f} µs CPU a request")  # fmt: skip
            # With no load applied: the same requests, one after another on one thread.
            isolated = {m: ask(s, signal.SIGUSR2)["isolated_ns"] / 1000 for m, s in servers.items()}
            page_bytes = page.stat().st_size
        finally:
            for proc in procs:
                stop(proc)
    return {
        "projects": PROJECTS,
        "page_bytes": page_bytes,
        "server_threads": threads,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "modes": {
            m: {
                "rps": statistics.median(rps[m]),
                "rps_rounds": rps[m],
                "app_cpu_us": statistics.median(cpu_us[m]),
                "app_cpu_us_rounds": cpu_us[m],
                "isolated_us": isolated[m],
            }
            for m in MODES
        },
    }


def report(result: dict) -> str:
    modes = result["modes"]
    plain = modes["plain"]["rps"]
    lines = [
        f"GET /api/projects ({result['projects']} projects, {result['page_bytes']} bytes), "
        f"{result['connections']} connections, {result['server_threads']} server threads, "
        f"{result['rounds']} rounds of {result['duration_s']} s, {result['cpus']} CPUs "
        f"(load average before: {result['loadavg_before']}; after: {result['loadavg_after']})",
        "  app      req/s   ÷ plain   app CPU a request: in the server   isolated   ratio",
    ]
    for m in MODES:
        f = modes[m]
        lines.append(
            f"  {m:<7}{f['rps']:>7,.0f}   {f['rps'] / plain:7.3f}   "
            f"{f['app_cpu_us']:>26.1f} µs {f['isolated_us']:>8.1f} µs "
            f"{f['app_cpu_us'] / max(f['isolated_us'], 1e-9):6.1f}x"
        )
    extra = modes["codeb"]["app_cpu_us"] - modes["falcon"]["app_cpu_us"]
    lines.append(
        f"  codeb's own work in the server (codeb - falcon): {extra:.1f} µs a request; "
        f"Falcon's (falcon - plain): "
        f"{modes['falcon']['app_cpu_us'] - modes['plain']['app_cpu_us']:.1f} µs"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--page", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve and (args.port is None or (args.serve != "codeb" and args.page is None)):
        # Checked before `codeb serve` runs: it would start on the default data dir.
        parser.error("--serve needs --port, and --page except for codeb")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be between 1 and 120 seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve, args.port, args.page)
    return measured_and_printed(measure, report, args)


if __name__ == "__main__":
    sys.exit(main())
