"""Throughput of `GET /api/projects` against a bare waitress app, measured with wrk.

Starts codeb's real API server (`python -m codeb serve`) and a bare "hello" WSGI app under
waitress, each in a subprocess on a free 127.0.0.1 port with the same thread count, creates
the projects through the HTTP API, then measures both with wrk (16 connections by default),
alternating bare/codeb for a few rounds, and quotes the median of the rounds.

Targets (issue 15): codeb serves at least 60 % of the bare app's requests per second, with a
p99 latency of at most 20 ms on a loaded machine: `--busy N` runs N CPU-bound processes beside
the servers during the rounds (each stops by itself after the run's length), so the loaded
p99 of codeb and of both bare apps is measured under the same load.

    .venv/bin/python bench/projects_throughput.py [--rounds 3] [--duration 5] [--busy N] [--json]

Every process it starts is stopped by its PID, also on errors and Ctrl-C. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import BenchError, free_port, stop

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# `codeb serve` prints the first admin key once: "Created the first admin API key (...): KEY".
KEY_LINE = re.compile(r"first admin API key[^:\n]*:\s*(\S+)")
TARGET_RATIO = 0.60
TARGET_P99_MS = 20.0
STARTUP_TIMEOUT_S = 60.0


# --- the bare app (runs in its own subprocess: `--serve-bare`) -------------------------------


def bare_app(body: bytes, content_type: str):  # type: ignore[no-untyped-def]
    """A WSGI app answering `body` to every request, with nothing else to do."""
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]

    def app(environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
        start_response("200 OK", headers)
        return [body]

    return app


def serve_bare(port: int, threads: int, body_bytes: int) -> int:
    """`hello`, or (with body_bytes) a JSON document of exactly that size: the same bytes on
    the wire as codeb's page, so the second anchor prices waitress and the socket alone."""
    # The same waitress settings as `codeb serve` (codeb.cli.serving: send_bytes, the queue
    # log kept quiet, threads): the ratio then prices codeb's own work, not a setting.
    sys.path.insert(0, str(REPO_ROOT))
    from codeb.cli import serving

    logging.basicConfig()  # what waitress.serve does when the app has not configured logging
    serving.quiet_queue_log()
    if body_bytes:
        body = b'{"pad":"' + b"x" * max(body_bytes - 10, 0) + b'"}'
        app = bare_app(body[:body_bytes], "application/json")
    else:
        app = bare_app(b"hello", "text/plain")
    print(f"bare serving on http://{HOST}:{port}", flush=True)
    serving.serve(app, host=HOST, port=port, threads=threads, ident="bare")
    return 0


# --- processes -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def wait_listening(server: Server, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name} exited with {server.proc.returncode} at start-up:\n"
                + server.log_text()[-4000:]
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, server.port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"{server.name} did not listen on port {server.port} within {timeout:.0f} s")


def start(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int) -> Server:
    log_path = workdir / f"{name}.log"
    log = open(log_path, "wb")  # the child keeps its own copy of the descriptor
    try:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()
    return Server(name=name, proc=proc, port=port, log_path=log_path)


