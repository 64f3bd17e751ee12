"""Authoritative DNS: the Protocol codeb's domain service uses, and the real PowerDNS client."""

from codeb.providers.dns.base import (
    DnsAuthFailed,
    DnsError,
    DnsProvider,
    DnsRejected,
    DnsUnavailable,
    Record,
    RRset,
    Soa,
)
from codeb.providers.dns.powerdns import PowerDns

__all__ = [
    "DnsAuthFailed",
    "DnsError",
    "DnsProvider",
    "DnsRejected",
    "DnsUnavailable",
    "PowerDns",
    "RRset",
    "Record",
    "Soa",
]
