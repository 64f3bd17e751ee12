"""Projects and environments over real HTTP against a real SQLite file."""

import re

ENV_LINE = re.compile(r"^(NODE_ENV|PORT|DATABASE_URL|DIRECT_URL|REDIS_URL)=(.*)$", re.M)


def env_vars(text: str) -> dict[str, str]:
    return dict(ENV_LINE.findall(text))


def create(c, name="my-project", **extra):
    r = c.post("/api/projects", json={"name": name, "type": "nextjs", **extra})
    assert r.status_code == 201, r.text
    return r.json()


def test_creation_answer_has_the_designs_shape(api):
    with api.client() as c:
        body = create(c, git_repo="https://example.invalid/repo.git")
    assert set(body) == {"project", "environments", "env_files"}
    assert body["project"]["name"] == "my-project"
    assert body["project"]["type"] == "nextjs"
    assert body["project"]["status"] == "active"
    assert body["environments"] == {
        "staging": {"app_port": 3001, "db_port": 15432, "redis_port": 16379, "redis_db": 0},
        "production": {"app_port": 4001, "db_port": 25432, "redis_port": 26379, "redis_db": 0},
    }
    assert set(body["env_files"]) == {"local", "staging", "production"}


def test_env_files_have_the_designs_urls(api):
    with api.client() as c:
        c.post(
            "/api/servers", json={"name": "db1", "ip": "10.0.0.2", "role": "db", "bootstrap": False}
        )
        c.post(
            "/api/servers",
            json={"name": "cache1", "ip": "10.0.0.3", "role": "cache", "bootstrap": False},
        )
        files = create(c)["env_files"]
    local, staging, prod = (env_vars(files[k]) for k in ("local", "staging", "production"))
    assert local["NODE_ENV"] == "development" and local["PORT"] == "3000"
    assert re.fullmatch(
        r"postgresql://my_project:[\w-]{32}@localhost:5432/my_project_dev", local["DATABASE_URL"]
    )
    assert local["REDIS_URL"] == "redis://localhost:6379/0"
    assert staging["NODE_ENV"] == "staging" and staging["PORT"] == "3001"
    assert re.fullmatch(
        r"postgresql://my_project:[\w-]{32}@10\.0\.0\.2:15432/my_project_staging",
        staging["DATABASE_URL"],
    )
    assert staging["DIRECT_URL"] == staging["DATABASE_URL"]
    assert re.fullmatch(r"redis://:[\w-]{32}@10\.0\.0\.3:16379/0", staging["REDIS_URL"])
    assert prod["NODE_ENV"] == "production" and prod["PORT"] == "4001"
    assert prod["DATABASE_URL"].endswith("@10.0.0.2:25432/my_project_prod")
    assert prod["REDIS_URL"].endswith("@10.0.0.3:26379/0")
    passwords = {
        u.split(":")[2].split("@")[0]
        for u in (local["DATABASE_URL"], staging["DATABASE_URL"], prod["DATABASE_URL"])
    } | {staging["REDIS_URL"].split(":")[2].split("@")[0], prod["REDIS_URL"].split(":")[2]}
    assert len(passwords) == 5  # distinct per environment and per service


def test_second_project_gets_next_ports_and_freed_ports_are_reused(api):
    with api.client() as c:
        create(c, "one")
        two = create(c, "two")
    assert two["environments"]["staging"]["app_port"] == 3002
    assert two["environments"]["production"]["db_port"] == 25433


def test_preview_on_request_and_later(api):
    with api.client() as c:
        body = create(c, "pv", preview=True)
        assert body["environments"]["preview"] == {
            "app_port": 5001,
            "db_port": 35432,
            "redis_port": 36379,
            "redis_db": 0,
        }
        other = create(c, "later")
        assert "preview" not in other["environments"]
        r = c.post("/api/projects/later/environments", json={"name": "preview"})
        assert r.status_code == 201, r.text
        assert r.json()["environment"]["app_port"] == 5002
        assert "NODE_ENV=preview" in r.json()["env_file"]
        r = c.post("/api/projects/later/environments", json={"name": "preview"})
        assert r.status_code == 409
        r = c.post("/api/projects/later/environments", json={"name": "qa"})
        assert r.status_code == 422
        envs = c.get("/api/projects/later/environments").json()["environments"]
        assert [e["name"] for e in envs] == ["staging", "production", "preview"]
        env = c.get("/api/projects/later/environments/preview").json()
        assert env["db_name"] == "later_preview" and env["db_user"] == "later"
        assert c.get("/api/projects/later/environments/nope").status_code == 404


def test_get_by_id_or_name_and_list(api):
    with api.client() as c:
        pid = create(c, "alpha")["project"]["id"]
        create(c, "beta")
        assert c.get(f"/api/projects/{pid}").json()["name"] == "alpha"
        assert c.get("/api/projects/alpha").json()["id"] == pid
        assert c.get("/api/projects/gamma").status_code == 404
        listing = c.get("/api/projects").json()
        assert [p["name"] for p in listing["projects"]] == ["alpha", "beta"]
        assert listing["total"] == 2
        page = c.get("/api/projects", params={"limit": 1, "offset": 1}).json()
        assert [p["name"] for p in page["projects"]] == ["beta"]
        assert c.get("/api/projects", params={"limit": 0}).status_code == 422
        assert c.get("/api/projects", params={"limit": "x"}).status_code == 422


def test_duplicate_is_409_and_bad_names_422(api):
    with api.client() as c:
        create(c, "dup")
        r = c.post("/api/projects", json={"name": "dup"})
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "conflict"
        for bad in ("Dup", "du_p", "-dup", "dup-", "9dup", "x" * 49, "", 12, None):
            r = c.post("/api/projects", json={"name": bad})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"]["details"]["problems"][0]["field"] == "name"
        r = c.post("/api/projects", json={"name": "ok", "type": "cobol"})
        assert r.status_code == 422
        assert c.get("/api/projects").json()["total"] == 1


def test_put_changes_only_descriptive_fields(api):
    with api.client() as c:
        create(c, "edit")
        r = c.put("/api/projects/edit", json={"type": "remix", "git_repo": None})
        assert r.status_code == 200 and r.json()["type"] == "remix"
        for forbidden in ({"status": "deleted"}, {"name": "other"}, {"id": "x"}):
            r = c.put("/api/projects/edit", json=forbidden)
            assert r.status_code == 422, r.text
        p = c.get("/api/projects/edit").json()
        assert p["status"] == "active" and p["name"] == "edit"


def test_deletes_never_delete_at_once(api):
    with api.client() as c:
        create(c, "keep")
        r = c.delete("/api/projects/keep")
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        assert c.get("/api/projects/keep").json()["status"] == "active"
        r = c.delete("/api/projects/keep/environments/staging")
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        assert c.get("/api/projects/keep/environments/staging").status_code == 200
