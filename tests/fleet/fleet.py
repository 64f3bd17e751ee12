#!/usr/bin/env python3
"""Test fleet: real Debian 13 hosts (systemd + sshd + Podman + Quadlet) under systemd-nspawn.

Run as root on a bare Debian machine:

    python3 tests/fleet/fleet.py up 3      # build what is missing, boot app, db, cache
    python3 tests/fleet/fleet.py add bare1:bare   # boot one more host of a variant
    python3 tests/fleet/fleet.py proxy     # start the package proxy on the bridge
    python3 tests/fleet/fleet.py status
    python3 tests/fleet/fleet.py down      # idempotent; also cleans up after a crash
    python3 tests/fleet/fleet.py images    # only build the cached template and images

Host variants: `full` (the default: Podman, Quadlet and the test images pre-baked), `bare`
(Debian 13 minbase + sshd + python3, nothing codeb's bootstrap installs) and `bare-bookworm`
(the same on Debian 12, whose Podman is too old for Quadlet).

Stdlib only. Caches (host template, image archive) live in CODEB_FLEET_CACHE
(/var/cache/codeb-fleet), keyed by a hash of their recipe; the running fleet's state (PIDs, key
pair, host roots, console logs) lives in CODEB_FLEET_DIR (/var/lib/codeb-fleet).

Network rule: guests sit on a private bridge with no NAT and FORWARD DROP rules both ways, so
traffic only flows between this machine and its own guests.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Bump when the build steps change in a way the hashed content below does not capture.
RECIPE_VERSION = "1"
SUITE = "trixie"
DEFAULT_NAMES = ("app", "db", "cache")

HOST_TOOLS = {  # command -> Debian package providing it
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "iptables": "iptables",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
BUSYBOX = Path("/bin/busybox")

GUEST_PACKAGES = (
    "systemd,systemd-sysv,systemd-resolved,dbus,libpam-systemd,openssh-server,python3,python3-apt,"
    "sudo,podman,crun,conmon,netavark,aardvark-dns,passt,catatonit,fuse-overlayfs,busybox-static,"
    "curl,ca-certificates,iproute2,procps,nftables,iptables,systemd-timesyncd"
)
# A bare server as a provider hands it over: systemd, sshd, python3 (Ansible needs it) and
# nothing codeb's bootstrap installs itself. tests/bootstrap proves that it does.
BARE_PACKAGES = "systemd,systemd-sysv,systemd-resolved,dbus,openssh-server,python3"
# Units that must not run in the guest (no kernel modules / first-boot wizard in a container)
# plus timers that would only try to reach the network.
GUEST_MASKS = (
    "systemd-modules-load.service",
    "systemd-firstboot.service",
    "console-getty.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
)
GUEST_ENABLE = ("systemd-networkd.service", "ssh.service")
GUEST_FILES: dict[str, str] = {
    # No CAP_SYS_RESOURCE in these guests and hard nofile is 20000: podman's defaults fail.
    "etc/containers/containers.conf": (
        "[containers]\n"
        "pids_limit = 0\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
    ),
    "etc/ssh/sshd_config.d/10-codeb-fleet.conf": (
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
    ),
    # No resolver may be tried from inside the fleet: nothing outside is reachable anyway.
    "etc/systemd/resolved.conf.d/10-codeb-fleet.conf": (
        "[Resolve]\nDNS=\nFallbackDNS=\nLLMNR=no\nMulticastDNS=no\n"
    ),
}

# The bare variants get the same sshd and resolver set-up, but no containers.conf: that is
# bootstrap's to write.
BARE_FILES = {k: v for k, v in GUEST_FILES.items() if not k.startswith("etc/containers/")}


@dataclass(frozen=True)
class Variant:
    suite: str
    packages: str
    files: dict[str, str]
    images: bool  # the test images pre-loaded into /var/lib/containers


VARIANTS = {
    "full": Variant(SUITE, GUEST_PACKAGES, GUEST_FILES, images=True),
    "bare": Variant(SUITE, BARE_PACKAGES, BARE_FILES, images=False),
    "bare-bookworm": Variant("bookworm", BARE_PACKAGES, BARE_FILES, images=False),
}

# The package proxy (Debian's squid) the suite may start on the bridge's own address, so that
# bare guests, which have no route out, can install from Debian's mirror through it.
APT_PROXY_PORT = 3142

DB_PACKAGES = "postgresql,redis-server"
PG_MAJOR = "17"  # trixie ships PostgreSQL 17
REDIS_MAJOR = "8"  # trixie ships Redis 8.0
APP_IMAGE = "localhost/codeb-test-app"
APP_VERSIONS = ("v1", "v2", "broken")
POSTGRES_IMAGE = f"docker.io/library/postgres:{PG_MAJOR}"
REDIS_IMAGE = f"docker.io/library/redis:{REDIS_MAJOR}"

# Follows the official image's contract: POSTGRES_USER/PASSWORD/DB, PGDATA, initdb once,
# scram auth for remote hosts, /docker-entrypoint-initdb.d, args starting with '-' go to postgres.
POSTGRES_ENTRYPOINT = r"""#!/bin/sh
set -eu
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
shift
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
AUTH="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
chmod 2775 /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$AUTH" != trust ]; then
        echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    chown postgres "$pwfile"
    # shellcheck disable=SC2086
    as_pg initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host="$AUTH" ${POSTGRES_INITDB_ARGS:-}
    rm -f "$pwfile"
    printf 'host all all all %s\n' "$AUTH" >> "$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    as_pg pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
    if [ "$POSTGRES_DB" != postgres ]; then
        as_pg psql -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname=postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) . "$f" ;;
            *.sql) as_pg psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$f" ;;
        esac
    done
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres "$@"
"""

# Official contract: args are redis-server's; protected mode off (the official build's default),
# data in /data owned by redis.
REDIS_ENTRYPOINT = r"""#!/bin/sh
set -eu
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" != redis-server ]; then exec "$@"; fi
case " $* " in
    *" --protected-mode "*) ;;
    *) set -- "$@" --protected-mode no ;;
esac
mkdir -p /data
chown -R redis:redis /data
exec setpriv --reuid=redis --regid=redis --init-groups "$@"
"""

APP_INDEX = "<html><body><h1>codeb-test-app {version}</h1><p>version={version}</p></body></html>\n"
# busybox httpd cannot answer 500, so the broken variant is a tiny nc-driven responder.
APP_BROKEN_HANDLER = r"""#!/bin/sh
while read -r line; do
    [ -z "$(printf '%s' "$line" | tr -d '\r')" ] && break
