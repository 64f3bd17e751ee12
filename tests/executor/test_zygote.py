"""codeb's ansible-playbook entry and its zygote (codeb/executor/zygote.py), with real
ansible-playbook runs of local playbooks (connection local: no network)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from codeb.executor import runner
from codeb.executor.zygote import PER_RUN

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "mark={{ lookup('env', 'AWX_ISOLATED_DATA_DIR') }} forks={{ ansible_forks }}
          other={{ lookup('env', 'CODEB_TEST_OTHER') }}"
"""
FAIL = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.fail:
        msg: boom
"""
SLOW = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.command: sleep 120
"""


@pytest.fixture
def work(tmp_path: Path):
    work_dir = tmp_path / "runs"
    work_dir.mkdir()
    for name, text in (("play.yml", PLAY), ("fail.yml", FAIL), ("slow.yml", SLOW)):
        (tmp_path / name).write_text(text)
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (tmp_path / "inv.json").write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
    yield work_dir
    runner.stop_zygote(work_dir)


def entry(work_dir: Path) -> str:
    return str(runner.playbook_entry(work_dir) / "ansible-playbook")


def env_for(tmp_path: Path, mark: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(runner.ANSIBLE_CFG),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "CODEB_JOURNAL": "off",
        "AWX_ISOLATED_DATA_DIR": mark,  # per run, as ansible-runner sets it
        **extra,
    }


def run(work_dir: Path, playbook: str, mark: str = "m", **extra: str):
    tmp = work_dir.parent
    return subprocess.run(
        [entry(work_dir), "-i", str(tmp / "inv.json"), str(tmp / playbook)],
        env=env_for(tmp, mark, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
    )


def start_slow(work_dir: Path, mark: str, **popen: object) -> subprocess.Popen:
    """The slow playbook through the entry, in the background."""
    tmp = work_dir.parent
    return subprocess.Popen(
        [entry(work_dir), "-i", str(tmp / "inv.json"), str(tmp / "slow.yml")],
        env=env_for(tmp, mark),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
        **popen,  # type: ignore[arg-type]
    )


def zygote_pid(work_dir: Path) -> int:
    proc = runner._zygotes[runner.zygote_socket(work_dir)]
    assert proc.poll() is None
    return proc.pid


def children_of(pid: int) -> list[int]:
    out = []
    for entry_ in Path("/proc").iterdir():
        if entry_.name.isdigit():
            try:
                stat = (entry_ / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry_.name))
    return out


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def serving(work_dir: Path) -> None:
    wait_for(lambda: runner.zygote_socket(work_dir).exists(), 30)


def test_runs_through_the_zygote_with_each_runs_environment(work: Path):
    runner.ensure_zygote(work)
    serving(work)
    first = run(work, "play.yml", mark="first")  # the zygote imports under this environment
    assert first.returncode == 0, first.stdout + first.stderr
    assert "mark=first forks=10" in first.stdout
    pid = zygote_pid(work)
    created = runner.zygote_socket(work).stat().st_ctime_ns
    for mark in ("second", "third"):
        # Another per-run value (PER_RUN), and a name Ansible reads only at run time: still
        # served by the same zygote, and the run sees its own values.
        assert "AWX_ISOLATED_DATA_DIR" in PER_RUN
        result = run(work, "play.yml", mark=mark, CODEB_TEST_OTHER=mark * 2)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"mark={mark} forks=10 other={mark * 2}" in result.stdout
        assert "differs" not in result.stderr
    assert runner.zygote_socket(work).stat().st_ctime_ns == created
    # Proof the runs are the zygote's children: a slow run shows up as one.
    before = set(children_of(pid))
    slow = start_slow(work, "slow")
    child = 0
    try:
        (child,) = wait_for(lambda: set(children_of(pid)) - before)
        # Its own local temporary directory (named by its pid), which a run that ends beside
        # it does not remove; the zygote's own was removed when it imported.
        local_tmp = work.parent / "local-tmp"
        assert wait_for(lambda: [p.name for p in local_tmp.glob(f"ansible-local-{child}*")])
        assert run(work, "play.yml", mark="beside").returncode == 0
        owned = [p.name for p in local_tmp.iterdir()]
        assert len(owned) == 1 and owned[0].startswith(f"ansible-local-{child}"), owned
    finally:
        slow.send_signal(signal.SIGTERM)  # passed on to the run
        assert slow.wait(timeout=60) != 0
    wait_for(lambda: not (set(children_of(pid)) - before), 30)
    # Every finished run removed its own; the one stopped by SIGTERM leaves its directory,
    # as ansible-playbook does when it is not the zygote's child.
    left = [p.name for p in (work.parent / "local-tmp").iterdir()]
    assert all(name.startswith(f"ansible-local-{child}") for name in left), left


def test_exit_codes_and_output_are_the_runs(work: Path):
    runner.ensure_zygote(work)
    serving(work)
    for _ in range(2):  # the first imports, the second is a plain fork
        failed = run(work, "fail.yml")
        assert failed.returncode == 2
        assert "boom" in failed.stdout
    missing = run(work, "nope.yml")
    assert missing.returncode == 1
    assert "nope.yml" in missing.stdout + missing.stderr


