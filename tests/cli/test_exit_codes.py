"""Exit codes and error output: 401/403 → 4, 404/409/422 → 2, unreachable → 5, usage → 2."""

from __future__ import annotations

import json

import pytest

from codeb.client.http import DEFAULT_URL, load_settings
from tests.support import free_port


def test_unauthenticated_and_forbidden(cli, sub, api):
    r = sub("projects", "list", CODEB_API_KEY="cb_not-a-real-key")
    assert r.code == 4 and "[unauthorized]" in r.err and "CODEB_API_KEY" in r.err
    assert "cb_not-a-real-key" not in r.out + r.err
    r = sub("projects", "list", CODEB_API_KEY="")
    assert r.code == 4 and "no API key" in r.err
    readonly = api.new_key("viewer", "readonly")
    assert cli("projects", "list", key=readonly).code == 0
    r = cli("projects", "create", "shop", key=readonly)
    assert r.code == 4 and "[forbidden]" in r.err


def test_not_found_conflict_validation(cli):
    assert cli("projects", "show", "nope").code == 2
    cli("projects", "create", "shop")
    r = cli("projects", "create", "shop")
    assert r.code == 2 and "[conflict]" in r.err
    r = cli("servers", "add", "x", "999.1.1.1", "app", "--no-bootstrap", "--json")
    assert r.code == 2
    assert r.json()["error"]["code"] == "validation_failed"  # --json: the error body, parsed
    r = cli("projects", "update", "shop")
    assert r.code == 2 and "nothing to change" in r.err


def test_unreachable_api_is_5(sub, api):
    r = sub("projects", "list", CODEB_URL=f"http://127.0.0.1:{free_port()}")
    assert r.code == 5 and "cannot reach codeb at http://127.0.0.1:" in r.err
    assert api.admin_key not in r.out + r.err


def test_bad_usage_is_2_and_help_lists_exit_codes(sub):
    assert sub("projects").code == 2
    assert sub("servers", "add", "x", "10.0.0.1", "webserver").code == 2
    r = sub("--help")
    assert r.code == 0 and "exit codes:" in r.out and "130" in r.out


def test_config_file_and_environment_precedence(tmp_path, api, sub):
    config = tmp_path / "cli.toml"
    config.write_text(f'url = "{api.base_url}"\napi_key = "{api.admin_key}"\n')
    env = {"CODEB_CLI_CONFIG": str(config)}
    settings = load_settings(env)
    assert (settings.url, settings.api_key) == (api.base_url, api.admin_key)
    assert api.admin_key not in repr(settings)
    env_wins = load_settings({**env, "CODEB_URL": "http://example.test/", "CODEB_API_KEY": "k"})
    assert (env_wins.url, env_wins.api_key) == ("http://example.test", "k")
    assert load_settings({"CODEB_CLI_CONFIG": str(tmp_path / "none")}).url == DEFAULT_URL
    from_file = {"CODEB_URL": "", "CODEB_API_KEY": "", "CODEB_CLI_CONFIG": str(config)}
    config.chmod(0o644)
    r = sub("projects", "list", "--json", **from_file)
    assert r.code == 0, r.err
    assert json.loads(r.out)["total"] == 0
    assert "others can read it (chmod 600)" in r.err
    config.chmod(0o600)
    assert sub("projects", "list", **from_file).err == ""
    config.write_text("url = [")
    assert sub("projects", "list", CODEB_URL="", CODEB_CLI_CONFIG=str(config)).code == 2


@pytest.mark.parametrize("argv", [("migrate",), ("keys", "list", "--json")])
def test_server_side_commands_still_work(sub, tmp_path, argv):
    r = sub(*argv, CODEB_DATA_DIR=str(tmp_path / "local"))
    assert r.code == 0, r.err
    if "--json" in argv:
        assert json.loads(r.out) == []
