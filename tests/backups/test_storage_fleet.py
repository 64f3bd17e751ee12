"""What issue 10 left on the storage server, on the real fleet, on the backups stack (a
storage server bootstrapped, shop/staging deployed with a Redis and a db), one stack for
all three tests:

**The S3 store.** The first Redis copy sets
the store up (roles/codeb_s3: SeaweedFS behind its S3 gateway, key pairs 0600) and puts
the RDB into the environment's bucket; each key reaches only its own bucket; no secret in
events, the log or argv on the storage server; codeb's own registry (a Litestream replica)
replicates into the store with the key pair codeb wrote for it and restores from there.

Then the store is killed during a copy (its gateway killed again and again while the copy
runs, so the upload meets it dead whenever it comes): the copy is `failed` with the store's
reason, nothing reports success and no object of it exists; the next scheduled run (the
hourly `redis_copies` job, called as its tick) completes once the store is back.

**Differential backups.** A full, an incremental on it, then a differential: Barman's
parent of the differential is the full (not the incremental); restored into a new container
it holds the rows written before it (full + differential combined).

**bench/restore.py** (only with CODEB_BACKUP_BENCH): PITR through the API ÷ the same restore
by hand with Barman's own commands, each API restore split into where its time went, and
pgbench TPS with WAL streaming on ÷ off."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codeb.features.backups import objectstore, redis
from codeb.features.backups import service as backups
from codeb.features.recovery import replica
from codeb.providers.objectstore import Credentials, ObjectStoreDenied, S3Store
from codeb.store.models import (
    Backup,
    ObjectStoreKey,
    Operation,
    OperationEvent,
    OperationLog,
    RedisCopy,
    Server,
)
from tests.backups.test_backups_fleet import (  # noqa: F401
    BY_HAND_RESTORE,
    env_var,
    pgbench_tps,
    psql,
    stack,
    start,
)
from tests.backups.test_drills_fleet import redis_cli
from tests.executor.helpers import wait_operation
from tests.fleet import fleet as fleetlib

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
                  "EVAL \"for i=1,tonumber(ARGV[1]) do local t={} for j=1,100 do "
                  "t[j]=string.format('%08x', math.random(0, 2147483647)) end "
                  "redis.call('SET', 'bulk:'..i, "
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
        assert obj.size == copy.size_bytes and obj.size > 5_000_000, (obj, copy.size_bytes)
        got = tmp_path / "got.rdb"
        env_store.get_file(bucket, obj.key, got)
        assert got.stat().st_size == obj.size  # the copy as stored (its format: redis.py's)

        # The store on the host: loopback cluster, the gateway on the server's address,
        # key pairs 0600 of the store's user, both units enabled.
        modes = storage.ssh("stat -c '%a %U' /etc/codeb-s3/identities.json /var/lib/codeb/s3",
                            check=True).stdout.split()  # fmt: skip
        assert modes == ["600", "codeb-s3", "700", "codeb-s3"], modes
        listening = storage.ssh("ss -ltn", check=True).stdout
        for port in (9333, 8080, 8888):
            assert f"127.0.0.1:{port} " in listening and f"0.0.0.0:{port} " not in listening
            assert f"{storage.ip}:{port} " not in listening
        assert f"{storage.ip}:8333 " in listening
        # The gateway itself binds loopback, so its gRPC port (whose Configure call would
        # replace the key pairs, unauthenticated) is not on the server's address; the S3 port
        # reaches the network through codeb-s3-public.socket.
        assert "127.0.0.1:18333 " in listening and f"{storage.ip}:18333 " not in listening
        assert "0.0.0.0:18333 " not in listening and "*:18333 " not in listening
        assert storage.ssh("systemctl is-enabled codeb-s3 codeb-s3-cluster codeb-s3-public.socket",
                           check=True).stdout.split() == ["enabled"] * 3  # fmt: skip

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


def test_differential_builds_on_the_latest_full(stack, fleet):  # noqa: F811
    api, deps, created, storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    with api.client() as c, deps.db.connection_context():

        def take(kind: str) -> Backup:
            r = c.post("/api/backups", json={"project": "shop", "environment": "staging",
                                             "type": kind})  # fmt: skip
            op = wait_operation(c, start(r), timeout=900)
            assert op["status"] == "succeeded", (kind, op.get("error"))
            b = Backup.get_by_id(op["result"]["backup"]["id"])
            assert b.status == "completed" and b.barman_id, (kind, b.status, b.error)
            return b

        psql(url, "CREATE TABLE IF NOT EXISTS diff_rows (id int PRIMARY KEY, phase text)")
        psql(url, "INSERT INTO diff_rows SELECT g, 'full' FROM generate_series(1, 200) g "
             "ON CONFLICT DO NOTHING")  # fmt: skip
        full = take("full")
        psql(url, "INSERT INTO diff_rows SELECT g, 'inc' FROM generate_series(201, 300) g")
        inc = take("incremental")
        psql(url, "INSERT INTO diff_rows SELECT g, 'diff' FROM generate_series(301, 400) g")
        t0 = time.monotonic()
        diff = take("differential")
        FIGURES["differential_backup_s"] = time.monotonic() - t0
        assert diff.type == "differential"

        def parent(b: Backup) -> str:
            shown = storage.ssh(
                f"runuser -u barman -- barman -f json show-backup shop-staging-db {b.barman_id}",
                check=True,
            ).stdout
            found: list[str] = []

            def walk(node: Any) -> None:  # wherever Barman's JSON puts parent_backup_id
                if isinstance(node, dict):
                    for key, value in node.items():
                        if key == "parent_backup_id" and value:
                            found.append(str(value))
                        walk(value)

            walk(json.loads(shown))
            assert len(found) == 1, shown[-1500:]
            return found[0]

        assert parent(inc) == full.barman_id, parent(inc)  # the latest, then the full
        assert parent(diff) == full.barman_id, (parent(diff), full.barman_id, inc.barman_id)
        # A differential needs only the full: restored, it holds every row written before it.
        r = c.post(f"/api/backups/{diff.id}/restore", json={"into": "new"})
        op = wait_operation(c, start(r), timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        port = op["result"]["restore"]["port"]
        user, rest = url.split("//", 1)[1].split(":", 1)
        pw, dbname = rest.split("@", 1)[0], url.rsplit("/", 1)[1]
        restored = f"postgresql://{user}:{pw}@{storage.ip}:{port}/{dbname}"
        counts = psql(restored, "SELECT string_agg(phase || '=' || n, ',' ORDER BY phase) FROM "
                      "(SELECT phase, count(*) n FROM diff_rows GROUP BY phase) x")  # fmt: skip
        assert counts == "diff=100,full=200,inc=100", counts


def _utc(value: dt.datetime) -> float:
    return value.replace(tzinfo=dt.UTC).timestamp()


def breakdown(op_id: str, posted: float, answered: float, observed: float) -> dict[str, Any]:
    """Where an API restore's seconds went, from the operation's and its events' times."""
    op = Operation.get_by_id(op_id)
    events = list(
        OperationEvent.select().where(OperationEvent.operation == op_id).order_by(
            OperationEvent.seq)
    )  # fmt: skip
    first = events[0].created_at
    (task,) = [e for e in events if e.event == "runner_on_ok" and
               (e.task or "").startswith("Restore (barman")]  # fmt: skip
    stats = [e for e in events if e.event == "playbook_on_stats"][-1]
    return {
        "request_s": answered - posted,
        "queued_s": _utc(op.started_at) - _utc(op.created_at),
        "runner_start_s": _utc(first) - _utc(op.started_at),
        "module_task_s": task.duration,
        "module_steps": (task.data or {}).get("msg"),
        "before_module_s": _utc(task.created_at) - task.duration - _utc(first),
        "run_end_s": _utc(op.finished_at) - _utc(stats.created_at),
        "poll_s": observed - _utc(op.finished_at),
        "tasks": sorted({e.task for e in events if e.event == "playbook_on_task_start"}),
    }


