"""No generated password appears in plaintext in the database file, the logs, or any answer
other than the creation answer."""

import logging
import re

from codeb.store.models import OperationLog


def test_passwords_only_in_the_creation_answer(sqlite_api, caplog):
    api = sqlite_api
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with api.client() as c:
        c.post(
            "/api/servers", json={"name": "db1", "ip": "10.9.0.2", "role": "db", "bootstrap": False}
        )
        created = c.post("/api/projects", json={"name": "secretive", "preview": True})
        assert created.status_code == 201
        env = c.post("/api/projects", json={"name": "other"})
        extra = c.post("/api/projects/other/environments", json={"name": "preview"})
        passwords = set()
        for text in [
            *created.json()["env_files"].values(),
            *env.json()["env_files"].values(),
            extra.json()["env_file"],
        ]:
            passwords |= set(re.findall(r"://[^:]*:([\w-]{20,})@", text))
        assert len(passwords) == 14  # 7 per project (local db; db + redis x3)
        for path in (
            "/api/projects",
            "/api/projects/secretive",
            "/api/projects/secretive/environments",
            "/api/projects/secretive/environments/staging",
            "/api/projects/secretive/environments/preview",
            "/api/servers",
            "/api/keys",
            "/api/openapi.json",
            "/api/health",
        ):
            r = c.get(path)
            assert r.status_code == 200, path
            seen.append(r.text)
        seen.append(c.put("/api/projects/secretive", json={"type": "remix"}).text)
        seen.append(c.delete("/api/projects/secretive").text)
        seen.append(c.delete("/api/projects/secretive/environments/staging").text)
        seen.append(c.post("/api/projects", json={"name": "secretive"}).text)
    with api.deps.db.connection_context():
        details = [str(row.details) for row in OperationLog.select()]
    api.deps.db.close()
    data_dir = api.deps.settings.data_dir
    blobs = [p.read_bytes() for p in data_dir.glob("codeb.db*")]
    assert blobs
    logs = caplog.text
    for pw in passwords:
        assert not any(pw in text for text in seen), "password in an API answer"
        assert not any(pw.encode() in blob for blob in blobs), "password in the database file"
        assert pw not in logs, "password in the logs"
        assert not any(pw in d for d in details), "password in operation log details"
