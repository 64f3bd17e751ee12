"""packaging/systemd: the unit passes `systemd-analyze verify`, scores at most 2.0 with
`systemd-analyze security --offline=yes`, and runs as the static user the sysusers file makes.
Both tools work without systemd as PID 1; nothing here is skipped."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "systemd" / "codeb.service"
SYSUSERS = REPO / "packaging" / "systemd" / "codeb.sysusers"
INSTALLED_CODEB = "/opt/codeb/venv/bin/codeb"
MAX_EXPOSURE = 2.0


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_security_exposure_is_at_most_two(tmp_path):
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for codeb\.service: ([0-9.]+)", r.stdout)
    assert found, r.stdout + r.stderr
    score = float(found.group(1))
    print(f"systemd-analyze security --offline=yes: {score}")
    assert score <= MAX_EXPOSURE, r.stdout


def test_verify_passes(tmp_path):
    """verify checks that ExecStart's program exists: it is pointed at this checkout's codeb
    (the only change); the unit itself says /opt/codeb/venv/bin/codeb."""
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_CODEB} serve" in text
    here = Path(sys.executable).with_name("codeb")
    assert here.exists()
    unit = tmp_path / "codeb.service"
    unit.write_text(text.replace(INSTALLED_CODEB, str(here)))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "codeb.service" not in r.stderr, r.stderr  # no warning about the unit at all


def test_static_user_state_directory_and_hardening():
    d = directives(UNIT.read_text())
    assert d["User"] == ["codeb"] and d["Group"] == ["codeb"]
    assert "DynamicUser" not in d  # ssh and getpass need a passwd entry
    assert d["StateDirectory"] == ["codeb"] and d["StateDirectoryMode"] == ["0700"]
    assert "CODEB_DATA_DIR=/var/lib/codeb" in d["Environment"]
    assert "HOME=/var/lib/codeb" in d["Environment"]
    for key, value in {
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "CapabilityBoundingSet": "", "ProtectHome": "yes", "UMask": "0077",
    }.items():  # fmt: skip
        assert d[key] == [value], key
    # cffi callbacks (cryptography) need W+X pages.
    assert "MemoryDenyWriteExecute" not in d


def test_sysusers_makes_the_static_user(tmp_path):
    (tmp_path / "etc").mkdir()
    r = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("codeb:"))
    _, _, uid, _, _, home, shell = entry.split(":")
    assert int(uid) < 1000 and home == "/var/lib/codeb" and shell == "/usr/sbin/nologin"