def _burst_caught_up(storage, server: str, timeout: float = 90) -> float:
    """Wakes the WAL receiver (SIGUSR1 to the PID in Barman's receive-wal lock, which the
    receiver writes once its handlers are in place) until a burst that began after this call
    has succeeded: it fetched everything the source had flushed before it (a restarted
    receiver's catch-up is a restart's cost, not the bursts'); the seconds it took."""
    t0 = time.monotonic()
    since = float(storage.ssh("date +%s.%N", check=True).stdout)
    lock = f"/var/lib/barman/.{server}-receive-wal.lock"
    report = f"/var/lib/barman/{server}/codeb-receiver.json"
    state: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout:
        storage.ssh(
            f"pid=$(head -n1 {lock} 2>/dev/null); "
            "grep -qs codeb_barman_receiver /proc/$pid/cmdline && kill -USR1 $pid"
        )
        with contextlib.suppress(ValueError):
            state = json.loads(storage.ssh(f"cat {report}").stdout or "{}")
        if (state.get("last_ok") or 0) > since and not state.get("last_error"):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"no WAL burst succeeded in {timeout} s: {state}")


def _streaming_caught_up(db, container: str, user: str, timeout: float = 90) -> float:
    """Waits until the WAL receiver streams and has been sent everything written so far (a
    restarted receiver first fetches what the slot kept while it was stopped: that catch-up
    is a restart's cost, not streaming's); the seconds it took."""
    t0 = time.monotonic()
    query = ("SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)), -1)::bigint "
             "FROM pg_stat_replication")  # fmt: skip
    while time.monotonic() - t0 < timeout:
        out = db.ssh(
            f"podman exec {container} psql -XtAq -U {user} -d postgres -c {shlex.quote(query)}"
        )
        lag = out.stdout.strip()
        if out.returncode == 0 and lag.lstrip("-").isdigit() and 0 <= int(lag) < 1 << 20:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"the WAL receiver did not catch up in {timeout} s (lag {lag!r})")