done
printf 'HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/plain\r\n'
printf 'Connection: close\r\nContent-Length: 26\r\n\r\ncodeb-test-app broken: 500'
"""
APP_CMD = 'exec /bin/busybox httpd -f -v -p "${PORT:-3000}" -h /www'
APP_BROKEN_CMD = 'exec /bin/busybox nc -ll -p "${PORT:-3000}" -e /bin/broken-handler'


def log(msg: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class FleetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Config:
    state_dir: Path
    cache_dir: Path
    bridge: str
    subnet: ipaddress.IPv4Network
    mirror: str
    boot_timeout: float = 120.0
    stop_timeout: float = 5.0
    tmpfs_size: str = "8G"  # host roots on tmpfs ("0" = on disk): copy 3 s instead of 12-50 s
    session_wait: float = 900.0

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            state_dir=Path(env.get("CODEB_FLEET_DIR", "/var/lib/codeb-fleet")),
            cache_dir=Path(env.get("CODEB_FLEET_CACHE", "/var/cache/codeb-fleet")),
            bridge=env.get("CODEB_FLEET_BRIDGE", "cbfleet0"),
            subnet=ipaddress.IPv4Network(env.get("CODEB_FLEET_SUBNET", "10.88.41.0/24")),
            mirror=env.get("CODEB_FLEET_MIRROR", "http://deb.debian.org/debian"),
            boot_timeout=float(env.get("CODEB_FLEET_BOOT_TIMEOUT", "120")),
            stop_timeout=float(env.get("CODEB_FLEET_STOP_TIMEOUT", "5")),
            tmpfs_size=env.get("CODEB_FLEET_TMPFS_SIZE", "8G"),
            session_wait=float(env.get("CODEB_FLEET_SESSION_WAIT", "900")),
        )

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def host_ip(self, index: int) -> str:
        return str(self.subnet.network_address + 11 + index)

    @property
    def key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def session_lock(self) -> Path:
        return self.state_dir / "session.lock"

    def cgroup_name(self, host: str) -> str:
        return f"codeb-fleet-{self.bridge}-{host}"


@dataclass
class Host:
    name: str
    ip: str
    ssh_private_key_path: Path
    root: Path
    console_log: Path
    cgroup: str
    pid: int | None = None
    ssh_user: str = "root"
    ssh_port: int = 22
    known_hosts: Path | None = None
    variant: str = "full"

    def ssh_argv(self, command: str | None = None, *, strict: bool = False) -> list[str]:
        """ssh command line; strict=True pins the host key from the fleet's known_hosts."""
        if strict and self.known_hosts is not None:
            checking = ["-o", "StrictHostKeyChecking=yes"]
            checking += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        else:
            checking = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        argv = ["ssh", "-F", "/dev/null", "-i", str(self.ssh_private_key_path), *checking]
        argv += ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5"]
        argv += ["-o", "LogLevel=ERROR", "-p", str(self.ssh_port), f"{self.ssh_user}@{self.ip}"]
        if command is not None:
            argv.append(command)
        return argv

    def ssh(
        self,
        command: str,
        *,
        check: bool = False,
        timeout: float = 300,
        input: str | bytes | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run a shell command on the host as root; stdout/stderr captured."""
        if text and isinstance(input, bytes):
            text = False
        res = subprocess.run(
            self.ssh_argv(command),
            input=input,
            capture_output=True,
            text=text,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise FleetError(
                f"{self.name}: `{command}` exited {res.returncode}: {res.stderr!r} {res.stdout!r}"
            )
        return res

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict) -> Host:
        paths = ("ssh_private_key_path", "root", "console_log", "known_hosts")
        return cls(**{k: Path(v) if k in paths and v is not None else v for k, v in d.items()})


@dataclass
class State:
    bridge: str
    subnet: str
    bridge_created: bool = False
    fw_rules: list[list[str]] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)

    def save(self, cfg: Config) -> None:
        data = {
            "bridge": self.bridge,
            "subnet": self.subnet,
            "bridge_created": self.bridge_created,
            "fw_rules": self.fw_rules,
            "hosts": [h.to_json() for h in self.hosts],
        }
        tmp = cfg.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, cfg.state_file)

    @classmethod
    def load(cls, cfg: Config) -> State | None:
        try:
            data = json.loads(cfg.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(
            bridge=data["bridge"],
            subnet=data["subnet"],
            bridge_created=data.get("bridge_created", False),
            fw_rules=data.get("fw_rules", []),
            hosts=[Host.from_json(h) for h in data.get("hosts", [])],
        )


# ---------------------------------------------------------------- small helpers


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess:
    argv = [str(a) for a in argv]
    res = subprocess.run(
        argv,
        capture_output=capture,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if check and res.returncode != 0:
        out = ((res.stdout or "") + (res.stderr or ""))[-3000:]
        raise FleetError(f"command failed ({res.returncode}): {shlex.join(argv)}\n{out}")
    return res


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def recipe_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 900) -> Iterator[None]:
    """Exclusive flock, bounded wait; the holder's PID is kept in the file for messages."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        deadline = time.monotonic() + timeout
        waiting_logged = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "?"
                if time.monotonic() >= deadline:
                    raise FleetError(f"{path} is held by PID {holder}") from None
                if not waiting_logged:
                    log(f"waiting up to {timeout:.0f}s for {path} (held by PID {holder})")
                    waiting_logged = True
                time.sleep(0.5)
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if (point + "/").startswith(prefix):
            points.append(point)
    return points


def rm_tree(path: Path) -> None:
    """rm -rf that first unmounts what an interrupted debootstrap may have left mounted."""
    if not (path.exists() or path.is_symlink()):
        return
    for point in sorted(mounts_under(path), key=len, reverse=True):
        run(["umount", "-l", point], check=False)
    run(["rm", "-rf", "--one-file-system", path], timeout=300)


def is_static_elf(path: Path) -> bool:
    """True if the ELF has no PT_INTERP, i.e. it runs in a FROM scratch image."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def ensure_root() -> None:
    if os.geteuid() != 0:
        raise FleetError("the test fleet needs root (nspawn, bridges, iptables)")
    # ip, iptables, debootstrap live in sbin, which a non-login shell may not have on PATH.
    path = os.environ.get("PATH", "").split(":")
    extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path]
    if extra:
        os.environ["PATH"] = ":".join([*path, *extra])


def ensure_host_packages() -> None:
    """apt-get install the host tools that are missing (apt-get update first)."""
    missing = {pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None}
    if not (BUSYBOX.exists() and is_static_elf(BUSYBOX)):
        missing.add("busybox-static")
    if not missing:
        return
    log(f"installing host packages: {' '.join(sorted(missing))}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-qq", *sorted(missing)], env=env, timeout=900)


def ensure_keypair(cfg: Config) -> Path:
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not cfg.key_path.exists():
        cfg.key_path.with_suffix(".pub").unlink(missing_ok=True)
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "codeb-fleet", "-f", cfg.key_path]
        )
    return cfg.key_path


# ---------------------------------------------------------------- cgroups and nspawn

CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))


def cgroup_dirs(name: str) -> list[Path]:
    """Where to put our own cgroup: both hierarchies on a hybrid host, the root on pure v2."""
    roots = [r for r in CGROUP_ROOTS if (r / "cgroup.procs").exists()]
    if not roots and (Path("/sys/fs/cgroup/cgroup.controllers")).exists():
        roots = [Path("/sys/fs/cgroup")]
    return [r / name for r in roots]


def _join_cgroups(dirs: list[Path]) -> Callable[[], None]:
    def join() -> None:  # runs in the child between fork and exec
        pid = str(os.getpid())
        for d in dirs:
            (d / "cgroup.procs").write_text(pid)

    return join


def cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(name):
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(top):
            with contextlib.suppress(OSError):
                text = (Path(dirpath) / "cgroup.procs").read_text()
                pids.update(int(p) for p in text.split())
    return pids


def remove_cgroup(name: str, timeout: float = 15) -> None:
    """Kill whatever is left in our cgroup (by cgroup, never by name) and rmdir it bottom-up."""
    deadline = time.monotonic() + timeout
    dirs = [d for d in cgroup_dirs(name) if d.is_dir()]
    if not dirs:
        return
    while cgroup_pids(name) and time.monotonic() < deadline:
        kill_file = dirs[0] / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        else:
            for pid in cgroup_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    for top in dirs:
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if top.exists():
            log(f"warning: could not remove cgroup {top}")


def nspawn_env() -> dict[str, str]:
    # Pure cgroup2 inside the guest, or crun fails on this hybrid host.
    return {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


def spawn_nspawn(
    args: Sequence[str], cgroup: str, log_path: Path, *, background: bool
) -> subprocess.Popen:
    """Start systemd-nspawn inside its own fresh cgroup (two guests in one cgroup collide)."""
    remove_cgroup(cgroup)
    dirs = cgroup_dirs(cgroup)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            ["systemd-nspawn", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=nspawn_env(),
            preexec_fn=_join_cgroups(dirs),
            start_new_session=background,  # a Ctrl-C in the terminal must not kill the hosts
        )


def pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def pid_is_our_nspawn(pid: int, root: Path) -> bool:
    """Guards against PID reuse: only signal an nspawn running our host root."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return bool(argv) and argv[0].endswith(b"systemd-nspawn") and f"-D{root}".encode() in argv


# ---------------------------------------------------------------- template


def template_recipe(variant: str = "full") -> dict:
    v = VARIANTS[variant]
    recipe = {
        "version": RECIPE_VERSION,
        "suite": v.suite,
        "packages": v.packages,
        "files": v.files,
        "masks": GUEST_MASKS,
        "enable": GUEST_ENABLE,
    }
    if variant != "full":  # the full template keeps the hash it always had
        recipe["variant"] = variant
    return recipe


def debootstrap(
    cfg: Config, target: Path, include: str, log_path: Path, suite: str = SUITE
) -> None:
    t0 = time.monotonic()
    res = run(
        ["debootstrap", "--variant=minbase", f"--include={include}", suite, target, cfg.mirror],
        timeout=1200,
        check=False,
    )
    log_path.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise FleetError(f"debootstrap failed, see {log_path}:\n{res.stdout[-2000:]}")
    log(f"debootstrap {include[:40]}... done in {time.monotonic() - t0:.0f}s")


def _build_base_template(cfg: Config, target: Path, variant: str = "full") -> None:
    v = VARIANTS[variant]
    tmp = target.with_name(f".tmp-{target.name}")  # only ever touched under the target's lock
    rm_tree(tmp)
    debootstrap(cfg, tmp, v.packages, cfg.cache_dir / f"{target.name}.log", suite=v.suite)
    for rel, content in v.files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    run(["chroot", tmp, "systemctl", "mask", "--quiet", *GUEST_MASKS])
    run(["chroot", tmp, "systemctl", "enable", "--quiet", *GUEST_ENABLE])
    # Per-host identity is written at copy time: host keys, machine-id, hostname, address.
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / "etc/machine-id").write_text("")
    with contextlib.suppress(FileNotFoundError):
        (tmp / "var/lib/dbus/machine-id").unlink()
    run(["rm", "-rf", tmp / "var/cache/apt/archives", tmp / "var/lib/apt/lists"])
    (tmp / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    os.rename(tmp, target)


def ensure_base_template(cfg: Config, variant: str = "full") -> Path:
    prefix = "template" if variant == "full" else variant
    target = cfg.cache_dir / f"{prefix}-{recipe_hash(template_recipe(variant))}"
    if target.is_dir():
        return target
    with file_lock(cfg.cache_dir / f"{target.name}.lock"):
        if not target.is_dir():
            t0 = time.monotonic()
            _build_base_template(cfg, target, variant)
            log(f"base template {target.name} built in {time.monotonic() - t0:.0f}s")
    return target


# ---------------------------------------------------------------- images


def images_recipe() -> dict:
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "busybox": sha256_file(BUSYBOX),
        "app": [APP_INDEX, APP_BROKEN_HANDLER, APP_CMD, APP_BROKEN_CMD, APP_VERSIONS, APP_IMAGE],
        "db_packages": DB_PACKAGES,
        "postgres": [POSTGRES_IMAGE, POSTGRES_ENTRYPOINT],
        "redis": [REDIS_IMAGE, REDIS_ENTRYPOINT],
    }


