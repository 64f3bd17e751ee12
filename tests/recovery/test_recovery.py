"""codeb's own state off the control server: a real Litestream replica on a real S3 server
(SeaweedFS on loopback), the recovery bundle, and a restore into an empty data directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeb.features.recovery import bundle, replica, service
from codeb.store.models import Environment, Operation
from tests.s3 import S3Server, seaweedfs
from tests.support import live_api, make_settings

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("s3")) as server:
        yield server


def replica_settings(s3: S3Server, data_dir: Path, path: str) -> dict[str, object]:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    replica.write_credentials(
        data_dir / "replica.credentials", s3.access_key_id, s3.secret_access_key
    )
    return {"replica_url": f"s3://{s3.bucket}/{path}", "replica_endpoint": s3.endpoint}


def wait_current(settings, timeout: float = 45) -> replica.Position:
    """Until the replica holds the local database's newest transaction (bounded)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = replica.position(
                service.litestream_config(settings), service.sqlite_path(settings)
            )
            if last.behind == 0 and last.replica_txid:
                return last
        except replica.ReplicaError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the replica did not catch up in {timeout} s: {last}")


def create_project(client, name: str) -> dict:
    answer = client.post("/api/projects", json={"name": name})
    assert answer.status_code == 201, answer.text
    return answer.json()


def passwords(deps) -> dict[str, str]:
    with deps.db.connection_context():
        return {
            f"{env.project.name}/{env.name}": deps.box.decrypt(env.db_password)
            for env in Environment.select()
        }


def run_installation(tmp_path: Path, s3: S3Server, name: str, projects: list[str]):
    """A codeb with replication on: projects created, a bundle exported, one more project
    after the export; returns (settings overrides, bundle path, passwords) once current."""
    data = tmp_path / name
    overrides = replica_settings(s3, data, f"{name}/codeb.db")
    out = tmp_path / f"{name}.bundle"
    # The serving process starts the replicator itself (a background helper of the feature).
    with live_api(data, **overrides) as live, live.client() as c:
        assert service.replicator_of(live.deps).running
        for project in projects[:-1]:
            create_project(c, project)
        exported = service.export_bundle(live.deps, out, PASSPHRASE)
        assert exported["replica"]["url"] == overrides["replica_url"]
        # An operation in flight when the server dies (the replica carries it).
        with live.deps.db.connection_context(), live.deps.write():
            Operation.create(id=f"op_inflight_{name}", kind="server_stats", status="running",
                             requested_by="api", started_at=live.deps.clock.now())  # fmt: skip
        # Written after the bundle: the replica, not the bundle, carries it.
        create_project(c, projects[-1])
        wait_current(live.deps.settings)
        state = c.get("/api/recovery/status").json()
        assert state["state"] == "ok", state
        assert state["replica"]["transactions_behind"] == 0, state
        assert state["bundle"]["sha256"] == exported["sha256"], state
        secrets = passwords(live.deps)
    return overrides, out, secrets


def test_bundle_is_sealed_and_tells_a_wrong_passphrase_from_damage(tmp_path):
    sealed = bundle.seal({"files": {"k": "dmFsdWU="}}, PASSPHRASE)
    assert b"dmFsdWU=" not in sealed
    assert bundle.open_sealed(sealed, PASSPHRASE) == {"files": {"k": "dmFsdWU="}}
    with pytest.raises(bundle.WrongPassphrase):
        bundle.open_sealed(sealed, "another passphrase!")
    damaged = bytearray(sealed)
    damaged[-5] ^= 0x01
    with pytest.raises(bundle.DamagedBundle, match="fail authentication"):
        bundle.open_sealed(bytes(damaged), PASSPHRASE)
    with pytest.raises(bundle.DamagedBundle):
        bundle.open_sealed(sealed[: len(bundle.MAGIC) + 10], PASSPHRASE)
    with pytest.raises(bundle.NotABundle):
        bundle.open_sealed(b"SQLite format 3\x00", PASSPHRASE)
    with pytest.raises(bundle.BundleError, match="at least"):
        bundle.seal({}, "short")


