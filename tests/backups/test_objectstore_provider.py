"""codeb's S3 client (codeb/providers/objectstore) against a real SeaweedFS on loopback: a
bucket made sure of, a file put and confirmed, fetched 0600, listed, deleted; a wrong secret,
a key without permission and a dead store each give their own error, in seconds, without
the secret in the message."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from pathlib import Path

import pytest

from codeb.providers.objectstore import (
    Credentials,
    ObjectStoreDenied,
    ObjectStoreError,
    ObjectStoreUnavailable,
    S3Store,
)
from tests.s3 import S3Server, seaweedfs


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with seaweedfs(tmp_path_factory.mktemp("s3")) as server:
        yield server


def store(s3: S3Server, secret: str | None = None) -> S3Store:
    return S3Store(s3.endpoint, Credentials(s3.access_key_id, secret or s3.secret_access_key))


def test_put_get_list_delete(s3: S3Server, tmp_path: Path) -> None:
    client = store(s3)
    assert client.ensure_bucket("redis-env-1") is True
    assert client.ensure_bucket("redis-env-1") is False
    src = tmp_path / "dump.rdb"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    info = client.put_file("redis-env-1", "redis/shop-cache/rc_1/dump.rdb", src)
    assert info.size == src.stat().st_size
    assert info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert client.stat("redis-env-1", info.key).sha256 == info.sha256
    assert info.url == "s3://redis-env-1/redis/shop-cache/rc_1/dump.rdb"
    assert [o.key for o in client.list("redis-env-1", "redis/")] == [info.key]
    out = tmp_path / "back.rdb"
    client.get_file("redis-env-1", info.key, out)
    assert out.read_bytes() == src.read_bytes()
    assert out.stat().st_mode & 0o777 == 0o600
    client.delete("redis-env-1", info.key)
    client.delete("redis-env-1", info.key)  # already gone: no error
    assert client.stat("redis-env-1", info.key) is None
    assert client.list("redis-env-1") == []


def test_an_object_that_does_not_read_back_whole_is_refused(s3: S3Server, tmp_path: Path) -> None:
    """An object whose content no longer matches the SHA-256 recorded when it was put (here
    overwritten behind codeb's back with the same metadata) is refused, and no file is left
    where the download was to go."""
    client = store(s3)
    client.ensure_bucket("redis-env-2")
    src = tmp_path / "dump.rdb"
    src.write_bytes(os.urandom(64 * 1024))
    info = client.put_file("redis-env-2", "redis/c/rc_2/dump.rdb", src)
    other = os.urandom(64 * 1024)
    client._client.put_object(  # the raw SDK, to tamper with the object
        "redis-env-2", info.key, io.BytesIO(other), len(other), metadata={"sha256": info.sha256}
    )
    out = tmp_path / "back.rdb"
    with pytest.raises(ObjectStoreError, match=r"did not read back whole.*SHA-256 differs"):
        client.get_file("redis-env-2", info.key, out)
    assert not out.exists() and not out.with_name("back.rdb.part").exists()


def test_a_wrong_secret_is_denied_and_never_named(s3: S3Server, tmp_path: Path) -> None:
    wrong = "wrong-secret-" + os.urandom(8).hex()
    with pytest.raises(ObjectStoreDenied) as caught:
        store(s3, wrong).ensure_bucket("codeb")
    assert wrong not in str(caught.value) and wrong not in repr(caught.value.details)
    assert s3.endpoint in caught.value.message
    assert wrong not in repr(Credentials("k", wrong))


def test_a_dead_store_is_unavailable_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = tmp_path / "f"
    src.write_bytes(b"x" * 10)
    client = S3Store(f"http://127.0.0.1:{port}", Credentials("k", "s" * 20))
    began = time.monotonic()
    with pytest.raises(ObjectStoreUnavailable) as caught:
        client.put_file("codeb", "k", src)
    assert time.monotonic() - began < 15
    assert "did not answer" in caught.value.message and caught.value.status == 503


def test_an_endpoint_must_be_a_bare_url() -> None:
    for bad in ("127.0.0.1:8333", "ftp://h:1", "http://h:1/bucket"):
        with pytest.raises(ValueError, match="http"):
            S3Store(bad, Credentials("k", "s"))
