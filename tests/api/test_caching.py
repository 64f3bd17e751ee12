"""The per-thread caches of GET /api/projects and of the API key lookup (codeb.store.db's
ThreadCache, SQLite only): never stale after a write by anyone (the same waitress thread,
another one, the test process, another process), a revoked key fails on the very next request
on every thread, expiries still follow the clock, and the answers are those of the uncached
code. The HTTP tests run on SQLite and on PostgreSQL (where nothing is cached)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeb.features.keys import service as keys
from codeb.features.projects import service as projects
from codeb.services.context import SYSTEM
from codeb.store.db import ThreadCache, begin_request, change_token, end_request, is_sqlite
from codeb.store.models import ApiKey, Environment, Project
from tests.protection.helpers import add_backup, confirm
from tests.support import LiveApi, live_api

REPO = Path(__file__).resolve().parents[2]
# More clients than waitress threads (8): every burst reaches every thread.
CLIENTS = 16
BURST = 64

Seen = tuple[float, float, int, bytes]

WRITE_PROJECT = """
import sys
from codeb.app import build_deps
from codeb.config import load_settings
from codeb.features.projects import service as projects
from codeb.services.context import SYSTEM
deps = build_deps(load_settings())
with deps.db.connection_context():
    projects.create_project(deps, SYSTEM, {"name": sys.argv[1]})
"""


def reference_list(limit: int = 100, offset: int = 0, status: str | None = None) -> dict:
    """GET /api/projects as the uncached code computed it: model instances, project_view()."""
    query = Project.select().where(Project.status != "deleted")
    if status:
        query = query.where(Project.status == status)
    page = query.order_by(Project.created_at, Project.name).limit(limit).offset(offset)
    return {
        "projects": [projects.project_view(p) for p in page],
        "total": query.count(),
        "limit": limit,
        "offset": offset,
    }


def reference_bytes(api: LiveApi, **params: Any) -> bytes:
    """What Falcon's JSON handler made of the uncached answer, read from the test process's
    own connection."""
    with api.deps.db.connection_context():
        return json.dumps(reference_list(**params), ensure_ascii=False).encode()


def burst_size(api: LiveApi) -> int:
    # PostgreSQL caches nothing and opens a connection per request: fewer suffice there.
    return BURST if is_sqlite(api.deps.db) else CLIENTS


def burst(api: LiveApi, key: str = "admin", params: dict | None = None) -> list[httpx.Response]:
    """Concurrent GET /api/projects from CLIENTS threads."""
    n = burst_size(api)
    with api.client(key=key) as c, ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda _: c.get("/api/projects", params=params), range(n)))


def assert_all_fresh(api: LiveApi, params: dict | None = None) -> None:
    expected = reference_bytes(api, **(params or {}))
    answers = burst(api, params=params)
    assert [r.status_code for r in answers] == [200] * len(answers)
    stale = [r.content for r in answers if r.content != expected]
    assert not stale, (expected[:300], stale[0][:300])


def statuses(answers: list[httpx.Response]) -> list[int]:
    return [r.status_code for r in answers]


@contextmanager
def hammer(api: LiveApi, key: str = "admin") -> Iterator[list[Seen]]:
    """CLIENTS threads sending GET /api/projects without a pause while the block runs; yields
    the (sent, received, status, body) of every request (time.monotonic())."""
    seen: list[Seen] = []
    lock = threading.Lock()
    stop = threading.Event()

    def loop() -> None:
        with api.client(key=key) as c:
            while not stop.is_set():
                started = time.monotonic()
                r = c.get("/api/projects")
                done = time.monotonic()
                with lock:
                    seen.append((started, done, r.status_code, r.content))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        while len(seen) < 2 * burst_size(api):  # every waitress thread has a warm cache
            time.sleep(0.01)
        yield seen
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def child_env(api: LiveApi) -> dict[str, str]:
    """Another process on the same database: none of the caller's CODEB_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEB_")}
    env["CODEB_DATA_DIR"] = str(api.deps.settings.data_dir)
    if api.deps.settings.database_url:
        env["CODEB_DATABASE_URL"] = api.deps.settings.database_url
    return env


