"""Bad configuration refuses to start with a message naming the setting (finding 7 of the
trust issue): a queue window of 99999999999 hours used to make every HIGH request a 500."""

from __future__ import annotations

import subprocess
import sys

import pytest

from codeb.config import BOUNDS, SettingError, load_settings


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_every_numeric_setting_is_bounded(name, tmp_path):
    low, high = BOUNDS[name]
    env = {"CODEB_DATA_DIR": str(tmp_path)}
    for bad in (str(low - 1), str(high + 1), "99999999999", "abc", "1.5"):
        with pytest.raises(SettingError, match=f"CODEB_{name.upper()}"):
            load_settings({**env, f"CODEB_{name.upper()}": bad})
    assert getattr(load_settings({**env, f"CODEB_{name.upper()}": str(high)}), name) == high


def test_other_settings_are_checked_too(tmp_path):
    env = {"CODEB_DATA_DIR": str(tmp_path)}
    for name, bad in (("LOG_LEVEL", "LOUD"), ("ALLOWED_NETWORKS", "10.0.0.0/33"),
                      ("PROTECTION_RULES", "[1]"), ("APT_PROXY", "http://x/\";evil"),
                      ("APT_PROXY", "ftp://mirror")):  # fmt: skip
        with pytest.raises(SettingError, match=f"CODEB_{name}"):
            load_settings({**env, f"CODEB_{name}": bad})


def test_codeb_refuses_to_start_naming_the_setting(tmp_path):
    env = {
        "CODEB_DATA_DIR": str(tmp_path),
        "CODEB_PROTECTION_QUEUE_WINDOW_HOURS": "99999999999",
        "PATH": "/usr/bin:/bin",
    }
    r = subprocess.run(
        [sys.executable, "-m", "codeb", "migrate"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "CODEB_PROTECTION_QUEUE_WINDOW_HOURS" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "codeb.db").exists()
