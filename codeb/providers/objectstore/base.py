"""What codeb needs from an S3 object store, independent of the server's software: a bucket
made sure of, a file put (and confirmed by reading its size back), fetched, listed and
deleted, and errors a person can act on that never carry a secret."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from codeb.errors import CodebError


class ObjectStoreError(CodebError):
    """The store refused or failed a request; the message names the endpoint and the reason
    (never a secret key)."""

    status = 502
    code = "objectstore_error"


class ObjectStoreUnavailable(ObjectStoreError):
    """Nothing answered (refused, reset, timed out): the store is down or unreachable."""

    status = 503
    code = "objectstore_unavailable"


class ObjectStoreDenied(ObjectStoreError):
    """The store answered but refused the key (unknown key, wrong secret, no permission)."""

    code = "objectstore_denied"


@dataclass(frozen=True)
class Credentials:
    """An S3 key pair. The secret never appears in repr (logs, tracebacks)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    # The SHA-256 of the content as put_file recorded it (the object's x-amz-meta-sha256);
    # "" for an object put otherwise. get_file checks what it read against it.
    sha256: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class ObjectStore(Protocol):
    endpoint: str

    def ensure_bucket(self, bucket: str) -> bool:
        """Create the bucket when missing; True when it was created."""
        ...

    def put_file(self, bucket: str, key: str, path: Path) -> ObjectInfo:
        """Upload a file with its SHA-256 in the object's metadata and confirm it: the stored
        object's size equals the file's."""
        ...

    def get_file(self, bucket: str, key: str, path: Path) -> ObjectInfo:
        """Download an object into `path` (written 0600), only when it reads back whole: the
        size and the SHA-256 recorded at put; otherwise ObjectStoreError and no file."""
        ...

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object, or None when it does not exist."""
        ...

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]: ...

    def remove_bucket(self, bucket: str) -> bool:
        """Remove an empty bucket; False when it did not exist."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object (no error when it is already gone)."""
        ...
