"""Export the recovery bundle, restore codeb on a new control server from the replica and the
bundle, and say whether both are current.

A restore checks before it writes anything: the bundle opens (passphrase), the replica
restores, the restored operation log verifies under the bundle's log key and still holds the
head the bundle recorded (so the replica is this installation's and not older than the
bundle), and a stored password decrypts with the bundle's Fernet key. Only then are the keys
and the database put in place, and the restore itself is logged."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from codeb import __version__
from codeb.config import Settings
from codeb.errors import CodebError
from codeb.features.recovery import bundle, replica
from codeb.metrics import FeatureCollector
from codeb.protection import audit
from codeb.secretbox import SecretBox
from codeb.store.db import is_sqlite, open_database
from codeb.store.models import Environment, OperationLog, Project

EXPORT_OPERATION = "recovery_export"
RESTORE_OPERATION = "recovery_restore"
# The files a bundle carries, by name, and where they live under the settings.
_FILES = ("secret_key", "log_key", "ssh_private_key", "ssh_public_key", "known_hosts")


class RecoveryError(CodebError):
    """A recovery step that cannot go on; nothing was changed."""

    status = 409
    code = "recovery_failed"


def _paths(settings: Settings) -> dict[str, Path]:
    ssh = settings.resolved_ssh_key_file
    return {
        "secret_key": settings.resolved_secret_key_file,
        "log_key": settings.resolved_log_key_file,
        "ssh_private_key": ssh,
        "ssh_public_key": ssh.with_name(ssh.name + ".pub"),
        "known_hosts": settings.data_dir / "ssh" / "known_hosts",
    }


def sqlite_path(settings: Settings) -> Path | None:
    url = settings.resolved_database_url
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def replica_target(settings: Settings) -> replica.ReplicaTarget | None:
    """The configured replica, or None when codeb's state is not replicated by codeb."""
    if not settings.replica_url or sqlite_path(settings) is None:
        return None
    key_id, secret = replica.read_credentials(settings.resolved_replica_credentials_file)
    return replica.ReplicaTarget(
        settings.replica_url, settings.replica_endpoint, key_id, secret, settings.replica_region
    )


def litestream_config(settings: Settings) -> Path:
    return settings.data_dir / "litestream" / "litestream.yml"


def start_replicator(settings: Settings) -> replica.Replicator | None:
    """Write Litestream's config and start replicating (serving process only)."""
    target = replica_target(settings)
    db_path = sqlite_path(settings)
    if target is None or db_path is None:
        return None
    config = litestream_config(settings)
    replica.write_config(config, db_path, target)
    replicator = replica.Replicator(config)
    replicator.start()
    return replicator


def start_replicator_for(deps: Any) -> replica.Replicator | None:
    """The serving process's replicator (Wiring.background): None without a replica."""
    return start_replicator(deps.settings)


def replicator_of(deps: Any) -> replica.Replicator | None:
    return deps.background.get("replicator")


def _head() -> tuple[int, str] | None:
    """The log's newest entry, on the caller's open connection (connection_context() here
    would close the caller's connection on exit)."""
    row = (
        OperationLog.select(OperationLog.id, OperationLog.entry_hash)
        .order_by(OperationLog.id.desc())
        .first()
    )
    return (row.id, row.entry_hash) if row else None


def export_bundle(deps: Any, out: Path, passphrase: str, *, force: bool = False) -> dict[str, Any]:
    """Seal the keys, the replica's address and credentials and the log's head into `out`
    (0600; an existing file is kept unless `force`). Logged without any secret."""
    settings: Settings = deps.settings
    bundle.check_passphrase(passphrase)
    paths = _paths(settings)
    files = {
        name: base64.b64encode(path.read_bytes()).decode()
        for name, path in paths.items()
        if path.exists()
    }
    for required in ("secret_key", "log_key"):
        if required not in files:
            raise RecoveryError(f"{paths[required]} is missing: nothing to export")
    target = replica_target(settings)
    head = _head()
    now = deps.clock.now()
    payload = {
        "format": 1,
        "codeb_version": __version__,
        "exported_at": now.isoformat(),
        "files": files,
        "replica": None
        if target is None
        else {
            **target.public(),
            "access_key_id": target.access_key_id,
            "secret_access_key": target.secret_access_key,
        },
        "log_head": None if head is None else {"id": head[0], "hash": head[1]},
    }
    sealed = bundle.seal(payload, passphrase)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(out, flags, 0o600)
    except FileExistsError:
        raise RecoveryError(f"{out} exists; choose another file or pass --force") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(sealed)
    digest = hashlib.sha256(sealed).hexdigest()
    with deps.write():
        audit.record(
            deps.db,
            operation=EXPORT_OPERATION,
            danger_level=0,
            status="executed",
            requested_by="cli",
            key_name=None,
            now=now,
            target=str(out),
            details={
                "sha256": digest,
                "log_head_id": None if head is None else head[0],
                "replica": None if target is None else target.url,
                "files": sorted(files),
            },
            executed=True,
        )
    return {
        "path": str(out),
        "sha256": digest,
        "exported_at": now.isoformat(),
        "replica": None if target is None else target.public(),
        "files": sorted(files),
    }


