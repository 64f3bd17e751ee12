#!/usr/bin/python3
"""The WAL receiver of one Barman server: pg_receivewal in bursts, every few seconds, on the
server's replication slot, into Barman's streaming directory (issue 10).

Why bursts: a connected walsender is woken by every commit of the source and sends each
commit's WAL on its own. On a commit-saturated db that cost 12-24 % of its transactions
(bench/restore.py: pgbench TPS 0.76-0.88 of the same run without a receiver, the shipping
11.6 % of the CPU); fetching what accumulated every INTERVAL seconds costs nothing
measurable (0.91-1.07 across runs, its CPU 0.0-0.1 %) and keeps the RPO at seconds (the
interval plus one burst), with the stock image and no archive_command. Each burst asks
the source for its flushed position (IDENTIFY_SYSTEM) and runs `pg_receivewal --endpos`
up to it; pg_receivewal resumes from its `.partial` file, so nothing is skipped, and the
slot keeps every WAL file not yet fetched on the source.

It takes Barman's own receive-wal lock (`.<server>-receive-wal.lock` in Barman's home, the
PID on its first line), so `barman cron` starts no receiver of its own, `barman check`
sees one running, and `barman receive-wal --stop` stops this one (SIGTERM: the running
pg_receivewal is interrupted and flushes, the lock released). SIGUSR1 asks for a burst
now (the WAL closing code sends it after pg_switch_wal(): a restore or a backup then waits
for one burst, not for the interval). INTERVAL 0 streams continuously (every commit sent
at once: the RPO of a per-commit stream, at that cost).

While a process holds the stream (`codeb_barman_receiver.py stream SERVER -- CMD...`, a
hold file naming its PID), the receiver streams continuously: `barman backup` refuses to
start unless the slot is active. A hold whose process died is ignored and removed.

Each outcome is written to `codeb-receiver.json` in the server's directory (mode, interval,
last success, last error): the WAL check reads it, since between bursts `barman check`
says the slot is not active.

Standard library only; runs as a plain script (`receive SERVER [INTERVAL]`, `stream SERVER
-- CMD...`)."""

from __future__ import annotations

import configparser
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

# Installed side by side in /usr/local/lib/codeb/ (the WAL closing code wakes this receiver).
from codeb_barman_wal import as_barman, lock_path, wake

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,120}")
LSN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")
HOME = "/var/lib/barman"
CONF_DIR = "/etc/barman.d"
STATE = "codeb-receiver.json"
HOLD_PREFIX = "codeb-stream-hold."
# How long a holder waits for the slot to become active before running its command anyway
# (barman backup then fails with its own check's reason, which is the truth).
HOLD_WAIT_S = 30