def _tar_bytes(entries: list[tuple[str, str, bytes | str, int]]) -> bytes:
    """Deterministic layer tar; entries are (name, type 'd'|'f'|'l', data|target, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "l":
                info.type = tarfile.SYMTYPE
                info.linkname = str(data)
                tar.addfile(info)
            else:
                raw = data.encode() if isinstance(data, str) else data
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _image_config(diff_ids: list[str], config: dict) -> bytes:
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2025-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created": "2025-01-01T00:00:00Z", "created_by": "codeb fleet"}]
        * len(diff_ids),
    }
    return json.dumps(cfg, sort_keys=True).encode()


class DockerArchive:
    """Writes a docker-archive tarball (what `podman load` reads) with shared layers."""

    def __init__(self, path: Path) -> None:
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)
        self.manifest: list[dict] = []
        self.layers: set[str] = set()

    def _add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def add_layer_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self.layers:
            self._add_bytes(f"{digest}/layer.tar", data)
            self.layers.add(digest)
        return digest

    def add_layer_file(self, path: Path) -> str:
        digest = sha256_file(path)
        if digest not in self.layers:
            self.tar.add(path, arcname=f"{digest}/layer.tar")
            self.layers.add(digest)
        return digest

    def add_image(self, tag: str, diff_ids: list[str], config: dict) -> None:
        cfg = _image_config(diff_ids, config)
        cfg_name = f"{hashlib.sha256(cfg).hexdigest()}.json"
        self._add_bytes(cfg_name, cfg)
        layers = [f"{d}/layer.tar" for d in diff_ids]
        self.manifest.append({"Config": cfg_name, "RepoTags": [tag], "Layers": layers})

    def close(self) -> None:
        self._add_bytes("manifest.json", json.dumps(self.manifest).encode())
        self.tar.close()


def _add_app_images(archive: DockerArchive) -> None:
    base = archive.add_layer_bytes(
        _tar_bytes(
            [
                ("bin", "d", "", 0o755),
                ("bin/busybox", "f", BUSYBOX.read_bytes(), 0o755),
                ("bin/sh", "l", "busybox", 0o777),
                ("etc", "d", "", 0o755),
                ("etc/passwd", "f", "root:x:0:0:root:/:/bin/sh\n", 0o644),
                ("etc/group", "f", "root:x:0:\n", 0o644),
                ("tmp", "d", "", 0o1777),
            ]
        )
    )
    for version in APP_VERSIONS:
        broken = version == "broken"
        entries: list[tuple[str, str, bytes | str, int]] = [
            ("www", "d", "", 0o755),
            ("www/index.html", "f", APP_INDEX.format(version=version), 0o644),
        ]
        if broken:
            entries.append(("bin", "d", "", 0o755))
            entries.append(("bin/broken-handler", "f", APP_BROKEN_HANDLER, 0o755))
        else:
            entries.append(("www/health", "f", "ok\n", 0o644))
        layer = archive.add_layer_bytes(_tar_bytes(entries))
        config = {
            "Env": ["PATH=/bin", f"APP_VERSION={version}"],
            "Entrypoint": ["/bin/busybox", "sh", "-c", APP_BROKEN_CMD if broken else APP_CMD],
            "ExposedPorts": {"3000/tcp": {}},
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.version": version},
        }
        archive.add_image(f"{APP_IMAGE}:{version}", [base, layer], config)


def _build_db_layer(cfg: Config, workdir: Path) -> Path:
    """One Debian 13 rootfs with PostgreSQL and Redis, shared by both images as one layer."""
    root = workdir / "dbroot"
    debootstrap(cfg, root, DB_PACKAGES, workdir / "debootstrap-db.log")
    run(["rm", "-rf", root / "var/lib/postgresql" / PG_MAJOR, root / "etc/postgresql" / PG_MAJOR])
    # Slim: docs, translations, apt caches, and the optional LLVM JIT (postgres runs without it).
    junk = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"]
    junk += ["usr/share/i18n", "var/cache/apt", "var/lib/apt/lists", "var/log"]
    junk += [f"usr/lib/postgresql/{PG_MAJOR}/lib/bitcode"]
    run(["rm", "-rf", *(root / j for j in junk)])
    for pattern in ("usr/lib/x86_64-linux-gnu/libLLVM*", "usr/lib/x86_64-linux-gnu/libz3.so*"):
        for p in root.glob(pattern):
            p.unlink()
    for p in root.glob(f"usr/lib/postgresql/{PG_MAJOR}/lib/llvmjit*"):
        p.unlink()
    for d in ("var/log", "var/cache/apt", "var/lib/postgresql/data", "data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    bindir = root / "usr/local/bin"
    (bindir / "docker-entrypoint.sh").write_text(POSTGRES_ENTRYPOINT)
    (bindir / "redis-entrypoint.sh").write_text(REDIS_ENTRYPOINT)
    for name in ("docker-entrypoint.sh", "redis-entrypoint.sh"):
        (bindir / name).chmod(0o755)
    (root / "docker-entrypoint-initdb.d").mkdir(exist_ok=True)
    layer = workdir / "db-layer.tar"
    excludes = [f"--exclude=./{d}/*" for d in ("dev", "proc", "sys", "run", "tmp")]
    run(["tar", "--numeric-owner", "-C", root, "-cf", layer, *excludes, "."], timeout=600)
    rm_tree(root)
    return layer


def _add_db_images(archive: DockerArchive, layer: Path) -> None:
    diff = archive.add_layer_file(layer)
    pg_bin = f"/usr/lib/postgresql/{PG_MAJOR}/bin"
    archive.add_image(
        POSTGRES_IMAGE,
        [diff],
        {
            "Env": [
                f"PATH=/usr/local/sbin:/usr/local/bin:{pg_bin}:/usr/sbin:/usr/bin:/sbin:/bin",
                "PGDATA=/var/lib/postgresql/data",
                "LANG=C.UTF-8",
                f"PG_MAJOR={PG_MAJOR}",
            ],
            "Entrypoint": ["/usr/local/bin/docker-entrypoint.sh"],
            "Cmd": ["postgres"],
            "ExposedPorts": {"5432/tcp": {}},
            "Volumes": {"/var/lib/postgresql/data": {}},
            "StopSignal": "SIGINT",
            "WorkingDir": "/",
        },
    )
    archive.add_image(
        REDIS_IMAGE,
        [diff],
        {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/usr/local/bin/redis-entrypoint.sh"],
            "Cmd": ["redis-server"],
            "ExposedPorts": {"6379/tcp": {}},
            "Volumes": {"/data": {}},
            "WorkingDir": "/data",
        },
    )


def ensure_images(cfg: Config) -> Path:
    """docker-archive with every test image, cached by recipe hash."""
    target = cfg.cache_dir / f"images-{recipe_hash(images_recipe())}.tar"
    if target.is_file():
        return target
    with file_lock(cfg.cache_dir / f"{target.name}.lock"):
        if target.is_file():
            return target
        t0 = time.monotonic()
        work = cfg.cache_dir / f".tmp-{target.name}"  # only ever touched under the lock
        rm_tree(work)
        work.mkdir()
        try:
            layer = _build_db_layer(cfg, work)
            tmp = work / "images.tar"
            archive = DockerArchive(tmp)
            _add_app_images(archive)
            _add_db_images(archive, layer)
            archive.close()
            os.rename(tmp, target)
        finally:
            rm_tree(work)
        log(f"images {target.name} built in {time.monotonic() - t0:.0f}s")
    return target


def image_tags() -> list[str]:
    return [f"{APP_IMAGE}:{v}" for v in APP_VERSIONS] + [POSTGRES_IMAGE, REDIS_IMAGE]


# ---------------------------------------------------------------- host template (+ images)


def ensure_host_template(cfg: Config) -> Path:
    """Base template with the images pre-loaded into /var/lib/containers (copied per host)."""
    ensure_root()
    ensure_host_packages()
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    tkey = recipe_hash(template_recipe())
    ikey = recipe_hash(images_recipe())
    target = cfg.cache_dir / f"host-{recipe_hash([tkey, ikey])}"
    if target.is_dir():
        return target
    # The two debootstraps are mostly download + unpack: overlapping them saves ~40 s cold.
    errors: list[BaseException] = []

    def build_images() -> None:
        try:
            ensure_images(cfg)
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)

    worker = threading.Thread(target=build_images, daemon=True)
    worker.start()
    base = ensure_base_template(cfg)
    worker.join(timeout=1800)
    if errors:
        raise errors[0]
    if worker.is_alive():
        raise FleetError("image build did not finish in 30 min")
    images = ensure_images(cfg)
    with file_lock(cfg.cache_dir / f"{target.name}.lock"):
        if target.is_dir():
            return target
        t0 = time.monotonic()
        tmp = target.with_name(f".tmp-{target.name}")
        rm_tree(tmp)
        run(["cp", "-a", "--reflink=auto", base, tmp], timeout=600)
        _load_images_offline(tmp, images, cfg.cache_dir / f"{target.name}.log")
        os.rename(tmp, target)
        log(f"host template {target.name} (images loaded) in {time.monotonic() - t0:.0f}s")
    return target


def _load_images_offline(root: Path, archive: Path, log_path: Path) -> None:
    """podman load into the template's storage, in a non-booted, network-less nspawn."""
    mnt = "/srv/codeb-images.tar"
    script = (
        f"podman --cgroup-manager=cgroupfs --events-backend=none load -q -i {mnt} && "
        "podman --cgroup-manager=cgroupfs --events-backend=none images "
        "--format '{{.Repository}}:{{.Tag}}'"
    )
    args = ["-q", f"-D{root}", "--register=no", "--keep-unit", "--private-network"]
    args += ["--system-call-filter=@keyring bpf", f"--bind-ro={archive}:{mnt}", "sh", "-c", script]
    log_path.unlink(missing_ok=True)
    proc = spawn_nspawn(args, "codeb-fleet-imageload", log_path, background=False)
    try:
        rc = proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise FleetError(f"podman load timed out, see {log_path}") from None
    finally:
        remove_cgroup("codeb-fleet-imageload")
    out = log_path.read_text(errors="replace")
    missing = [t for t in image_tags() if t not in out]
    if rc != 0 or missing:
        raise FleetError(f"podman load failed (rc={rc}, missing {missing}):\n{out[-2000:]}")
    (root / mnt.lstrip("/")).unlink(missing_ok=True)  # nspawn's bind mount point