def _cpu_ticks(cfg, hosts: tuple[str, ...] = ("db", "storage")) -> dict[str, int]:
    """CPU time (clock ticks, user + system) of the fleet guests' processes by what they are:
    the db's walsender, its other postgres processes, pgbench, the storage server's
    pg_receivewal and Barman (receive-wal's wrapper, cron, archive-wal), the rest of each
    guest. Read on this machine's /proc, only our own guests' cgroups (other fleets may run)."""
    ticks: dict[str, int] = {}
    for host in hosts:
        for pid in fleetlib.cgroup_pids(cfg.cgroup_name(host)):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            used = int(fields[11]) + int(fields[12])  # utime, stime
            if cmd.startswith("postgres: walsender"):
                kind = "walsender"
            elif cmd.startswith("pgbench"):
                kind = "pgbench"
            elif "pg_receivewal" in cmd:
                kind = "pg_receivewal"
            elif "codeb_barman_receiver" in cmd:
                kind = "receiver"
            elif "barman" in cmd:
                kind = "barman"
            elif cmd.startswith("postgres"):
                kind = "postgres"
            else:
                kind = f"{host}_other"
            ticks[kind] = ticks.get(kind, 0) + used
        # The whole guest (its cgroup's usage: exited processes too, e.g. the backends of
        # pgbench's connections), in clock ticks like the rest.
        for top in fleetlib.cgroup_dirs(cfg.cgroup_name(host)):
            try:
                usec = (top / "cpu.stat").read_text().split("\n", 1)[0].split()
            except OSError:
                continue
            if usec[0] == "usage_usec":
                ticks[f"{host}_guest"] = int(usec[1]) * os.sysconf("SC_CLK_TCK") // 1_000_000
                break
    return ticks


CPUSET_V1 = Path("/sys/fs/cgroup/cpuset")


@contextlib.contextmanager
def guests_on_their_own_cpus(cfg, cpus: dict[str, str]) -> Iterator[None]:
    """Every thread of each named guest in a cpuset of its own (`{"db": "0", "storage": "1"}`),
    as in production, where the storage server is another machine with its own CPUs; what
    the guests start meanwhile inherits it. cgroup v1's cpuset (this hybrid host; the fleet's
    own cgroups are in the systemd and unified hierarchies). Everything is moved back and
    the cpusets removed afterwards."""
    made: list[Path] = []
    try:
        for host, cpu_list in cpus.items():
            cpuset = CPUSET_V1 / f"{cfg.cgroup_name(host)}-bench"
            cpuset.mkdir(exist_ok=True)
            made.append(cpuset)
            (cpuset / "cpuset.mems").write_text((CPUSET_V1 / "cpuset.mems").read_text())
            (cpuset / "cpuset.cpus").write_text(cpu_list)
            # Twice: a process forked by one not yet moved during the first pass.
            for _ in range(2):
                for pid in fleetlib.cgroup_pids(cfg.cgroup_name(host)):
                    with contextlib.suppress(OSError):
                        for tid in os.listdir(f"/proc/{pid}/task"):
                            with contextlib.suppress(OSError):
                                (cpuset / "tasks").write_text(tid)
        yield
    finally:
        for cpuset in made:
            with contextlib.suppress(OSError):
                for tid in (cpuset / "tasks").read_text().split():
                    with contextlib.suppress(OSError):
                        (CPUSET_V1 / "tasks").write_text(tid)
            with contextlib.suppress(OSError):
                cpuset.rmdir()


