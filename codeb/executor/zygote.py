"""A warm ansible-playbook: a process that has imported Ansible once and forks a child per run.

Importing Ansible costs ~0.55 s of CPU per run (of ~0.9 s before a playbook's first task), and
codeb starts one ansible-playbook per operation step. The zygote pays the imports once; each
run is a fork of it.

ansible-runner still starts the run as it always did: it spawns codeb's `ansible-playbook`
(runner.PLAYBOOK_ENTRY) on its pty. That entry is the *relay*: it hands its argv, environment,
working directory and its stdin/stdout/stderr (the pty, as file descriptors over a Unix
socket) to the zygote, which forks a child that becomes ansible-playbook on those descriptors.
The relay then waits for the child's exit code and exits with it. So ansible-runner reads the
same output from the same pty, gets the same exit code, and its cancel still works:
- a signal the relay receives (SIGTERM, SIGINT, SIGHUP, ...) is passed to the child's group;
- SIGKILL of the relay (ansible-runner's cancel and timeout) closes the relay's end of the
  socket, and the child's watcher thread then kills the child's process group at once.
A crashed codeb leaves relays whose command line names the run directory, so
`runner.reap_orphans` finds and stops them as before; the relay takes its child with it.

Exactness: the child sets the run's environment and recomputes every Ansible constant from
it, so a setting read at import sees the run's value. The zygote imports under the first
run's environment and serves only runs whose environment matches it, apart from the names in
PER_RUN (paths ansible-runner makes for each run); any other difference is answered "no" and
the relay runs ansible-playbook in its own process (as before the zygote), while the zygote
starts over to import under the new environment. The ansible.cfg file is part of the match
(its size and mtime). Whenever the zygote is missing, busy starting or refuses, the relay
runs Ansible itself: the zygote only ever makes a run faster.

The zygote ends when codeb does (its lifeline pipe reaches end-of-file), when it has been idle
for `idle_s`, or on SIGTERM. It never holds a run's descriptors after the fork.
"""

from __future__ import annotations

import array
import atexit
import json
import os
import selectors
import shutil
import signal
import socket
import stat
import struct
import sys
import threading
from pathlib import Path
from typing import Any

# Environment names that differ between runs by design (ansible-runner's per-run paths) and
# are therefore not part of the match; the child sets them and recomputes the constants.
PER_RUN = frozenset({"AWX_ISOLATED_DATA_DIR", "ANSIBLE_CACHE_PLUGIN_CONNECTION"})
# What the imports read from the environment, so what the zygote's imports froze: every name
# an Ansible setting reads (taken from its definitions after import, and these prefixes), the
# interpreter's, OpenSSL's (read when cryptography loads it), the locale, and the paths
# settings expand. Any other name is read at run time, when the child has the run's own.
_IMPORT_PREFIXES = ("ANSIBLE_", "_ANSIBLE_", "PYTHON", "LC_", "OPENSSL_", "SSL_")
_IMPORT_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TERM", "TMPDIR", "TEMP", "TMP"}
)
# Signals the relay passes on to the child's process group (SIGKILL cannot be caught: the
# child's watcher handles it).
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
)
# Setting types whose value is a directory made for the process (ansible/config/manager.py).
TMP_TYPES = frozenset({"tmppath", "temppath", "tmp"})
# Those that end a run that has not started yet.
STOPPING = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
_MAX_REQUEST = 1 << 20
_LEN = struct.Struct("!I")
_INT = struct.Struct("!i")


# -- the request ---------------------------------------------------------------------------


