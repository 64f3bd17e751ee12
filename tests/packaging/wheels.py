"""Building codeb's wheel and a wheelhouse of its dependencies, offline once cached: shared by
the wheel test (here, on this machine's Python) and the service test (a fleet host's Python)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/codeb-fleet")
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_34_x86_64", "any")  # fmt: skip
# Not part of a release: kept out of the tree a wheel is built from.
LEAVE_OUT = ("tests/", "bench/", ".git", "var/", "inventory/hosts.yml")
# What codeb reads besides its package (as codeb.config.CONTENT), as directories and files.
CONTENT_DIRS = ("playbooks", "roles", "plugins", "templates")


def requirements() -> list[str]:
    """codeb's dependencies, and what building and installing need (pip, setuptools, wheel)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], "pip", "setuptools>=68", "wheel"]


def wheelhouse(python_version: str) -> Path:
    """Every dependency as a wheel for that Python (3.x), downloaded once per requirement set
    with pip's ordinary client and kept with the fleet's caches."""
    reqs = requirements()
    key = hashlib.sha256("\n".join([python_version, *reqs]).encode()).hexdigest()[:16]
    target = CACHE / f"wheelhouse-{key}"
    if target.is_dir():
        return target
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    abi = "cp" + python_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(tmp), "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp",
           "--abi", abi, "--abi", "abi3", "--abi", "none"]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *reqs], check=True, timeout=900)
    try:
        tmp.rename(target)
    except OSError:  # another run cached it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def release_files() -> list[str]:
    """The release tree: what git tracks plus new files not ignored, without tests/, bench/."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    return [
        name
        for name in sorted(set(filter(None, listed)))
        if not name.startswith(LEAVE_OUT) and (REPO / name).is_file()
    ]


def tracked_content() -> list[str]:
    """Every file git tracks under playbooks/, roles/, plugins/, templates/."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--", *CONTENT_DIRS],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return sorted(filter(None, out.split("\0")))


def offline_env(**extra: str) -> dict[str, str]:
    """The environment for an offline pip: no configured index, find-links or constraints
    (this machine's pip.conf has some), so only the wheelhouse given on the command line counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, **extra}


def build_wheel(out_dir: Path, wheels: Path) -> Path:
    """`pip wheel .` of a copy of the release tree (so the build leaves nothing in the
    checkout), offline: setuptools for the isolated build comes from the wheelhouse."""
    src = out_dir / "src"
    for name in release_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    dist = out_dir / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
         "--find-links", str(wheels), "-w", str(dist), str(src)],
        check=True, timeout=600, env=offline_env(),
    )  # fmt: skip
    (wheel,) = dist.glob("codeb-*.whl")
    return wheel
