"""Restore drills and alarms on the real fleet (issue 11), on the backups stack (a storage
server bootstrapped with Barman, shop/staging deployed): a drill of a good backup passes
(scratch container on the storage server, barman verify-backup, the canary recorded with the
backup, tables and rows) and sets verified_at; the scratch container and data are gone
afterwards and nothing ran on the db host; the WAL receiver stopped is an alarm at the next
check naming why, started again it is ok with no gap in the WAL (rows written while it was
stopped restore); a backup damaged in the repository fails its drill with the reason,
leaves verified_at unset and puts status in alarm.

Through the HTTP API, except the scheduled jobs (backup_wal_check), called as their tick."""

from __future__ import annotations

import json
import time

import pytest

from codeb.features.backups import status as backup_status
from codeb.store.models import Backup
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
        assert comp["wal"]["status"] == "ok", comp
        assert comp["backup"]["status"] == "ok" and comp["drill"]["status"] == "ok", comp

        # 3. The WAL receiver stopped: alarm at the next check (one minute), saying why.
        storage.ssh("systemctl stop codeb-barman-receive-wal@shop-staging-db", check=True)
        psql(url, "INSERT INTO drill_rows SELECT g, 'while stopped' FROM "
             "generate_series(1001, 1100) g")  # fmt: skip
        psql(url, "SELECT pg_switch_wal()")
        backup_status.check_wal(deps)
        comp = _db_component(c)
        assert comp["status"] == "alarm" and comp["overall"] == "alarm", comp
        assert comp["wal"]["status"] == "alarm"
        reason = comp["wal"]["reason"]
        assert "pg_receivewal is not running" in reason, comp
        assert "codeb-barman-receive-wal is inactive" in reason or "is failed" in reason, comp
        # Started again: it catches up from its slot, no gap.
        storage.ssh("systemctl start codeb-barman-receive-wal@shop-staging-db", check=True)
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
    print("drill figures:", json.dumps(FIGURES, sort_keys=True))