# ---------------------------------------------------------------- network


def _fw_rules(bridge: str) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", f"codeb-fleet {bridge}"]
    return [
        ["FORWARD", "-i", bridge, "!", "-o", bridge, *tag, "-j", "DROP"],
        ["FORWARD", "-o", bridge, "!", "-i", bridge, *tag, "-j", "DROP"],
    ]


def _fw_tools() -> list[str]:
    tools = ["iptables"]
    if shutil.which("ip6tables") and run(["ip6tables", "-w", "-S"], check=False).returncode == 0:
        tools.append("ip6tables")
    return tools


def network_up(cfg: Config, state: State) -> None:
    br = cfg.bridge
    if run(["ip", "link", "show", br], check=False).returncode != 0:
        run(["ip", "link", "add", br, "type", "bridge"])
        state.bridge_created = True
        state.save(cfg)
    # IPv4 only on the fleet bridge: nothing for guests to autoconfigure or route over v6.
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6").write_text("1")
    addr = f"{cfg.gateway}/{cfg.subnet.prefixlen}"
    if addr not in run(["ip", "-4", "addr", "show", "dev", br]).stdout:
        run(["ip", "addr", "add", addr, "dev", br])
    run(["ip", "link", "set", br, "up"])
    for tool in _fw_tools():
        for rule in _fw_rules(br):
            if run([tool, "-w", "-C", *rule], check=False).returncode != 0:
                run([tool, "-w", "-I", rule[0], "1", *rule[1:]])
            if [tool, *rule] not in state.fw_rules:
                state.fw_rules.append([tool, *rule])
    state.save(cfg)


