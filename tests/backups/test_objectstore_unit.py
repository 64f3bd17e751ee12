"""The storage server's S3 keys (codeb/features/backups/objectstore.py) without a fleet: one
admin, one registry and one per environment per storage server, each created once, its
secret stored encrypted; an environment's key may act on its own bucket only; bucket names
are S3-valid and built from ids; the registry key pair is offered to the replica's
credentials file (0600) once and never over a file already there."""

from __future__ import annotations

import re

import pytest

from codeb.app import build_deps
from codeb.features.backups import objectstore
from codeb.store.models import ObjectStoreKey, RedisCopy, Server
from tests.support import make_settings


@pytest.fixture
def deps(tmp_path):
    deps = build_deps(make_settings(tmp_path))
    with deps.db.connection_context():
        yield deps


def test_keys_per_scope_created_once_and_encrypted(deps):
    with deps.write():
        admin = objectstore.key_for(deps, "storage", "admin")
        registry = objectstore.key_for(deps, "storage", "registry")
        env = objectstore.key_for(deps, "storage", "environment", "prj_0123abcd", "production")
        again = objectstore.key_for(deps, "storage", "environment", "prj_0123abcd", "production")
        other = objectstore.key_for(deps, "storage", "environment", "prj_0123abcd", "staging")
        elsewhere = objectstore.key_for(deps, "storage2", "admin")
    assert again.id == env.id and ObjectStoreKey.select().count() == 5
    keys = [admin, registry, env, other, elsewhere]
    assert len({k.access_key_id for k in keys}) == 5
    for k in keys:
        secret = deps.box.decrypt(k.secret)
        assert secret not in k.secret and len(secret) >= 30
        assert re.fullmatch(r"[A-Z0-9]{16,40}", k.access_key_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]{30,128}", secret)  # the role's patterns
        assert secret not in repr(objectstore.credentials(deps, k))
    assert registry.bucket == "codeb" and admin.bucket is None
    assert env.bucket == "redis-prj-0123abcd-production" != other.bucket


def test_an_environment_key_acts_on_its_own_bucket_only(deps):
    with deps.write():
        env = objectstore.key_for(deps, "storage", "environment", "prj_1", "staging")
        admin = objectstore.key_for(deps, "storage", "admin")
    identity = objectstore._identity(deps, env)
    assert identity["actions"] == [f"Read:{env.bucket}", f"Write:{env.bucket}",
                                   f"List:{env.bucket}"]  # fmt: skip
    assert objectstore._identity(deps, admin)["actions"][0] == "Admin"
    assert identity["secret_access_key"] == deps.box.decrypt(env.secret)


def test_bucket_names_and_object_keys():
    name = objectstore.environment_bucket("prj_" + "f" * 16, "production")
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]{2,62}", name) and "_" not in name
    copy = RedisCopy(id="rc_0123456789abcdef", source="shop-staging-cache")
    assert (
        objectstore.redis_object_key(copy)
        == "redis/shop-staging-cache/rc_0123456789abcdef/dump.rdb"
    )
    assert objectstore.endpoint(Server(ip="10.0.0.5")) == "http://10.0.0.5:8333"
    assert objectstore.endpoint(Server(ip="fd00::5")) == "http://[fd00::5]:8333"


def test_the_registry_key_pair_is_offered_once(deps):
    with deps.write():
        registry = objectstore.key_for(deps, "storage", "registry")
    path = deps.settings.resolved_replica_credentials_file
    assert objectstore._offer_registry_credentials(deps, registry) is True
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert f"access_key_id={registry.access_key_id}\n" in text
    assert f"secret_access_key={deps.box.decrypt(registry.secret)}\n" in text
    path.write_text("access_key_id=operator\nsecret_access_key=placed-by-hand\n")
    assert objectstore._offer_registry_credentials(deps, registry) is False
    assert "placed-by-hand" in path.read_text()  # never overwritten


