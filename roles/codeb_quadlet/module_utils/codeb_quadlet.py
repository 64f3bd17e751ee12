"""Shared by codeb_quadlet_probe and codeb_quadlet_apply (Ansible bundles it with each):
`probe` reads what differs between a host and its part of a Quadlet plan, `apply` places,
reloads, restarts and starts what the probe found different. Neither imports Ansible, so the
modules stay thin wrappers around them."""

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time

TRANSITIONAL = ("activating", "deactivating", "reloading")
IMAGE_LINE = re.compile(r"^Image=(\S+)\s*$", re.M)
HIDDEN = "(a secret file: its content is not shown)\n"
CHANGED_SINCE_PREVIEW = "this host changed since the preview: preview again (nothing was changed)"
# The probe's options: codeb_quadlet_probe's arguments and codeb_quadlet_apply's `probe`.
PROBE_SPEC = {
    "dirs": {"type": "list", "elements": "dict", "default": []},
    "files": {"type": "list", "elements": "dict", "default": []},
    "services": {"type": "list", "elements": "str", "default": []},
    "images": {"type": "list", "elements": "str", "default": []},
    "containers": {"type": "list", "elements": "dict", "default": []},
    "expected_state": {"type": "str", "default": ""},
    "settle_s": {"type": "float", "default": 0},
}


# -- probe ----------------------------------------------------------------------------------


def _mode_owner_ok(st, mode):
    return (st.st_mode & 0o7777) == int(mode, 8) and st.st_uid == 0 and st.st_gid == 0


def _dir_differs(d):
    try:
        st = os.stat(d["path"])
    except FileNotFoundError:
        return True
    return not os.path.isdir(d["path"]) or not _mode_owner_ok(st, d["mode"])


def _file_state(f):
    """(sha1 or None when absent, mode and owner as planned, mtime in ns)."""
    try:
        st = os.lstat(f["path"])
        with open(f["path"], "rb") as fh:
            digest = hashlib.sha1(fh.read()).hexdigest()  # noqa: S324 -- what copy compares
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None, False, 0
    return digest, _mode_owner_ok(st, f["mode"]), st.st_mtime_ns