def just_before(lsn: str) -> str:
    """The position one byte before lsn: pg_receivewal stops once it received data *past*
    --endpos (on an idle db it waited up to 15 s for the next WAL record with endpos at the
    flushed position itself); with this one it stops as soon as it has everything flushed."""
    high, _, low = lsn.partition("/")
    value = max((int(high, 16) << 32 | int(low, 16)) - 1, 0)
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def server_settings(server: str, conf_dir: str = CONF_DIR) -> dict[str, str]:
    """streaming_conninfo, path_prefix and slot_name from the configuration codeb wrote."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=None)
    parser.read(os.path.join(conf_dir, f"{server}.conf"))
    if not parser.has_section(server):
        raise SystemExit(f"no Barman configuration for {server} in {conf_dir}")
    section = parser[server]
    return {
        "db_conninfo": section.get("conninfo", "").strip(),
        "conninfo": section.get("streaming_conninfo", "").strip(),
        "bindir": section.get("path_prefix", "").strip(),
        "slot": section.get("slot_name", "codeb_barman").strip(),
    }


def held(server_dir: str) -> bool:
    """Whether a live process holds the stream (stale holds are removed)."""
    try:
        names = os.listdir(server_dir)
    except OSError:
        return False
    holding = False
    for name in names:
        if not name.startswith(HOLD_PREFIX):
            continue
        pid = name[len(HOLD_PREFIX) :]
        if pid.isdigit() and alive(int(pid)):
            holding = True
        else:
            try:
                os.unlink(os.path.join(server_dir, name))
            except OSError:
                pass
    return holding


class Receiver:
    def __init__(self, server: str, interval: float, home: str = HOME,
                 conf_dir: str = CONF_DIR) -> None:  # fmt: skip
        self.server, self.interval = server, interval
        self.settings = server_settings(server, conf_dir)
        self.home = home
        self.server_dir = os.path.join(home, server)
        self.streaming = os.path.join(self.server_dir, "streaming")
        self.woken = threading.Event()
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None
        self.state: dict = {"mode": "bursts" if interval > 0 else "continuous",
                            "interval_s": interval, "pid": os.getpid(), "last_ok": None,
                            "last_error": None, "error_since": None}  # fmt: skip

    # -- signals ---------------------------------------------------------------------------

    def on_wake(self, *_: object) -> None:
        self.woken.set()

    def on_stop(self, *_: object) -> None:
        self.stopping.set()
        self.woken.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)  # pg_receivewal flushes and exits

    # -- the lock --------------------------------------------------------------------------

    def take_lock(self, wait_s: float = 30) -> int:
        """Barman's receive-wal lock with this PID in it. A Barman receive-wal that holds
        it (barman cron started one while this unit was down) is asked to stop."""
        fd = os.open(lock_path(self.server, self.home), os.O_CREAT | os.O_RDWR, 0o600)
        deadline = time.monotonic() + wait_s
        asked = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline or self.stopping.is_set():
                    raise SystemExit("Barman's receive-wal lock stays busy") from None
                if not asked:
                    asked = True
                    try:
                        subprocess.run(["barman", "-q", "receive-wal", "--stop", self.server],
                                       capture_output=True, timeout=60, check=False)  # fmt: skip
                    except (OSError, subprocess.SubprocessError):
                        pass  # the lock's deadline decides
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    # -- one burst / the stream ------------------------------------------------------------

    def flushed_lsn(self) -> str:
        """The source's flushed WAL position (IDENTIFY_SYSTEM on a replication connection)."""
        out = subprocess.run(
            [os.path.join(self.settings["bindir"], "psql"),
             f"{self.settings['conninfo']} replication=true", "-XtAq", "-w",
             "-c", "IDENTIFY_SYSTEM"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        fields = out.stdout.strip().split("|")
        if out.returncode != 0 or len(fields) < 3 or not LSN.fullmatch(fields[2]):
            raise RuntimeError(f"IDENTIFY_SYSTEM: {(out.stderr or out.stdout).strip()[-500:]}")
        return fields[2]

    def receivewal_argv(self, endpos: str | None) -> list[str]:
        argv = [os.path.join(self.settings["bindir"], "pg_receivewal"),
                "--dbname", self.settings["conninfo"], "--directory", self.streaming,
                "--slot", self.settings["slot"], "--no-loop", "--no-password"]  # fmt: skip
        return argv + (["--endpos", endpos] if endpos else [])

    def run_child(self, argv: list[str], until_released: bool) -> None:
        """pg_receivewal to its end; with until_released, interrupted (SIGINT: it flushes)
        once no process holds the stream any more (continuous mode never releases)."""
        self.child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)  # fmt: skip
        interrupted = False
        try:
            while self.child.poll() is None:
                if self.stopping.is_set() or (until_released and not held(self.server_dir)):
                    interrupted = True
                    self.child.send_signal(signal.SIGINT)
                    try:
                        self.child.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        self.child.kill()
                    break
                time.sleep(0.25)
            _, err = self.child.communicate()
            if self.child.returncode != 0 and not (interrupted or self.stopping.is_set()):
                raise RuntimeError(f"pg_receivewal: {err.strip()[-500:]}")
        finally:
            self.child = None

    def record(self, error: str | None) -> None:
        """A burst's (or a stream's) outcome, into the report."""
        now = time.time()
        if error is None:
            self.state.update(last_ok=now, last_error=None, error_since=None)
        else:
            self.state.update(last_error=error, error_since=self.state["error_since"] or now)
            print(f"{self.server}: {error}", file=sys.stderr, flush=True)
        self.publish()

    def publish(self) -> None:
        path = os.path.join(self.server_dir, STATE)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f)
        os.replace(tmp, path)

    def step(self) -> None:
        """One burst, or (while held, or with interval 0) the stream until released."""
        if self.interval <= 0 or held(self.server_dir):
            self.state["mode"] = "continuous" if self.interval <= 0 else "held"
            self.publish()  # not a success yet: that is the stream's end without an error
            self.run_child(self.receivewal_argv(None), until_released=self.interval > 0)
            self.state["mode"] = "bursts" if self.interval > 0 else "continuous"
            if self.stopping.is_set():
                return
        # Anyone waking us after this line gets a burst that starts after their wake.
        self.woken.clear()
        self.run_child(self.receivewal_argv(just_before(self.flushed_lsn())), until_released=False)

    def serve(self) -> int:
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGUSR1, self.on_wake)
        fd = self.take_lock()
        os.makedirs(self.streaming, exist_ok=True)
        try:
            while not self.stopping.is_set():
                try:
                    self.step()
                    if not self.stopping.is_set():
                        self.record(None)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    self.record(str(exc))
                    # Held or woken, a failing source is not asked again at once (held or
                    # streaming: in a second; in bursts: at the interval).
                    continuous = self.interval <= 0 or held(self.server_dir)
                    self.stopping.wait(1 if continuous else max(self.interval, 1))
                    continue
                if not self.woken.is_set() and not held(self.server_dir):
                    # Wait for the interval, a wake, a hold or a stop (a hold is seen
                    # within a second).
                    deadline = time.monotonic() + max(self.interval, 1)
                    while time.monotonic() < deadline and not self.woken.is_set():
                        if held(self.server_dir):
                            break
                        self.woken.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        finally:
            os.ftruncate(fd, 0)
            os.close(fd)
        return 0