def test_a_redis_copy_is_read_from_its_object_whole(deps, tmp_path, monkeypatch):
    """Restores and drills read a copy from the store (the copy of record), not the storage
    server's disk: with the admin key when the environment has no key any more, and only when
    it reads back whole (here the size codeb recorded for the copy differs: refused, no file)."""
    import os
    from urllib.parse import urlsplit

    from codeb.features.backups import redis as redis_copies
    from codeb.providers.objectstore import Credentials as Creds
    from codeb.providers.objectstore import ObjectStoreError, S3Store
    from codeb.store.models import Project
    from tests.s3 import seaweedfs

    with seaweedfs(tmp_path / "s3") as s3:
        monkeypatch.setattr(objectstore, "PORT", urlsplit(s3.endpoint).port)
        with deps.write():
            Server.create(name="storage", ip="127.0.0.1", role="storage")
            Project.create(id="p_1", name="shop", type="nodejs", local_db_password="x")
            ObjectStoreKey.create(
                id="s3k_admin", server="storage", scope="admin", access_key_id=s3.access_key_id,
                secret=deps.box.encrypt(s3.secret_access_key), applied_at=deps.clock.now(),
            )  # fmt: skip
        bucket = objectstore.environment_bucket("p_1", "staging")
        raw = S3Store(s3.endpoint, Creds(s3.access_key_id, s3.secret_access_key))
        raw.ensure_bucket(bucket)
        src = tmp_path / "dump.rdb"
        src.write_bytes(os.urandom(200_000))
        with deps.write():
            copy = RedisCopy.create(
                id="rc_0123456789abcdef", project="p_1", environment="staging",
                source="shop-staging-cache", source_server="cache", storage_server="storage",
                format="rdb", status="completed", size_bytes=src.stat().st_size,
            )  # fmt: skip
        info = raw.put_file(bucket, objectstore.redis_object_key(copy), src)
        with deps.write():
            copy.path = info.url
            copy.save()
        staged = redis_copies._from_store(deps, copy, tmp_path / "stage")
        assert staged is not None and staged.read_bytes() == src.read_bytes()
        assert staged.stat().st_mode & 0o777 == 0o600

        copy.size_bytes += 1  # codeb recorded another size than the object holds
        again = tmp_path / "stage2"
        with pytest.raises(ObjectStoreError, match="holds 200000 bytes, the copy had 200001"):
            redis_copies._from_store(deps, copy, again)
        assert list(again.iterdir()) == []

        # The restore, in-place restore and drill jobs stage it one way (staged_from_store):
        # the run's directory (0700) holds the copy inside the block and is gone after it,
        # however the block ends; the store's refusal is the run's reason, nothing staged.
        from types import SimpleNamespace

        ctx = SimpleNamespace(operation=SimpleNamespace(id="op_stage"))
        with redis_copies.staged_from_store(deps, copy, ctx) as bad:
            assert bad.copy is None and "holds 200000 bytes, the copy had 200001" in bad.error
            assert list(bad.dir.iterdir()) == []
        assert not bad.dir.exists()
        copy.size_bytes -= 1
        with pytest.raises(RuntimeError), redis_copies.staged_from_store(deps, copy, ctx) as ok:
            assert ok.error is None and ok.copy.read_bytes() == src.read_bytes()
            assert ok.copy.parent == ok.dir and ok.dir.stat().st_mode & 0o777 == 0o700
            raise RuntimeError("the playbook run failed")
        assert not ok.dir.exists()

        copy.path = "/var/lib/codeb/redis-copies/shop-staging-cache/rc_0123456789abcdef/dump.rdb"
        assert redis_copies._from_store(deps, copy, tmp_path / "stage3") is None  # pre-store
        with redis_copies.staged_from_store(deps, copy, ctx) as old:
            assert old.copy is None and old.error is None and old.dir.is_dir()
        assert not old.dir.exists()


def test_a_retired_environment_loses_its_bucket_and_its_key(deps, tmp_path, monkeypatch):
    """The retention removed the last copy of a deleted project's environment: its bucket is
    removed from the (real) store and its key revoked: the store's key pairs are rewritten
    without it (the role's run, recorded here, gets every other key and not this one), and
    only then is the row gone. A bucket still holding objects stays."""
    from urllib.parse import urlsplit

    from codeb.executor.runner import RunOutcome
    from codeb.providers.objectstore import Credentials as Creds
    from codeb.providers.objectstore import S3Store
    from tests.s3 import seaweedfs

    with seaweedfs(tmp_path / "s3") as s3:
        monkeypatch.setattr(objectstore, "PORT", urlsplit(s3.endpoint).port)
        runs = []

        def run(playbook_run):
            runs.append(playbook_run)
            return RunOutcome("successful", 0), []

        with deps.write():
            storage = Server.create(name="storage", ip="127.0.0.1", role="storage")
            ObjectStoreKey.create(
                id="s3k_admin", server="storage", scope="admin", access_key_id=s3.access_key_id,
                secret=deps.box.encrypt(s3.secret_access_key), applied_at=deps.clock.now(),
            )  # fmt: skip
            registry = objectstore.key_for(deps, "storage", "registry")
            registry.applied_at = deps.clock.now()
            registry.save()
            gone = objectstore.key_for(deps, "storage", "environment", "p_gone", "staging")
            gone.applied_at = deps.clock.now()
            gone.save()
            kept = objectstore.key_for(deps, "storage", "environment", "p_kept", "staging")
            kept.applied_at = deps.clock.now()
            kept.save()
        admin = S3Store(s3.endpoint, Creds(s3.access_key_id, s3.secret_access_key))
        admin.ensure_bucket(gone.bucket)
        admin.ensure_bucket(kept.bucket)

        done = objectstore.retire_environment(deps, run, storage, "p_gone", "staging")
        assert done["bucket_removed"] and done["key_revoked"]
        assert not admin._client.bucket_exists(gone.bucket)
        assert admin._client.bucket_exists(kept.bucket)
        (applied,) = runs
        given = [i["access_key_id"] for i in applied.extravars["codeb_s3_identities"]]
        assert gone.access_key_id not in given and kept.access_key_id in given
        assert ObjectStoreKey.get_or_none(ObjectStoreKey.id == gone.id) is None

        # A bucket with something still in it stays (the key is revoked all the same).
        src = tmp_path / "left"
        src.write_bytes(b"x" * 100)
        admin.put_file(kept.bucket, "not-a-copy", src)
        done = objectstore.retire_environment(deps, run, storage, "p_kept", "staging")
        assert done["bucket_removed"] is False and done["objects_left"] == 1
        assert admin._client.bucket_exists(kept.bucket)
        assert ObjectStoreKey.select().where(ObjectStoreKey.scope == "environment").count() == 0
