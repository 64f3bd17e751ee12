#!/usr/bin/python
"""Redis copies, done right (components.md's pitfalls):
- snapshot: writes the canary key, asks for a BGSAVE and waits until INFO persistence says
  it finished (rdb_bgsave_in_progress:0, rdb_saves moved on, last status ok) -- never
  LASTSAVE, whose one-second resolution can report an older save; reports the RDB's path.
- load: a Redis started on a new volume holding only the RDB must start with appendonly
  no (with appendonly yes and no AOF it starts EMPTY); once loaded, `CONFIG SET appendonly
  yes` rewrites the AOF from memory when asked (`aof`), and the caller's config may then say
  appendonly yes.
- check: DBSIZE and the canary key of a running container.
The password is read from the Redis config file (requirepass) and sent on redis-cli's stdin:
never in argv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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


def snapshot(p: dict) -> dict:
    r = Redis(p["container"], p["conf"])
    if p.get("canary"):
        r.call("SET", p["canary_key"], p["canary"])
    before = r.info()
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
    return {"keys": keys, "canary": p.get("canary"), "rdb": rdb, "size": os.path.getsize(rdb),
            "aof": info.get("aof_enabled") == "1"}  # fmt: skip


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
    shutil.copyfile(p["rdb"], os.path.join(target, "dump.rdb"))
    argv = ["podman", "run", "-d", "--name", name, f"--pull={p['pull']}", "--network", "none",
            "--label", "codeb.component=redis-load", "-v", f"{volume}:/data"]  # fmt: skip
    if p["conf"]:
        argv += ["-v", f"{p['conf']}:/usr/local/etc/redis/redis.conf:ro"]
    argv += [p["image"]]
    if p["conf"]:
        argv += ["/usr/local/etc/redis/redis.conf"]
    # The pitfall: only an RDB on the volume, so AOF must be off when the server starts.
    argv += ["--appendonly", "no", "--dir", "/data"]
    rc, out, err = run(argv)
    if rc != 0:
        raise RuntimeError(f"podman run: {(err or out).strip()[-300:]}")
    r = Redis(name, p["conf"])
    wait(lambda: r.info().get("loading") == "0", p["timeout"], "loading the RDB")
    keys = int(r.call("DBSIZE").strip() or 0)
    result = {"keys": keys, "aof": False}
    if p["aof"]:
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