def test_codeb_is_rebuilt_from_the_replica_and_the_bundle(tmp_path, s3):
    overrides, out, secrets = run_installation(tmp_path, s3, "first", ["shop", "blog", "late"])
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    data = tmp_path / "first"
    old_public_key = (data / "ssh" / "id_ed25519.pub").read_text()

    # The control server is lost: its data directory is gone, secrets and all.
    for path in sorted(data.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    data.rmdir()

    settings = make_settings(data)
    summary = service.restore_bundle(settings, out, PASSPHRASE)
    assert summary["projects"] == 3
    assert summary["entries_since_bundle"] >= 1  # "late" was only in the replica
    for name in ("secret.key", "log.key", "codeb.db", "replica.credentials", "ssh/id_ed25519"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert (data / "ssh" / "id_ed25519.pub").read_text() == old_public_key

    with live_api(data, **overrides) as live, live.client() as c:
        names = {p["name"] for p in c.get("/api/projects").json()["projects"]}
        assert names == {"shop", "blog", "late"}
        assert passwords(live.deps) == secrets
        inflight = c.get("/api/operations/op_inflight_first").json()
        assert inflight["status"] == "interrupted", inflight
        verified = c.get("/api/protection/logs/verify").json()
        assert verified["valid"], verified
        logs = c.get("/api/protection/logs", params={"operation": "recovery_restore"}).json()
        assert logs["logs"], logs
        # The rebuilt codeb replicates again, onto the same replica.
        create_project(c, "after")
        wait_current(live.deps.settings)


def test_a_wrong_passphrase_a_damaged_bundle_or_another_installation_change_nothing(tmp_path, s3):
    _, out, _ = run_installation(tmp_path, s3, "alpha", ["one", "two"])
    other, _, _ = run_installation(tmp_path, s3, "beta", ["three", "four"])
    target = tmp_path / "new"
    damaged = tmp_path / "damaged.bundle"
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    damaged.write_bytes(bytes(raw))
    cases = [
        (make_settings(target), out, "not the passphrase", "wrong passphrase"),
        (make_settings(target), damaged, PASSPHRASE, "damaged"),
        # alpha's bundle against beta's replica: another installation's log and passwords.
        (make_settings(target, **{k: v for k, v in other.items()}), out, PASSPHRASE, "another"),
    ]
    for settings, bundle_file, passphrase, message in cases:
        with pytest.raises(service.RecoveryError, match=message):
            service.restore_bundle(settings, bundle_file, passphrase)
        assert not target.exists() or not any(
            p for p in target.iterdir() if not p.name.startswith(".recovery-")
        ), list(target.iterdir())


def test_restoring_over_existing_state_needs_force_and_keeps_the_old_files(tmp_path, s3):
    overrides, out, _ = run_installation(tmp_path, s3, "gamma", ["five", "six"])
    data = tmp_path / "gamma"
    with pytest.raises(service.RecoveryError, match="already holds state"):
        service.restore_bundle(make_settings(data), out, PASSPHRASE)
    summary = service.restore_bundle(make_settings(data), out, PASSPHRASE, force=True)
    aside = Path(summary["moved_aside"])
    assert (aside / "codeb.db").exists() and (aside / "secret.key").exists()
    with live_api(data, **overrides) as live, live.client() as c:
        forced = c.get("/api/protection/logs", params={"operation": "recovery_restore"}).json()
        assert forced["logs"][0]["details"]["forced"] is True


def test_status_alarms_when_the_replicator_stops_and_warns_without_a_replica(tmp_path, s3):
    data = tmp_path / "delta"
    overrides = replica_settings(s3, data, "delta/codeb.db")
    with live_api(data, **overrides) as live, live.client() as c:
        wait_current(live.deps.settings)
        fine = c.get("/api/recovery/status").json()
        assert fine["replica"]["state"] == "ok", fine
        assert fine["bundle"]["state"] == "warning" and "ever exported" in fine["bundle"]["reason"]
        assert fine["state"] == "warning"
        scraped = c.get("/api/metrics").text
        assert 'codeb_recovery_state{part="replica"} 0.0' in scraped, scraped[-2000:]
        assert 'codeb_recovery_state{part="bundle"} 1.0' in scraped
        assert "codeb_recovery_replica_transactions_behind 0.0" in scraped
        service.replicator_of(live.deps).shutdown()
        assert 'codeb_recovery_state{part="replica"} 2.0' in c.get("/api/metrics").text
        stopped = c.get("/api/recovery/status").json()
        assert stopped["state"] == "alarm" and stopped["replica"]["state"] == "alarm", stopped
        readonly = live.new_key("watcher", "readonly")
        with live.client(readonly) as ro:
            assert ro.get("/api/recovery/status").status_code == 200
    config = service.litestream_config(make_settings(data))
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert s3.secret_access_key not in (data / "litestream" / "litestream.log").read_text()
    with live_api(tmp_path / "plain") as live, live.client() as c:
        plain = c.get("/api/recovery/status").json()
        assert plain["replica"] == {
            "configured": False,
            "state": "warning",
            "reason": plain["replica"]["reason"],
        }
        assert "not replicated" in plain["replica"]["reason"]


def codeb_cli(data: Path, overrides: dict[str, object], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEB_")}
    env.update({f"CODEB_{k.upper()}": str(v) for k, v in overrides.items()})
    env["CODEB_DATA_DIR"] = str(data)
    return subprocess.run(
        [sys.executable, "-m", "codeb", "recovery", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_exports_and_restores_without_the_passphrase_on_its_command_line(tmp_path, s3):
    data = tmp_path / "cli"
    overrides = replica_settings(s3, data, "cli/codeb.db")
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    out = tmp_path / "cli.bundle"
    with live_api(data, **overrides) as live:
        with live.client() as c:
            create_project(c, "cli-shop")
        exported = codeb_cli(data, overrides, "export", "--out", str(out),
                             "--passphrase-file", str(secret), "--json")  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        assert PASSPHRASE not in exported.stdout + exported.stderr
        again = codeb_cli(data, overrides, "export", "--out", str(out),
                          "--passphrase-file", str(secret))  # fmt: skip
        assert again.returncode == 2 and "exists" in again.stderr
        wait_current(live.deps.settings)
    fresh = tmp_path / "cli-new"
    restored = codeb_cli(fresh, {}, "restore", "--bundle", str(out),
                         "--passphrase-file", str(secret))  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert "projects" in restored.stdout and "chain verified" in restored.stdout
    refused = codeb_cli(fresh, {}, "restore", "--bundle", str(out),
                        "--passphrase-file", str(secret))  # fmt: skip
    assert refused.returncode == 2 and "already holds state" in refused.stderr
    with live_api(fresh) as live, live.client() as c:
        assert [p["name"] for p in c.get("/api/projects").json()["projects"]] == ["cli-shop"]