def _send_request(sock: socket.socket, payload: dict[str, Any], fds: list[int]) -> None:
    body = json.dumps(payload).encode()
    data = _LEN.pack(len(body)) + body
    sent = sock.sendmsg(
        [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    )
    if sent < len(data):
        sock.sendall(data[sent:])


def _recv_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    fds: list[int] = []
    msg, ancdata, _flags, _addr = sock.recvmsg(
        65536, socket.CMSG_SPACE(3 * 4), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", raw[: len(raw) - len(raw) % 4]))
    try:
        if len(msg) < _LEN.size:
            raise ValueError("short request")
        (size,) = _LEN.unpack(msg[: _LEN.size])
        if size > _MAX_REQUEST:
            raise ValueError("request too large")
        body = msg[_LEN.size :]
        while len(body) < size:
            chunk = sock.recv(size - len(body))
            if not chunk:
                raise ValueError("truncated request")
            body += chunk
        payload = json.loads(body)
        if len(fds) != 3:
            raise ValueError("expected stdin, stdout and stderr")
    except Exception:
        for fd in fds:
            os.close(fd)
        raise
    return payload, fds


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except InterruptedError:
            continue
        if not chunk:
            return None
        data += chunk
    return data


def is_private_dir(path: str) -> bool:
    """A real directory (not a link) owned by this user that nobody else can enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def read_at_import(name: str, setting_names: frozenset[str] = frozenset()) -> bool:
    return name not in PER_RUN and (
        name.startswith(_IMPORT_PREFIXES) or name in _IMPORT_NAMES or name in setting_names
    )


def match_key(
    env: dict[str, str], setting_names: frozenset[str] = frozenset(), config_path: str | None = None
) -> str:
    """What a run's environment must share with the zygote's: the names read at import, and the
    ansible.cfg it names (size and modification time)."""
    kept = {k: v for k, v in env.items() if read_at_import(k, setting_names)}
    path = config_path if config_path is not None else env.get("ANSIBLE_CONFIG", "")
    try:
        st = os.stat(path) if path else None
        stamp = [st.st_size, st.st_mtime_ns] if st else None
    except OSError:
        stamp = None
    return json.dumps([sorted(kept.items()), stamp])


# -- the relay (codeb's ansible-playbook entry) --------------------------------------------


def relay(socket_path: str, argv0: str) -> None:
    """The body of codeb's ansible-playbook entry: run through the zygote when it answers,
    else run Ansible in this process. Never returns."""
    code = _through_zygote(socket_path, argv0)
    if code is None:
        run_in_process(argv0)
    elif code < 0:
        # Signalled before any run started (a cancel while the zygote answered): end as
        # ansible-playbook would have, by that signal.
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _through_zygote(socket_path: str, argv0: str) -> int | None:
    pending: list[int] = []
    child_pgid: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        if child_pgid:
            try:
                os.killpg(child_pgid[0], signum)
            except ProcessLookupError:
                pass
        else:
            pending.append(signum)

    if not is_private_dir(os.path.dirname(socket_path)):
        return None  # not ours alone: never hand the environment to whoever listens there
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_path)
    except OSError:
        return None
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        payload = {"argv": [argv0, *sys.argv[1:]], "env": dict(os.environ), "cwd": os.getcwd()}
        _send_request(sock, payload, [0, 1, 2])
        answer = _recv_exact(sock, 1 + _INT.size)
        if answer is None or answer[:1] != b"P":
            # Refused (another environment) or gone: run it here, unless it was stopped.
            stops = [signum for signum in pending if signum in STOPPING]
            return -stops[0] if stops else None
        (pid,) = _INT.unpack(answer[1:])
        child_pgid.append(pid)
        for signum in pending:
            forward(signum, None)
        result = _recv_exact(sock, 1 + _INT.size)
        if result is None or result[:1] != b"X":
            return 1  # the child died without an exit code (killed, crashed)
        return _INT.unpack(result[1:])[0]
    except OSError:
        return None if not child_pgid else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def run_in_process(argv0: str) -> None:
    """ansible-playbook in this process, without the interpreter's teardown at exit (freeing
    every object of a large heap: ~0.3 s after the last event of each run). Never returns."""
    from ansible.cli.playbook import main

    sys.argv[0] = argv0
    _exit_after(main)


def _exit_after(main: Any, conn: socket.socket | None = None) -> None:
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if conn is not None:
        _finished.set()
        try:
            conn.sendall(b"X" + _INT.pack(code))
        except OSError:
            pass
    os._exit(code)


# -- the zygote ----------------------------------------------------------------------------


def _reap(_signum: int, _frame: Any) -> None:
    """Wait for every run that ended. Waited for, not left to reap themselves (SIG_IGN): a
    run's CPU time then counts in this process's children times (/proc/PID/stat), where a
    look at codeb's process tree (bench/executor_overhead.py) finds it."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    # An inode number alone is reused at once on tmpfs.
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


class Zygote:
    def __init__(self, socket_path: str, lifeline_fd: int, idle_s: float) -> None:
        self.socket_path = socket_path
        self.lifeline_fd = lifeline_fd
        self.idle_s = idle_s
        self.key: str | None = None  # the environment imported under
        self.env: dict[str, str] = {}
        self.setting_names: frozenset[str] = frozenset()
        self.listener: socket.socket | None = None
        self.identity: tuple[int, int, int] | None = None  # of the socket file we bound

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, _reap)
        signal.signal(signal.SIGTERM, lambda *_: self._stop())
        path = Path(self.socket_path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is the owner's only (0600)
        try:
            listener.bind(str(tmp))
        finally:
            os.umask(old_umask)
        listener.listen(16)
        os.replace(tmp, path)
        self.identity = _identity(os.stat(path))
        self.listener = listener
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "run")
        selector.register(self.lifeline_fd, selectors.EVENT_READ, "lifeline")
        while True:
            ready = selector.select(timeout=self.idle_s)
            if not ready:
                self._stop()  # idle: the next run starts a new one
            for key, _mask in ready:
                if key.data == "lifeline":
                    self._stop()  # codeb is gone
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                self._handle(conn)

    def _stop(self) -> None:
        self._unlink_own_socket()
        os._exit(0)

    def _unlink_own_socket(self) -> None:
        # Only our own: a newer zygote may have replaced the path.
        try:
            if self.identity is not None and _identity(os.stat(self.socket_path)) == self.identity:
                os.unlink(self.socket_path)
        except OSError:
            pass

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            payload, fds = _recv_request(conn)
        except (OSError, ValueError):
            conn.close()
            return
        restart = False
        try:
            env = {str(k): str(v) for k, v in payload["env"].items()}
            if self.key is None:
                self._import_under(env)
            if match_key(env, self.setting_names) != self.key:
                self._say_differs(env)
                conn.sendall(b"N")
                restart = True
            # The child answers "P" itself, so a zygote that dies right after the fork can
            # never make the relay run Ansible a second time.
            elif os.fork() == 0:
                self._child(conn, fds, payload["argv"], env, payload["cwd"])
        except Exception:
            try:
                conn.sendall(b"N")
            except OSError:
                pass
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()
        if restart:
            self._restart()

    def _say_differs(self, env: dict[str, str]) -> None:
        # Names only: values may be secrets.
        names = sorted(
            k
            for k in set(env) | set(self.env)
            if env.get(k) != self.env.get(k) and read_at_import(k, self.setting_names)
        )
        print(
            f"codeb zygote: a run's environment differs ({', '.join(names) or 'ansible.cfg'});"
            " starting over",
            file=sys.stderr,
            flush=True,
        )

    def _import_under(self, env: dict[str, str]) -> None:
        os.environ.clear()
        os.environ.update({k: v for k, v in env.items() if k not in PER_RUN})
        import gc

        import ansible.cli.playbook  # noqa: F401  (the imports are the point)
        from ansible import constants as C
        from ansible.config import manager

        definitions = C.config.get_configuration_definitions()
        self.setting_names = frozenset(
            e["name"] for d in definitions.values() for e in d.get("env") or () if "name" in e
        )
        # A temporary-directory setting made a directory for this process at import, and
        # registered its removal at exit: each child makes its own (_adopt_environment), so
        # the zygote's is removed now and its removal at exit forgotten (children would run
        # it).
        for name, definition in definitions.items():
            if definition.get("type") in TMP_TYPES and isinstance(getattr(C, name, None), str):
                shutil.rmtree(getattr(C, name), ignore_errors=True)
        atexit.unregister(manager.cleanup_tmp_file)
        _prewarm()
        gc.collect()
        gc.freeze()  # children share the imported objects instead of copying them on write
        self.env = dict(os.environ)
        self.key = match_key(self.env, self.setting_names)

    def _restart(self) -> None:
        """Another environment: start over as a fresh process (same socket path, same
        lifeline), which imports under the next run's environment."""
        self._unlink_own_socket()
        assert self.listener is not None
        self.listener.close()
        os.execv(  # noqa: S606 (this program again, by its own interpreter)
            sys.executable,
            [
                sys.executable,
                "-m",
                "codeb.executor.zygote",
                self.socket_path,
                str(self.lifeline_fd),
                str(self.idle_s),
            ],
        )

    def _child(
        self, conn: socket.socket, fds: list[int], argv: list[str], env: dict[str, str], cwd: str
    ) -> None:
        try:
            os.setpgid(0, 0)
            conn.settimeout(None)
            conn.sendall(b"P" + _INT.pack(os.getpid()))
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            assert self.listener is not None
            self.listener.close()
            os.close(self.lifeline_fd)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            sys.argv = list(argv)
            _adopt_environment()
            threading.Thread(target=_watch_relay, args=(conn,), daemon=True).start()
            from ansible.cli.playbook import main
        except BaseException:
            os._exit(1)
        _exit_after(main, conn)


