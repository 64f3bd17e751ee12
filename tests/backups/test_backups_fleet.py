"""PostgreSQL backups on the real fleet (issue 10): a storage server registered and
bootstrapped through the API (its Barman installed through the fleet's package proxy), a
staging environment deployed, its first backup (which sets up WAL streaming from the stock
postgres image), then point-in-time restore exactness: rows written at t1, a target time,
rows written at t2 with no backup in between; the restore into a new container has every t1
row and no t2 row. Also: a scheduled backup taken by the storage server's own timer (codeb
not involved) is filed by the catalogue sync; secrets stay out of events and argv; files
holding them are 0600; a time outside the window is a 422 naming it; delete is HIGH.

Everything through the HTTP API except the catalogue sync, a scheduled job called directly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shlex
import statistics
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from codeb.clock import SystemClock
from codeb.features.backups import service as backups
from codeb.features.backups import status as backup_status
from codeb.protection import predicates
from codeb.protection.tokens import Target
from codeb.store.models import (
    Backup,
    BackupTarget,
    Environment,
    OperationEvent,
    Project,
    WalCheck,
)
from tests.executor.helpers import wait_operation
from tests.fleet import fleet as fleetlib
from tests.support import live_api

pytestmark = pytest.mark.fleet
APP = "localhost/codeb-test-app"
STORAGE = "storage"
FIGURES: dict[str, float] = {}


def env_var(env_file: str, name: str) -> str:
    return re.search(rf"^{name}=(.*)$", env_file, re.M).group(1)


def psql(url: str, sql: str) -> str:
    out = subprocess.run(
        ["psql", url, "-X", "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def stack(fleet, tmp_path_factory):
    cfg = fleet.config
    proxy = fleetlib.apt_proxy_up(cfg)
    try:
        (storage,) = fleetlib.add_hosts([(STORAGE, "full")], cfg)
        net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
        with live_api(
            tmp_path_factory.mktemp("backups"),
            clock=SystemClock(),
            allowed_networks=net,
            ssh_private_key_file=fleet.key_path,
            apt_proxy=proxy,
        ) as api:
            deps = api.deps
            with api.client() as c:
                hosts = [(h.name, h.ip, h.name) for h in fleet if h.name in ("app", "db", "cache")]
                t0 = time.monotonic()
                ops = {
                    name: c.post(
                        "/api/servers", json={"name": name, "ip": ip, "role": role}
                    ).json()["operation"]["id"]
                    for name, ip, role in [*hosts, (STORAGE, storage.ip, "storage")]
                }
                for name, op in ops.items():
                    done = wait_operation(c, op, timeout=900)
                    assert done["status"] == "succeeded", (name, done.get("error"))
                FIGURES["bootstrap_with_storage_s"] = time.monotonic() - t0
                created = c.post("/api/projects", json={"name": "shop", "type": "nodejs"})
                assert created.status_code == 201, created.text
                r = c.post(
                    "/api/containers/deploy",
                    json={"project": "shop", "environment": "staging", "image": f"{APP}:v1"},
                )
                assert r.status_code == 202, r.text
                op = wait_operation(c, r.json()["result"]["operation"]["id"], timeout=600)
                assert op["status"] == "succeeded", op.get("error")
            yield api, deps, created.json(), storage, op
    finally:
        for host in fleet:
            if host.name in ("app", "db", "cache"):
                host.ssh(
                    "systemctl stop 'shop-*' 2>/dev/null; rm -f /etc/containers/systemd/shop-*; "
                    "systemctl daemon-reload; podman rm -af >/dev/null 2>&1; "
                    "podman volume prune -f >/dev/null 2>&1; rm -rf /etc/codeb/env/shop-* "
                    "/etc/codeb/redis/shop-*"
                )
        fleetlib.remove_hosts([STORAGE], cfg)
        fleetlib.apt_proxy_down(cfg)
        print("backup figures:", json.dumps(FIGURES, sort_keys=True))


def start(r) -> str:
    """The operation an answer of a LOW request started."""
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "executed", body
    return body["result"]["operation"]["id"]


def test_backup_pitr_catalogue_and_secrets(stack, fleet):
    api, deps, created, storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    with api.client() as c, deps.db.connection_context():
        # 1. The scheduler's backup_streaming job (every minute; called here as its tick
        # would) finds the newly deployed db without streaming and starts its first backup,
        # which sets it up (role, pg_hba, Barman, slot, receiver, timers).
        job = backups.ensure_streaming(api.deps)
        assert len(job["started"]) == 1 and not job["skipped"], job
        first_id = job["started"][0]
        t0 = time.monotonic()
        first = wait_operation(c, first_id, timeout=900)
        FIGURES["first_backup_with_setup_wait_s"] = time.monotonic() - t0
        assert first["status"] == "succeeded", first.get("error")
        first_backup = Backup.get_by_id(first["result"]["backup"]["id"])
        assert first_backup.kind == "first" and first_backup.status == "completed"
        assert backups.ensure_streaming(api.deps)["started"] == []  # streaming: nothing to do
        # A backup on request (LOW) once streaming runs.
        t0 = time.monotonic()
        r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
        op = wait_operation(c, start(r), timeout=900)
        FIGURES["backup_on_request_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        b = Backup.get_by_id(op["result"]["backup"]["id"])
        assert b.status == "completed" and b.barman_id and b.end_time and b.size_bytes > 0
        assert b.kind == "manual" and b.end_time >= first_backup.end_time
        target = BackupTarget.get_by_id(b.target_id)
        assert target.status == "enabled" and target.name == "shop-staging-db"
        # Its last WAL file was closed the restore's way (commit, pg_switch_wal(), commit,
        # archive-wal until filed), not by `barman switch-wal --archive` waiting for the
        # source's next WAL record: the segment it closed is filed, at or after the backup's
        # end.
        (closed,) = [
            (e.data or {}).get("msg", "")
            for e in OperationEvent.select().where(
                (OperationEvent.operation == op["id"]) & (OperationEvent.event == "runner_on_ok")
            )
            if (e.task or "").startswith("Close the backup's last WAL file")
        ]
        segment = closed.split()[0]
        assert re.fullmatch(r"[0-9A-F]{24} filed in [0-9.]+ s", closed), closed
        assert b.end_wal and segment >= b.end_wal, (segment, b.end_wal)
        wals = f"/var/lib/barman/shop-staging-db/wals/{segment[:16]}/{segment}"
        storage.ssh(f"test -f {wals}", check=True)

        # Secrets: the replication password is stored encrypted, never in events or argv,
        # and the file holding it on the storage server is 0600 barman.
        password = deps.box.decrypt(target.replication_password)
        assert password not in target.replication_password
        events = c.get(f"/api/operations/{op['id']}/events", params={"after": 0}).text
        assert password not in events
        assert password not in c.get("/api/protection/logs").text
        mode = storage.ssh("stat -c '%a %U' /var/lib/barman/.pgpass", check=True).stdout.split()
        assert mode == ["600", "barman"]
        argv = storage.ssh("ps -eo args", check=True).stdout
        assert password not in argv
        assert password not in fleet["db"].ssh("ps -eo args", check=True).stdout
        # WAL streams continuously from a supervised receiver.
        assert (
            storage.ssh(
                "systemctl is-active codeb-barman-receive-wal@shop-staging-db"
            ).stdout.strip()
            == "active"
        )

        # 2. PITR exactness: t1 rows, the target, t2 rows; no backup in between.
        psql(url, "CREATE TABLE orders (id int PRIMARY KEY, phase text)")
        psql(url, "INSERT INTO orders SELECT g, 't1' FROM generate_series(1, 500) g")
        time.sleep(1.5)
        target_time = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
        time.sleep(1.5)
        psql(url, "INSERT INTO orders SELECT g, 't2' FROM generate_series(501, 800) g")

        # Outside the window: a 422 naming it, nothing started.
        r = c.post(f"/api/backups/{b.id}/restore", json={"target_time": "2020-01-01T00:00:00Z"})
        assert r.status_code == 422 and "recoverable window" in r.text, r.text
        assert r.json()["error"]["details"]["recoverable_window"]["earliest"]

        t0 = time.monotonic()
        r = c.post(
            f"/api/backups/{b.id}/restore",
            json={"target_time": target_time.isoformat() + "Z", "into": "new"},
        )
        op = wait_operation(c, start(r), timeout=900)
        FIGURES["pitr_restore_api_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        restored = op["result"]["restore"]
        assert restored["status"] == "running" and restored["server"] == STORAGE
        user = url.split("//", 1)[1].split(":", 1)[0]
        pw = url.split("//", 1)[1].split(":", 1)[1].split("@", 1)[0]
        dbname = url.rsplit("/", 1)[1]
        restored_url = f"postgresql://{user}:{pw}@{storage.ip}:{restored['port']}/{dbname}"
        counts = psql(
            restored_url,
            "SELECT count(*) FILTER (WHERE phase = 't1'), count(*) FILTER (WHERE phase = 't2') "
            "FROM orders",
        )
        assert counts == "500|0", counts
        # The live database still has everything.
        assert psql(url, "SELECT count(*) FROM orders") == "800"

        # 3. A backup the storage server's own timer takes (codeb not involved) is filed by
        # the catalogue sync as `scheduled`; backup_exists reads real rows.
        storage.ssh("systemctl start codeb-barman-backup@shop-staging-db.service", check=True)
        # The unit closed the backup's last WAL file with the same code (the script the role
        # installs from module_utils/codeb_barman_wal.py), as the barman user.
        said = storage.ssh(
            "journalctl -u codeb-barman-backup@shop-staging-db.service -o cat", check=True
        ).stdout
        assert re.search(r"^[0-9A-F]{24} filed$", said, re.M), said[-2000:]
        summary = backups.sync_catalogue(deps)
        assert summary["found"] == 1 and not summary["errors"], summary
        scheduled = Backup.get((Backup.target_id == target.id) & (Backup.kind == "scheduled"))
        # Barman marks it DONE once its last WAL is filed (at the latest by the minute timer).
        deadline = time.monotonic() + 150
        while scheduled.status == "running" and time.monotonic() < deadline:
            time.sleep(10)
            backups.sync_catalogue(deps)
            scheduled = Backup.get_by_id(scheduled.id)
        assert scheduled.status == "completed" and scheduled.end_time >= b.end_time
        env = Environment.get(
            (Environment.project == Project.get(Project.name == "shop").id)
            & (Environment.name == "staging")
        )
        assert predicates.backup_exists(
            Target("environment", env.id, "shop/staging", env.project_id, "staging"), {}
        )
        listed = c.get("/api/backups", params={"project": "shop", "environment": "staging"})
        assert {x["id"] for x in listed.json()["backups"]} == {
            first_backup.id,
            b.id,
            scheduled.id,
        }, listed.text
        view = c.get(f"/api/backups/{b.id}").json()
        # The window opens at the end of the oldest backup still held.
        assert view["recoverable_window"]["earliest"] == first_backup.end_time.isoformat() + "Z"

        # 4. Deleting a backup is HIGH: queued, not executed.
        r = c.delete(f"/api/backups/{scheduled.id}")
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        assert Backup.get_by_id(scheduled.id).status == "completed"


def test_wal_catches_up_after_a_receiver_outage(stack, fleet):
    """Rows written while the storage server's WAL receiver is down are kept by the
    replication slot and shipped when it is back: a restore of the latest state has them
    (the recoverable window has no gap)."""
    api, deps, created, storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    receiver = "codeb-barman-receive-wal@shop-staging-db"
    with api.client() as c, deps.db.connection_context():
        b = (
            Backup.select()
            .where((Backup.status == "completed") & (Backup.environment == "staging"))
            .order_by(Backup.end_time.desc())
            .first()
        )
        storage.ssh(f"systemctl stop {receiver}", check=True)
        try:
            psql(
                url,
                "CREATE TABLE outage (id int); INSERT INTO outage SELECT generate_series(1, 77)",
            )
            psql(url, "SELECT pg_switch_wal()")
            assert storage.ssh(f"systemctl is-active {receiver}").stdout.strip() != "active"
        finally:
            storage.ssh(f"systemctl start {receiver}", check=True)
        op = wait_operation(c, start(c.post(f"/api/backups/{b.id}/restore", json={})), timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        restored = op["result"]["restore"]
        user, rest = url.split("//", 1)[1].split(":", 1)
        pw, dbname = rest.split("@", 1)[0], url.rsplit("/", 1)[1]
        restored_url = f"postgresql://{user}:{pw}@{storage.ip}:{restored['port']}/{dbname}"
        assert psql(restored_url, "SELECT count(*) FROM outage") == "77"


def test_wal_ships_in_bursts_and_a_backup_holds_the_stream(stack, fleet):
    """The storage server fetches WAL in bursts (pg_receivewal --endpos every 5 s on the
    slot): no walsender stays connected between them, so the db's commits wake none, and a
    commit is on the storage server within the interval and one burst (the RPO). The
    receiver holds Barman's receive-wal lock: barman cron starts no receiver of its own and
    barman check fails on nothing but the idle slot, which the WAL check does not count. A
    base backup (barman backup needs the slot active) streams while it runs; the bursts
    resume after it, no hold left."""
    api, deps, created, storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    server = "shop-staging-db"
    report = f"/var/lib/barman/{server}/codeb-receiver.json"

    def receiver() -> dict:
        return json.loads(storage.ssh(f"cat {report}", check=True).stdout)

    with api.client() as c:  # the first backup configures the storage server too
        r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
        op = wait_operation(c, start(r), timeout=900)
    assert op["status"] == "succeeded", op.get("error")
    holds = storage.ssh(f"ls /var/lib/barman/{server} | grep -c codeb-stream-hold").stdout
    assert holds.strip() == "0"
    time.sleep(2)
    assert receiver()["mode"] == "bursts" and receiver()["interval_s"] == 5, receiver()

    senders = []
    for _ in range(12):
        senders.append(int(psql(url, "SELECT count(*) FROM pg_stat_replication")))
        time.sleep(0.5)
    # A burst lasts a fraction of a second; a per-commit stream would show one every time.
    assert senders.count(0) >= 8, senders

    psql(url, "CREATE TABLE IF NOT EXISTS bursts (id int); INSERT INTO bursts VALUES (1)")
    committed = time.time()  # the guests share this machine's clock
    while (receiver().get("last_ok") or 0) <= committed:
        assert time.time() - committed < 5 + 10, receiver()
        time.sleep(0.2)
    assert not receiver()["last_error"]

    storage.ssh("runuser -u barman -- barman -q cron", check=True)
    time.sleep(2)
    lock_pid = storage.ssh(f"head -n1 /var/lib/barman/.{server}-receive-wal.lock").stdout
    assert lock_pid.strip() == str(receiver()["pid"])
    assert storage.ssh("pgrep -fc 'barman receive-wal'").stdout.strip() == "0"
    checked = storage.ssh(f"runuser -u barman -- barman -f json check {server}").stdout
    failing = {k for k, v in json.loads(checked)[server].items()
               if isinstance(v, dict) and v.get("status") == "FAILED"}  # fmt: skip
    assert failing <= {"replication_slot", "replication slot"}, checked
    with deps.db.connection_context():
        backup_status.check_wal(deps)
        target = BackupTarget.get(BackupTarget.name == server)
        row = WalCheck.get(WalCheck.target_id == target.id)
        assert (row.receiver, row.detail) == ("streaming", None)


BY_HAND_RESTORE = r"""set -eu
name="$1"; port="$2"; when="$3"; backup="$4"; server="$5"; image="$6"
b() {{ runuser -u barman -- barman "$@"; }}
ci="$(sed -n 's/^conninfo = //p' "/etc/barman.d/$server.conf")"
s0="$(date +%s.%N)"
# A commit past the target, the WAL switch, a second commit (so pg_receivewal opens the next
# segment and Barman files the closed one) waited for until flushed (it is committed
# asynchronously), a burst, then archive-wal until it is filed:
# what codeb's restore module does (`barman switch-wal --archive` waited for the next WAL
# record).
wal="$(runuser -u barman -- psql "$ci" -XtAq -c 'SELECT txid_current()' \
      -c 'SELECT pg_walfile_name(pg_switch_wal())' -c 'SELECT txid_current()' \
      -c 'DO $$DECLARE t pg_lsn := pg_current_wal_insert_lsn(); BEGIN FOR i IN 1..500 LOOP
          EXIT WHEN pg_current_wal_flush_lsn() >= t; PERFORM pg_sleep(0.01); END LOOP; END$$' \
      | sed -n 2p)"