def network_down(cfg: Config, state: State | None) -> None:
    bridge = state.bridge if state else cfg.bridge
    rules = list(state.fw_rules) if state else []
    for tool in _fw_tools():  # after a crash before state was saved: our rules are predictable
        rules += [[tool, *r] for r in _fw_rules(bridge) if [tool, *r] not in rules]
    for rule in rules:
        for _ in range(20):  # the same rule may have been added more than once
            if run([rule[0], "-w", "-C", *rule[1:]], check=False).returncode != 0:
                break
            run([rule[0], "-w", "-D", *rule[1:]])
    if run(["ip", "link", "show", bridge], check=False).returncode == 0:
        run(["ip", "link", "del", bridge])


# ---------------------------------------------------------------- hosts


def _host_network_file(ip: str, prefix: int) -> str:
    # 10- sorts before the shipped 80-container-host0.network (DHCP); no Gateway= on purpose:
    # no default route, so a guest cannot even try to reach anything but this /24.
    return (
        "[Match]\nName=host0\n\n"
        f"[Network]\nAddress={ip}/{prefix}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        "LLDP=no\nEmitLLDP=no\n"
    )


def _prepare_host_root(cfg: Config, host: Host, all_hosts: list[Host], pubkey: str) -> str:
    """Write per-host identity into a fresh copy; returns its known_hosts line."""
    root = host.root
    (root / "etc/hostname").write_text(f"{host.name}\n")
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    hosts = ["127.0.0.1 localhost", f"127.0.1.1 {host.name}", "::1 localhost ip6-localhost"]
    hosts += [f"{h.ip} {h.name}" for h in all_hosts if h.name != host.name]
    (root / "etc/hosts").write_text("\n".join(hosts) + "\n")
    net = root / "etc/systemd/network/10-host0.network"
    net.parent.mkdir(parents=True, exist_ok=True)
    net.write_text(_host_network_file(host.ip, cfg.subnet.prefixlen))
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    (ssh_dir / "authorized_keys").chmod(0o600)
    hostkey = root / "etc/ssh/ssh_host_ed25519_key"
    hostkey.unlink(missing_ok=True)
    hostkey.with_suffix(".pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}", "-f", hostkey])
    kind, blob = hostkey.with_suffix(".pub").read_text().split()[:2]
    return f"{host.ip} {kind} {blob}"


def _nspawn_boot_args(cfg: Config, host: Host) -> list[str]:
    return [
        "-b",
        f"-D{host.root}",
        # nspawn names the host side of the veth after the machine (vb-<machine>): two
        # fleets on one machine, each with an `app`, need distinct machine names.
        f"--machine={cfg.bridge}-{host.name}",
        f"--hostname={host.name}",
        "--register=no",  # no machined / system bus on this machine
        "--keep-unit",  # stay in the cgroup we made for it
        f"--network-bridge={cfg.bridge}",
        "--system-call-filter=@keyring bpf",  # podman/crun need these
        "--link-journal=no",
        "--resolv-conf=off",
        "--console=read-only",
    ]


def ssh_ready(host: Host) -> bool:
    try:
        return host.ssh("true", timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no console log)"


