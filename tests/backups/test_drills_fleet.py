"""Restore drills and alarms on the real fleet (issue 11), on the backups stack (a storage
server bootstrapped with Barman, shop/staging deployed): a drill of a good backup passes
(scratch container on the storage server, barman verify-backup, the canary recorded with the
backup, tables and rows) and sets verified_at; the scratch container and data are gone
afterwards and nothing ran on the db host; the WAL receiver stopped is an alarm at the next
check naming why, started again it is ok with no gap in the WAL (rows written while it was
stopped restore); a backup damaged in the repository fails its drill with the reason,
leaves verified_at unset and puts status in alarm. Redis: keys written, copied (a completed
BGSAVE), drilled, the container and its volume removed through the queue (the volume delete
is HIGH: two confirmations and 24 h, the clock moved), restored into a new container: the
same keys and values, still there after a restart (the AOF was turned on after loading).
Project delete (CRITICAL, clock moved 48 h): refused at the end while no backup of its db is
verified, executed once a drill verified one and another admin approved; its backups are
listed with ?deleted=true and one of them restores.

Through the HTTP API, except the scheduled jobs (backup_wal_check), called as their tick."""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path

import pytest

from codeb.features.backups import status as backup_status
from codeb.store.models import Backup, Project
from tests.backups.test_backups_fleet import env_var, psql, stack, start  # noqa: F401
from tests.executor.helpers import wait_operation

pytestmark = pytest.mark.fleet
FIGURES: dict[str, float] = {}


def _db_component(c) -> dict:
    body = c.get("/api/backups/status", params={"project": "shop"}).json()
    (env,) = [e for e in body["environments"] if e["environment"] == "staging"]
    (comp,) = [x for x in env["components"] if x["component"] == "db"]
    return {"overall": body["status"], **comp}


