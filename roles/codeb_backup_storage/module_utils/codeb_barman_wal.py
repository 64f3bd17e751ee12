#!/usr/bin/python3
"""Close the source's current WAL file and wait until Barman has filed it here: what a
restore to now and a finished base backup both need (shared by the restore module, the
close-WAL module run after an on-request backup, and, installed as a script, the scheduled
backup's unit, so the three do it one way).

Why not Barman's `switch-wal --force --archive`: it waited 2-15 s (up to 22 s under load)
for nothing but the source's next WAL record. Barman files a streamed segment only once
pg_receivewal has opened the next one (it keeps the newest complete file when no .partial
follows it, for pg_receivewal's restart), and after a switch the next one opens only when
the source writes WAL again: the bgwriter's snapshot every 15 s on an idle db. So, over
Barman's own connection, in three transactions: a commit (a restore's target: recovery
stops at the first commit past it, and fails without one), pg_switch_wal() (no CHECKPOINT:
that commit is WAL activity, so the switch happens), and a second commit, which opens the
next segment, waited for until flushed; then a burst of the receiver (SIGUSR1: it fetches in
bursts, module_utils/codeb_barman_receiver.py) and `barman archive-wal` until the closed
segment is filed.

Standard library only (it also runs as a plain script: `codeb_barman_wal.py close SERVER
[TIMEOUT]`, exit 0 once filed, 1 with the reason otherwise)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

SEGMENT = re.compile(r"[0-9A-F]{24}")
# The second commit wrote no WAL of its own before committing, so PostgreSQL commits it
# asynchronously (the WAL writer flushes it within wal_writer_delay): wait until it is
# flushed, since the receiver's burst fetches only flushed WAL (at most 5 s, then go on).
FLUSHED = (
    "DO $$DECLARE t pg_lsn := pg_current_wal_insert_lsn(); BEGIN FOR i IN 1..500 LOOP "
    "EXIT WHEN pg_current_wal_flush_lsn() >= t; PERFORM pg_sleep(0.01); END LOOP; END$$"
)


class Failed(Exception):
    pass


def barman_argv():
    """Barman as the barman user: root switches to it, the barman user (a unit's User=) runs
    it directly."""
    return ["barman"] if os.geteuid() != 0 else ["runuser", "-u", "barman", "--", "barman"]


def as_barman(argv):
    return list(argv) if os.geteuid() != 0 else ["runuser", "-u", "barman", "--", *argv]


def run(argv, step, timeout=3600, check=True):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise Failed(f"{step}: {(out.stderr or out.stdout).strip()[-2000:]}")
    return out


def conninfo_of(server, conf_dir="/etc/barman.d"):
    """Barman's connection string for the server: read from the configuration file codeb
    wrote (a `barman show-servers` costs a Barman start, 1.5 s at load 7), else asked."""
    try:
        with open(os.path.join(conf_dir, f"{server}.conf")) as f:
            for line in f:
                key, sep, value = line.partition("=")
                if sep and key.strip() == "conninfo":
                    return value.strip()
    except OSError:
        pass
    shown = run([*barman_argv(), "-f", "json", "show-servers", server], "show-servers",
                check=False)  # fmt: skip
    try:
        return json.loads(shown.stdout or "{}").get(server, {}).get("conninfo")
    except ValueError:
        return None


def lock_path(server, home="/var/lib/barman"):
    """Barman's receive-wal lock (barman.lockfile.ServerWalReceiveLock, lock directory =
    barman_home)."""
    return os.path.join(home, f".{server}-receive-wal.lock")


def receiver_pid(server, home="/var/lib/barman"):
    """The PID the lock file names (the running receiver's), if any."""
    try:
        with open(lock_path(server, home)) as f:
            first = f.readline().strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def wake(server, home="/var/lib/barman"):
    """Ask the server's receiver for a burst now; False when none runs (or Barman's own
    receive-wal holds the lock: it streams continuously anyway)."""
    pid = receiver_pid(server, home)
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"codeb_barman_receiver" not in f.read():
                return False
        os.kill(pid, signal.SIGUSR1)
    except OSError:
        return False
    return True


def close_and_file_wal(server, conninfo, wal_timeout=60, barman_home="/var/lib/barman"):
    """Commit, pg_switch_wal(), commit (see the module's doc), then `barman archive-wal`
    until the closed segment is in the server's wals directory. Returns what happened:
    '<segment> filed', or why not ('no conninfo', 'source did not answer', '<segment> not
    filed within N s'). The source may be down: then the WAL held is all there is."""
    if not conninfo:
        return "no conninfo"
    out = run(as_barman(["psql", conninfo, "-XtAq", "-c", "SELECT txid_current()",
                         "-c", "SELECT pg_walfile_name(pg_switch_wal())",
                         "-c", "SELECT txid_current()", "-c", FLUSHED]),
              "switch", timeout=30, check=False)  # fmt: skip
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) < 2 or not SEGMENT.fullmatch(lines[1]):
        return "source did not answer"
    closed = lines[1]
    # The receiver fetches in bursts (codeb_barman_receiver.py): one now, not at the interval.
    wake(server, barman_home)
    filed = os.path.join(barman_home, server, "wals", closed[:16], closed)
    deadline = time.monotonic() + wal_timeout
    while not os.path.exists(filed):
        if time.monotonic() > deadline:
            return f"{closed} not filed within {wal_timeout} s"
        run([*barman_argv(), "-q", "archive-wal", server], "archive-wal", timeout=120,
            check=False)  # fmt: skip
        if not os.path.exists(filed):
            time.sleep(0.2)  # pg_receivewal has not opened the next segment yet
    return f"{closed} filed"


def main(argv):
    if (
        len(argv) not in (2, 3)
        or argv[0] != "close"
        or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,120}", argv[1])
    ):
        print("usage: codeb_barman_wal.py close SERVER [TIMEOUT]", file=sys.stderr)
        return 2
    server = argv[1]
    timeout = int(argv[2]) if len(argv) == 3 and argv[2].isdigit() else 60
    said = close_and_file_wal(server, conninfo_of(server), timeout)
    print(said)
    return 0 if said.endswith(" filed") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