def _mount_hosts_tmpfs(cfg: Config) -> None:
    """Host roots in RAM: copying and removing them is 4-10x faster than on this disk."""
    hosts_dir = cfg.state_dir / "hosts"
    hosts_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tmpfs_size in ("", "0") or os.path.ismount(hosts_dir):
        return
    opts = f"mode=0755,size={cfg.tmpfs_size}"
    run(["mount", "-t", "tmpfs", "-o", opts, "codeb-fleet", hosts_dir])


def _copy_roots(template: Path | dict[str, Path], hosts: list[Host]) -> None:
    """Copies each host's template (one for all, or one per variant) in parallel."""
    procs = []
    for h in hosts:
        src = template[h.variant] if isinstance(template, dict) else template
        rm_tree(h.root)
        h.root.parent.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(["cp", "-a", "--reflink=auto", str(src), str(h.root)]))
    deadline = time.monotonic() + 600
    for p in procs:
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
        if rc != 0:
            raise FleetError(f"copying the host template failed (rc={rc})")


def up(names: int | Sequence[str] = DEFAULT_NAMES, cfg: Config | None = None) -> list[Host]:
    """Boot a fresh fleet (tearing down any previous one first); returns ssh-ready hosts."""
    cfg = cfg or Config.from_env()
    if isinstance(names, int):
        names = [*DEFAULT_NAMES, *(f"host{i + 1}" for i in range(len(DEFAULT_NAMES), names))][
            :names
        ]
    if not 1 <= len(names) <= 200:
        raise FleetError("need between 1 and 200 hosts")
    ensure_root()
    template = ensure_host_template(cfg)
    key = ensure_keypair(cfg)
    with file_lock(cfg.state_dir / "lock"):
        _down_locked(cfg)
        for old in cfg.state_dir.glob("failed-*-console.log"):
            old.unlink()
        try:
            t0 = time.monotonic()
            state = State(bridge=cfg.bridge, subnet=str(cfg.subnet))
            state.save(cfg)
            hosts = [
                Host(
                    name=n,
                    ip=cfg.host_ip(i),
                    ssh_private_key_path=key,
                    root=cfg.state_dir / "hosts" / n / "root",
                    console_log=cfg.state_dir / "hosts" / n / "console.log",
                    cgroup=cfg.cgroup_name(n),
                    known_hosts=cfg.state_dir / "known_hosts",
                )
                for i, n in enumerate(names)
            ]
            # Record the hosts before anything exists, so a crash from here on is cleanable.
            state.hosts = hosts
            state.save(cfg)
            network_up(cfg, state)
            _mount_hosts_tmpfs(cfg)
            _copy_roots(template, hosts)
            t_copy = time.monotonic() - t0
            pubkey = key.with_suffix(".pub").read_text()
            known = [_prepare_host_root(cfg, h, hosts, pubkey) for h in hosts]
            (cfg.state_dir / "known_hosts").write_text("\n".join(known) + "\n")
            _write_inventory(cfg, hosts)
            procs: dict[str, subprocess.Popen] = {}
            for h in hosts:
                h.console_log.unlink(missing_ok=True)
                procs[h.name] = spawn_nspawn(
                    _nspawn_boot_args(cfg, h), h.cgroup, h.console_log, background=True
                )
                h.pid = procs[h.name].pid
                state.save(cfg)
            _wait_ssh(cfg, hosts, procs)
            log(
                f"{len(hosts)} hosts up in {time.monotonic() - t0:.1f}s (copy {t_copy:.1f}s): "
                + ", ".join(f"{h.name}={h.ip}" for h in hosts)
            )
        except BaseException:
            _keep_console_logs(cfg)
            _down_locked(cfg)
            raise
        return hosts


def ensure_variant_template(cfg: Config, variant: str) -> Path:
    """The root every host of this variant is copied from (built and cached if missing)."""
    if variant not in VARIANTS:
        raise FleetError(f"unknown host variant {variant!r}; known: {', '.join(VARIANTS)}")
    if VARIANTS[variant].images:
        return ensure_host_template(cfg)
    ensure_root()
    ensure_host_packages()
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    return ensure_base_template(cfg, variant)


def add_hosts(specs: Sequence[tuple[str, str]], cfg: Config | None = None) -> list[Host]:
    """Boot more hosts, given as (name, variant), into the running fleet: a test that needs a
    bare server boots its own beside the shared ones. `remove_hosts` or `down` stops them."""
    cfg = cfg or Config.from_env()
    ensure_root()
    templates = {v: ensure_variant_template(cfg, v) for v in {v for _, v in specs}}
    key = ensure_keypair(cfg)
    with file_lock(cfg.state_dir / "lock"):
        state = State.load(cfg)
        if state is None:
            raise FleetError("the fleet is not up: add_hosts boots into a running fleet")
        taken = {h.name for h in state.hosts}
        clash = sorted(taken & {n for n, _ in specs})
        if clash:
            raise FleetError(f"hosts already in the fleet: {', '.join(clash)}")
        used = {h.ip for h in state.hosts}
        new: list[Host] = []
        index = 0
        for name, variant in specs:
            while cfg.host_ip(index) in used:
                index += 1
            used.add(cfg.host_ip(index))
            new.append(
                Host(
                    name=name,
                    ip=cfg.host_ip(index),
                    ssh_private_key_path=key,
                    root=cfg.state_dir / "hosts" / name / "root",
                    console_log=cfg.state_dir / "hosts" / name / "console.log",
                    cgroup=cfg.cgroup_name(name),
                    known_hosts=cfg.state_dir / "known_hosts",
                    variant=variant,
                )
            )
        state.hosts += new  # recorded first, so a crash from here on is cleanable
        state.save(cfg)
        t0 = time.monotonic()
        try:
            _copy_roots(templates, new)
            pubkey = key.with_suffix(".pub").read_text()
            known = [_prepare_host_root(cfg, h, state.hosts, pubkey) for h in new]
            with (cfg.state_dir / "known_hosts").open("a") as f:
                f.write("\n".join(known) + "\n")
            _write_inventory(cfg, state.hosts)
            procs: dict[str, subprocess.Popen] = {}
            for h in new:
                h.console_log.unlink(missing_ok=True)
                procs[h.name] = spawn_nspawn(
                    _nspawn_boot_args(cfg, h), h.cgroup, h.console_log, background=True
                )
                h.pid = procs[h.name].pid
                state.save(cfg)
            _wait_ssh(cfg, new, procs)
        except BaseException:
            _keep_console_logs(cfg)
            _remove_locked(cfg, state, [h.name for h in new])
            raise
        log(
            f"{len(new)} hosts added in {time.monotonic() - t0:.1f}s: "
            + ", ".join(f"{h.name}={h.ip} ({h.variant})" for h in new)
        )
        return new