def test_without_a_zygote_the_relay_runs_ansible_itself(work: Path):
    result = run(work, "play.yml", mark="alone")  # nothing listens
    assert result.returncode == 0, result.stderr
    assert "mark=alone forks=10" in result.stdout
    assert run(work, "fail.yml").returncode == 2


def test_another_environment_is_run_in_the_relay_then_served_warm(work: Path):
    runner.ensure_zygote(work)
    serving(work)
    assert run(work, "play.yml").returncode == 0
    pid = zygote_pid(work)
    sock = runner.zygote_socket(work)
    created = sock.stat().st_ctime_ns
    other = run(work, "play.yml", mark="x", ANSIBLE_FORKS="3")
    assert other.returncode == 0, other.stderr
    assert "mark=x forks=3" in other.stdout  # exact, although the zygote imported with 10
    # The zygote started over in the same process and listens again.
    wait_for(lambda: sock.exists() and sock.stat().st_ctime_ns != created, 30)
    assert zygote_pid(work) == pid
    again = run(work, "play.yml", mark="y", ANSIBLE_FORKS="3")
    assert "mark=y forks=3" in again.stdout


def test_killing_the_relay_kills_the_run(work: Path):
    """ansible-runner cancels and times out with SIGKILL on the process it started: the run
    forked by the zygote must end with it."""
    runner.ensure_zygote(work)
    serving(work)
    assert run(work, "play.yml").returncode == 0
    pid = zygote_pid(work)
    before = set(children_of(pid))
    relay = start_slow(work, "k", start_new_session=True)
    (child,) = wait_for(lambda: set(children_of(pid)) - before)
    relay.kill()
    relay.wait(timeout=10)
    wait_for(lambda: not Path(f"/proc/{child}").exists(), 10)


def test_through_a_pty_as_ansible_runner_starts_it(work: Path):
    runner.ensure_zygote(work)
    serving(work)
    for mark in ("p1", "p2"):
        child = pexpect.spawn(
            entry(work),
            ["-i", str(work.parent / "inv.json"), str(work.parent / "play.yml")],
            env=env_for(work.parent, mark),
            cwd=str(work.parent),
            encoding="utf-8",
            timeout=120,
        )
        child.expect(f"mark={mark} forks=10")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    # The zygote keeps no descriptor of a run (a kept pty would hold ansible-runner's EOF).
    fds = [os.readlink(p) for p in Path(f"/proc/{zygote_pid(work)}/fd").iterdir()]
    assert not [fd for fd in fds if "pts" in fd or "ptmx" in fd], fds


def test_the_relay_refuses_a_directory_not_private(work: Path):
    sock_dir = runner.zygote_socket(work).parent
    sock_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(sock_dir, 0o755)
    try:
        runner.ensure_zygote(work)  # refuses to start one there
        assert runner.zygote_socket(work) not in runner._zygotes
        result = run(work, "play.yml", mark="open")
        assert result.returncode == 0 and "mark=open" in result.stdout
    finally:
        os.chmod(sock_dir, 0o700)


def test_the_zygote_ends_when_stopped_and_when_idle(work: Path, monkeypatch):
    runner.ensure_zygote(work)
    serving(work)
    proc = runner._zygotes[runner.zygote_socket(work)]
    runner.stop_zygote(work)
    assert proc.poll() is not None
    assert not runner.zygote_socket(work).exists()
    monkeypatch.setattr(runner, "ZYGOTE_IDLE_S", 0.5)
    runner.ensure_zygote(work)
    proc = runner._zygotes[runner.zygote_socket(work)]
    assert proc.wait(timeout=30) == 0


def test_a_run_stopped_before_the_zygote_answered_does_not_start(work: Path):
    """A cancel (SIGTERM) that reaches the entry while the zygote is still answering, then a
    refusal: the entry must end by that signal, not go on to run Ansible itself."""
    import socket as socketlib

    from codeb.executor import zygote

    sock_path = runner.zygote_socket(work)
    sock_path.parent.mkdir(mode=0o700, exist_ok=True)
    sock_path.unlink(missing_ok=True)
    server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    marker = work.parent / "ran"
    relay = subprocess.Popen(
        [entry(work), "-i", str(work.parent / "inv.json"), str(work.parent / "play.yml")],
        env=env_for(work.parent, "stopped"),
        stdout=marker.open("w"),
        stderr=subprocess.STDOUT,
        cwd=work.parent,
    )
    try:
        conn, _ = server.accept()
        payload, fds = zygote._recv_request(conn)  # the request came, with its 3 descriptors
        for fd in fds:
            os.close(fd)
        assert payload["argv"][-1].endswith("play.yml")
        relay.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the signal is handled (recorded) while the answer is awaited
        conn.sendall(b"N")
        conn.close()
        assert relay.wait(timeout=60) == -signal.SIGTERM
        assert "mark=stopped" not in marker.read_text()  # Ansible never ran
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
        server.close()
        sock_path.unlink(missing_ok=True)
