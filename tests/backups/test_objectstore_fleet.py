"""The storage server's S3 store on the real fleet (issue 10), on the backups stack (a
storage server bootstrapped, shop/staging deployed with a Redis): the first Redis copy sets
the store up (roles/codeb_s3: SeaweedFS behind its S3 gateway, key pairs 0600) and puts
the RDB into the environment's bucket; each key reaches only its own bucket; no secret in
events, the log or argv on the storage server; codeb's own registry (a Litestream replica)
replicates into the store with the key pair codeb wrote for it and restores from there.

Then the store is killed during a copy (its gateway killed again and again while the copy
runs, so the upload meets it dead whenever it comes): the copy is `failed` with the store's
reason, nothing reports success and no object of it exists; the next scheduled run (the
hourly `redis_copies` job, called as its tick) completes once the store is back."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from codeb.features.backups import objectstore, redis
from codeb.features.recovery import replica
from codeb.providers.objectstore import Credentials, ObjectStoreDenied, S3Store
from codeb.store.models import ObjectStoreKey, OperationEvent, OperationLog, RedisCopy, Server
from tests.backups.test_backups_fleet import stack, start  # noqa: F401
from tests.backups.test_drills_fleet import redis_cli
from tests.executor.helpers import wait_operation

pytestmark = pytest.mark.fleet
FIGURES: dict[str, float] = {}


def _gateway_answers(storage, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if storage.ssh(f"curl -s -o /dev/null -w '%{{http_code}}' http://{storage.ip}:8333/"
                       ).stdout.strip() == "403":  # fmt: skip
            return
        time.sleep(1)
    raise AssertionError("the S3 gateway did not come back")


def test_s3_store_redis_copies_registry_and_a_killed_store(stack, fleet, tmp_path):  # noqa: F811
    api, deps, _created, storage, _deployed = stack
    cache = fleet["cache"]
    with api.client() as c, deps.db.connection_context():
        rows = c.get("/api/containers", params={"project": "shop", "environment": "staging"})
        (redis_row,) = [x for x in rows.json()["containers"] if x["server_type"] == "redis"]
        name = redis_row["container_name"]
        conf = f"/etc/codeb/redis/{name}.conf"
        # ~20 MB of little-compressible values: the upload takes a moment.
        redis_cli(cache, name, conf,
                  "EVAL \"for i=1,ARGV[1] do local t={} for j=1,100 do t[j]=string.format("
                  "'%08x', math.random(0, 2147483647)) end redis.call('SET', 'bulk:'..i, "
                  "table.concat(t)) end return 1\" 0 25000\n")  # fmt: skip

        # 1. The first copy sets the store up and puts the RDB into the environment's bucket.
        t0 = time.monotonic()
        r = c.post("/api/backups/redis", json={"project": "shop", "environment": "staging"})
        op = wait_operation(c, start(r), timeout=900)
        FIGURES["first_copy_with_store_setup_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        copy = RedisCopy.get_by_id(op["result"]["copy"]["id"])
        assert copy.status == "completed" and copy.keys >= 25000
        server = Server.get(Server.name == copy.storage_server)
        bucket = objectstore.environment_bucket(copy.project_id, copy.environment)
        assert copy.path == f"s3://{bucket}/redis/{name}/{copy.id}/dump.rdb"
        env_store = objectstore.environment_store(deps, server, copy.project_id, copy.environment)
        (obj,) = env_store.list(bucket, f"redis/{name}/")
        assert obj.size == copy.size_bytes and obj.size > 10_000_000, (obj, copy.size_bytes)
        got = tmp_path / "got.rdb"
        env_store.get_file(bucket, obj.key, got)
        assert got.read_bytes()[:5] == b"REDIS"

        # The store on the host: loopback cluster, the gateway on the server's address,
        # key pairs 0600 of the store's user, both units enabled.
        modes = storage.ssh("stat -c '%a %U' /etc/codeb/s3/identities.json /var/lib/codeb/s3",
                            check=True).stdout.split()  # fmt: skip
        assert modes == ["600", "codeb-s3", "700", "codeb-s3"], modes
        listening = storage.ssh("ss -ltn", check=True).stdout
        for port in (9333, 8080, 8888):
            assert f"127.0.0.1:{port} " in listening and f"0.0.0.0:{port} " not in listening
            assert f"{storage.ip}:{port} " not in listening
        assert f"{storage.ip}:8333 " in listening
        assert storage.ssh("systemctl is-enabled codeb-s3 codeb-s3-cluster",
                           check=True).stdout.split() == ["enabled", "enabled"]  # fmt: skip

        # Each key reaches only its own bucket; a wrong secret nothing.
        keys = {k.scope: k for k in ObjectStoreKey.select().where(
            ObjectStoreKey.server == server.name)}  # fmt: skip
        assert set(keys) == {"admin", "registry", "environment"}
        registry_store = objectstore.client(deps, server, keys["registry"])
        with pytest.raises(ObjectStoreDenied):
            registry_store.list(bucket)
        with pytest.raises(ObjectStoreDenied):
            env_store.list(objectstore.REGISTRY_BUCKET)
        wrong = S3Store(objectstore.endpoint(server),
                        Credentials(keys["environment"].access_key_id, "x" * 40))  # fmt: skip
        with pytest.raises(ObjectStoreDenied):
            wrong.list(bucket)
        secrets_ = [deps.box.decrypt(k.secret) for k in keys.values()]
        for k in keys.values():  # stored encrypted
            assert deps.box.decrypt(k.secret) not in k.secret
        events = json.dumps([e.data for e in OperationEvent.select()], default=str)
        log = json.dumps([row.details for row in OperationLog.select()], default=str)
        argv = storage.ssh("ps -eo args", check=True).stdout
        for s in secrets_:
            assert s not in events and s not in log and s not in argv

        # 2. codeb's registry: the key pair written for its replica (0600) replicates a
        # SQLite database into s3://codeb/replica and restores from there.
        creds_file = deps.settings.resolved_replica_credentials_file
        assert creds_file.stat().st_mode & 0o777 == 0o600
        key_id, secret = replica.read_credentials(creds_file)
        assert key_id == keys["registry"].access_key_id
        db_path = tmp_path / "registry.db"
        with sqlite3.connect(db_path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE t (v TEXT)")
            db.executemany("INSERT INTO t VALUES (?)", [(f"row{i}",) for i in range(100)])
        target = replica.ReplicaTarget("s3://codeb/replica/fleet.db",
                                       objectstore.endpoint(server), key_id, secret)  # fmt: skip
        config = tmp_path / "litestream" / "litestream.yml"
        replica.write_config(config, db_path, target)
        replicator = replica.Replicator(config)
        replicator.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not registry_store.list("codeb", "replica/"):
                time.sleep(1)
            assert registry_store.list("codeb", "replica/fleet.db"), "nothing replicated"
            time.sleep(3)
        finally:
            replicator.shutdown()
        out = tmp_path / "restored.db"
        replica.restore(config, db_path, out)
        with sqlite3.connect(out) as db:
            assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 100

        # 3. The store killed during a copy: failed with the reason, nothing succeeds.
        killer = storage.ssh(
            "rm -f /run/codeb-test-stop-killer; nohup sh -c 'end=$(($(date +%s)+600)); "
            "while [ $(date +%s) -lt $end ] && [ ! -e /run/codeb-test-stop-killer ]; do "
            "systemctl kill -s KILL codeb-s3.service 2>/dev/null; sleep 0.3; done' "
            ">/dev/null 2>&1 & echo $!",
            check=True,
        ).stdout.strip()
        try:
            r = c.post("/api/backups/redis", json={"project": "shop", "environment": "staging"})
            op = wait_operation(c, start(r), timeout=900)
        finally:
            storage.ssh(f"touch /run/codeb-test-stop-killer; sleep 1; kill {killer} 2>/dev/null; "
                        "true")  # fmt: skip
        assert op["status"] == "failed", op
        failed = RedisCopy.get_by_id(op["result"]["copy"]["id"]) if op.get("result") else (
            RedisCopy.select().order_by(RedisCopy.created_at.desc()).first())  # fmt: skip
        assert failed.status == "failed", failed.status
        assert failed.error.startswith("S3 store http://"), failed.error
        listed = c.get("/api/backups/redis", params={"project": "shop"}).json()["copies"]
        assert [x["status"] for x in listed if x["id"] == failed.id] == ["failed"]
        _gateway_answers(storage)
        assert env_store.list(bucket, f"redis/{name}/{failed.id}/") == []

        # The next scheduled run recovers: the store is back (systemd restarted it).
        RedisCopy.update(created_at=copy.created_at.replace(year=2000)).where(
            RedisCopy.id == copy.id
        ).execute()  # older than the period: due again
        job = redis.scheduled_copies(deps)
        assert len(job["started"]) == 1, job
        t0 = time.monotonic()
        done = wait_operation(c, job["started"][0], timeout=900)
        FIGURES["copy_after_the_store_came_back_s"] = time.monotonic() - t0
        assert done["status"] == "succeeded", done.get("error")
        again = RedisCopy.get_by_id(done["result"]["copy"]["id"])
        assert again.status == "completed" and again.kind == "scheduled"
        (obj,) = env_store.list(bucket, f"redis/{name}/{again.id}/")
        assert obj.size == again.size_bytes
    print("s3 figures:", json.dumps(FIGURES, sort_keys=True))
