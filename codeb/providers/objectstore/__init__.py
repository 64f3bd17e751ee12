"""S3 object stores: the Protocol codeb's backups use, and the real client (the storage
server's SeaweedFS S3 gateway, or any S3 endpoint)."""

from codeb.providers.objectstore.base import (
    Credentials,
    ObjectInfo,
    ObjectStore,
    ObjectStoreDenied,
    ObjectStoreError,
    ObjectStoreUnavailable,
)
from codeb.providers.objectstore.s3 import S3Store, weed_binary

__all__ = [
    "Credentials",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStoreDenied",
    "ObjectStoreError",
    "ObjectStoreUnavailable",
    "S3Store",
    "weed_binary",
]
