#!/usr/bin/python
"""Redis copies, done right (components.md's pitfalls):
- snapshot: writes the canary key, then
  - with the AOF off: asks for a BGSAVE and waits until INFO persistence says it finished
    (rdb_bgsave_in_progress:0, rdb_saves moved on, last status ok) -- never LASTSAVE, whose
    one-second resolution can report an older save; reports the RDB's path;
  - with the AOF on (`appendonly yes`, what codeb's caches run): asks for a BGREWRITEAOF
    and waits until it finished (aof_rewrite_in_progress and _scheduled 0, aof_rewrites
    moved on, last status ok), so the canary is in the new base; then packs the WHOLE
    multi-part appendonlydir/ (Redis 7+: the manifest, the base and every incr file it
    names) into one tar, read again when the manifest changed meanwhile (a rewrite of its
    own); reports the tar's path.
- load: a Redis started on a new volume holding only the RDB must start with appendonly
  no (with appendonly yes and no AOF it starts EMPTY); once loaded, `CONFIG SET appendonly
  yes` rewrites the AOF from memory when asked (`aof`), and the caller's config may then say
  appendonly yes. An AOF copy (`aof_archive`) is unpacked into the volume's appendonlydir/
  and Redis starts with appendonly yes on it (the other way round: appendonly no would
  ignore it and start EMPTY).
- check: DBSIZE and the canary key of a running container.
The password is read from the Redis config file (requirepass) and sent on redis-cli's stdin:
never in argv."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_redis
short_description: Snapshot, load and check Redis data in Podman containers
options:
  action: {description: snapshot, load or check., type: str, required: true}
  container: {description: The container., type: str, required: true}
  conf: {description: Host path of the Redis config (requirepass)., type: path}
  volume: {description: The data volume (snapshot, load)., type: str}
  rdb: {description: Host path of the RDB to load (load)., type: path}
  aof_archive:
    description: Host path of an AOF copy, a tar of appendonlydir/ (snapshot, load).
    type: path
  image: {description: The Redis image (load)., type: str}
  pull: {description: podman pull policy (load)., type: str, default: missing}
  canary_key: {description: The canary key., type: str, default: "codeb:canary"}
  canary: {description: The canary value written before the snapshot., type: str}
  aof: {description: Turn AOF on after loading (load)., type: bool, default: false}
  replace: {description: Empty the volume first (in place)., type: bool, default: false}
  timeout: {description: Seconds to wait for a save or a load., type: int, default: 600}
"""


def run(argv, stdin=None, timeout=120):
    try:
        out = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout} s"
    return out.returncode, out.stdout, out.stderr


class Redis:
    def __init__(self, container: str, conf: str | None) -> None:
        self.container = container
        self.password = None
        if conf and os.path.exists(conf):
            with open(conf) as f:
                for line in f:
                    m = re.match(r"^\s*requirepass\s+(\S+)\s*$", line)
                    if m:
                        self.password = m.group(1)

    def call(self, *command: str) -> str:
        lines = []
        if self.password:
            lines.append(f"AUTH {self.password}")
        lines.append(" ".join(f'"{c}"' if " " in c else c for c in command))
        rc, out, err = run(
            ["podman", "exec", "-i", self.container, "redis-cli", "--no-auth-warning"],
            stdin="\n".join(lines) + "\n",
        )
        if rc != 0:
            raise RuntimeError(f"redis-cli {command[0]}: {(err or out).strip()[-300:]}")
        if self.password:
            first, _, out = out.partition("\n")
            if first.strip() != "OK":
                raise RuntimeError(f"AUTH refused: {first.strip()[:100]}")
        if out.startswith(("ERR", "NOAUTH", "WRONGPASS", "LOADING")):
            raise RuntimeError(f"redis {command[0]}: {out.strip()[:300]}")
        return out

    def info(self, section: str = "persistence") -> dict[str, str]:
        out = self.call("INFO", section)
        return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except RuntimeError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not finish in {timeout:.0f} s ({last})")