def _service_states(services):
    """{service: {load, active, sub, need_reload}} from one `systemctl show`."""
    if not services:
        return {}
    out = subprocess.run(
        [
            "systemctl",
            "show",
            "--property=Id,LoadState,ActiveState,SubState,NeedDaemonReload",
            "--",
            *services,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    states = {
        s: {"load": "not-found", "active": "inactive", "sub": "dead", "need_reload": False}
        for s in services
    }
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id") in states:
            states[props["Id"]] = {
                "load": props.get("LoadState", ""),
                "active": props.get("ActiveState", ""),
                "sub": props.get("SubState", ""),
                "need_reload": props.get("NeedDaemonReload") == "yes",
            }
    return states


def _settled_states(services, settle_s):
    """Service states once no unit is half-way through a start, stop or restart (a job a
    canceled run left behind keeps going in systemd), waiting at most settle_s."""
    deadline = time.monotonic() + settle_s
    while True:
        states = _service_states(services)
        busy = [s for s, st in states.items() if st["active"] in TRANSITIONAL]
        if not busy or time.monotonic() >= deadline:
            return states
        time.sleep(0.25)


IMAGES_ARGV = ["podman", "images", "--no-trunc", "--format", "{{.Id}} {{.Repository}}:{{.Tag}}"]
PS_ARGV = ["podman", "ps", "--all", "--format", "{{.Names}}"]


def _start(argv):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _local_images(started=None):
    out = (started or _start(IMAGES_ARGV)).communicate()[0]
    ids = {}
    for line in out.splitlines():
        image_id, _, name = line.partition(" ")
        if name and not name.startswith("<none>"):
            ids[name] = image_id.removeprefix("sha256:")
    return ids


def _running(names, started=None):
    """{name: {running, image, image_id, started_ns}} of the containers that exist."""
    if not names:
        if started is not None:
            started.communicate()
        return {}
    listed = (started or _start(PS_ARGV)).communicate()[0].split()
    present = [n for n in names if n in listed]
    if not present:
        return {}
    fmt = "{{.Name}}|{{.State.Running}}|{{.ImageName}}|{{.Image}}|{{.State.StartedAt.UnixNano}}"
    out = subprocess.run(
        ["podman", "container", "inspect", "--format", fmt, *present],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 5:
            continue
        name, running, image, image_id, started = parts
        found[name] = {
            "running": running == "true",
            "image": image,
            "image_id": image_id.removeprefix("sha256:"),
            "started_ns": int(started) if started.lstrip("-").isdigit() else 0,
        }
    return found


def _unit_image(files, unit):
    """The Image= line of the unit file on the host (what systemd would start)."""
    for f in files:
        if f.get("unit") == unit and f["path"].endswith(".container"):
            try:
                with open(f["path"], encoding="utf-8", errors="replace") as fh:
                    match = IMAGE_LINE.search(fh.read())
            except OSError:
                return None
            return match.group(1) if match else None
    return None


def probe(p):
    """What differs from the plan `p` ({dirs, files (sha1, never content), services, images,
    containers, settle_s}): files, units, what each container runs, and `state_digest`, a
    digest of everything it saw (a preview's plan hash binds it). Read-only."""
    # The two podman reads take ~0.2 s each (more on a busy host) and need nothing from each
    # other or from systemd's answer: started first, they run while systemd is asked.
    names = [c["name"] for c in p["containers"]]
    images_read = _start(IMAGES_ARGV)
    containers_read = _start(PS_ARGV) if names else None
    services = list(p["services"])
    for c in p["containers"]:
        service = c["unit"].removesuffix(".container") + ".service"
        if service not in services:
            services.append(service)
    states = (
        _settled_states(services, p["settle_s"]) if p["settle_s"] else (_service_states(services))
    )
    file_states = {f["path"]: _file_state(f) for f in p["files"]}
    files = [
        f["path"]
        for f in p["files"]
        if file_states[f["path"]][0] != f["sha1"] or not file_states[f["path"]][1]
    ]
    differing_dirs = [d["path"] for d in p["dirs"] if _dir_differs(d)]
    inactive = [s for s in p["services"] if states[s]["active"] != "active"]
    # One `podman images` call (each costs ~0.2 s) answers both which images are missing and
    # which image id each reference names here (codeb records it: "tested by digest").
    local = _local_images(images_read)
    running = _running(names, containers_read)

    containers, restart = {}, []
    for c in p["containers"]:
        service = c["unit"].removesuffix(".container") + ".service"
        st = states[service]
        actual = running.get(c["name"])
        own_files = [f for f in p["files"] if f.get("unit") == c["unit"]]
        wanted_id = local.get(c["image"])
        drift = []
        if st["active"] != "active" or not (actual and actual["running"]):
            drift.append("not running")
        differing = [f["path"] for f in own_files if f["path"] in files]
        if differing:
            drift.append("files differ from the plan: " + ", ".join(differing))
        if st["need_reload"]:
            drift.append("systemd has not loaded its current unit file")
        stale = bool(
            actual
            and actual["running"]
            and any(file_states[f["path"]][2] > actual["started_ns"] for f in own_files)
        )
        if stale:
            drift.append("started before its files last changed: a change was never applied")
        image_differs = bool(
            actual and actual["running"] and wanted_id and actual["image_id"] != wanted_id
        )
        if image_differs:
            drift.append(
                f"runs image {actual['image_id'][:12]} ({actual['image']}), "
                f"the plan wants {c['image']} ({wanted_id[:12]})"
            )
        # A running container whose files already match is restarted when it runs something
        # else than they say (files that differ restart it anyway, inactive ones are started).
        if (
            st["active"] == "active"
            and not differing
            and (image_differs or stale or st["need_reload"])
        ):
            restart.append(service)
        containers[c["name"]] = {
            "unit": c["unit"],
            "service": service,
            "load": st["load"],
            "active": st["active"],
            "sub": st["sub"],
            "need_reload": st["need_reload"],
            "unit_file_present": any(
                file_states[f["path"]][0] is not None
                for f in own_files
                if f["path"].endswith(".container")
            ),
            "unit_image": _unit_image(own_files, c["unit"]),
            "running": bool(actual and actual["running"]),
            "image": actual["image"] if actual else None,
            "image_id": actual["image_id"] if actual else None,
            "wanted_image": c["image"],
            "wanted_image_id": wanted_id,
            "drift": drift,
        }

    needs_images = files or inactive or restart
    missing_images = [
        image
        for image in (p["images"] if needs_images else [])
        if image not in local
        and subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0
    ]
    # Everything above that a change between a preview and its apply could alter. File
    # checksums enter only through this digest (secret files' hashes are never reported).
    seen = {
        "dirs": sorted(differing_dirs),
        "files": {path: list(state[:2]) for path, state in sorted(file_states.items())},
        "services": {
            s: [st["load"], st["active"] == "active", st["need_reload"]]
            for s, st in sorted(states.items())
        },
        "containers": {
            name: [c["running"], c["image_id"]] for name, c in sorted(containers.items())
        },
        "images": {image: local.get(image) for image in sorted(p["images"])},
    }
    digest = hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()
    return {
        "changed": False,
        "dirs": differing_dirs,
        "files": files,
        "not_loaded": [s for s in p["services"] if states[s]["load"] != "loaded"],
        "inactive": inactive,
        "missing_images": missing_images,
        "image_ids": {image: local[image] for image in p["images"] if image in local},
        "containers": containers,
        "restart": restart,
        "reload": any(states[s]["need_reload"] for s in services),
        "state_digest": digest,
    }


def differs(seen):
    """Whether the apply has anything to do on a host the probe saw as `seen` (the role's
    condition for running it)."""
    return bool(
        seen["reload"] or seen["dirs"] or seen["files"] or seen["restart"] or seen["inactive"]
    )


# -- apply ----------------------------------------------------------------------------------


def _current(path):
    """(content bytes or None when absent, whether mode and owner are as planned)."""
    try:
        st = os.lstat(path)
        with open(path, "rb") as fh:
            return fh.read(), st
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None, None


def _write(path, data, mode):
    """Atomically: a temporary file beside it, owner and mode set, then renamed over it."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".codeb-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chown(tmp, 0, 0)
        os.chmod(tmp, int(mode, 8))
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _service(unit):
    return unit[: -len(".container")] + ".service" if unit.endswith(".container") else unit


def _systemctl(fail, result, *args):
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        what = " ".join(args)
        detail = (proc.stderr or proc.stdout).strip()
        fail(f"systemctl {what} failed: {detail}", rc=proc.returncode, **result)


def apply(p, check, diff, fail):
    """Place `p`'s files ({dirs, files, secret_files, secret_contents, services, restart,
    reload, inactive, not_loaded}: what the probe found different), reload systemd when a
    unit file changed, restart and start what needs it. `fail(msg, **result)` must not
    return. In check mode nothing changes and the result says what would."""
    result = {
        "changed": False,
        "dirs": [],
        "placed": [],
        "reloaded": False,
        "restarted": [],
        "started": [],
        "diff": [],
    }

    for d in p["dirs"]:
        try:
            st = os.stat(d["path"])
            ok = os.path.isdir(d["path"]) and _mode_owner_ok(st, d["mode"])
        except FileNotFoundError:
            ok = False
        if ok:
            continue
        result["dirs"].append(d["path"])
        result["changed"] = True
        if not check:
            os.makedirs(d["path"], exist_ok=True)
            os.chown(d["path"], 0, 0)
            os.chmod(d["path"], int(d["mode"], 8))

    wanted = [(f, f["content"], False) for f in p["files"]]
    wanted += [(f, c, True) for f, c in zip(p["secret_files"], p["secret_contents"], strict=True)]
    changed_units = []
    for f, content, secret in wanted:
        data = content.encode()
        before, st = _current(f["path"])
        if before == data and st is not None and _mode_owner_ok(st, f["mode"]):
            continue  # already right (placed since the probe looked)
        result["placed"].append(f["path"])
        result["changed"] = True
        if f.get("unit"):
            changed_units.append(f["unit"])
        if diff:
            entry = {"before_header": f["path"], "after_header": f["path"]}
            if secret:
                entry.update(before="" if before is None else HIDDEN, after=HIDDEN)
            else:
                entry.update(
                    before="" if before is None else before.decode("utf-8", "replace"),
                    after=content,
                )
            if st is not None and not _mode_owner_ok(st, f["mode"]):
                entry["before_header"] += f" (mode {st.st_mode & 0o7777:o}, uid {st.st_uid})"
                entry["after_header"] += f" (mode {f['mode']}, uid 0)"
            result["diff"].append(entry)
        if not check:
            _write(f["path"], data, f["mode"])

    # Restart the units whose files changed, then those that run something else; in the
    # plan's order (the probe's services), each once.
    restart = {_service(u) for u in changed_units} | set(p["restart"])
    ordered = [s for s in p["services"] if s in restart]
    ordered += sorted(restart - set(ordered))
    reload = p["reload"] or any(path.endswith(".container") for path in result["placed"])
    start = [s for s in p["inactive"] if s not in restart]
    if check:
        # A new unit is not known to systemd before the reload: it would be started.
        new = set(p["not_loaded"])
        result["restarted"] = [s for s in ordered if s not in new]
        result["started"] = [s for s in ordered if s in new] + start
        result["reloaded"] = reload
        result["changed"] = result["changed"] or reload or bool(ordered or start)
        return result

    if reload:
        _systemctl(fail, result, "daemon-reload")
        result["reloaded"] = result["changed"] = True
    if ordered:
        _systemctl(fail, result, "restart", "--", *ordered)
        result["restarted"] = ordered
        result["changed"] = True
    if start:
        _systemctl(fail, result, "start", "--", *start)
        result["started"] = start
        result["changed"] = True
    return result


def what_differs(plan, seen):
    """The apply's input for a host whose plan is `plan` ({dirs, files, secret_files,
    secret_contents, services}: the whole plan) and whose probe saw `seen`: only what the
    probe found different (the role's selection between its probe and apply tasks)."""
    secret = [
        (f, c)
        for f, c in zip(plan["secret_files"], plan["secret_contents"], strict=True)
        if f["path"] in seen["files"]
    ]
    return {
        "dirs": [d for d in plan["dirs"] if d["path"] in seen["dirs"]],
        "files": [f for f in plan["files"] if f["path"] in seen["files"]],
        "secret_files": [f for f, _ in secret],
        "secret_contents": [c for _, c in secret],
        "services": plan["services"],
        "restart": seen["restart"],
        "reload": seen["reload"],
        "inactive": seen["inactive"],
        "not_loaded": seen["not_loaded"],
    }