def test_drills_and_alarms(stack, fleet):  # noqa: F811
    api, deps, created, storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    with api.client() as c, deps.db.connection_context():
        psql(url, "CREATE TABLE IF NOT EXISTS drill_rows (id int PRIMARY KEY, note text)")
        psql(url, "INSERT INTO drill_rows SELECT g, 'x' FROM generate_series(1, 300) g "
             "ON CONFLICT DO NOTHING")  # fmt: skip
        r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
        op = wait_operation(c, start(r), timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        good = Backup.get_by_id(op["result"]["backup"]["id"])
        assert good.status == "completed" and good.verified_at is None

        # 1. A drill of a good backup passes and verifies it.
        t0 = time.monotonic()
        r = c.post(f"/api/backups/{good.id}/verify")
        drill_op = wait_operation(c, start(r), timeout=900)
        FIGURES["drill_api_s"] = time.monotonic() - t0
        assert drill_op["status"] == "succeeded", drill_op.get("error")
        drill = drill_op["result"]["drill"]
        assert drill["status"] == "passed" and drill["reason"] is None, drill
        FIGURES["drill_module_s"] = drill["duration_s"]
        assert drill["server"] == "storage"
        assert drill["checks"]["verify_backup"]["ok"] and drill["checks"]["connects"]["ok"]
        assert drill["tables"] >= 2 and drill["rows"] >= 300, drill
        canary = getattr(Backup.get_by_id(good.id), "canary", None)
        if canary:  # the backups service records a canary token with each backup
            assert drill["canary"] == {"expected": canary, "found": canary}, drill
        assert Backup.get_by_id(good.id).verified_at is not None
        assert c.get(f"/api/backups/{good.id}").json()["verified_at"]
        # The scratch container and its data are gone; nothing of the drill on the db host.
        left = storage.ssh(
            "podman ps -a --filter label=codeb.component=db-drill -q; ls /var/lib/barman/drills"
        ).stdout.strip()
        assert left == "", left
        assert "drill" not in fleet["db"].ssh("podman ps -a --format '{{.Names}}'").stdout

        # 2. Status: ok once the receivers were read.
        backup_status.check_wal(deps)
        comp = _db_component(c)
        assert comp["wal"]["status"] == "ok", json.dumps(comp)
        assert comp["backup"]["status"] == "ok", json.dumps(comp)
        assert comp["drill"]["status"] == "ok", json.dumps(comp)

        # 3. The WAL receiver stopped: alarm at the next check (one minute), saying why.
        # Barman's cron (every minute) starts a receiver of its own when none runs, so the
        # receiver is stopped for good with the maintenance timer held too.
        storage.ssh(
            "systemctl stop codeb-barman-cron.timer codeb-barman-cron.service "
            "codeb-barman-receive-wal@shop-staging-db; for i in $(seq 60); do "
            "runuser -u barman -- barman receive-wal --stop shop-staging-db >/dev/null 2>&1; "
            "pgrep -u barman pg_receivewal >/dev/null || break; sleep 1; done; "
            "! pgrep -u barman pg_receivewal",
            check=True,
        )
        psql(url, "INSERT INTO drill_rows SELECT g, 'while stopped' FROM "
             "generate_series(1001, 1100) g")  # fmt: skip
        psql(url, "SELECT pg_switch_wal()")
        backup_status.check_wal(deps)
        comp = _db_component(c)
        assert comp["status"] == "alarm" and comp["overall"] == "alarm", json.dumps(comp)
        assert comp["wal"]["status"] == "alarm"
        reason = comp["wal"]["reason"]
        assert "pg_receivewal is not running" in reason, comp
        assert "codeb-barman-receive-wal is inactive" in reason or "is failed" in reason, comp
        # Started again: it catches up from its slot, no gap.
        storage.ssh(
            "systemctl start codeb-barman-receive-wal@shop-staging-db codeb-barman-cron.timer",
            check=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            backup_status.check_wal(deps)
            comp = _db_component(c)
            if comp["wal"]["status"] == "ok":
                break
            time.sleep(5)
        assert comp["wal"]["status"] == "ok", comp
        gaps = storage.ssh(
            "ls /var/lib/barman/shop-staging-db/wals/*/ | grep -E '^[0-9A-F]{24}$' | sort"
        ).stdout.split()
        numbers = [int(g[8:16], 16) * 256 + int(g[16:], 16) for g in gaps]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), gaps

        # 4. A damaged backup: its drill fails with the reason, verified_at stays unset.
        r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
        op = wait_operation(c, start(r), timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        bad = Backup.get_by_id(op["result"]["backup"]["id"])
        damaged = storage.ssh(
            f"f=$(find /var/lib/barman/shop-staging-db/base/{bad.barman_id}/data/base "
            "-type f -size +8k | sort | head -1) && "
            "printf 'codeb-damage-codeb-damage' | dd of=\"$f\" bs=1 seek=4096 conv=notrunc "
            'status=none && echo "$f"',
            check=True,
        ).stdout.strip()
        assert damaged
        r = c.post(f"/api/backups/{bad.id}/verify")
        drill_op = wait_operation(c, start(r), timeout=900)
        assert drill_op["status"] == "failed", drill_op
        (failed,) = c.get(f"/api/backups/{bad.id}/drills").json()["drills"]
        assert failed["status"] == "failed" and failed["reason"].startswith("verify_backup"), failed
        assert damaged.rsplit("/", 1)[1] in failed["reason"] or "checksum" in failed["reason"]
        assert Backup.get_by_id(bad.id).verified_at is None
        comp = _db_component(c)
        assert comp["status"] == "alarm" and comp["drill"]["status"] == "alarm", comp
        assert "restore drill failed" in comp["drill"]["reason"]
        left = storage.ssh(
            "podman ps -a --filter label=codeb.component=db-drill -q; ls /var/lib/barman/drills"
        ).stdout.strip()
        assert left == "", left


class _Shift:
    """The stack's clock, moved forward by hand (cooldowns without sleeping)."""

    def __init__(self, deps) -> None:
        self.real = type(deps.clock).now.__get__(deps.clock)
        self.offset = dt.timedelta()
        deps.clock.now = lambda: self.real() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += dt.timedelta(**delta)


def _clock(deps) -> _Shift:
    shift = getattr(deps, "_drills_shift", None)
    if shift is None:
        shift = _Shift(deps)
        object.__setattr__(deps, "_drills_shift", shift)
    return shift


def redis_cli(host, container: str, conf: str, commands: str) -> str:
    """Commands on redis-cli's stdin, AUTH read from the config on the host (never argv)."""
    out = host.ssh(
        f"{{ sed -n 's/^requirepass /AUTH /p' {conf}; cat; }} | "
        f"podman exec -i {container} redis-cli --no-auth-warning",
        input=commands,
        check=True,
    ).stdout
    return out.split("\n", 1)[1] if out.startswith("OK") else out


def confirm(c, token: str, typed_name: str | None = None):
    body = {"token": token} if typed_name is None else {"token": token, "typed_name": typed_name}
    return c.post("/api/protection/confirm", json=body)


def medium(c, r) -> dict:
    """A MEDIUM request confirmed with its token; the operation it started, finished."""
    assert r.status_code == 202 and r.json()["status"] == "confirmation_required", r.text
    done = confirm(c, r.json()["confirm_token"])
    assert done.status_code == 202, done.text
    op = wait_operation(c, done.json()["result"]["operation"]["id"], timeout=600)
    assert op["status"] == "succeeded", op.get("error")
    return op


def test_redis_copy_remove_and_restore(stack, fleet):  # noqa: F811
    api, deps, _created, storage, _deployed = stack
    shift = _clock(deps)
    cache = fleet["cache"]
    with api.client() as c, deps.db.connection_context():
        rows = c.get("/api/containers", params={"project": "shop", "environment": "staging"})
        (redis_row,) = [x for x in rows.json()["containers"] if x["server_type"] == "redis"]
        name, volume = redis_row["container_name"], redis_row["volume"]
        conf = f"/etc/codeb/redis/{name}.conf"
        sets = "".join(f"SET order:{i} v{i * 7}\n" for i in range(1, 501))
        redis_cli(cache, name, conf, sets + "HSET cart:1 a 1 b 2\nRPUSH queue x y z\n")
        dump = "KEYS *\n"
        before = sorted(redis_cli(cache, name, conf, dump).split())
        assert len(before) == 502, len(before)

        # 1. A copy (LOW): canary, a completed BGSAVE, the RDB on the storage server.
        t0 = time.monotonic()
        r = c.post("/api/backups/redis", json={"project": "shop", "environment": "staging"})
        op = wait_operation(c, start(r), timeout=900)
        FIGURES["redis_copy_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        copy = op["result"]["copy"]
        assert copy["status"] == "completed" and copy["keys"] == 503, copy  # + the canary
        # The cache runs with appendonly yes: the copy is its whole multi-part appendonlydir/
        # (manifest, base, incr), as one tar, not an RDB.
        assert copy["format"] == "aof", copy
        stored = f"/var/lib/codeb/redis-copies/{name}/{copy['id']}/appendonlydir.tar"
        mode = storage.ssh(f"stat -c '%a %U' {stored}", check=True).stdout.split()
        assert mode == ["600", "root"]
        parts = storage.ssh(f"tar -tf {stored}", check=True).stdout.split()
        assert "appendonly.aof.manifest" in parts, parts
        assert any(p.endswith(".base.rdb") for p in parts), parts
        assert any(p.endswith(".incr.aof") for p in parts), parts
        listed = c.get("/api/backups/redis", params={"project": "shop"}).json()
        assert listed["copies"][0]["id"] == copy["id"]

        # 2. Its drill: a scratch Redis on the storage server, DBSIZE and the canary compared.
        r = c.post(f"/api/backups/redis/{copy['id']}/verify")
        op = wait_operation(c, start(r), timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        drill = op["result"]["drill"]
        assert drill["status"] == "passed" and drill["canary"]["found"] == copy["canary"], drill
        assert storage.ssh("podman ps -a --filter label=codeb.component=redis-load -q").stdout == ""

        # 3. In place (HIGH: queued, two confirmations typing the name, no cooldown): keys
        # written after the copy are gone, the copy's are back.
        redis_cli(cache, name, conf, "".join(f"SET later:{i} x\n" for i in range(50)))
        redis_cli(cache, name, conf, "DEL order:1\n")
        r = c.post(f"/api/backups/redis/{copy['id']}/restore", json={"into": "in_place"})
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        token = r.json()["confirm_token"]
        assert confirm(c, token).status_code == 202
        done = confirm(c, token, name)
        assert done.status_code == 202 and done.json()["status"] == "executed", done.text
        t0 = time.monotonic()
        op = wait_operation(c, done.json()["result"]["operation"]["id"], timeout=900)
        FIGURES["redis_in_place_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        assert op["result"]["restore"]["canary_matches"], op["result"]
        now_keys = sorted(k for k in redis_cli(cache, name, conf, dump).split()
                          if k != "codeb:canary")  # fmt: skip
        assert now_keys == before
        assert (
            cache.ssh(
                f"test -d \"$(podman volume inspect --format '{{{{.Mountpoint}}}}' {volume})"
                '/appendonlydir"'
            ).returncode
            == 0
        )  # the live config's AOF is back on, with the data in it

        # 4. The container and its volume removed through the Protection Layer.
        medium(c, c.post(f"/api/containers/{redis_row['id']}/stop"))
        medium(c, c.delete(f"/api/containers/{redis_row['id']}"))
        r = c.delete(f"/api/containers/{redis_row['id']}/volume")
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        token = r.json()["confirm_token"]
        assert confirm(c, token).status_code == 202
        waiting = confirm(c, token, name)
        assert waiting.status_code == 202, waiting.text
        assert waiting.json()["status"] == "confirmation_recorded", waiting.text
        shift.advance(hours=24, minutes=1)
        done = confirm(c, token, name)
        assert done.status_code == 202 and done.json()["status"] == "executed", done.text
        op = wait_operation(c, done.json()["result"]["operation"]["id"], timeout=600)
        assert op["status"] == "succeeded", op.get("error")
        assert cache.ssh(f"podman volume exists {volume}").returncode != 0

        # 5. Restored into a new container (LOW): the same keys and values.
        t0 = time.monotonic()
        r = c.post(f"/api/backups/redis/{copy['id']}/restore", json={"into": "new"})
        op = wait_operation(c, start(r), timeout=900)
        FIGURES["redis_restore_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        restored = op["result"]["restore"]
        assert restored["keys"] == 503 and restored["canary_matches"], restored
        new, new_conf = (
            restored["container"],
            f"/etc/codeb/redis-restores/{restored['container']}.conf",
        )
        after = sorted(k for k in redis_cli(storage, new, new_conf, dump).split()
                       if k != "codeb:canary")  # fmt: skip
        assert after == before
        values = "".join(f"GET order:{i}\n" for i in (1, 250, 500))
        assert redis_cli(storage, new, new_conf, values).split() == ["v7", "v1750", "v3500"]
        assert redis_cli(storage, new, new_conf, "LRANGE queue 0 -1\n").split() == ["x", "y", "z"]
        # The AOF is on: a restart keeps every key (an RDB-only start with AOF on is empty).
        storage.ssh(f"systemctl restart {new}.service", check=True)
        deadline = time.monotonic() + 60
        size = ""
        while time.monotonic() < deadline:
            size = storage.ssh(
                f"{{ sed -n 's/^requirepass /AUTH /p' {new_conf}; echo DBSIZE; }} | "
                f"podman exec -i {new} redis-cli --no-auth-warning"
            ).stdout.split()
            if size[-1:] == ["503"]:
                break
            time.sleep(1)
        assert size[-1:] == ["503"], size
        # The password lives only in the config (0644 in a 0700 directory: the server reads it
        # after dropping root), never in the unit or an argv.
        modes = storage.ssh(f"stat -c '%a' {new_conf} /etc/codeb/redis-restores", check=True)
        assert modes.stdout.split() == ["644", "700"]
        unit = storage.ssh(f"cat /etc/containers/systemd/{new}.container", check=True).stdout
        secret = redis_cli(storage, new, new_conf, "CONFIG GET requirepass\n").split()[-1]
        assert secret and secret not in unit
        assert secret not in storage.ssh("ps -eo args", check=True).stdout


@pytest.mark.skipif(not os.environ.get("CODEB_DRILL_BENCH"), reason="bench/drill.py runs it")
def test_bench_drill_of_a_100_mb_database(stack, fleet):  # noqa: F811
    """bench/drill.py: a restore drill's duration (through the API, and the storage
    server's own part) for a 100 MB database."""
    api, deps, created, _storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    psql(url, "DROP TABLE IF EXISTS bench_bulk")
    psql(url, "CREATE TABLE bench_bulk AS SELECT g AS id, repeat(md5(g::text), 28) AS pad "
         "FROM generate_series(1, 110000) g")  # fmt: skip
    size = int(psql(url, "SELECT pg_database_size(current_database())"))
    assert size >= 100 * 1024 * 1024, size
    figures: dict[str, float] = {"database_bytes": size}
    rounds = int(os.environ.get("CODEB_DRILL_BENCH_ROUNDS", "2"))
    with api.client() as c, deps.db.connection_context():
        r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
        op = wait_operation(c, start(r), timeout=1800)
        assert op["status"] == "succeeded", op.get("error")
        backup_id = op["result"]["backup"]["id"]
        api_s, module_s = [], []
        for _ in range(rounds):
            t0 = time.monotonic()
            r = c.post(f"/api/backups/{backup_id}/verify")
            op = wait_operation(c, start(r), timeout=1800)
            api_s.append(time.monotonic() - t0)
            assert op["status"] == "succeeded", op.get("error")
            drill = op["result"]["drill"]
            assert drill["status"] == "passed" and drill["rows"] >= 110000, drill
            module_s.append(drill["duration_s"])
        figures["drill_api_s"] = statistics.median(api_s)
        figures["drill_on_storage_s"] = statistics.median(module_s)
        figures["rounds"] = rounds
    out = os.environ.get("CODEB_DRILL_FIGURES")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2, sort_keys=True))
    print("drill bench:", json.dumps(figures, sort_keys=True))


def test_project_delete_keeps_its_backups(stack, fleet):  # noqa: F811
    api, deps, created, storage, _deployed = stack
    shift = _clock(deps)
    second = api.new_key("ops-two", "admin")  # another principal, before the request
    with api.client() as c, api.client(second) as c2, deps.db.connection_context():
        project = Project.get(Project.name == "shop")
        url = env_var(created["env_files"]["staging"], "DATABASE_URL")
        # The rows the restores below look for, whichever tests ran before (the bench's
        # backup alone holds none; a restore without a target time replays every WAL).
        psql(url, "CREATE TABLE IF NOT EXISTS drill_rows (id int PRIMARY KEY, note text)")
        psql(url, "INSERT INTO drill_rows SELECT g, 'x' FROM generate_series(1, 300) g "
             "ON CONFLICT DO NOTHING")  # fmt: skip
        if (
            not Backup.select()
            .where((Backup.project == project.id) & (Backup.status == "completed"))
            .exists()
        ):  # run alone: a backup of them
            r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
            assert wait_operation(c, start(r), timeout=900)["status"] == "succeeded"
        good = (
            Backup.select()
            .where((Backup.project == project.id) & (Backup.status == "completed"))
            .order_by(Backup.end_time)
            .first()
        )
        # As before any drill: no verified backup of shop's db.
        Backup.update(verified_at=None).where(Backup.project == project.id).execute()
        r = c.delete("/api/projects/shop")
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        body = r.json()
        token, entry_id = body["confirm_token"], body["entry"]["id"]
        assert confirm(c, token).status_code == 202
        assert confirm(c, token, "shop").status_code == 202
        approved = c2.post("/api/protection/approve", json={"id": entry_id})
        assert approved.status_code in (200, 202), approved.text
        shift.advance(hours=48, minutes=1)
        refused = confirm(c, token, "shop")
        # Refused by the Protection Layer (403 protection_refused, as every unmet requirement).
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "protection_refused", refused.text
        assert "backup_verified" in refused.text, refused.text
        # A drill verifies a backup of the db: now it runs.
        r = c.post(f"/api/backups/{good.id}/verify")
        op = wait_operation(c, start(r), timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        done = confirm(c, token, "shop")
        assert done.status_code in (200, 202) and done.json()["status"] == "executed", done.text
        assert Project.get_by_id(project.id).status == "deleted"
        # Its backups are kept and listed; one restores.
        kept = c.get("/api/backups", params={"deleted": "true"}).json()
        ids = {b["id"] for b in kept["backups"]}
        assert good.id in ids, kept
        (row,) = [b for b in kept["backups"] if b["id"] == good.id]
        assert row["project"] == "shop" and row["retained_until"], row
        r = c.post(f"/api/backups/{good.id}/restore", json={"into": "new"})
        op = wait_operation(c, start(r), timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        restored = op["result"]["restore"]
        user = url.split("//", 1)[1].split(":", 1)[0]
        pw = url.split("//", 1)[1].split(":", 1)[1].split("@", 1)[0]
        dbname = url.rsplit("/", 1)[1]
        restored_url = f"postgresql://{user}:{pw}@{storage.ip}:{restored['port']}/{dbname}"
        assert int(psql(restored_url, "SELECT count(*) FROM drill_rows")) >= 300
        # And as a new project (LOW): shop registered again, the restored data its staging
        # db, reached with its own .env file; the rows equal the source's.
        digest = ("SELECT count(*) || ':' || md5(string_agg(id || '=' || note, ',' "
                  "ORDER BY id)) FROM drill_rows")  # fmt: skip
        source = psql(url, digest)
        r = c.post(f"/api/backups/{good.id}/restore", json={"into": "project"})
        answer = r.json()
        op = wait_operation(c, start(r), timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        assert op["result"]["restore"]["container_id"], op["result"]
        new_url = env_var(answer["result"]["env_files"]["staging"], "DATABASE_URL")
        assert f"@{storage.ip}:" in new_url, new_url
        assert psql(new_url, digest) == source
        reborn = c.get("/api/projects/shop").json()
        assert reborn["status"] == "active" and reborn["id"] != project.id, reborn
        rows = c.get("/api/containers", params={"project": "shop", "environment": "staging"})
        (db_row,) = rows.json()["containers"]
        assert db_row["server_type"] == "db" and db_row["container_name"] == "shop-staging-db"
        assert db_row["status"] == "running" and db_row["server_ip"] == storage.ip, db_row
    print("drill figures:", json.dumps(FIGURES, sort_keys=True))