def mountpoint(volume: str) -> str:
    rc, out, err = run(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", volume])
    if rc != 0:
        raise RuntimeError(f"volume {volume}: {err.strip()}")
    return out.strip()


MANIFEST_FILE = re.compile(r"(?:^|\s)file\s+(\S+)")
AOF_DIR = "appendonlydir"


def _config(r: Redis, name: str, default: str) -> str:
    lines = r.call("CONFIG", "GET", name).split("\n")
    return lines[1].strip() if len(lines) > 1 and lines[1].strip() else default


def _plain_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or name.startswith("."):
        raise RuntimeError(f"unexpected AOF file name {name!r}")
    return name


def pack_aof(directory: str, appendfilename: str, archive: str, tries: int = 5) -> list[str]:
    """The manifest and every file it names, in one tar written 0600 to `archive`; read again
    when the manifest changed while packing (an automatic rewrite replaced files)."""
    manifest_name = f"{appendfilename}.manifest"
    manifest_path = os.path.join(directory, manifest_name)
    for _ in range(tries):
        with open(manifest_path, "rb") as f:
            manifest = f.read()
        # History parts (type h: replaced by a rewrite, about to be deleted) are no part of
        # the data: neither copied nor named in the copy's manifest.
        lines = [
            line
            for line in manifest.decode().splitlines()
            if line.strip() and not re.search(r"(?:^|\s)type\s+h(?:\s|$)", line)
        ]
        names = [_plain_name(m) for line in lines for m in MANIFEST_FILE.findall(line)]
        if not names:
            raise RuntimeError(f"{manifest_name} names no file")
        kept = ("\n".join(lines) + "\n").encode()
        fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
                info = tarfile.TarInfo(manifest_name)
                info.size, info.mode, info.mtime = len(kept), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(kept))
                for name in names:
                    tar.add(os.path.join(directory, name), arcname=name, recursive=False)
        except FileNotFoundError:
            continue  # a part went away: a rewrite happened, read the new manifest
        with open(manifest_path, "rb") as f:
            if f.read() == manifest:
                return [manifest_name, *names]
    raise RuntimeError(f"the AOF kept changing while it was copied ({tries} tries)")


def snapshot_aof(r: Redis, p: dict) -> dict:
    """BGREWRITEAOF (the canary lands in the new base), then the whole appendonlydir/."""
    if not p.get("aof_archive"):
        raise RuntimeError("the cache runs with appendonly yes: aof_archive is required")

    def idle():
        i = r.info()
        return i.get("aof_rewrite_in_progress") == "0" and i.get("aof_rewrite_scheduled") == "0"

    wait(idle, p["timeout"], "a running AOF rewrite")
    before = r.info()
    if "aof_rewrites" not in before:
        raise RuntimeError("INFO persistence has no aof_rewrites (Redis 7 or later is needed)")
    rewrites = int(before["aof_rewrites"])
    keys = int(r.call("DBSIZE").strip() or 0)
    reply = r.call("BGREWRITEAOF").strip()
    if "rewriting started" not in reply and "scheduled" not in reply:
        raise RuntimeError(f"BGREWRITEAOF: {reply[:200]}")

    def done():
        i = r.info()
        return idle() and int(i.get("aof_rewrites", "0")) > rewrites and i

    info = wait(done, p["timeout"], "BGREWRITEAOF")
    if info.get("aof_last_bgrewrite_status") != "ok":
        status = info.get("aof_last_bgrewrite_status")
        raise RuntimeError(f"BGREWRITEAOF failed: aof_last_bgrewrite_status={status}")
    dirname = _config(r, "appenddirname", AOF_DIR)
    filename = _config(r, "appendfilename", "appendonly.aof")
    directory = os.path.join(mountpoint(p["volume"]), _plain_name(dirname))
    files = pack_aof(directory, _plain_name(filename), p["aof_archive"])
    return {"keys": keys, "canary": p.get("canary"), "file": p["aof_archive"],
            "size": os.path.getsize(p["aof_archive"]), "aof": True, "format": "aof",
            "files": files}  # fmt: skip


def snapshot(p: dict) -> dict:
    r = Redis(p["container"], p["conf"])
    if p.get("canary"):
        r.call("SET", p["canary_key"], p["canary"])
    before = r.info()
    if before.get("aof_enabled") == "1":
        return snapshot_aof(r, p)
    saves = int(before.get("rdb_saves", "0"))
    # A save already running would not include the canary: wait it out first.
    wait(lambda: r.info().get("rdb_bgsave_in_progress") == "0", p["timeout"], "a running BGSAVE")
    keys = int(r.call("DBSIZE").strip() or 0)
    reply = r.call("BGSAVE").strip()
    if "Background saving started" not in reply and "scheduled" not in reply:
        raise RuntimeError(f"BGSAVE: {reply[:200]}")

    def done():
        i = r.info()
        return i.get("rdb_bgsave_in_progress") == "0" and int(i.get("rdb_saves", "0")) > saves and i

    info = wait(done, p["timeout"], "BGSAVE")
    if info.get("rdb_last_bgsave_status") != "ok":
        raise RuntimeError(
            f"BGSAVE failed: rdb_last_bgsave_status={info.get('rdb_last_bgsave_status')}"
        )
    rdb = os.path.join(mountpoint(p["volume"]), "dump.rdb")
    if not os.path.isfile(rdb):
        raise RuntimeError(f"no dump.rdb in volume {p['volume']} after BGSAVE")
    return {"keys": keys, "canary": p.get("canary"), "file": rdb, "size": os.path.getsize(rdb),
            "aof": False, "format": "rdb"}  # fmt: skip


