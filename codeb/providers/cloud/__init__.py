"""Cloud servers (autoscaling): the Protocol and the real Vultr API v2 client. The Vultr cloud
cannot be reached from the tests; they run the real client against a stateful fake of Vultr's
published contract (tests/providers/vultr_fake.py)."""

from codeb.providers.cloud.base import (
    AUTOSCALED_TAG,
    CODEB_TAG,
    CloudAuthFailed,
    CloudError,
    CloudProvider,
    CloudRejected,
    CloudUnavailable,
    Instance,
    InstanceSpec,
)
from codeb.providers.cloud.vultr import Vultr

__all__ = [
    "AUTOSCALED_TAG",
    "CODEB_TAG",
    "CloudAuthFailed",
    "CloudError",
    "CloudProvider",
    "CloudRejected",
    "CloudUnavailable",
    "Instance",
    "InstanceSpec",
    "Vultr",
]
