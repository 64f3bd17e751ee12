"""The one place that imports ansible_runner. Like its `interface.run`, one small entry:
`run_playbook`, with the event handler and the cancel check as plain callables."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import ansible_runner.runner
import pexpect

from codeb.config import content_root
from codeb.executor import zygote
from codeb.executor.events import EventRecord, to_record
from codeb.executor.inventory import Host, SshSettings, build_inventory

# From the checkout, or from the installed distribution (codeb.config.content_root).
PLAYBOOKS_DIR = content_root() / "playbooks"
ROLES_DIR = content_root() / "roles"
ANSIBLE_CFG = content_root() / "ansible.cfg"
# ansible-runner checks the cancel callback (and the job timeout) each time its pexpect loop
# wakes up: on output, or after `pexpect_timeout` seconds without any (5 s by default, during
# which a canceled run went on restarting units). A tenth of a second makes a cancel take
# effect at once; the loop costs ~10 wake-ups a second per run, nothing measurable.
CANCEL_POLL_S = 0.1
SETTINGS = {"pexpect_timeout": CANCEL_POLL_S}


class _Spawn(pexpect.spawn):
    """pexpect's spawn without the 0.1 s sleep in close(). ptyprocess sleeps there to give
    the kernel time to report a child's exit before it kills a child still alive; ansible-
    runner closes the child only after its loop saw `isalive()` false (runner.py, `while
    child.isalive()`), so the sleep only delayed every run's end by 0.1 s (measured: a run's
    last event to run_playbook's return, 0.106 s every time)."""

    def _spawnpty(self, args: list[str], **kwargs: Any) -> Any:
        pty = super()._spawnpty(args, **kwargs)
        pty.delayafterclose = 0
        return pty


# Only ansible-runner's runs get it (its module's view of pexpect), not every pexpect user.
ansible_runner.runner.pexpect = types.SimpleNamespace(  # type: ignore[assignment]
    **{**vars(pexpect), "spawn": _Spawn}
)
# ansible-playbook as codeb runs it: a relay to the zygote (codeb/executor/zygote.py), which
# forks an already imported Ansible for the run, or Ansible in the relay's own process when the
# zygote is not there. Found first on the run's PATH, so ansible-runner starts it as it starts
# ansible-playbook.
PLAYBOOK_ENTRY = """#!{python}
# Written by codeb (codeb/executor/runner.py): ansible-playbook through codeb's zygote.
from codeb.executor.zygote import relay

relay({socket!r}, {argv0!r})
"""
# A zygote idle this long ends (the next run starts another): it holds ~60 MB.
ZYGOTE_IDLE_S = 600


@dataclass(frozen=True)
class PlaybookRun:
    playbook: str  # a file name in playbooks/
    targets: list[Host]
    extravars: dict[str, Any] = field(default_factory=dict)
    # Values to scrub from every stored event (passwords travel as extra vars).
    secrets: tuple[str, ...] = ()
    limit: str | None = None
    check: bool = False
    diff: bool = False
    timeout_s: int = 1800


@dataclass(frozen=True)
class RunOutcome:
    status: str  # successful, failed, canceled, timeout
    rc: int | None


def _envvars(control_dir: Path, entry_dir: Path | None = None) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    first = f"{entry_dir}:" if entry_dir is not None else ""
    return {
        # ansible-playbook (codeb's entry, then the real one) and its helpers come from this
        # virtual environment.
        "PATH": f"{first}{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_ROLES_PATH": str(ROLES_DIR),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
        # A long ControlPath silently disables ControlPersist: keep the directory short.
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        # codeb's inventories are JSON files, which the yaml plugin reads; the other five
        # enabled by default were each loaded, with their documentation parsed, only to
        # decline the file (a fifth of a run's start-up CPU).
        "ANSIBLE_INVENTORY_ENABLED": "ansible.builtin.yaml",
        # codeb records its own runs; the journal callback (named in ansible.cfg, found here)
        # is for runs made by hand and stays silent in codeb's.
        "ANSIBLE_CALLBACK_PLUGINS": str(content_root() / "plugins" / "callback"),
        # codeb's modules run on their hosts without AnsiballZ (plugins/action/codeb_direct.py).
        "ANSIBLE_ACTION_PLUGINS": str(content_root() / "plugins" / "action"),
        "ANSIBLE_MODULE_UTILS": str(content_root() / "plugins" / "module_utils"),
        "CODEB_JOURNAL": "off",
    }


def control_dir_for(work_dir: Path) -> Path:
    """Where SSH master connections live: one directory per codeb instance (two instances
    must not share connections made with different keys), and short, because a long
    ControlPath silently disables ControlPersist."""
    digest = hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"cbcp-{os.getuid()}-{digest}"