def _existing_state(settings: Settings) -> list[Path]:
    candidates = [*_paths(settings).values(), settings.resolved_log_anchor_file]
    db_path = sqlite_path(settings)
    if db_path is not None:
        candidates.append(db_path)
    return [p for p in candidates if p.exists()]


def _check_restored(db_file: Path, payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Open the restored copy alone and prove it belongs to the bundle; raise otherwise."""
    files = payload["files"]
    log_key = workdir / "log.key"
    replica.write_private(log_key, base64.b64decode(files["log_key"]))
    anchor = workdir / "log.anchor"
    head = payload.get("log_head")
    if head:
        replica.write_private(anchor, f"{head['id']} {head['hash']}\n".encode())
    db = open_database(f"sqlite:///{db_file}")
    try:
        audit.bind(db, log_key, anchor)
        with db.connection_context():
            report = audit.verify_report(db)
            if report["first_bad_id"] is not None:
                raise RecoveryError(
                    "the replica's operation log does not verify with this bundle's log key: "
                    "the replica belongs to another installation, or was altered",
                    {"first_bad_id": report["first_bad_id"]},
                )
            if head and not report["valid"]:
                raise RecoveryError(
                    "the replica does not hold the log entry the bundle recorded: it is older "
                    "than the bundle or belongs to another installation",
                    {"bundle_head_id": head["id"]},
                )
            box = SecretBox(base64.b64decode(files["secret_key"]).strip())
            sample = Environment.select(Environment.db_password).first()
            if sample is not None:
                try:
                    box.decrypt(sample.db_password)
                except Exception:
                    raise RecoveryError(
                        "the replica's stored passwords do not decrypt with this bundle's key: "
                        "they belong to another installation"
                    ) from None
            projects = Project.select().where(Project.status != "deleted").count()
            new_head = _head()
    finally:
        db.close()
    return {
        "projects": projects,
        "log_entries": report["checked"],
        "entries_since_bundle": report["unanchored"],
        "head": new_head,
    }


def restore_bundle(
    settings: Settings,
    bundle_file: Path,
    passphrase: str,
    *,
    force: bool = False,
    clock_now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Rebuild codeb's state in `settings.data_dir` from the bundle and the newest replica."""
    db_path = sqlite_path(settings)
    if db_path is None:
        raise RecoveryError(
            "codeb's database is PostgreSQL here (CODEB_DATABASE_URL): restore it with "
            "PostgreSQL's own tools, then restore only the keys"
        )
    existing = _existing_state(settings)
    if existing and not force:
        raise RecoveryError(
            "codeb's data directory already holds state; restoring over it needs --force "
            "(the old files are moved aside, not deleted)",
            {"found": [str(p) for p in existing]},
        )
    try:
        sealed = bundle_file.read_bytes()
    except OSError as exc:
        raise RecoveryError(f"cannot read {bundle_file}: {exc.strerror}") from None
    try:
        payload = bundle.open_sealed(sealed, passphrase)
    except bundle.BundleError as exc:
        raise RecoveryError(str(exc)) from None
    if payload.get("format") != 1 or not isinstance(payload.get("files"), dict):
        raise RecoveryError("this bundle's format is not known to this codeb")
    source = payload.get("replica")
    if not source:
        raise RecoveryError("this bundle names no replica: the state was never replicated")
    target = replica.ReplicaTarget(
        settings.replica_url or source["url"],
        settings.replica_endpoint or source["endpoint"],
        source["access_key_id"],
        source["secret_access_key"],
        source.get("region", "us-east-1"),
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    workdir = Path(tempfile.mkdtemp(prefix=".recovery-", dir=settings.data_dir))
    try:
        config = workdir / "litestream.yml"
        replica.write_config(config, db_path, target)
        restored = workdir / "codeb.db"
        try:
            replica.restore(config, db_path, restored)
        except replica.ReplicaError as exc:
            raise RecoveryError(f"the replica could not be restored: {exc}") from None
        summary = _check_restored(restored, payload, workdir)
        moved_aside = _move_aside(settings, existing) if existing else None
        _install(settings, payload, target, restored, db_path, summary["head"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    digest = hashlib.sha256(sealed).hexdigest()
    db = open_database(settings.resolved_database_url)
    try:
        audit.bind(db, settings.resolved_log_key_file, settings.resolved_log_anchor_file)
        with db.connection_context():
            with db.atomic():
                audit.record(
                    db,
                    operation=RESTORE_OPERATION,
                    danger_level=0,
                    status="executed",
                    requested_by="cli",
                    key_name=None,
                    now=clock_now or dt.datetime.now(dt.UTC),
                    target=target.url,
                    details={
                        "bundle_sha256": digest,
                        "forced": bool(existing),
                        "moved_aside": moved_aside,
                        "entries_since_bundle": summary["entries_since_bundle"],
                    },
                    executed=True,
                )
            audit.anchor_pending(db)
    finally:
        db.close()
    return {
        **{k: v for k, v in summary.items() if k != "head"},
        "replica": target.public(),
        "moved_aside": moved_aside,
        "data_dir": str(settings.data_dir),
    }


def _move_aside(settings: Settings, existing: list[Path]) -> str:
    aside = settings.data_dir / f"replaced-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    aside.mkdir(mode=0o700)
    for path in existing:
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if p.exists():
                shutil.move(str(p), aside / p.name)
    return str(aside)


def _install(
    settings: Settings,
    payload: dict[str, Any],
    target: replica.ReplicaTarget,
    restored: Path,
    db_path: Path,
    head: tuple[int, str] | None,
) -> None:
    paths = _paths(settings)
    for name, encoded in payload["files"].items():
        if name not in _FILES:
            continue
        data = base64.b64decode(encoded)
        if name == "ssh_public_key":
            paths[name].parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            paths[name].write_bytes(data)
        else:
            replica.write_private(paths[name], data)
    replica.write_credentials(
        settings.resolved_replica_credentials_file, target.access_key_id, target.secret_access_key
    )
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(restored, 0o600)
    os.replace(restored, db_path)
    anchor_lines = []
    if payload.get("log_head"):
        anchor_lines.append(f"{payload['log_head']['id']} {payload['log_head']['hash']}\n")
    if head is not None:
        anchor_lines.append(f"{head[0]} {head[1]}\n")
    replica.write_private(settings.resolved_log_anchor_file, "".join(anchor_lines).encode())


def status(deps: Any, replicator: replica.Replicator | None) -> dict[str, Any]:
    """Whether codeb's own state could be rebuilt now: the replica's lag and the bundle's age,
    each ok/warning/alarm with the reason."""
    settings: Settings = deps.settings
    now = _naive_utc(deps.clock.now())
    return _overall(
        {
            "replica": _replica_status(deps.db, settings, replicator, now),
            "bundle": _bundle_status(settings, now),
        }
    )


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    """codeb's clock and rows are naive UTC; Litestream's times carry a zone."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


_RANK = {"ok": 0, "warning": 1, "alarm": 2}


def _overall(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    worst = max(parts.values(), key=lambda p: _RANK[p["state"]])
    return {"state": worst["state"], **parts}


def _replica_status(
    db: Any, settings: Settings, replicator: replica.Replicator | None, now: dt.datetime
) -> dict[str, Any]:
    if not is_sqlite(db):
        return {
            "configured": False,
            "state": "ok",
            "reason": "codeb's database is PostgreSQL: its own backups cover it",
        }
    if not settings.replica_url:
        return {
            "configured": False,
            "state": "warning",
            "reason": "codeb's state is not replicated (CODEB_REPLICA_URL is empty): "
            "losing this server loses it",
        }
    base = {
        "configured": True,
        "url": settings.replica_url,
        "max_lag_s": settings.replica_max_lag_s,
    }
    if replicator is None or not replicator.running:
        last = replicator.last_exit if replicator else None
        return {**base, "state": "alarm", "reason": last or "the replicator is not running"}
    try:
        pos = replica.position(litestream_config(settings), sqlite_path(settings))
    except replica.ReplicaError as exc:
        return {**base, "state": "alarm", "reason": str(exc)}
    behind = pos.behind
    lag_s = 0.0
    if behind is None:
        lag_s = None
    elif behind > 0 and pos.replica_updated_at is not None:
        lag_s = max(0.0, (_naive_utc(now) - _naive_utc(pos.replica_updated_at)).total_seconds())
    answer = {
        **base,
        "local_txid": pos.local_txid,
        "replica_txid": pos.replica_txid,
        "replica_updated_at": pos.replica_updated_at.isoformat()
        if pos.replica_updated_at
        else None,
        "transactions_behind": behind,
        "lag_s": lag_s,
        "restarts": replicator.restarts,
    }
    if pos.replica_txid is None:
        return {**answer, "state": "alarm", "reason": "the replica holds nothing yet"}
    if behind and (lag_s is None or lag_s > settings.replica_max_lag_s):
        return {
            **answer,
            "state": "alarm",
            "reason": f"the replica is {behind} transactions and {lag_s:.0f} s behind",
        }
    return {**answer, "state": "ok", "reason": "the replica is current"}


def _bundle_status(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    row = (
        OperationLog.select(OperationLog.created_at, OperationLog.details)
        .where(OperationLog.operation == EXPORT_OPERATION)
        .order_by(OperationLog.id.desc())
        .first()
    )
    max_days = settings.recovery_bundle_max_age_days
    if row is None:
        return {
            "last_exported_at": None,
            "state": "warning",
            "reason": "no recovery bundle was ever exported (codeb recovery export)",
        }
    exported = _naive_utc(row.created_at)
    age_days = (now - exported).total_seconds() / 86400
    answer = {
        "last_exported_at": exported.isoformat(),
        "age_days": round(age_days, 2),
        "sha256": (row.details or {}).get("sha256"),
        "max_age_days": max_days,
    }
    if age_days > max_days:
        return {
            **answer,
            "state": "warning",
            "reason": f"the recovery bundle is {age_days:.0f} days old (keys or the replica "
            "may have changed since): export a new one",
        }
    return {**answer, "state": "ok", "reason": "a recovery bundle was exported"}


_STATE_VALUE = {"ok": 0, "warning": 1, "alarm": 2}


def _collect_metrics(deps: Any) -> list[Any]:
    """codeb's own recoverability at scrape time (two short Litestream reads when a replica
    is configured)."""
    report = status(deps, replicator_of(deps))
    state = GaugeMetricFamily(
        "codeb_recovery_state",
        "0 ok, 1 warning, 2 alarm: the replica of codeb's database and the recovery bundle",
        labels=["part"],
    )
    for part in ("replica", "bundle"):
        state.add_metric([part], _STATE_VALUE[report[part]["state"]])
    families = [state]
    replica_part = report["replica"]
    if replica_part.get("transactions_behind") is not None:
        behind = GaugeMetricFamily(
            "codeb_recovery_replica_transactions_behind",
            "transactions of codeb's database not yet in the replica",
        )
        behind.add_metric([], replica_part["transactions_behind"])
        families.append(behind)
    if replica_part.get("lag_s") is not None:
        lag = GaugeMetricFamily(
            "codeb_recovery_replica_lag_seconds",
            "how long the replica has been behind (0 when current)",
        )
        lag.add_metric([], replica_part["lag_s"])
        families.append(lag)
    if report["bundle"].get("age_days") is not None:
        age = GaugeMetricFamily(
            "codeb_recovery_bundle_age_seconds", "age of the last exported recovery bundle"
        )
        age.add_metric([], report["bundle"]["age_days"] * 86400)
        families.append(age)
    return families


METRICS = FeatureCollector(
    name="recovery",
    collect=_collect_metrics,
    description="the replica of codeb's database and the recovery bundle",
)