def _machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine (/proc/stat)."""
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = cpu[3] + cpu[4]
    return sum(cpu) - idle, sum(cpu)


def wal_cost(
    db,
    storage,
    container: str,
    user: str,
    dbname: str,
    receiver: str,
    cfg=None,
    compare_per_commit: bool | None = None,
) -> dict[str, Any]:
    """pgbench TPS with WAL shipping on ÷ off, each side once per round in a rotating order,
    each run after a CHECKPOINT, each shipping run once the receiver has caught up; medians
    of the rounds and the median of each round's own ratio. "On" is codeb's receiver as
    deployed (bursts every codeb_backup_storage_wal_interval s). "Off" stops the receiver and
    Barman's minute timer (barman cron starts a receiver itself when none runs) and is
    checked to have no walsender. With CODEB_BACKUP_BENCH_COMPARE_PER_COMMIT (default on), a
    third side streams every commit at once (the receiver with interval 0, a runtime
    drop-in: a walsender connected all the time, woken by each commit), so one run shows what
    the bursts save. With the fleet's config, also the CPU seconds each kind of process used
    during each run (the walsender, pg_receivewal, the receiver, Barman, the db, pgbench) and
    the machine's busy share, and after each shipping run how far the slot was behind (bytes
    written on the db the receiver had not confirmed)."""
    rounds = int(os.environ.get("CODEB_BACKUP_BENCH_TPS_ROUNDS", "6"))
    seconds = int(os.environ.get("CODEB_BACKUP_BENCH_SECONDS", "15"))
    checkpoint = f"podman exec {container} psql -XtAq -U {user} -d postgres -c CHECKPOINT"
    if compare_per_commit is None:
        compare_per_commit = os.environ.get("CODEB_BACKUP_BENCH_COMPARE_PER_COMMIT", "1") == "1"
    cpu: dict[str, list[dict[str, float]]] = {"on": [], "off": [], "per_commit": []}
    lag_query = (
        "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), -1)::bigint "
        "FROM pg_replication_slots WHERE slot_name = 'codeb_barman'"
    )
    lags: dict[str, list[list[int]]] = {"on": [], "per_commit": []}
    streaming_in_off_runs: list[int] = []
    sql = f"podman exec {container} psql -XtAq -U {user} -d postgres -F ' ' -c "

    def senders() -> int:
        out = db.ssh(sql + shlex.quote("SELECT count(*) FROM pg_stat_replication")).stdout
        return int(out.strip() or -1)

    # Whether commits wait for the receiver, and what the db writes: the same on and off.
    settings = db.ssh(sql + shlex.quote(
        "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE "
        "name IN ('synchronous_standby_names', 'synchronous_commit', 'wal_level', "
        "'full_page_writes', 'wal_compression', 'checkpoint_timeout', 'max_wal_size')"
    )).stdout.strip()  # fmt: skip
    replication = db.ssh(sql + shlex.quote(
        "SELECT application_name, sync_state FROM pg_stat_replication"
    )).stdout.strip()  # fmt: skip
    receiver_args = storage.ssh("ps -eo args | grep '[c]odeb_barman_receiver'").stdout.strip()

    server = receiver.split("@", 1)[1]
    per_commit = (
        "[Service]\nExecStart=\nExecStart=/usr/bin/python3 "
        f"/usr/local/lib/codeb/codeb_barman_receiver.py receive {server} 0\n"
    )
    dropins = f"/run/systemd/system/{receiver}.service.d/bench-per-commit.conf"

    def run(side: str) -> float:
        # Off is off: the receiver's unit stopped, and Barman's minute timer too (barman cron
        # starts a receiver itself when none runs: with only the unit stopped, a cron run
        # during an "off" run streamed again), any receiver left stopped, no walsender.
        storage.ssh(
            f"systemctl stop codeb-barman-cron.timer codeb-barman-cron.service {receiver}; "
            f"runuser -u barman -- barman -q receive-wal --stop {server} || true; "
            + (
                f"for f in {dropins}; do mkdir -p $(dirname $f); "
                f"printf {shlex.quote(per_commit)} > $f; done; "
                if side == "per_commit"
                else f"rm -f {dropins}; "
            )
            + "systemctl daemon-reload",
            check=True,
        )
        if side != "off":
            storage.ssh(f"systemctl start codeb-barman-cron.timer {receiver}", check=True)
            if side == "per_commit":
                _streaming_caught_up(db, container, user)
            else:
                _burst_caught_up(storage, server)
        else:
            deadline = time.monotonic() + 30
            while senders() != 0 and time.monotonic() < deadline:
                time.sleep(0.5)
        db.ssh(checkpoint, check=True)
        before = _cpu_ticks(cfg) if cfg is not None else {}
        busy0, total0 = _machine_busy()
        tps = pgbench_tps(db, container, user, dbname, seconds)
        if cfg is not None:
            after = _cpu_ticks(cfg)
            busy1, total1 = _machine_busy()
            hz = os.sysconf("SC_CLK_TCK")
            used = {k: round((v - before.get(k, 0)) / hz, 2) for k, v in after.items()}
            used = {k: v for k, v in used.items() if v > 0}
            used["machine_busy_share"] = round((busy1 - busy0) / max(1, total1 - total0), 3)
            cpu[side].append(used)
        if side == "off":
            streaming_in_off_runs.append(senders())
        else:
            out = db.ssh(sql + shlex.quote(lag_query)).stdout.split()
            lags[side].append([int(x) for x in out if x.lstrip("-").isdigit()])
        return tps

    tps: dict[str, list[float]] = {"on": [], "off": [], "per_commit": []}
    order = []
    sides = ["on", "off", "per_commit"] if compare_per_commit else ["on", "off"]
    try:
        run("on")  # a warm-up run, not counted (caches, the table's first vacuum)
        for i in range(rounds):
            # Each round another order (a rotation, reversed every other round): no side
            # always first or always after the same one.
            k = i % len(sides)
            these = sides[k:] + sides[:k]
            if (i // len(sides)) % 2:
                these.reverse()
            order.append(these)
            for side in these:
                tps[side].append(run(side))
    finally:
        storage.ssh(
            f"rm -f {dropins}; systemctl daemon-reload; "
            f"systemctl start codeb-barman-cron.timer {receiver}"
        )
    on, off = tps["on"], tps["off"]

    def shipping_share(runs: list[dict[str, float]]) -> list[float]:
        """Per shipping run: the CPU the shipping took (the db's walsender, the storage
        server's pg_receivewal, receiver and Barman) ÷ the CPU of the db guest (its
        walsender included) and of the shipping's storage-side processes: what it took from
        the work pgbench measures when the two compete for the same CPUs."""
        out = []
        for r in runs:
            storage_side = r.get("pg_receivewal", 0) + r.get("barman", 0) + r.get("receiver", 0)
            total = r.get("db_guest", 0) + storage_side
            if total > 0:
                out.append(round((r.get("walsender", 0) + storage_side) / total, 4))
        return out

    assert streaming_in_off_runs and set(streaming_in_off_runs) == {0}, streaming_in_off_runs
    figures = {
        "pgbench_tps_wal_on": statistics.median(on),
        "pgbench_tps_wal_off": statistics.median(off),
        "pgbench_on_over_off": statistics.median(on) / statistics.median(off),
        "pgbench_round_ratios": [a / b for a, b in zip(on, off, strict=True)],
        "pgbench_round_ratio_median": statistics.median(
            a / b for a, b in zip(on, off, strict=True)
        ),
        "pgbench_tps_on_rounds": on,
        "pgbench_tps_off_rounds": off,
        "pgbench_order": order,
        "pgbench_seconds": seconds,
        "pgbench_cpu_s_on_rounds": cpu["on"],
        "pgbench_cpu_s_off_rounds": cpu["off"],
        "pgbench_shipping_cpu_share_on_rounds": shipping_share(cpu["on"]),
        "pgbench_receiver_lag_after_on_runs": lags["on"],
        "pgbench_walsenders_after_off_runs": streaming_in_off_runs,
        "pgbench_db_settings": settings,
        "pgbench_replication": replication,
        "pgbench_receiver_args": receiver_args,
    }
    if compare_per_commit:
        each = tps["per_commit"]
        figures.update({
            "pgbench_tps_wal_per_commit": statistics.median(each),
            "pgbench_per_commit_over_off": statistics.median(each) / statistics.median(off),
            "pgbench_tps_per_commit_rounds": each,
            "pgbench_cpu_s_per_commit_rounds": cpu["per_commit"],
            "pgbench_shipping_cpu_share_per_commit_rounds": shipping_share(cpu["per_commit"]),
            "pgbench_receiver_lag_after_per_commit_runs": lags["per_commit"],
        })  # fmt: skip
    return figures


@pytest.mark.skipif(
    not os.environ.get("CODEB_BACKUP_BENCH"), reason="bench/restore.py sets CODEB_BACKUP_BENCH"
)
def test_bench_restore_breakdown_and_wal_cost(stack, fleet):  # noqa: F811
    api, deps, created, storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    user = url.split("//", 1)[1].split(":", 1)[0]
    dbname = url.rsplit("/", 1)[1]
    rounds = int(os.environ.get("CODEB_BACKUP_BENCH_ROUNDS", "2"))
    figures: dict[str, Any] = {}
    with api.client() as c, deps.db.connection_context():
        r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
        t0 = time.monotonic()
        op = wait_operation(c, start(r), timeout=900)
        figures["backup_before_restores_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        b = Backup.get_by_id(op["result"]["backup"]["id"])
        api_s, hand_s, parts, hand_switch_s, order = [], [], [], [], []
        log_from = storage.ssh("wc -l < /var/log/barman/barman.log").stdout.strip() or "0"

        def through_api(i: int, when: dt.datetime) -> None:
            posted, t0 = time.time(), time.monotonic()
            r = c.post(f"/api/backups/{b.id}/restore", json={"target_time": when.isoformat() + "Z"})
            answered = time.time()
            op_id = start(r)
            op = wait_operation(c, op_id, timeout=900)
            api_s.append(time.monotonic() - t0)
            assert op["status"] == "succeeded", op.get("error")
            parts.append(breakdown(op_id, posted, answered, time.time()))

        def by_hand(i: int, when: dt.datetime) -> None:
            args = " ".join(
                shlex.quote(a)
                for a in (f"byhand-{i}", str(39900 + i), when.strftime("%Y-%m-%d %H:%M:%S+00:00"),
                          b.barman_id, "shop-staging-db", backups.POSTGRES_IMAGE)
            )  # fmt: skip
            t0 = time.monotonic()
            script = BY_HAND_RESTORE.format(user=user)
            out = storage.ssh(f"bash -s -- {args} <<'EOS'\n{script}EOS", check=True).stdout
            hand_s.append(time.monotonic() - t0)
            switched = [ln for ln in out.splitlines() if ln.startswith("switch_wal_s=")]
            if switched:
                hand_switch_s.append(float(switched[-1].split("=", 1)[1]))

        whens = []
        for i in range(rounds):
            psql(url, f"CREATE TABLE IF NOT EXISTS bench (i int); INSERT INTO bench VALUES ({i})")
            time.sleep(1.2)
            when = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
            whens.append(when)
            # Which side goes first alternates (as bench/redeploy.py does): the second one
            # may find the archiver or the caches warm from the first.
            sides = [("api", through_api), ("by_hand", by_hand)]
            if i % 2:
                sides.reverse()
            order.append([name for name, _ in sides])
            for _name, side in sides:
                side(i, when)
        figures["pitr_api_s"] = statistics.median(api_s)
        figures["pitr_by_hand_s"] = statistics.median(hand_s)
        figures["pitr_api_over_by_hand"] = figures["pitr_api_s"] / figures["pitr_by_hand_s"]
        figures["pitr_api_rounds_s"] = api_s
        figures["pitr_by_hand_rounds_s"] = hand_s
        figures["pitr_by_hand_switch_wal_s"] = hand_switch_s
        figures["pitr_order"] = order
        figures["pitr_api_breakdown"] = parts
        figures["loadavg_1m_after_restores"] = os.getloadavg()[0]
        if rounds >= 2:
            # A target the archive already covers (round 0's: the later rounds' commits and
            # switches filed WAL past it): the module reads Barman's catalogue and that one
            # segment, and needs no commit and no switch. The restored data is as of it.
            t0 = time.monotonic()
            r = c.post(
                f"/api/backups/{b.id}/restore", json={"target_time": whens[0].isoformat() + "Z"}
            )
            op = wait_operation(c, start(r), timeout=900)
            figures["pitr_api_covered_s"] = time.monotonic() - t0
            assert op["status"] == "succeeded", op.get("error")
            (task,) = [e for e in OperationEvent.select().where(
                (OperationEvent.operation == op["id"]) & (OperationEvent.event == "runner_on_ok")
            ) if (e.task or "").startswith("Restore (barman")]  # fmt: skip
            figures["pitr_api_covered_steps"] = (task.data or {}).get("msg")
            restored = op["result"]["restore"]
            pw = url.split("//", 1)[1].split(":", 1)[1].split("@", 1)[0]
            restored_url = f"postgresql://{user}:{pw}@{storage.ip}:{restored['port']}/{dbname}"
            assert (
                psql(restored_url, "SELECT string_agg(i::text, ',' ORDER BY i) FROM bench") == "0"
            )
        # Barman's own log of the restores (switch, archive, pg_receivewal's segments): where
        # a slow WAL switch waited.
        figures["barman_log"] = storage.ssh(
            f"tail -n +{int(log_from) + 1} /var/log/barman/barman.log | "
            "grep -Ei 'switch|checkpoint|closed|archiv|segment|waiting|receive' | tail -n 80"
        ).stdout.splitlines()

        # A base backup's last WAL file closed and filed: Barman's switch-wal --force
        # --archive (what the backup did before) ÷ the shared close (commit, pg_switch_wal(),
        # commit, archive-wal until filed), alternating, on the db idle as after a backup.
        close_old, close_new = [], []
        old_way = ("runuser -u barman -- barman -q switch-wal --force --archive "
                   "--archive-timeout 60 shop-staging-db")  # fmt: skip
        new_way = "python3 /usr/local/lib/codeb/codeb_barman_wal.py close shop-staging-db 60"
        for i in range(4):
            for way, into in [(old_way, close_old), (new_way, close_new)][:: 1 if i % 2 else -1]:
                time.sleep(2)
                t0 = time.monotonic()
                storage.ssh(way, check=True)
                into.append(round(time.monotonic() - t0, 2))
        figures["wal_close_switch_wal_archive_s"] = close_old
        figures["wal_close_shared_s"] = close_new
        r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
        t0 = time.monotonic()
        op = wait_operation(c, start(r), timeout=900)
        figures["backup_after_restores_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")

        db = fleet["db"]
        container = "shop-staging-db"
        db.ssh(f"podman exec {container} pgbench -i -q -s 5 -U {user} {dbname}", check=True)
        receiver = "codeb-barman-receive-wal@shop-staging-db"
        figures.update(wal_cost(db, storage, container, user, dbname, receiver, fleet.config))
        if os.environ.get("CODEB_BACKUP_BENCH_SPLIT_CPUS") == "1" and CPUSET_V1.is_dir():
            # The same on ÷ off with the db and the storage server each on a CPU of its own.
            with guests_on_their_own_cpus(fleet.config, {"db": "0", "storage": "1"}):
                split = wal_cost(
                    db, storage, container, user, dbname, receiver, fleet.config, False
                )
            figures.update({f"split_cpus_{k}": v for k, v in split.items()})
        figures["loadavg_1m"] = os.getloadavg()[0]
        figures["measured_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print("restore bench:", json.dumps(figures, sort_keys=True, default=str))
    out = os.environ.get("CODEB_BACKUP_FIGURES")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2, sort_keys=True, default=str))
