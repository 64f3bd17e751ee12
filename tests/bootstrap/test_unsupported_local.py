"""A host without systemd as PID 1 is refused before anything changes, with a message naming
what is missing and what to do. This machine is such a host (its PID 1 is not systemd), so the
bootstrap playbook runs against it locally, in check mode: the probe only reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="this machine runs systemd")
def test_a_host_without_systemd_is_refused_naming_what_to_do(tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "CODEB_JOURNAL_DIR": str(tmp_path / "journal"),  # not codeb's own journal
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    extra = {"codeb_bootstrap_server_roles": {"localhost": ["app"]}}
    res = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            "--check",
            "-e",
            json.dumps(extra),
            str(REPO / "playbooks" / "bootstrap.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "unsupported host: systemd is not running as PID 1" in out, out
    assert "use a server booted with systemd" in out and "Nothing was changed" in out, out
    assert "changed=0" in out, out
