"""The storage server's WAL receiver (roles/codeb_backup_storage/module_utils/
codeb_barman_receiver.py) without a fleet: its control flow against stand-in `psql` and
`pg_receivewal` scripts that log their arguments (the fleet tests run the real ones,
tests/backups/test_backups_fleet.py). Also how its report turns into the WAL check's verdict.

- bursts: IDENTIFY_SYSTEM, then pg_receivewal --endpos at that position on the slot into
  Barman's streaming directory, every INTERVAL seconds; a wake-up (SIGUSR1, what the WAL
  closing code sends after pg_switch_wal()) brings one at once;
- Barman's receive-wal lock is held with the receiver's PID (barman cron sees it busy);
- a hold by a live process streams continuously until released (SIGINT to pg_receivewal),
  a hold by a dead one is removed and ignored;
- a failing burst is reported with its error and since when, cleared by the next success;
- SIGTERM (barman receive-wal --stop) ends it with exit 0 and the lock released."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeb.features.backups import status

ROLE = Path(__file__).resolve().parents[2] / "roles" / "codeb_backup_storage"
UTILS = ROLE / "module_utils"
WAL_STATE = ROLE.parent / "codeb_backup_drill" / "library" / "codeb_wal_state.py"
SERVER = "shop-staging-db"
LSN = "0/3000060"
ENDPOS = "0/300005F"  # one byte before: pg_receivewal stops past --endpos

PSQL = f"""#!/bin/bash
if [ -e "$(dirname "$0")/fail" ]; then echo "psql: error: connection refused" >&2; exit 2; fi
echo "7350000000000000000|1|{LSN}|"
"""
RECEIVEWAL = """#!/bin/bash
log="$(dirname "$0")/calls.log"
echo "$*" >> "$log"
case " $* " in *" --endpos "*) exit 0 ;; esac
trap 'echo interrupted >> "$log"; exit 0' INT
while :; do sleep 0.05; done
"""


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def barman(tmp_path):
    """A Barman home and configuration directory, stand-in client binaries."""
    home, conf, bindir = tmp_path / "home", tmp_path / "conf", tmp_path / "bin"
    for d in (home / SERVER, conf, bindir):
        d.mkdir(parents=True)
    (conf / f"{SERVER}.conf").write_text(
        f"[{SERVER}]\n"
        "conninfo = host=127.0.0.1 port=1 user=codeb_backup dbname=postgres\n"
        "streaming_conninfo = host=127.0.0.1 port=1 user=codeb_backup\n"
        f"path_prefix = {bindir}\nslot_name = codeb_barman\n"
    )
    for name, text in (("psql", PSQL), ("pg_receivewal", RECEIVEWAL)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    return home, conf, bindir


def _start(home: Path, conf: Path, interval: float) -> subprocess.Popen:
    code = (
        "import sys, codeb_barman_receiver as r; "
        f"sys.exit(r.Receiver({SERVER!r}, {interval}, home={str(home)!r}, "
        f"conf_dir={str(conf)!r}).serve())"
    )
    env = {**os.environ, "PYTHONPATH": str(UTILS)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    lock = home / f".{SERVER}-receive-wal.lock"
    deadline = time.monotonic() + 10
    while not (lock.exists() and lock.read_text().strip() == str(proc.pid)):
        assert time.monotonic() < deadline and proc.poll() is None, "the receiver did not start"
        time.sleep(0.05)
    return proc


def _calls(bindir: Path) -> list[str]:
    log = bindir / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _report(home: Path) -> dict:
    return json.loads((home / SERVER / "codeb-receiver.json").read_text())


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)


def test_bursts_fetch_up_to_the_flushed_position_and_a_wake_brings_one_now(barman):
    home, conf, bindir = barman
    proc = _start(home, conf, 30)
    try:
        _until(lambda: len(_calls(bindir)) == 1)
        (first,) = _calls(bindir)
        assert f"--endpos {ENDPOS}" in first and "--slot codeb_barman" in first
        assert f"--directory {home / SERVER / 'streaming'}" in first
        assert "--no-password" in first and "password" not in first.replace("--no-password", "")
        _until(lambda: (home / SERVER / "codeb-receiver.json").exists())
        report = _report(home)
        assert report["mode"] == "bursts" and report["last_ok"] and report["pid"] == proc.pid
        # Barman's cron would find its receive-wal lock busy, so it starts no receiver.
        with open(home / f".{SERVER}-receive-wal.lock", "a") as f:
            with pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The interval is 30 s: a second burst within a second is the wake-up's.
        wal = _load("codeb_barman_wal", UTILS / "codeb_barman_wal.py")
        assert wal.wake(SERVER, str(home)) is True
        _until(lambda: len(_calls(bindir)) == 2, timeout=2)
    finally:
        _stop(proc)
    assert proc.returncode == 0, proc.stderr.read()
    assert (home / f".{SERVER}-receive-wal.lock").read_text() == ""  # released, no PID


def test_a_live_hold_streams_until_released_and_a_dead_one_is_ignored(barman):
    home, conf, bindir = barman
    stale = home / SERVER / "codeb-stream-hold.999999999"
    stale.write_text("")
    proc = _start(home, conf, 30)
    try:
        _until(lambda: len(_calls(bindir)) == 1)
        assert "--endpos" in _calls(bindir)[0] and not stale.exists()
        holder = subprocess.Popen(["sleep", "60"])
        hold = home / SERVER / f"codeb-stream-hold.{holder.pid}"
        try:
            hold.write_text("")
            _until(lambda: len(_calls(bindir)) == 2, timeout=3)  # seen within a second
            assert "--endpos" not in _calls(bindir)[1]
            _until(lambda: _report(home)["mode"] == "held")
            time.sleep(1)
            assert len(_calls(bindir)) == 2  # still the one stream
        finally:
            holder.kill()
            holder.wait()
        # The holder died without removing its file: the stream ends all the same.
        _until(lambda: "interrupted" in _calls(bindir), timeout=5)
        _until(lambda: any("--endpos" in c for c in _calls(bindir)[3:]), timeout=5)
        _until(lambda: _report(home)["mode"] == "bursts")
        assert not hold.exists()
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_a_failing_burst_is_reported_and_cleared_by_the_next(barman):
    home, conf, bindir = barman
    (bindir / "fail").write_text("")
    proc = _start(home, conf, 0.2)
    try:
        _until(lambda: (_report(home) if (home / SERVER / "codeb-receiver.json").exists()
                        else {}).get("last_error"))  # fmt: skip
        report = _report(home)
        assert "connection refused" in report["last_error"] and report["error_since"]
        assert not _calls(bindir)  # no pg_receivewal without a position
        (bindir / "fail").unlink()
        _until(lambda: _report(home)["last_error"] is None, timeout=5)
        assert _report(home)["last_ok"] and _calls(bindir)
    finally:
        _stop(proc)


def test_endpos_is_one_byte_before_the_flushed_position():
    sys.path.insert(0, str(UTILS))
    try:
        receiver = _load("codeb_barman_receiver", UTILS / "codeb_barman_receiver.py")
    finally:
        sys.path.remove(str(UTILS))
    assert receiver.just_before("0/503FF40") == "0/503FF3F"
    assert receiver.just_before("1/0") == "0/FFFFFFFF"
    assert receiver.just_before("0/0") == "0/0"


def test_the_wal_check_reads_the_receivers_report(tmp_path):
    wal_state = _load("codeb_wal_state", WAL_STATE)
    path = tmp_path / "codeb-receiver.json"
    now = 1_000_000.0
    idle = {"replication slot": "slot 'codeb_barman' not active: is 'receive-wal' running?"}

    def apply(report: dict, failing: dict) -> tuple[bool, dict]:
        path.write_text(json.dumps(report))
        failing = dict(failing)
        return wal_state.bursts_ok(str(path), failing, now), failing

    fresh = {"mode": "bursts", "interval_s": 5, "last_ok": now - 4, "last_error": None}
    # Between bursts the slot is idle by design: not a failure while bursts succeed.
    assert apply(fresh, idle) == (True, {})
    # A missing slot is a failure whatever the bursts say.
    missing = {"replication slot": "replication slot 'codeb_barman' doesn't exist"}
    assert apply(fresh, missing) == (False, missing)
    # Bursts that stopped succeeding: their error is the failure, the idle slot stays.
    stale = {**fresh, "last_ok": now - 300, "last_error": "IDENTIFY_SYSTEM: refused"}
    dropped, failing = apply(stale, idle)
    assert not dropped and failing["wal_bursts"] == "IDENTIFY_SYSTEM: refused"
    receiver, detail = status.receiver_of({"unit": "active", "failing": failing, "check_rc": 1})
    assert receiver == "failed" and "IDENTIFY_SYSTEM: refused" in detail
    # A continuous stream keeps barman check's verdict as it is.
    assert apply({**fresh, "mode": "continuous"}, idle) == (False, idle)
