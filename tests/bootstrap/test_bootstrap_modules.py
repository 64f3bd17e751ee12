"""The pure parts of the bootstrap role's modules, on real files (the fleet tests run them on
real hosts: tests/bootstrap/test_bare_bootstrap.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "roles" / "codeb_bootstrap" / "library"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, LIBRARY / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apt = load("codeb_apt_packages")
probe = load("codeb_bootstrap_probe")


@pytest.mark.parametrize(
    ("debian", "upstream"),
    [
        ("5.4.2+ds1-2", "5.4.2"),
        ("4.3.1+ds1-8+deb12u1+b3", "4.3.1"),
        ("1:10.0p1-7+deb13u4", "10.0p1"),
        ("257.13-1~deb13u1", "257.13"),
        ("1.14.0~rc1-1", "1.14.0"),
    ],
)
def test_versions_are_told_as_upstream_names_them(debian, upstream):
    assert apt.upstream(debian) == upstream


@pytest.mark.skipif(os.geteuid() != 0, reason="owner checks need root-owned files")
def test_file_differs_on_content_mode_and_absence(tmp_path):
    path = tmp_path / "50-codeb.conf"
    content = "[Journal]\nSystemMaxUse=1G\n"
    spec = {"path": str(path), "content": content, "mode": "0644"}
    assert probe.file_differs(spec)  # missing
    path.write_text(content)
    path.chmod(0o644)
    assert not probe.file_differs(spec)
    assert not probe.file_differs(
        {"path": str(path), "sha256": hashlib.sha256(content.encode()).hexdigest(), "mode": "0644"}
    )
    path.chmod(0o600)
    assert probe.file_differs(spec)
    path.chmod(0o644)
    path.write_text(content + "MaxRetentionSec=1month\n")
    assert probe.file_differs(spec)


@pytest.mark.skipif(os.geteuid() != 0, reason="owner checks need root-owned files")
def test_dir_differs_and_plain_paths_mean_0755(tmp_path):
    d = tmp_path / "containers.conf.d"
    spec = probe.dir_spec(str(d))
    assert spec == {"path": str(d), "mode": "0755"}
    assert probe.dir_differs(spec)
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    assert not probe.dir_differs(spec)
    assert probe.dir_differs({"path": str(d), "mode": "0700"})
    (tmp_path / "file").write_text("")
    assert probe.dir_differs({"path": str(tmp_path / "file"), "mode": "0644"})