def run_child(api: LiveApi, *argv: str) -> None:
    proc = subprocess.run(
        [sys.executable, *argv],
        env=child_env(api),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def create_key(api: LiveApi, name: str, **body: Any) -> str:
    with api.client() as c:
        r = c.post("/api/keys", json={"name": name, "role": "readonly", **body})
    assert r.status_code == 201, r.text
    return r.json()["api_key"]


# ---------------------------------------------------------------- the list stays fresh


def test_list_is_fresh_after_every_kind_of_write_on_every_thread(api):
    boss = api.new_key("boss", "admin")
    with api.client() as c, api.client(key=boss) as b, hammer(api) as seen:
        for i in range(4):
            r = c.post("/api/projects", json={"name": f"p{i}"})
            assert r.status_code == 201, r.text
            api.clock.advance(seconds=1)
            assert_all_fresh(api)

        assert c.put("/api/projects/p1", json={"git_repo": "git@example.org:p1.git"}).is_success
        assert_all_fresh(api)
        assert c.put("/api/projects/p1", json={"type": "remix"}).is_success
        assert_all_fresh(api)

        r = c.post("/api/projects/p2/environments", json={"name": "preview"})
        assert r.status_code == 201, r.text
        assert_all_fresh(api)
        listed = {p["name"]: p for p in burst(api)[0].json()["projects"]}
        assert list(listed["p2"]["environments"]) == ["staging", "production", "preview"]

        # A protected environment delete (HIGH: confirmation, cooldown, typed name).
        project_id = listed["p2"]["id"]
        add_backup(api, project_id, "preview")
        r = c.delete("/api/projects/p2/environments/preview")
        assert r.status_code == 202, r.text
        token = r.json()["confirm_token"]
        assert confirm(c, token).status_code == 202
        assert_all_fresh(api)  # nothing deleted yet
        api.clock.advance(hours=24)
        assert confirm(c, token, "p2/preview").status_code == 200
        assert_all_fresh(api)
        listed = {p["name"]: p for p in burst(api)[0].json()["projects"]}
        assert list(listed["p2"]["environments"]) == ["staging", "production"]

        # A protected project delete (CRITICAL: confirmation, approval, cooldown, typed name).
        add_backup(api, listed["p3"]["id"])
        r = c.delete("/api/projects/p3")
        assert r.status_code == 202, r.text
        token, entry_id = r.json()["confirm_token"], r.json()["entry"]["id"]
        assert confirm(c, token).status_code == 202
        assert b.post("/api/protection/approve", json={"id": entry_id}).status_code == 200
        api.clock.advance(hours=48)
        assert confirm(c, token, "p3").status_code == 200
        assert_all_fresh(api)
        answer = burst(api)[0].json()
        assert answer["total"] == 3 and "p3" not in {p["name"] for p in answer["projects"]}
    assert {status for _, _, status, _ in seen} == {200}


def test_no_answer_is_older_than_one_received_before_it_was_asked(api):
    """While projects are created, no waitress thread answers from a state older than an answer
    the clients had already received when they sent the request."""
    with api.client() as c, hammer(api) as seen:
        for i in range(12):
            assert c.post("/api/projects", json={"name": f"q{i}"}).status_code == 201
    answers = [(started, done, json.loads(body)["total"]) for started, done, _, body in seen]
    assert max(total for _, _, total in answers) == 12
    by_done = sorted((done, total) for _, done, total in answers)
    newest, index, checked = 0, 0, 0
    for started, _, total in sorted(answers):
        while index < len(by_done) and by_done[index][0] < started:
            newest = max(newest, by_done[index][1])
            index += 1
        assert total >= newest, (started, total, newest)
        checked += newest > 0
    assert checked


def test_own_thread_sees_its_own_writes_at_once(tmp_path):
    """One waitress thread: every write and the next read share one connection, whose
    data_version does not move on its own commits (total_changes does)."""
    with live_api(tmp_path / "data", threads=1) as one, one.client() as c:
        ro = create_key(one, "ro")
        assert c.get("/api/projects").json()["total"] == 0
        assert c.post("/api/projects", json={"name": "own"}).status_code == 201
        assert c.get("/api/projects").content == reference_bytes(one)
        assert c.put("/api/projects/own", json={"git_repo": "https://example.org/é.git"}).is_success
        assert c.get("/api/projects").content == reference_bytes(one)
        assert c.post("/api/projects/own/environments", json={"name": "preview"}).is_success
        body = c.get("/api/projects").json()
        assert list(body["projects"][0]["environments"]) == ["staging", "production", "preview"]
        with one.client(key=ro) as r:
            assert r.get("/api/projects").status_code == 200
            assert c.delete("/api/keys/ro").status_code == 200
            assert r.get("/api/projects").status_code == 401


def test_list_is_fresh_after_a_write_by_another_process(api):
    with api.client() as c:
        assert c.post("/api/projects", json={"name": "here"}).status_code == 201
    assert_all_fresh(api)
    run_child(api, "-c", WRITE_PROJECT, "elsewhere")
    assert_all_fresh(api)
    names = {p["name"] for p in burst(api)[0].json()["projects"]}
    assert names == {"here", "elsewhere"}


def test_list_is_fresh_after_a_write_by_another_connection_of_the_process(api):
    assert_all_fresh(api)
    with api.deps.db.connection_context():
        projects.create_project(api.deps, SYSTEM, {"name": "beside"})
    assert_all_fresh(api)
    with api.deps.db.connection_context(), api.deps.write():
        Project.update(status="archived").where(Project.name == "beside").execute()
    assert_all_fresh(api)
    assert_all_fresh(api, {"status": "archived"})
    assert burst(api, params={"status": "active"})[0].json()["total"] == 0


# ---------------------------------------------------------------- keys


def revoked_at_once(api: LiveApi, name: str, revoke: Callable[[], None]) -> None:
    """Warm every thread with the key, revoke it while it is hammered: every request started
    after the revocation returned is refused, on every thread."""
    key = create_key(api, name)
    assert statuses(burst(api, key)) == [200] * burst_size(api)
    with hammer(api, key) as seen:
        revoke()
        revoked = time.monotonic()
        assert statuses(burst(api, key)) == [401] * burst_size(api)
    before = [status for started, _, status, _ in seen if started < revoked]
    after = [status for started, _, status, _ in seen if started > revoked]
    assert 200 in before
    assert after and set(after) == {401}, sorted(set(after))


def test_key_revoked_through_the_api_fails_at_once_on_every_thread(api):
    def revoke() -> None:
        with api.client() as c:
            assert c.delete("/api/keys/ro").status_code == 200

    revoked_at_once(api, "ro", revoke)


def test_key_revoked_by_the_cli_in_another_process_fails_at_once(api):
    revoked_at_once(api, "ro", lambda: run_child(api, "-m", "codeb", "keys", "revoke", "ro"))


def test_key_revoked_by_another_connection_of_the_process_fails_at_once(api):
    def revoke() -> None:
        with api.deps.db.connection_context():
            keys.revoke_key(api.deps, SYSTEM, "ro")

    revoked_at_once(api, "ro", revoke)


def test_expired_key_expires_with_the_clock_alone(api):
    key = create_key(api, "short", expires_in_days=1)
    assert statuses(burst(api, key)) == [200] * burst_size(api)
    api.clock.advance(hours=23, minutes=59, seconds=59)
    assert statuses(burst(api, key)) == [200] * burst_size(api)
    api.clock.advance(seconds=1)
    assert statuses(burst(api, key)) == [401] * burst_size(api)
    assert statuses(burst(api)) == [200] * burst_size(api)  # the admin key does not expire


def test_unknown_key_stays_unknown_until_it_exists(api):
    """A miss is cached too, but only until the next commit."""
    plaintext = keys.KEY_PREFIX + "x" * 43
    assert statuses(burst(api, plaintext)) == [401] * burst_size(api)
    with api.deps.db.connection_context():
        ApiKey.create(
            name="late",
            role="readonly",
            key_hash=keys.hash_key(plaintext),
            prefix=plaintext[:10],
            created_at=api.clock.now(),
        )
    assert statuses(burst(api, plaintext)) == [200] * burst_size(api)


# ---------------------------------------------------------------- same answers as before


def make_varied_projects(api: LiveApi) -> None:
    with api.client() as c:
        for i, name in enumerate(["zeta", "alpha", "mid", "same-a", "same-b", "old", "gone"]):
            body: dict[str, Any] = {"name": name, "preview": i % 2 == 0}
            if i % 3 == 0:
                body["git_repo"] = f"https://example.org/{name}-ü.git"
            if name == "mid":
                body["type"] = "static"
            assert c.post("/api/projects", json=body).status_code == 201
            if name != "same-a":  # same-a and same-b share created_at: ordered by name
                api.clock.advance(seconds=1, microseconds=250_000 * (i % 2))
        assert c.put("/api/projects/alpha", json={"type": "remix"}).is_success
    with api.deps.db.connection_context(), api.deps.write():
        Project.update(status="archived").where(Project.name == "old").execute()
        Project.update(status="deleted").where(Project.name == "gone").execute()
        zeta = Project.get(Project.name == "zeta")
        Environment.update(status="deleted").where(
            (Environment.project == zeta.id) & (Environment.name == "staging")
        ).execute()


QUERIES: list[dict[str, Any]] = [
    {},
    {"limit": 1},
    {"limit": 2, "offset": 1},
    {"limit": 3, "offset": 4},
    {"offset": 6},
    {"offset": 100},
    {"limit": 500},
    {"status": "active"},
    {"status": "archived"},
    {"status": "active", "limit": 2, "offset": 2},
]


def test_answers_are_those_of_the_uncached_code(api):
    make_varied_projects(api)
    with api.client() as c:
        for params in QUERIES:
            expected = reference_bytes(api, **params)
            for _ in range(3):  # computed, then cached
                r = c.get("/api/projects", params=params)
                assert r.status_code == 200
                assert r.headers["content-type"] == "application/json"
                assert r.content == expected, params
    with api.deps.db.connection_context():
        for params in QUERIES:
            kept = {"limit": 100, "offset": 0, "status": None} | params
            new = projects.list_projects(kept["limit"], kept["offset"], kept["status"])
            old = reference_list(**params)
            assert json.dumps(new) == json.dumps(old)  # the same keys in the same order
            assert projects.list_projects_json(api.deps, **params) == reference_bytes(api, **params)


# ---------------------------------------------------------------- the token and the cache


def test_change_token_follows_every_connection(api):
    db = api.deps.db
    with db.connection_context():
        if not is_sqlite(db):
            assert change_token(db) is None
            return
        first = change_token(db)
        assert first is not None and change_token(db) == first
        projects.create_project(api.deps, SYSTEM, {"name": "mine"})  # own commit
        second = change_token(db)
        assert second is not None and second[1] > first[1]

        def other() -> None:  # another thread: another connection
            with db.connection_context():
                projects.create_project(api.deps, SYSTEM, {"name": "theirs"})

        with ThreadPoolExecutor(1) as pool:
            pool.submit(other).result()
        third = change_token(db)
        assert third is not None and third[0] != second[0] and third[1] == second[1]
        with api.deps.write():
            assert change_token(db) is None  # never cached inside a transaction


def test_cache_within_a_request_and_across_threads(api):
    db, calls = api.deps.db, []
    cache: ThreadCache = ThreadCache(max_entries=2)

    def compute() -> int:
        calls.append(1)
        return Project.select().count()

    with db.connection_context():
        begin_request(db)
        try:
            assert cache.get(db, "n", compute) == 0
            assert cache.get(db, "n", compute) == 0
            projects.create_project(api.deps, SYSTEM, {"name": "inside"})
            assert cache.get(db, "n", compute) == 1  # own write, same request
        finally:
            end_request()
        assert cache.get(db, "n", compute) == 1

        def other() -> None:
            with db.connection_context():
                projects.create_project(api.deps, SYSTEM, {"name": "outside"})

        with ThreadPoolExecutor(1) as pool:
            pool.submit(other).result()
        assert cache.get(db, "n", compute) == 2  # another connection's commit
        # Eviction: never more than max_entries per thread.
        for key in range(5):
            assert cache.get(db, key, lambda: 0) == 0
        if is_sqlite(db):
            assert len(cache._local.values) <= 2
    # On SQLite: the first computation, after the own write, after the request (the WAL-index
    # header that stands in for data_version moves on this connection's commits too) and
    # after the other connection's commit. Elsewhere nothing is cached.
    expected = 4 if is_sqlite(db) else 5
    assert len(calls) == expected


def test_rolled_back_writes_are_never_cached(api):
    class Undo(Exception):
        pass

    deps = api.deps
    with deps.db.connection_context():
        assert json.loads(projects.list_projects_json(deps))["total"] == 0
        with pytest.raises(Undo), deps.write():
            projects.create_project(deps, SYSTEM, {"name": "undone"})
            assert json.loads(projects.list_projects_json(deps))["total"] == 1
            raise Undo
        assert json.loads(projects.list_projects_json(deps))["total"] == 0