def _remove_locked(cfg: Config, state: State, names: Sequence[str]) -> None:
    gone = [h for h in state.hosts if h.name in names]
    stoppers = [threading.Thread(target=_stop_host, args=(h, cfg.stop_timeout)) for h in gone]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join(timeout=60)
    for h in gone:
        rm_tree(h.root.parent)
    state.hosts = [h for h in state.hosts if h.name not in names]
    state.save(cfg)
    known = cfg.state_dir / "known_hosts"
    if known.exists():
        ips = {h.ip for h in gone}
        lines = [ln for ln in known.read_text().splitlines() if ln.split(" ", 1)[0] not in ips]
        known.write_text("".join(ln + "\n" for ln in lines))
    _write_inventory(cfg, state.hosts)


def remove_hosts(names: Sequence[str], cfg: Config | None = None) -> None:
    """Stop and delete hosts added with add_hosts (by PID, as `down` does); idempotent."""
    cfg = cfg or Config.from_env()
    ensure_root()
    with file_lock(cfg.state_dir / "lock"):
        state = State.load(cfg)
        if state is not None:
            _remove_locked(cfg, state, names)


def load_images(host: Host, cfg: Config | None = None) -> list[str]:
    """`podman load` the test images into a host that has Podman (a bare host after its
    bootstrap): the archive is streamed over ssh, as an operator would copy it."""
    archive = ensure_images(cfg or Config.from_env())
    with archive.open("rb") as f:
        res = subprocess.run(
            host.ssh_argv("podman load -q && podman images --format '{{.Repository}}:{{.Tag}}'"),
            stdin=f,
            capture_output=True,
            text=True,
            timeout=600,
        )
    missing = [t for t in image_tags() if t not in res.stdout]
    if res.returncode != 0 or missing:
        raise FleetError(
            f"{host.name}: podman load failed (rc={res.returncode}, missing "
            f"{missing}): {res.stderr[-1500:]}"
        )
    return image_tags()


# ---------------------------------------------------------------- package proxy

SQUID_CONF = """\
# codeb test fleet: a caching proxy for Debian's mirror, only for this bridge's guests.
http_port {listen}
acl fleet src {subnet}
acl Safe_ports port 80
http_access deny !Safe_ports
http_access deny CONNECT
http_access allow fleet
http_access deny all
icp_port 0
htcp_port 0
visible_hostname codeb-fleet-proxy
cache_effective_user proxy
pid_filename none
cache_dir ufs {cache} 4000 16 256
maximum_object_size 1 GB
cache_mem 64 MB
access_log stdio:{logs}/access.log
cache_log {logs}/cache.log
cache_store_log none
coredump_dir {logs}
shutdown_lifetime 1 seconds
# Packages and by-hash indexes never change under their name; the rest is revalidated.
refresh_pattern \\.u?deb$ 129600 100% 129600
refresh_pattern /by-hash/ 129600 100% 129600
refresh_pattern /(Packages|Sources|Translation-[^/]*)(\\.(gz|bz2|xz))?$ 0 0% 0 refresh-ims
refresh_pattern /(Release|InRelease|Release\\.gpg)$ 0 0% 0 refresh-ims
refresh_pattern . 0 20% 4320
"""


def apt_proxy_url(cfg: Config) -> str:
    """What a guest sets as its apt proxy: the fleet bridge's own address (no route out)."""
    return f"http://{cfg.gateway}:{APT_PROXY_PORT}"


def _proxy_dirs(cfg: Config) -> tuple[Path, Path, Path]:
    # Config and PID with the fleet's state (root only); the cache per bridge, kept between
    # runs, and the logs beside it (squid writes them as `proxy`, who cannot enter state_dir).
    base = cfg.cache_dir / "apt-proxy"
    return cfg.state_dir / "apt-proxy", base / cfg.bridge, base / f"{cfg.bridge}-logs"


