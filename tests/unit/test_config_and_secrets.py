import stat

import pytest

from codeb.config import SETTINGS, Settings, load_settings
from codeb.secretbox import SecretBox, generate_password


def test_defaults_and_env_override(tmp_path):
    s = load_settings({})
    assert s.host == "127.0.0.1" and s.port == 8080
    assert s.resolved_database_url.startswith("sqlite:///")
    s = load_settings({"CODEB_PORT": "9999", "CODEB_DATA_DIR": str(tmp_path)})
    assert s.port == 9999
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'codeb.db'}"


def test_config_file_then_env(tmp_path):
    cfg = tmp_path / "codeb.toml"
    cfg.write_text('port = 7000\nhost = "127.0.0.2"\n')
    s = load_settings({"CODEB_CONFIG": str(cfg), "CODEB_PORT": "7001"})
    assert (s.host, s.port) == ("127.0.0.2", 7001)
    cfg.write_text("nonsense = 1\n")
    with pytest.raises(ValueError, match="nonsense"):
        load_settings({"CODEB_CONFIG": str(cfg)})


def test_every_setting_is_documented_in_the_readme():
    from codeb.config import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    for name in SETTINGS:
        assert f"CODEB_{name.upper()}" in readme, name
    assert Settings().port == 8080


def test_key_file_created_0600_and_reused(tmp_path):
    path = tmp_path / "k" / "secret.key"
    box = SecretBox.from_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = box.encrypt("hunter2")
    assert "hunter2" not in token
    assert SecretBox.from_key_file(path).decrypt(token) == "hunter2"


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "secret.key"
    SecretBox.from_key_file(path)
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        SecretBox.from_key_file(path)


def test_wrong_key_does_not_leak(tmp_path):
    token = SecretBox.from_key_file(tmp_path / "a.key").encrypt("s3cret")
    with pytest.raises(ValueError) as info:
        SecretBox.from_key_file(tmp_path / "b.key").decrypt(token)
    assert token not in str(info.value) and "s3cret" not in str(info.value)


def test_passwords_url_safe_and_distinct():
    pws = {generate_password() for _ in range(100)}
    assert len(pws) == 100
    for pw in pws:
        assert len(pw) >= 32
        assert all(c.isalnum() or c in "-_" for c in pw)


def test_sqlite_files_are_owner_only(tmp_path):
    from codeb.store.db import migrate, open_database

    db = open_database(f"sqlite:///{tmp_path / 'state' / 'codeb.db'}")
    migrate(db)
    with db.connection_context():
        db.execute_sql("SELECT 1")
        for path in (tmp_path / "state").glob("codeb.db*"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
