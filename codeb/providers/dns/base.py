"""What codeb needs from an authoritative DNS server, independent of the server's software:
zones with an SOA codeb sets itself, whole rrsets replaced or deleted, and errors a person
can act on. Names are absolute (with the trailing dot) inside this package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from codeb.errors import CodebError


class DnsError(CodebError):
    """The DNS server refused or failed a request; the message says which server and why
    (never the API key)."""

    status = 502
    code = "dns_error"


class DnsUnavailable(DnsError):
    status = 503
    code = "dns_unavailable"


class DnsAuthFailed(DnsError):
    code = "dns_auth_failed"


class DnsRejected(DnsError):
    code = "dns_rejected"


def absolute(name: str) -> str:
    """`shop.example.test` -> `shop.example.test.` (names here always end with a dot)."""
    return name if name.endswith(".") else name + "."


@dataclass(frozen=True)
class Soa:
    """The zone's SOA as codeb sets it. `minimum` is the negative-caching TTL (RFC 2308): a
    low value means a name queried before it existed (an early ACME check) is not answered
    NXDOMAIN from caches for an hour."""

    mname: str  # the primary name server, a real name
    rname: str  # the responsible mailbox, as a name (hostmaster.example.test.)
    serial: int = 1
    refresh: int = 10800
    retry: int = 3600
    expire: int = 604800
    minimum: int = 60
    ttl: int = 3600

    def content(self) -> str:
        return (
            f"{absolute(self.mname)} {absolute(self.rname)} {self.serial} {self.refresh} "
            f"{self.retry} {self.expire} {self.minimum}"
        )


@dataclass(frozen=True)
class Record:
    content: str
    disabled: bool = False


@dataclass(frozen=True)
class RRset:
    name: str
    type: str
    ttl: int = 60
    records: tuple[Record, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, name: str, rtype: str, contents: list[str], ttl: int = 60) -> RRset:
        return cls(absolute(name), rtype, ttl, tuple(Record(c) for c in sorted(contents)))

    @property
    def contents(self) -> list[str]:
        return sorted(r.content for r in self.records)


class DnsProvider(Protocol):
    """An authoritative server codeb writes zones to."""

    name: str  # which server (for messages)

    def list_zones(self) -> list[str]:
        """Names of the zones the server holds (absolute)."""
        ...

    def get_rrsets(self, zone: str) -> list[RRset] | None:
        """Every rrset of `zone`, or None when the server has no such zone."""
        ...

    def create_zone(self, zone: str, soa: Soa, nameservers: list[RRset]) -> bool:
        """Create `zone` with this SOA and these NS (and glue) rrsets. False: it existed
        (its SOA and NS are then replaced with these)."""
        ...

    def patch(self, zone: str, replace: list[RRset], delete: list[tuple[str, str]]) -> None:
        """Replace whole rrsets and delete (name, type) rrsets, all or nothing."""
        ...

    def delete_zone(self, zone: str) -> bool:
        """Remove `zone`; False when it was not there."""
        ...