def _proxy_pid(cfg: Config) -> int | None:
    run_dir = _proxy_dirs(cfg)[0]
    try:
        pid = int((run_dir / "pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None
    conf = str(run_dir / "squid.conf").encode()
    # PID reuse guard: only ever our own squid, started with our config file.
    return pid if pid_alive(pid) and b"squid" in argv[0] and conf in argv else None


def apt_proxy_up(cfg: Config | None = None, timeout: float = 60) -> str:
    """Start Debian's squid on the bridge address as a caching proxy for Debian's mirror
    (idempotent). Only this machine reaches the mirror; the guests reach only this proxy."""
    cfg = cfg or Config.from_env()
    ensure_root()
    if shutil.which("squid") is None:
        log("installing host package: squid")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=env, timeout=600)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "squid"], env=env)
    with file_lock(cfg.state_dir / "lock"):
        if State.load(cfg) is None:
            raise FleetError("the fleet is not up: the package proxy listens on its bridge")
        if _proxy_pid(cfg):
            return apt_proxy_url(cfg)
        run_dir, cache, logs = _proxy_dirs(cfg)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (cache, logs):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "proxy", "proxy")
        conf = run_dir / "squid.conf"
        conf.write_text(
            SQUID_CONF.format(
                listen=f"{cfg.gateway}:{APT_PROXY_PORT}",
                subnet=cfg.subnet,
                cache=cache,
                logs=logs,
            )
        )
        if not (cache / "00").is_dir():
            run(["squid", "-z", "-N", "-f", conf], timeout=120)
        with (run_dir / "squid.out").open("ab") as out:
            proc = subprocess.Popen(
                ["squid", "-N", "-f", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal must not kill it
            )
        (run_dir / "pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise FleetError(
                    f"squid exited with {proc.returncode}:\n{_tail(run_dir / 'squid.out')}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((cfg.gateway, APT_PROXY_PORT), timeout=1),
            ):
                break
            if time.monotonic() > deadline:
                _stop_proxy_locked(cfg)
                raise FleetError(f"squid not listening after {timeout:.0f}s")
            time.sleep(0.2)
        log(f"package proxy {apt_proxy_url(cfg)} (squid pid {proc.pid}, cache {cache})")
        return apt_proxy_url(cfg)


def _stop_proxy_locked(cfg: Config) -> None:
    pid = _proxy_pid(cfg)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (_proxy_dirs(cfg)[0] / "pid").unlink(missing_ok=True)


def apt_proxy_down(cfg: Config | None = None) -> None:
    """Stop the package proxy by its PID (idempotent); its cache stays for the next run."""
    cfg = cfg or Config.from_env()
    with file_lock(cfg.state_dir / "lock"):
        _stop_proxy_locked(cfg)


def _keep_console_logs(cfg: Config) -> None:
    """A failed up tears down at once; keep the consoles for the post-mortem."""
    hosts_dir = cfg.state_dir / "hosts"
    for logf in hosts_dir.glob("*/console.log") if hosts_dir.is_dir() else []:
        shutil.copy(logf, cfg.state_dir / f"failed-{logf.parent.name}-console.log")


def _wait_ssh(cfg: Config, hosts: list[Host], procs: dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + cfg.boot_timeout
    pending = list(hosts)
    while pending:
        for h in list(pending):
            rc = procs[h.name].poll()
            if rc is not None:
                raise FleetError(
                    f"{h.name}: systemd-nspawn exited with {rc} while booting; console log "
                    f"{h.console_log}:\n{_tail(h.console_log)}"
                )
            if ssh_ready(h):
                pending.remove(h)
        if not pending:
            break
        if time.monotonic() > deadline:
            h = pending[0]
            raise FleetError(
                f"{', '.join(p.name for p in pending)}: ssh not answering after "
                f"{cfg.boot_timeout:.0f}s; console log of {h.name} ({h.console_log}):\n"
                f"{_tail(h.console_log)}"
            )
        time.sleep(0.3)


def _write_inventory(cfg: Config, hosts: list[Host]) -> None:
    """Ansible inventory with pinned host keys, for manual use of the fleet."""
    common = f"-o UserKnownHostsFile={cfg.state_dir / 'known_hosts'} -o StrictHostKeyChecking=yes"
    lines = ["[fleet]"]
    lines += [
        f"{h.name} ansible_host={h.ip} ansible_user={h.ssh_user} ansible_port={h.ssh_port} "
        f"ansible_ssh_private_key_file={h.ssh_private_key_path} "
        f"ansible_ssh_common_args='{common}'"
        for h in hosts
    ]
    (cfg.state_dir / "inventory.ini").write_text("\n".join(lines) + "\n")


def _stop_host(h: Host, timeout: float) -> None:
    pid = h.pid
    if pid and pid_alive(pid) and pid_is_our_nspawn(pid, h.root):
        # SIGTERM makes nspawn power the guest off (~2 s, but 10 s more per container that
        # ignores SIGTERM). The copy is thrown away, so a short grace then SIGKILL is enough.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            log(f"{h.name}: nspawn {pid} still running after {timeout:.0f}s, sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
    remove_cgroup(h.cgroup)


def _down_locked(cfg: Config) -> None:
    _stop_proxy_locked(cfg)
    state = State.load(cfg)
    hosts = state.hosts if state else []
    grace = cfg.stop_timeout
    stoppers = [threading.Thread(target=_stop_host, args=(h, grace)) for h in hosts]
    for t in stoppers:
        t.start()
    t0 = time.monotonic()
    for t in stoppers:
        t.join(timeout=60)
    if hosts:
        log(f"{len(hosts)} hosts stopped in {time.monotonic() - t0:.1f}s")
    # Anything under hosts/ is ours, also if the state file was lost.
    hosts_dir = cfg.state_dir / "hosts"
    if hosts_dir.is_dir():
        for d in hosts_dir.iterdir():
            remove_cgroup(cfg.cgroup_name(d.name))
        rm_tree(hosts_dir)
    if state is not None or (cfg.state_dir / "known_hosts").exists():
        network_down(cfg, state)
    for f in ("state.json", "known_hosts", "inventory.ini"):
        (cfg.state_dir / f).unlink(missing_ok=True)


def down(cfg: Config | None = None) -> None:
    """Stop every host by PID, remove copies, cgroups, bridge and firewall rules. Idempotent."""
    cfg = cfg or Config.from_env()
    ensure_root()
    if not cfg.state_dir.exists():
        network_down(cfg, None)
        return
    t0 = time.monotonic()
    with file_lock(cfg.state_dir / "lock"):
        _down_locked(cfg)
    log(f"fleet down in {time.monotonic() - t0:.1f}s")


@contextlib.contextmanager
def session(
    names: int | Sequence[str] = DEFAULT_NAMES, cfg: Config | None = None
) -> Iterator[list[Host]]:
    """Exclusive use of a fresh fleet: waits (bounded) while another session holds it, boots,
    yields the hosts, and always tears down. Two test runs at once would kill each other's hosts."""
    cfg = cfg or Config.from_env()
    ensure_root()
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with file_lock(cfg.session_lock, timeout=cfg.session_wait):
        try:
            yield up(names, cfg)
        finally:
            down(cfg)


def hosts(cfg: Config | None = None) -> list[Host]:
    """Hosts of the running fleet, from the state dir."""
    cfg = cfg or Config.from_env()
    state = State.load(cfg)
    return state.hosts if state else []


def status(cfg: Config | None = None) -> list[dict]:
    rows = []
    for h in hosts(cfg):
        alive = bool(h.pid) and pid_alive(h.pid or 0) and pid_is_our_nspawn(h.pid or 0, h.root)
        rows.append(
            {
                "name": h.name,
                "ip": h.ip,
                "pid": h.pid,
                "running": alive,
                "ssh": alive and ssh_ready(h),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="boot N hosts (default 3: app, db, cache)")
    p_up.add_argument("n", type=int, nargs="?", default=len(DEFAULT_NAMES))
    sub.add_parser("down", help="stop and remove the fleet (idempotent)")
    sub.add_parser("status", help="list hosts, IPs, PIDs, ssh state")
    sub.add_parser("images", help="build the cached host template and images only")
    p_add = sub.add_parser("add", help="boot more hosts into the running fleet")
    p_add.add_argument("hosts", nargs="+", metavar="NAME:VARIANT", help=", ".join(VARIANTS))
    p_rm = sub.add_parser("remove", help="stop and delete hosts added with `add`")
    p_rm.add_argument("names", nargs="+")
    sub.add_parser("proxy", help="start the package proxy on the bridge (down stops it)")
    args = parser.parse_args(argv)
    cfg = Config.from_env()
    try:
        ensure_root()
        if args.cmd in ("up", "down"):
            cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Never pull the fleet from under a running test session.
            with file_lock(cfg.session_lock, timeout=0):
                pass
        if args.cmd == "up":
            for h in up(args.n, cfg):
                print(f"{h.name}\t{h.ip}\tpid={h.pid}")
            print(f"ssh: ssh -i {cfg.key_path} root@<ip>; inventory: {cfg.state_dir}/inventory.ini")
        elif args.cmd == "down":
            down(cfg)
        elif args.cmd == "status":
            rows = status(cfg)
            if not rows:
                print("fleet is down")
            for r in rows:
                state = "running" if r["running"] else "STOPPED"
                print(f"{r['name']}\t{r['ip']}\tpid={r['pid']}\t{state}\tssh={r['ssh']}")
        elif args.cmd == "add":
            specs = [(h.partition(":")[0], h.partition(":")[2] or "full") for h in args.hosts]
            for h in add_hosts(specs, cfg):
                print(f"{h.name}\t{h.ip}\tpid={h.pid}\t{h.variant}")
        elif args.cmd == "remove":
            remove_hosts(args.names, cfg)
        elif args.cmd == "proxy":
            print(apt_proxy_up(cfg))
        elif args.cmd == "images":
            t0 = time.monotonic()
            print(ensure_host_template(cfg))
            print(ensure_images(cfg))
            log(f"ready in {time.monotonic() - t0:.1f}s")
    except FleetError as e:
        print(f"fleet: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