def slot_active(server: str, conf_dir: str = CONF_DIR) -> bool:
    """Whether a walsender streams on the server's slot now (Barman's own connection)."""
    settings = server_settings(server, conf_dir)
    out = subprocess.run(
        as_barman([os.path.join(settings["bindir"], "psql"), settings["db_conninfo"], "-XtAq",
                   "-w", "-v", f"slot={settings['slot']}"]),
        input="SELECT active FROM pg_replication_slots WHERE slot_name = :'slot';\n",
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return out.returncode == 0 and out.stdout.strip() == "t"


def hold_stream(server: str, command: list[str], home: str = HOME,
                wait_s: float = HOLD_WAIT_S) -> int:  # fmt: skip
    """Run command while the receiver streams continuously (a hold file naming this PID),
    once the slot is active (or after wait_s); the hold goes when the command ends."""
    server_dir = os.path.join(home, server)
    hold = os.path.join(server_dir, f"{HOLD_PREFIX}{os.getpid()}")
    with open(hold, "w") as f:
        f.write(" ".join(command[:3]) + "\n")
    os.chmod(hold, 0o644)
    try:
        wake(server, home)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not slot_active(server):
            time.sleep(0.2)
        return subprocess.run(command, check=False).returncode
    finally:
        try:
            os.unlink(hold)
        except OSError:
            pass
        wake(server, home)


USAGE = "usage: codeb_barman_receiver.py receive SERVER [INTERVAL] | stream SERVER -- CMD..."


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and NAME.fullmatch(argv[1]):
        if argv[0] == "receive" and len(argv) in (2, 3):
            try:
                interval = float(argv[2]) if len(argv) == 3 else 5.0
            except ValueError:
                interval = -1.0
            if 0 <= interval <= 3600:
                return Receiver(argv[1], interval).serve()
        if argv[0] == "stream" and len(argv) > 3 and argv[2] == "--":
            return hold_stream(argv[1], argv[3:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