# Ansible's own plugins a codeb run loads (whose modules read no environment at import):
# every connection, shell and become plugin (a playbook run loads them all for their setting
# definitions: ansible/executor/playbook_executor.py) and these.
PREWARMED_ALL = ("connection", "shell", "become")
PREWARMED = (
    ("strategy", ("linear",)),
    ("inventory", ("yaml",)),
    ("cache", ("memory", "jsonfile")),
    ("callback", ("default", "minimal", "oneline", "tree", "junit")),
)
_ALREADY_CONFIGURED = "AnsibleCollectionFinder has already been configured"


def _prewarm() -> None:
    """Work every run repeats before its first task that depends only on what the match
    covers, done once: the collection loader (its paths come from settings), the routing
    table of ansible.builtin (a YAML file of ~10,000 lines) and the documentation of the
    plugins in PREWARMED (parsed into setting definitions, which Ansible keeps). Measured with
    py-spy: half of a forked run's CPU before its first task was this YAML."""
    from ansible.plugins import loader
    from ansible.utils.collection_loader._collection_finder import _get_collection_metadata

    loader.init_plugin_loader([])
    _get_collection_metadata("ansible.builtin")
    for kind in PREWARMED_ALL:
        list(getattr(loader, f"{kind}_loader").all(class_only=True))
    for kind, names in PREWARMED:
        plugins = getattr(loader, f"{kind}_loader")
        for name in names:
            plugins.get(f"ansible.builtin.{name}", class_only=True)


