"""Projects, environments and servers through the CLI, against the real API."""

from __future__ import annotations

import stat


def test_projects_create_list_show(cli, tmp_path):
    r = cli("projects", "create", "shop", "--type", "remix")
    assert r.code == 0, r.err
    assert "project shop created" in r.out
    # Without --write-env-dir the files are shown once, with how to write them next time.
    assert "==> .env.staging <==" in r.out and "DATABASE_URL=postgresql://shop:" in r.out
    assert "--write-env-dir" in r.out

    r = cli("projects", "list")
    assert r.code == 0
    header, row = r.out.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "STATUS", "ENVIRONMENTS", "CREATED"]
    assert row.split()[1:4] == ["shop", "remix", "active"]
    # Aligned: every column starts at the same offset in the header and the row.
    assert row.index("shop") == header.index("NAME")

    r = cli("projects", "show", "shop")
    assert r.code == 0 and "type:       remix" in r.out
    assert "staging      3001" in r.out


def test_projects_json_is_the_api_answer(cli):
    created = cli("projects", "create", "shop", "--json")
    assert created.code == 0
    body = created.json()
    assert set(body) == {"project", "environments", "env_files"}
    assert set(body["env_files"]) == {"local", "staging", "production"}
    listed = cli("projects", "list", "--json").json()
    assert listed["total"] == 1 and listed["projects"][0]["id"] == body["project"]["id"]
    shown = cli("projects", "show", body["project"]["id"], "--json").json()
    assert shown["name"] == "shop"


def test_write_env_dir_writes_0600_files_and_never_overwrites(cli, tmp_path):
    target = tmp_path / "envs"
    r = cli("projects", "create", "shop", "--with-preview", "--write-env-dir", str(target))
    assert r.code == 0, r.err
    names = sorted(p.name for p in target.iterdir())
    assert names == [".env.local", ".env.preview", ".env.production", ".env.staging"]
    for path in target.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert str(path) in r.out
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert "PASSWORD" not in r.out and "postgresql://" not in r.out  # written, not printed
    assert "PORT=3001" in (target / ".env.staging").read_text()

    # A second project into the same directory is refused before anything is created.
    r = cli("projects", "create", "blog", "--write-env-dir", str(target))
    assert r.code == 2 and "exist already" in r.err
    assert cli("projects", "show", "blog").code == 2


def test_environments_create_show_list(cli, tmp_path):
    cli("projects", "create", "shop")
    r = cli("environments", "create", "shop", "preview", "--write-env-dir", str(tmp_path))
    assert r.code == 0, r.err
    assert stat.S_IMODE((tmp_path / ".env.preview").stat().st_mode) == 0o600
    r = cli("environments", "list", "shop")
    assert [line.split()[0] for line in r.out.splitlines()] == [
        "NAME", "staging", "production", "preview",
    ]  # fmt: skip
    assert cli("environments", "show", "shop", "preview", "--json").json()["name"] == "preview"


def test_servers_add_without_bootstrap_list_show(cli):
    r = cli("servers", "add", "app1", "10.1.0.5", "app", "--no-bootstrap", "--ssh-port", "2222")
    assert r.code == 0, r.err
    assert "server app1 (10.1.0.5, app) registered: registered" in r.out
    assert "following" not in r.out  # no operation started
    r = cli("servers", "add", "db1", "10.1.0.6", "db", "--no-bootstrap", "--json")
    assert r.json()["operation"] is None

    r = cli("servers", "list")
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "IP", "ROLE", "STATUS", "SSH_USER", "SSH_PORT", "PROVIDER"]
    assert lines[1].split() == ["app1", "10.1.0.5", "app", "registered", "root", "2222", "manual"]
    r = cli("servers", "list", "--role", "db", "--json")
    assert [s["name"] for s in r.json()["servers"]] == ["db1"]
    r = cli("servers", "show", "10.1.0.5")
    assert r.code == 0 and "ssh_port:    2222" in r.out
    r = cli("servers", "ssh-key")
    assert r.code == 0 and r.out.startswith("ssh-ed25519 ")


def test_subprocess_console_script(sub, api):
    r = sub("projects", "create", "shop", "--json")
    assert r.code == 0, r.err
    assert r.json()["project"]["name"] == "shop"
    r = sub("projects", "list")
    assert r.code == 0 and "shop" in r.out
    assert api.admin_key not in r.out + r.err