def zygote_socket(work_dir: Path) -> Path:
    """Where the zygote of this codeb instance listens: a private directory beside the SSH
    masters' (a Unix socket path must stay under 108 bytes)."""
    digest = hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"cbzy-{os.getuid()}-{digest}" / "s"


_zygotes: dict[Path, subprocess.Popen] = {}
_zygotes_lock = threading.Lock()
_lifeline: list[int] = []  # (read end, write end): the write end stays open while codeb runs


def ensure_zygote(work_dir: Path) -> None:
    """Start this instance's zygote unless it runs. Runs never wait for it: a relay that finds
    no zygote runs Ansible itself."""
    sock = zygote_socket(work_dir)
    with _zygotes_lock:
        proc = _zygotes.get(sock)
        if proc is not None and proc.poll() is None:
            return
        sock.parent.mkdir(mode=0o700, exist_ok=True)
        if not zygote.is_private_dir(str(sock.parent)):
            return  # someone else's directory: no zygote (the relay refuses it too)
        if not _lifeline:
            _lifeline.extend(os.pipe())  # both ends close-on-exec except where passed
        _zygotes[sock] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "codeb.executor.zygote",
                str(sock),
                str(_lifeline[0]),
                str(ZYGOTE_IDLE_S),
            ],
            pass_fds=(_lifeline[0],),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )


def stop_zygote(work_dir: Path) -> None:
    """Stop the zygote this process started for `work_dir` (by its PID); runs it already
    forked go on."""
    with _zygotes_lock:
        proc = _zygotes.pop(zygote_socket(work_dir), None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def playbook_entry(work_dir: Path) -> Path:
    """The directory holding codeb's `ansible-playbook` (PLAYBOOK_ENTRY), written when it is
    missing or differs (another Python, another codeb)."""
    entry_dir = work_dir / "bin"
    path = entry_dir / "ansible-playbook"
    real = Path(sys.executable).parent / "ansible-playbook"
    content = PLAYBOOK_ENTRY.format(
        python=sys.executable, socket=str(zygote_socket(work_dir)), argv0=str(real)
    )
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current != content:
        entry_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".entry-", dir=entry_dir)
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)
    return entry_dir


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)


def run_playbook(
    run: PlaybookRun,
    *,
    ssh: SshSettings,
    work_dir: Path,
    on_event: Callable[[EventRecord], None],
    should_cancel: Callable[[], bool] = lambda: False,
) -> RunOutcome:
    """Run one playbook in a private directory that is removed afterwards, so neither extra
    vars nor event artifacts stay on disk."""
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Path(tempfile.mkdtemp(prefix="run-", dir=work_dir))
    control_dir = control_dir_for(work_dir)
    control_dir.mkdir(mode=0o700, exist_ok=True)
    entry_dir = playbook_entry(work_dir)
    ensure_zygote(work_dir)
    try:
        inventory = private / "inventory" / "hosts.json"
        _write_private(inventory, json.dumps(build_inventory(run.targets, ssh)))
        # Extra vars go in a 0600 file (never on the command line, where `ps` shows them).
        _write_private(private / "env" / "extravars", json.dumps(run.extravars))
        # A file, not the `settings` argument: ansible-runner 2.4 replaces that argument with
        # {} when env/settings is missing (config/_base.py, prepare_env).
        _write_private(private / "env" / "settings", json.dumps(SETTINGS))
        cmdline = " ".join(opt for opt, on in (("--check", run.check), ("--diff", run.diff)) if on)

        def handle(raw: dict) -> bool:
            on_event(to_record(raw, run.secrets))
            return False  # nothing written to the artifact dir: events live in our table

        result = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(PLAYBOOKS_DIR / run.playbook),
            inventory=str(inventory),
            limit=run.limit,
            cmdline=cmdline or None,
            envvars=_envvars(control_dir, entry_dir),
            event_handler=handle,
            cancel_callback=should_cancel,
            timeout=run.timeout_s,
            quiet=True,
            suppress_env_files=False,
        )
        return RunOutcome(status=result.status, rc=result.rc)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def reap_orphans(work_dir: Path, grace_s: float = 5.0) -> list[int]:
    """After a crash: stop the ansible-playbook processes a dead codeb left behind (they
    ignore SIGHUP, so they outlive it) and remove their run directories, which hold extra
    vars. The processes are found by their command line naming a run directory of ours."""
    marker = str(work_dir.resolve()) + "/run-"
    groups: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            try:
                groups.add(os.getpgid(int(entry.name)))
            except ProcessLookupError:
                continue
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while groups and time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.1)
    for pgid in groups:
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    if work_dir.is_dir():
        for run_dir in work_dir.glob("run-*"):
            shutil.rmtree(run_dir, ignore_errors=True)
    return sorted(groups)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