def _adopt_environment() -> None:
    """Make the imported Ansible what a fresh process would be under this environment: the
    constants read from a PER_RUN name recomputed (every other name matched the zygote's, and
    so did ansible.cfg), a temporary directory of its own for each such setting, the display
    sized for this terminal, stdout line-buffered when it is one (as Python sets it up)."""
    import warnings

    from ansible import constants as C
    from ansible.utils.display import Display

    # The run's CLI configures the collection loader again; the zygote's, made with the same
    # settings, stays (see _prewarm).
    warnings.filterwarnings("ignore", message=_ALREADY_CONFIGURED)
    for setting, definition in C.config.get_configuration_definitions().items():
        names = {entry.get("name") for entry in definition.get("env") or ()}
        if names & PER_RUN or definition.get("type") in TMP_TYPES:
            C.set_constant(setting, C.config.get_config_value(setting, variables=vars(C)))
    for stream in (sys.stdout, sys.stderr):
        if stream.isatty():
            stream.reconfigure(line_buffering=True)
    Display()._set_column_width()


_finished = threading.Event()


def _watch_relay(conn: socket.socket) -> None:
    """The relay never writes after the request: end-of-file before the run finished means it
    died (SIGKILL from ansible-runner's cancel or timeout), and the run must stop with it."""
    try:
        conn.recv(1)
    except OSError:
        pass
    if not _finished.is_set():
        os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    socket_path, lifeline_fd, idle_s = argv[0], int(argv[1]), float(argv[2])
    Zygote(socket_path, lifeline_fd, idle_s).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