# A burst of the WAL receiver now (as codeb's restore asks), not at its interval.
pid="$(head -n1 "/var/lib/barman/.$server-receive-wal.lock")"
grep -qs codeb_barman_receiver "/proc/$pid/cmdline" && kill -USR1 "$pid"
for _ in $(seq 300); do
    [ -e "/var/lib/barman/$server/wals/${{wal:0:16}}/$wal" ] && break
    b -q archive-wal "$server"
done
awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN {{ printf "switch_wal_s=%.3f\n", b - a }}'
dir=/var/lib/barman/restores/$name
b recover --target-time "$when" --target-action promote "$server" "$backup" "$dir" >/dev/null
sed -i "s#$dir/#/var/lib/postgresql/data/#g" "$dir/postgresql.auto.conf"
podman volume create "$name-data" >/dev/null
m="$(podman volume inspect --format '{{{{.Mountpoint}}}}' "$name-data")"
rmdir "$m"; mv "$dir" "$m"
podman run --rm --pull=never --user root --entrypoint chown -v "$name-data:/d" "$image" \
    -R postgres:postgres /d
cat > /etc/containers/systemd/$name.container <<UNIT
[Container]
ContainerName=$name
Image=$image
Pull=never
Volume=$name-data:/var/lib/postgresql/data
PublishPort=$port:5432
UNIT
systemctl daemon-reload
systemctl start "$name.service"
until [ "$(podman exec "$name" psql -X -tA -U {user} -d postgres \
      -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.2; done
"""


def pgbench_tps(db, container: str, user: str, dbname: str, seconds: int) -> float:
    out = db.ssh(
        f"podman exec {container} pgbench -n -c 4 -j 2 -T {seconds} -U {user} {dbname}",
        check=True,
    ).stdout
    return float(re.search(r"tps = ([0-9.]+)", out).group(1))


@pytest.mark.skipif(
    not os.environ.get("CODEB_BACKUP_BENCH"), reason="bench/restore.py sets CODEB_BACKUP_BENCH"
)
def test_bench_restore_and_wal_cost(stack, fleet):
    """bench/restore.py's figures: PITR through codeb ÷ the same restore by hand over SSH
    (Barman's own commands, the same steps), and pgbench TPS with WAL streaming on ÷ off."""
    api, deps, created, storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    user = url.split("//", 1)[1].split(":", 1)[0]
    dbname = url.rsplit("/", 1)[1]
    rounds = int(os.environ.get("CODEB_BACKUP_BENCH_ROUNDS", "2"))
    with api.client() as c, deps.db.connection_context():
        b = (
            Backup.select()
            .where((Backup.status == "completed") & (Backup.environment == "staging"))
            .order_by(Backup.end_time.desc())
            .first()
        )
        if b is None:  # run alone (bench/restore.py): the first backup sets up streaming
            r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
            op = wait_operation(c, start(r), timeout=900)
            assert op["status"] == "succeeded", op.get("error")
            b = Backup.get_by_id(op["result"]["backup"]["id"])
        api_s, hand_s = [], []
        for i in range(rounds):
            psql(url, f"CREATE TABLE IF NOT EXISTS bench (i int); INSERT INTO bench VALUES ({i})")
            time.sleep(1.2)
            when = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
            t0 = time.monotonic()
            r = c.post(f"/api/backups/{b.id}/restore", json={"target_time": when.isoformat() + "Z"})
            op = wait_operation(c, start(r), timeout=900)
            assert op["status"] == "succeeded", op.get("error")
            api_s.append(time.monotonic() - t0)
            script = BY_HAND_RESTORE.format(user=user)
            name, port = f"byhand-{i}", 39900 + i
            args = " ".join(
                shlex.quote(a)
                for a in (name, str(port), when.strftime("%Y-%m-%d %H:%M:%S+00:00"),
                          b.barman_id, "shop-staging-db", backups.POSTGRES_IMAGE)
            )  # fmt: skip
            t0 = time.monotonic()
            storage.ssh(f"bash -s -- {args} <<'EOS'\n{script}EOS", check=True)
            hand_s.append(time.monotonic() - t0)
        FIGURES["pitr_api_s"] = statistics.median(api_s)
        FIGURES["pitr_by_hand_s"] = statistics.median(hand_s)
        FIGURES["pitr_api_over_by_hand"] = FIGURES["pitr_api_s"] / FIGURES["pitr_by_hand_s"]

        db = fleet["db"]
        container = "shop-staging-db"
        db.ssh(f"podman exec {container} pgbench -i -q -s 5 -U {user} {dbname}", check=True)
        receiver = "codeb-barman-receive-wal@shop-staging-db"
        on, off = [], []
        seconds = int(os.environ.get("CODEB_BACKUP_BENCH_SECONDS", "15"))
        try:
            for _ in range(rounds):
                on.append(pgbench_tps(db, container, user, dbname, seconds))
                storage.ssh(f"systemctl stop {receiver}", check=True)
                off.append(pgbench_tps(db, container, user, dbname, seconds))
                storage.ssh(f"systemctl start {receiver}", check=True)
        finally:
            storage.ssh(f"systemctl start {receiver}")
        FIGURES["pgbench_tps_wal_on"] = statistics.median(on)
        FIGURES["pgbench_tps_wal_off"] = statistics.median(off)
        FIGURES["pgbench_on_over_off"] = (
            FIGURES["pgbench_tps_wal_on"] / FIGURES["pgbench_tps_wal_off"]
        )
        FIGURES["loadavg_1m"] = os.getloadavg()[0]
        out = os.environ.get("CODEB_BACKUP_FIGURES")
        if out:
            Path(out).write_text(json.dumps(FIGURES, indent=2, sort_keys=True))


def prod_url(created: dict) -> str:
    return env_var(created["env_files"]["production"], "DATABASE_URL")


def ensure_production(c, deps) -> Backup:
    """Production deployed (a MEDIUM deploy: staging tested and healthy, one token) and a
    completed backup of it taken through the API (the first sets up its streaming)."""
    rows = c.get("/api/containers", params={"project": "shop", "environment": "production"})
    if not rows.json()["containers"]:
        r = c.post(
            "/api/containers/deploy",
            json={"project": "shop", "environment": "production", "image": f"{APP}:v1"},
        )
        assert r.status_code == 202 and r.json()["status"] == "confirmation_required", r.text
        r = c.post("/api/protection/confirm", json={"token": r.json()["confirm_token"]})
        assert r.status_code == 202, r.text
        op = wait_operation(c, r.json()["result"]["operation"]["id"], timeout=600)
        assert op["status"] == "succeeded", op.get("error")
    done = (
        Backup.select()
        .where((Backup.status == "completed") & (Backup.environment == "production"))
        .order_by(Backup.end_time.desc())
        .first()
    )
    if done is not None:
        return done
    r = c.post("/api/backups", json={"project": "shop", "environment": "production"})
    op = wait_operation(c, start(r), timeout=900)
    assert op["status"] == "succeeded", op.get("error")
    return Backup.get_by_id(op["result"]["backup"]["id"])


def test_canary_and_in_place_restore_of_production(stack, fleet):
    """The canary a backup carries is in the database; then an in-place restore of
    production through the queue (HIGH: two confirmations typing shop/production, no
    cooldown): the safety backup first, data as of the target, the receiver following the
    new timeline, a backup after it (the chain verifies), the app restarted and healthy."""
    api, deps, created, storage, _deployed = stack
    url = prod_url(created)
    with api.client() as c, deps.db.connection_context():
        b = ensure_production(c, deps)
        # The canary: the token on the row is the row in the database, written before it.
        assert b.canary and b.canary_at and b.canary_at <= b.end_time, b.canary
        assert psql(url, f"SELECT count(*) FROM codeb_canary WHERE token = '{b.canary}'") == "1"
        assert c.get(f"/api/backups/{b.id}").json()["canary"]["token"] == b.canary
        # max_slot_wal_keep_size caps what a dead receiver makes the db host keep.
        assert psql(url, "SHOW max_slot_wal_keep_size") == "2GB"

        psql(url, "CREATE TABLE ledger (id int PRIMARY KEY, phase text)")
        psql(url, "INSERT INTO ledger SELECT g, 't1' FROM generate_series(1, 300) g")
        time.sleep(1.5)
        target_time = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
        time.sleep(1.5)
        psql(url, "INSERT INTO ledger SELECT g, 't2' FROM generate_series(301, 400) g")

        t0 = time.monotonic()
        r = c.post(
            f"/api/backups/{b.id}/restore",
            json={"target_time": target_time.isoformat() + "Z", "into": "in_place"},
        )
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        token = r.json()["confirm_token"]
        assert c.post("/api/protection/confirm", json={"token": token}).status_code == 202
        r = c.post(
            "/api/protection/confirm", json={"token": token, "typed_name": "shop/production"}
        )
        assert r.status_code == 202 and r.json()["status"] == "executed", r.text
        op = wait_operation(c, r.json()["result"]["operation"]["id"], timeout=1800)
        FIGURES["in_place_restore_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        steps = op["result"]["steps"]
        restore = op["result"]["restore"]
        assert restore["mode"] == "in_place" and restore["status"] == "completed", restore
        # The safety backup completed before the data was touched, and it holds the t2 rows.
        safety = Backup.get_by_id(restore["safety_backup_id"])
        assert safety.kind == "safety" and safety.status == "completed", safety.error
        assert steps["safety_backup"]["status"] == "completed"
        # Data as of the target: every t1 row, no t2 row.
        counts = psql(
            url,
            "SELECT count(*) FILTER (WHERE phase = 't1'), count(*) FILTER (WHERE phase = 't2') "
            "FROM ledger",
        )
        assert counts == "300|0", counts
        # The chain verifies: a backup after the restore completed (its WAL arrived on the
        # new timeline), and the receiver streams.
        after = Backup.get_by_id(restore["after_backup_id"])
        assert after.status == "completed" and after.end_wal[:8] != "00000001", after.end_wal
        assert (
            storage.ssh(
                "systemctl is-active codeb-barman-receive-wal@shop-production-db"
            ).stdout.strip()
            == "active"
        )
        # The scratch copy is gone; the app answers its health check.
        assert storage.ssh("podman ps -a --format '{{.Names}}'").stdout.count("-inplace-") == 0
        app = next(
            x
            for x in c.get(
                "/api/containers", params={"project": "shop", "environment": "production"}
            ).json()["containers"]
            if x["server_type"] == "app"
        )
        health = httpx.get(f"http://{app['server_ip']}:{app['port_external']}/health", timeout=5)
        assert health.status_code == 200
        # Written after the restore: in the next backup's reach (WAL streams again).
        psql(url, "INSERT INTO ledger VALUES (999, 'after')")
        r = c.post("/api/backups", json={"project": "shop", "environment": "production"})
        op = wait_operation(c, start(r), timeout=900)
        assert op["status"] == "succeeded", op.get("error")


def test_backup_killed_mid_way_fails_and_the_next_run_recovers(stack, fleet):
    """The storage host's backup process killed mid-backup: the backup is `failed` with the
    reason and nothing reports success; the next scheduled run (the storage host's timer)
    completes and is filed; WAL kept streaming (no gap in the recoverable window)."""
    api, deps, created, storage, _deployed = stack
    url = prod_url(created)
    db = fleet["db"]
    user = url.split("//", 1)[1].split(":", 1)[0]
    dbname = url.rsplit("/", 1)[1]
    with api.client() as c, deps.db.connection_context():
        ensure_production(c, deps)
        # Enough data that pg_basebackup runs for a while.
        db.ssh(f"podman exec shop-production-db pgbench -i -q -s 30 -U {user} {dbname}", check=True)
        r = c.post("/api/backups", json={"project": "shop", "environment": "production"})
        op_id = start(r)
        # The barman backup process (runuser, barman, its pg_basebackup), by PID; the
        # bracket keeps this shell's own command line from matching.
        killer = (
            "for i in $(seq 1 3000); do "
            "p=$(pgrep -f 'barman [b]ackup --name'); "
            'if [ -n "$p" ]; then for x in $p; do kill -9 $x $(pgrep -P $x); done; '
            'echo "$p"; exit 0; fi; sleep 0.1; done; exit 1'
        )
        killed = storage.ssh(killer)
        assert killed.returncode == 0, killed.stderr
        op = wait_operation(c, op_id, timeout=900)
        assert op["status"] == "failed", op
        b = Backup.get(Backup.operation_id == op_id)
        assert b.status == "failed" and b.error, b.error
        FIGURES["killed_backup_error"] = b.error[:200]
        # The catalogue sync does not turn it into a success (Barman lists it STARTED).
        backups.sync_catalogue(deps)
        assert Backup.get_by_id(b.id).status == "failed"
        listed = c.get("/api/backups", params={"environment": "production", "status": "failed"})
        assert b.id in {x["id"] for x in listed.json()["backups"]}
        # The next scheduled run: the storage host's own timer unit (codeb not involved).
        before = set(Backup.select(Backup.id).where(Backup.environment == "production").tuples())
        storage.ssh("systemctl start codeb-barman-backup@shop-production-db.service", check=True)
        deadline = time.monotonic() + 300
        fresh = None
        while time.monotonic() < deadline:
            backups.sync_catalogue(deps)
            rows = Backup.select().where(
                (Backup.environment == "production") & (Backup.kind == "scheduled")
            )
            fresh = next((x for x in rows if (x.id,) not in before), None)
            if fresh is not None and fresh.status == "completed":
                break
            time.sleep(10)
        assert fresh is not None and fresh.status == "completed", fresh and fresh.status
        # WAL kept arriving: rows written after the kill are in a restore of the latest.
        psql(url, "CREATE TABLE after_kill (i int); INSERT INTO after_kill VALUES (1), (2)")
        op = wait_operation(
            c, start(c.post(f"/api/backups/{fresh.id}/restore", json={})), timeout=900
        )
        assert op["status"] == "succeeded", op.get("error")
        restored = op["result"]["restore"]
        pw = url.split("//", 1)[1].split(":", 1)[1].split("@", 1)[0]
        restored_url = f"postgresql://{user}:{pw}@{storage.ip}:{restored['port']}/{dbname}"
        assert psql(restored_url, "SELECT count(*) FROM after_kill") == "2"


def test_incremental_backup_restores(stack, fleet):
    """A PostgreSQL 17 block-level incremental (Barman 3.13.3, pg_basebackup --incremental on
    the latest backup) completes, and a restore of it (Barman combines the chain with
    pg_combinebackup) holds what was written before it, canary included."""
    api, deps, created, storage, _deployed = stack
    url = prod_url(created)
    user = url.split("//", 1)[1].split(":", 1)[0]
    dbname = url.rsplit("/", 1)[1]
    with api.client() as c, deps.db.connection_context():
        ensure_production(c, deps)
        psql(url, "CREATE TABLE IF NOT EXISTS incr (i int); INSERT INTO incr VALUES (1), (2), (3)")
        t0 = time.monotonic()
        r = c.post(
            "/api/backups",
            json={"project": "shop", "environment": "production", "type": "incremental"},
        )
        op = wait_operation(c, start(r), timeout=900)
        FIGURES["incremental_backup_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        b = Backup.get_by_id(op["result"]["backup"]["id"])
        assert b.type == "incremental" and b.status == "completed", (b.type, b.error)
        op = wait_operation(c, start(c.post(f"/api/backups/{b.id}/restore", json={})), 900)
        assert op["status"] == "succeeded", op.get("error")
        restored = op["result"]["restore"]
        pw = url.split("//", 1)[1].split(":", 1)[1].split("@", 1)[0]
        restored_url = f"postgresql://{user}:{pw}@{storage.ip}:{restored['port']}/{dbname}"
        assert psql(restored_url, "SELECT count(*) FROM incr") == "3"
        assert (
            psql(restored_url, f"SELECT count(*) FROM codeb_canary WHERE token = '{b.canary}'")
            == "1"
        )