def child_env(data_dir: Path, threads: int) -> dict[str, str]:
    """The caller's environment without any CODEB_* setting that could point the server at
    real state, plus a throw-away data dir and the thread count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEB_")}
    env["CODEB_DATA_DIR"] = str(data_dir)
    env["CODEB_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_codeb(workdir: Path, threads: int, procs: list[subprocess.Popen]) -> tuple[Server, str]:
    port = free_port()
    env = child_env(workdir / "codeb-data", threads)
    argv = [sys.executable, "-m", "codeb", "serve", "--host", HOST, "--port", str(port)]
    server = start("codeb", argv, env, workdir, port)
    procs.append(server.proc)
    wait_listening(server)
    match = KEY_LINE.search(server.log_text())
    if not match:
        raise BenchError("codeb did not print its first admin key:\n" + server.log_text()[-4000:])
    return server, match.group(1)


def start_bare(
    workdir: Path, threads: int, procs: list[subprocess.Popen], body_bytes: int = 0
) -> Server:
    port = free_port()
    env = child_env(workdir / f"bare-data-{body_bytes}", threads)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-bare",
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--body-bytes",
        str(body_bytes),
    ]
    server = start("bare" if not body_bytes else "bare-same", argv, env, workdir, port)
    procs.append(server.proc)
    wait_listening(server)
    return server


# --- HTTP set-up -----------------------------------------------------------------------------


def http(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-API-Key", key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def create_projects(server: Server, key: str, count: int) -> None:
    for i in range(count):
        status, answer = http(
            "POST",
            f"{server.base_url}/api/projects",
            key,
            {"name": f"bench-{i:04d}", "type": "nodejs"},
        )
        if status != 201:
            raise BenchError(f"creating project {i} answered {status}: {answer}")


def check_listing(url: str, key: str, count: int) -> int:
    status, answer = http("GET", url, key)
    if status != 200:
        raise BenchError(f"GET {url} answered {status}: {answer}")
    got = len(answer["projects"])
    if got != count or answer["total"] != count:
        raise BenchError(f"GET {url} listed {got} of {answer['total']}, expected {count}")
    return len(json.dumps(answer))


# --- wrk -------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError(
            "wrk is not installed; as root run `apt-get install -y wrk` (Debian package 'wrk')"
        )
    print("wrk not found: installing the Debian package 'wrk'", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, check=False, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=600)
        subprocess.run(install, env=env, check=True, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def parse_wrk(output: str) -> Sample:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and p50 and p99 and total):
        raise BenchError("unexpected wrk output:\n" + output)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return Sample(
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        errors=errors,
    )


def run_wrk(
    wrk: str, url: str, key: str | None, seconds: int, connections: int, threads: int
) -> Sample:
    argv = [
        wrk,
        f"-c{connections}",
        f"-t{threads}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    if key:
        argv += ["-H", f"X-API-Key: {key}"]
    argv.append(url)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=False, cwd=REPO_ROOT
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Summary:
    rps: float
    p50_ms: float
    p99_ms: float
    rounds: list[Sample] = field(default_factory=list)

    @classmethod
    def of(cls, samples: list[Sample]) -> Summary:
        return cls(
            rps=statistics.median(s.rps for s in samples),
            p50_ms=statistics.median(s.p50_ms for s in samples),
            p99_ms=statistics.median(s.p99_ms for s in samples),
            rounds=samples,
        )


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the `finally` below still stops the servers."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def measured(measure: Callable[[argparse.Namespace], dict], args: argparse.Namespace) -> dict | int:
    """measure(args) with SIGTERM unwinding as Ctrl-C does (so its `finally` stops the
    servers): the result, or the exit code after saying why (2: the run failed, 130:
    interrupted)."""
    try:
        with terminate_as_interrupt():
            return measure(args)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


def measured_and_printed(
    measure: Callable[[argparse.Namespace], dict],
    report: Callable[[dict], str],
    args: argparse.Namespace,
) -> int:
    """`measured`, then the result printed (one JSON document with --json): the exit code."""
    result = measured(measure, args)
    if isinstance(result, int):
        return result
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


BUSY_LOOP = (
    "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
)


def start_busy(count: int, seconds: float) -> list[subprocess.Popen]:
    """`count` processes that keep a CPU busy for at most `seconds` (other work on the
    machine, as when fleet runs or deploys share it); stopped by PID with the servers."""
    code = BUSY_LOOP.format(seconds=float(seconds))
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def default_threads() -> int:
    from codeb.config import Settings

    return Settings().threads


def measure(args: argparse.Namespace) -> dict:
    wrk = ensure_wrk()
    threads = args.threads or default_threads()
    load_before = os.getloadavg()[0]
    if load_before > 0.5 * (os.cpu_count() or 1):
        log(
            args,
            f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs before the run: "
            "other work on this machine will skew the figures (p99 most of all)",
        )
    procs: list[subprocess.Popen] = []
    workdir = Path(tempfile.mkdtemp(prefix="codeb-bench-"))
    try:
        codeb, key = start_codeb(workdir, threads, procs)
        bare = start_bare(workdir, threads, procs)
        log(args, f"codeb pid {codeb.proc.pid} on {codeb.base_url}; bare pid {bare.proc.pid}")
        log(args, f"creating {args.projects} projects through the API ...")
        t0 = time.monotonic()
        create_projects(codeb, key, args.projects)
        log(args, f"  done in {time.monotonic() - t0:.1f} s")
        codeb_url = f"{codeb.base_url}/api/projects?limit={args.projects}"
        bare_url = f"{bare.base_url}/"
        body_bytes = check_listing(codeb_url, key, args.projects)
        same = start_bare(workdir, threads, procs, body_bytes)
        same_url = f"{same.base_url}/"

        if args.warmup > 0:
            log(args, f"warm-up: {args.warmup} s each")
            run_wrk(wrk, bare_url, None, args.warmup, args.connections, args.wrk_threads)
            run_wrk(wrk, same_url, None, args.warmup, args.connections, args.wrk_threads)
            run_wrk(wrk, codeb_url, key, args.warmup, args.connections, args.wrk_threads)

        if args.busy:
            # Three servers per round, plus a margin: they stop by themselves even if this
            # process dies before its `finally`.
            seconds = 3 * args.rounds * (args.duration + 2) + 30
            log(args, f"starting {args.busy} CPU-bound processes (the machine under load)")
            procs.extend(start_busy(args.busy, seconds))
        bare_samples: list[Sample] = []
        same_samples: list[Sample] = []
        codeb_samples: list[Sample] = []
        for n in range(1, args.rounds + 1):
            for name, url, k, samples in (
                ("bare", bare_url, None, bare_samples),
                ("same", same_url, None, same_samples),
                ("codeb", codeb_url, key, codeb_samples),
            ):
                s = run_wrk(wrk, url, k, args.duration, args.connections, args.wrk_threads)
                if s.errors:
                    raise BenchError(f"{name} round {n}: {s.errors} errors/non-2xx answers")
                samples.append(s)
                log(
                    args,
                    f"round {n} {name:<5} {s.rps:9.1f} req/s  p50 {s.p50_ms:7.2f} ms  "
                    f"p99 {s.p99_ms:7.2f} ms",
                )
        # The list still holds every project after the load (and the servers are alive).
        check_listing(codeb_url, key, args.projects)
        for server in (codeb, bare, same):
            if server.proc.poll() is not None:
                raise BenchError(f"{server.name} died during the run:\n{server.log_text()[-4000:]}")
    finally:
        for proc in reversed(procs):
            stop(proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    bare_sum = Summary.of(bare_samples)
    same_sum = Summary.of(same_samples)
    codeb_sum = Summary.of(codeb_samples)
    ratio = codeb_sum.rps / bare_sum.rps if bare_sum.rps else 0.0
    ratio_same = codeb_sum.rps / same_sum.rps if same_sum.rps else 0.0
    return {
        "config": {
            "projects": args.projects,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "server_threads": threads,
            "cpus": os.cpu_count(),
            "loadavg_1min_before": round(load_before, 2),
            "busy_processes": args.busy,
            "codeb_url_path": f"/api/projects?limit={args.projects}",
            "codeb_body_bytes": body_bytes,
        },
        "bare": asdict(bare_sum),
        # Not the target's anchor: the same bytes served bare, to show what the page's size
        # costs waitress and the socket apart from codeb.
        "bare_same_size": asdict(same_sum),
        "codeb": asdict(codeb_sum),
        "ratio": ratio,
        "ratio_same_size": ratio_same,
        "targets": {
            "ratio_min": TARGET_RATIO,
            "p99_max_ms": TARGET_P99_MS,
            "ratio_met": ratio >= TARGET_RATIO,
            "p99_met": codeb_sum.p99_ms <= TARGET_P99_MS,
        },
    }


def log(args: argparse.Namespace, message: str) -> None:
    # With --json stdout carries the document only; progress goes to stderr.
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def report(result: dict) -> str:
    cfg, bare, codeb, t = result["config"], result["bare"], result["codeb"], result["targets"]
    lines = [
        "",
        f"GET {cfg['codeb_url_path']} ({cfg['projects']} projects, {cfg['codeb_body_bytes']} "
        f"bytes) vs bare waitress hello; {cfg['server_threads']} server threads, "
        f"wrk -c{cfg['connections']} -t{cfg['wrk_threads']}, median of {cfg['rounds']} x "
        f"{cfg['duration_s']} s, {cfg['cpus']} CPUs (load average before: "
        f"{cfg['loadavg_1min_before']:.2f})"
        + (
            f"; {cfg['busy_processes']} CPU-bound processes running"
            if cfg["busy_processes"]
            else ""
        ),
        f"  {'':<6} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}",
    ]
    same = result["bare_same_size"]
    for name, s in (("bare", bare), ("same", same), ("codeb", codeb)):
        lines.append(f"  {name:<6} {s['rps']:>10.1f} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f}")
    yes = {True: "met", False: "MISSED"}
    lines += [
        f"  ratio codeb/bare = {result['ratio']:.3f} "
        f"(target >= {t['ratio_min']:.2f}: {yes[t['ratio_met']]})",
        f"  codeb p99 = {codeb['p99_ms']:.2f} ms "
        f"(target <= {t['p99_max_ms']:.0f} ms: {yes[t['p99_met']]})",
        f"  not the target: codeb/same = {result['ratio_same_size']:.3f}, where `same` is bare "
        f"waitress answering {cfg['codeb_body_bytes']} bytes (what the page's size costs "
        "apart from codeb)",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per app (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per round (default 5)")
    parser.add_argument("--projects", type=int, default=100, help="projects to create (100)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per app (1)")
    parser.add_argument(
        "--threads", type=int, default=0, help="waitress threads (default: codeb's setting)"
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        help="CPU-bound processes to run beside the servers during the rounds (a loaded "
        "machine; 0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed (default: 0)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--body-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.serve_bare:
        if not 1 <= args.duration <= 120:
            parser.error("--duration must be between 1 and 120 seconds")
        if not 1 <= args.rounds <= 20:
            parser.error("--rounds must be between 1 and 20")
        if not 1 <= args.projects <= 500:
            parser.error("--projects must be between 1 and 500 (the API's largest limit)")
        if not 1 <= args.wrk_threads <= args.connections:
            parser.error("--wrk-threads must be between 1 and --connections")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_bare:
        return serve_bare(args.port, args.threads or 8, args.body_bytes)
    result = measured(measure, args)
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report(result))
    met = result["targets"]["ratio_met"] and result["targets"]["p99_met"]
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
