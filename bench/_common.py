"""What the benchmarks share: the processes they start (stopped by PID), codeb served in a
subprocess and its HTTP API, operations followed to their end, SSH masters closed."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

HOST = "127.0.0.1"
KEY_LINE = re.compile(r"first admin API key[^:\n]*:\s*(\S+)")
MASTER_PID = re.compile(r"pid=(\d+)")
FINAL = ("succeeded", "failed", "canceled", "timeout", "interrupted")
RUN_TIMEOUT_S = 600.0
STARTUP_TIMEOUT_S = 60.0


class BenchError(RuntimeError):
    pass


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has spent busy since boot (every CPU, every process and
    guest: /proc/stat's first line, user + nice + system + irq + softirq). The difference
    over a span, divided by the span and the CPU count, says how saturated the machine was."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq [steal: the hypervisor's, not ours; guest and
    # guest_nice: inside user already]
    busy = sum(fields[:7]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> list[str]:
    """A /proc stat line's fields after the command name (which may hold spaces)."""
    return path.read_text().rsplit(")", 1)[1].split()


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process plus its waited-for children (ansible-playbook and its forks,
    for codeb's server), from /proc."""
    return sum(int(x) for x in _stat(Path(f"/proc/{pid}/stat"))[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """proc_cpu of a process and of its live descendants: codeb's zygote (a live child of the
    server) counts the forks it ran each playbook in, which the server never waits for."""
    children: dict[int, list[int]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(_stat(path)[1]), []).append(int(path.parent.name))
        except OSError:
            continue  # it ended meanwhile
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += proc_cpu(current)
        except OSError:
            continue
        todo.extend(children.get(current, []))
    return total


def stop(proc: subprocess.Popen | None) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def base_env() -> dict[str, str]:
    """The caller's environment without any CODEB_* setting that could point at real state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEB_", "ANSIBLE_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ssh_control(socket_path: Path, op: str) -> subprocess.CompletedProcess:
    argv = ["ssh", "-F", "/dev/null", "-o", f"ControlPath={socket_path}", "-O", op, "bench"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)


def masters(control_dir: Path) -> dict[Path, int]:
    """Live master connections in a ControlPath directory, with their PIDs."""
    found: dict[Path, int] = {}
    if not control_dir.is_dir():
        return found
    for sock in control_dir.iterdir():
        check = _ssh_control(sock, "check")
        match = MASTER_PID.search(check.stderr + check.stdout)
        if check.returncode == 0 and match:
            found[sock] = int(match.group(1))
    return found


def close_masters(control_dir: Path) -> int:
    """Ask every master in the directory to exit; SIGTERM by PID the ones that do not."""
    live = masters(control_dir)
    for sock, pid in live.items():
        _ssh_control(sock, "exit")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    return len(live)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is gone for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Api:
    """A keep-alive HTTP client for codeb's API (one connection, reopened if dropped)."""

    def __init__(self, port: int, key: str, pid: int) -> None:
        self.port, self.key, self.pid = port, key, pid
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"X-API-Key": self.key}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                return resp.status, json.loads(raw or b"null")
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def start_codeb(workdir: Path, env: dict[str, str], procs: list[subprocess.Popen]) -> Api:
    port = free_port()
    log_path = workdir / "codeb.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codeb", "serve", "--host", HOST, "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    procs.append(proc)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if proc.poll() is not None:
            raise BenchError(f"codeb exited with {proc.returncode} at start-up:\n{text[-4000:]}")
        match = KEY_LINE.search(text)
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if match and sock.connect_ex((HOST, port)) == 0:
                return Api(port, match.group(1), proc.pid)
        time.sleep(0.05)
    raise BenchError(f"codeb did not serve on port {port} within {STARTUP_TIMEOUT_S:.0f} s")


def _stamp(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.removesuffix("Z")).replace(tzinfo=dt.UTC).timestamp()


def wait_operation(api: Api, op_id: str, poll_s: float) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        status, op = api.call("GET", f"/api/operations/{op_id}")
        if status != 200:
            raise BenchError(f"GET /api/operations/{op_id} answered {status}: {op}")
        if op["status"] in FINAL:
            return op
        time.sleep(poll_s)
    raise BenchError(f"operation {op_id} did not finish within {RUN_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