def unpack_aof(archive: str, directory: str) -> str:
    """An AOF copy's files into `directory` (plain names only); its appendfilename."""
    os.makedirs(directory, mode=0o755, exist_ok=False)
    manifest = None
    with tarfile.open(archive, mode="r") as tar:
        for member in tar.getmembers():
            name = _plain_name(member.name)
            if not member.isfile():
                raise RuntimeError(f"AOF copy: {name} is not a plain file")
            source = tar.extractfile(member)
            with open(os.path.join(directory, name), "wb") as out:
                shutil.copyfileobj(source, out)
            if name.endswith(".manifest"):
                manifest = name
    if manifest is None:
        raise RuntimeError("AOF copy without a manifest")
    # Owned by root here: the image's entrypoint hands /data to the redis user at start.
    return manifest[: -len(".manifest")]


def load(p: dict) -> dict:
    name, volume = p["container"], p["volume"]
    exists = run(["podman", "volume", "exists", volume])[0] == 0
    rc, _, err = (
        (0, "", "") if exists and p["replace"] else run(["podman", "volume", "create", volume])
    )
    if rc != 0:
        raise RuntimeError(f"volume {volume}: {err.strip()}")
    target = mountpoint(volume)
    for entry in os.listdir(target):
        if not p["replace"]:
            raise RuntimeError(f"volume {volume} is not empty ({entry})")
        # In place: the old data goes (its RDB and the whole multi-part appendonlydir/).
        path = os.path.join(target, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    appendfilename = None
    if p.get("aof_archive"):
        appendfilename = unpack_aof(p["aof_archive"], os.path.join(target, AOF_DIR))
    elif p.get("rdb"):
        shutil.copyfile(p["rdb"], os.path.join(target, "dump.rdb"))
    else:
        raise RuntimeError("load needs rdb or aof_archive")
    argv = ["podman", "run", "-d", "--name", name, f"--pull={p['pull']}", "--network", "none",
            "--label", "codeb.component=redis-load", "-v", f"{volume}:/data"]  # fmt: skip
    if p["conf"]:
        argv += ["-v", f"{p['conf']}:/usr/local/etc/redis/redis.conf:ro"]
    argv += [p["image"]]
    if p["conf"]:
        argv += ["/usr/local/etc/redis/redis.conf"]
    if appendfilename:
        # An AOF copy: the server must start with appendonly yes on it (off, it is ignored).
        argv += ["--appendonly", "yes", "--appenddirname", AOF_DIR,
                 "--appendfilename", appendfilename, "--dir", "/data"]  # fmt: skip
    else:
        # The pitfall: only an RDB on the volume, so AOF must be off when the server starts.
        argv += ["--appendonly", "no", "--dir", "/data"]
    rc, out, err = run(argv)
    if rc != 0:
        raise RuntimeError(f"podman run: {(err or out).strip()[-300:]}")
    r = Redis(name, p["conf"])
    wait(lambda: r.info().get("loading") == "0", p["timeout"], "loading the RDB")
    keys = int(r.call("DBSIZE").strip() or 0)
    result = {
        "keys": keys,
        "aof": bool(appendfilename),
        "format": "aof" if appendfilename else "rdb",
    }
    if p["aof"] and not appendfilename:
        r.call("CONFIG", "SET", "appendonly", "yes")
        wait(
            lambda: (
                (i := r.info()).get("aof_enabled") == "1"
                and i.get("aof_rewrite_in_progress") == "0"
                and i.get("aof_rewrite_scheduled") == "0"
            ),
            p["timeout"],
            "the AOF rewrite",
        )
        result["aof"] = os.path.isdir(os.path.join(target, "appendonlydir"))
        if not result["aof"]:
            raise RuntimeError("AOF on but no appendonlydir/ on the volume")
    return result


def check(p: dict) -> dict:
    r = Redis(p["container"], p["conf"])
    keys = int(r.call("DBSIZE").strip() or 0)
    value = r.call("GET", p["canary_key"]).strip()
    return {"keys": keys, "canary": value or None}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["snapshot", "load", "check"]},
            "container": {"type": "str", "required": True},
            "conf": {"type": "path"},
            "volume": {"type": "str"},
            "rdb": {"type": "path"},
            "aof_archive": {"type": "path"},
            "image": {"type": "str"},
            "pull": {"type": "str", "default": "missing"},
            "canary_key": {"type": "str", "default": "codeb:canary"},
            "canary": {"type": "str", "no_log": False},
            "aof": {"type": "bool", "default": False},
            "replace": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 600},
        },
        supports_check_mode=False,
    )
    p = module.params
    try:
        result = {"snapshot": snapshot, "load": load, "check": check}[p["action"]](p)
    except (RuntimeError, OSError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=p["action"] != "check", redis=result)


if __name__ == "__main__":
    main()
