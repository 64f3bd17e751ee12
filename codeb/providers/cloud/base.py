"""What codeb needs from a cloud: create an instance that trusts codeb's SSH key, read it, list
codeb's instances by tag, delete one. Autoscaling uses only this Protocol."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from codeb.errors import CodebError

# Every instance codeb creates carries this tag; autoscaled ones also AUTOSCALED_TAG. Only
# instances with both may ever be deleted by autoscaling.
CODEB_TAG = "codeb"
AUTOSCALED_TAG = "codeb-autoscaled"


class CloudError(CodebError):
    """The cloud refused or failed; the message never carries the API key."""

    status = 502
    code = "cloud_error"


class CloudAuthFailed(CloudError):
    code = "cloud_auth_failed"


class CloudRejected(CloudError):
    """The request was refused as invalid (4xx other than auth and rate limits)."""

    status = 422
    code = "cloud_rejected"


class CloudUnavailable(CloudError):
    """Rate-limited or a server error after every retry."""

    status = 503
    code = "cloud_unavailable"


@dataclass(frozen=True)
class InstanceSpec:
    """What to create. `user_data` is the plain cloud-init text (the client encodes it)."""

    label: str
    hostname: str
    region: str
    plan: str
    os_id: int
    ssh_key_ids: tuple[str, ...] = ()
    user_data: str = ""
    tags: tuple[str, ...] = (CODEB_TAG,)


@dataclass(frozen=True)
class Instance:
    id: str
    label: str
    status: str  # pending | active | suspended | resizing
    power_status: str  # running | stopped
    server_status: str  # none | locked | installingbooting | ok
    main_ip: str
    region: str = ""
    plan: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    date_created: str = ""

    @property
    def has_address(self) -> bool:
        try:
            return not ipaddress.ip_address(self.main_ip).is_unspecified
        except ValueError:
            return False

    @property
    def ready(self) -> bool:
        """Booted as far as the cloud can tell (codeb still waits for SSH to answer)."""
        return (
            self.status == "active"
            and self.power_status == "running"
            and self.server_status == "ok"
            and self.has_address
        )


class CloudProvider(Protocol):
    def create_instance(self, spec: InstanceSpec) -> Instance:
        """Create, or return the instance already created with this label and tags (a retry
        after a lost answer must not buy a second server)."""
        ...

    def get_instance(self, instance_id: str) -> Instance | None: ...

    def list_instances(self, tag: str) -> list[Instance]: ...

    def delete_instance(self, instance_id: str) -> None:
        """Delete; an instance already gone is not an error."""
        ...
