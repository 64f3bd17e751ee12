"""codeb's wheel runs on its own: `pip wheel .` carries the Ansible content and templates
(codeb/_content/), and a venv filled from that wheel and a wheelhouse (no index) runs codeb
with its playbooks, roles and templates resolved inside the installed distribution."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from codeb.config import REPO_ROOT, content_root
from tests.packaging.wheels import build_wheel, offline_env, tracked_content, wheelhouse

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
PROBE = """
import json
from pathlib import Path
import codeb, codeb.config as c
from codeb.executor import runner
print(json.dumps({
    "package": str(Path(codeb.__file__).parent),
    "content_root": str(c.content_root()),
    "playbooks": str(runner.PLAYBOOKS_DIR),
    "roles": str(runner.ROLES_DIR),
    "ansible_cfg": str(runner.ANSIBLE_CFG),
    "templates": str(c.load_settings().templates_dir),
    "env": runner._envvars(Path("/tmp")),
}))
"""


def _clean_env(venv: Path) -> dict[str, str]:
    """No setting or path of the checkout leaks into the installed codeb."""
    env = {
        k: v
        for k, v in offline_env().items()
        if not k.startswith(("CODEB_", "ANSIBLE_", "PYTHON")) and k != "VIRTUAL_ENV"
    }
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    wheels = wheelhouse(LOCAL_PYTHON)
    timings["wheelhouse"] = time.monotonic() - t0
    tmp = tmp_path_factory.mktemp("wheel")
    t0 = time.monotonic()
    wheel = build_wheel(tmp, wheels)
    timings["build"] = time.monotonic() - t0
    venv = tmp / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
         str(wheel)],
        capture_output=True, text=True, timeout=600, cwd=tmp, env=_clean_env(venv),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    timings["install"] = time.monotonic() - t0
    print("codeb wheel: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return wheel, venv, tmp


def test_the_checkout_runs_from_its_own_content():
    # make run, the tests and the editable install: nothing copied, the tree itself.
    assert content_root() == REPO_ROOT
    assert not (REPO_ROOT / "codeb" / "_content").exists()


def test_wheel_carries_every_tracked_content_file(built):
    wheel, _, _ = built
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    tracked = tracked_content()
    assert any(t.startswith("roles/") for t in tracked) and any(
        t.startswith("playbooks/") for t in tracked
    )
    missing = [t for t in tracked if f"codeb/_content/{t}" not in names]
    assert not missing, f"files git tracks but the wheel leaves out: {missing}"
    assert "codeb/_content/ansible.cfg" in names
    assert any(n.startswith("codeb/store/migrations/") for n in names)  # package data
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("tests/", "bench/", "var/"))]


def test_installed_wheel_runs_codeb_from_its_installed_content(built):
    _, venv, tmp = built
    env = _clean_env(venv)
    r = subprocess.run(
        [venv / "bin" / "codeb", "--help"], capture_output=True, text=True, cwd=tmp, env=env,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "serve" in r.stdout

    r = subprocess.run(
        [venv / "bin" / "python", "-c", PROBE], capture_output=True, text=True, cwd=tmp, env=env,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    package = Path(found["package"])
    assert package.is_relative_to(venv), found
    root = package / "_content"
    assert Path(found["content_root"]) == root
    assert Path(found["playbooks"]) == root / "playbooks"
    assert Path(found["roles"]) == root / "roles"
    assert Path(found["ansible_cfg"]) == root / "ansible.cfg"
    assert Path(found["templates"]) == root / "templates"
    assert found["env"]["ANSIBLE_CALLBACK_PLUGINS"] == str(root / "plugins" / "callback")
    assert (root / "playbooks" / "deploy.yml").is_file()

    # Ansible itself, with codeb's own environment for runs, parses a playbook from the
    # installed location and finds its roles there (no checkout anywhere in sight).
    run_env = {**env, **found["env"]}
    r = subprocess.run(
        [venv / "bin" / "ansible-playbook", "--syntax-check", "-i", "localhost,",
         str(root / "playbooks" / "bootstrap.yml")],
        capture_output=True, text=True, cwd=tmp, env=run_env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
