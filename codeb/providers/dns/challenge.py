"""ACME DNS-01 challenge records on every authoritative server (codeb.providers.proxy.acme's
TxtPublisher for PowerDNS): written through each server's HTTP API into the zone that holds
the name, checked by asking each server directly (never a resolver), removed afterwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dns import exception as dnsexception
from dns import message as dnsmessage
from dns import query as dnsquery
from dns import rdatatype as dnsrdatatype

from codeb.providers.dns.base import DnsError, DnsProvider, RRset, absolute

CHALLENGE_TTL = 60


@dataclass(frozen=True)
class Authoritative:
    name: str  # the server's name in codeb (for messages)
    ip: str
    dns_port: int
    client: Callable[[], DnsProvider]  # a fresh API client (a context manager)


class PowerDnsTxt:
    """Publishes `_acme-challenge` TXT rrsets in `zones` (the zones codeb holds; the longest
    one that contains the name is used) on every server in `servers`."""

    def __init__(self, servers: list[Authoritative], zones: list[str]) -> None:
        if not servers:
            raise DnsError("no dns server to publish the challenge on")
        self.servers = servers
        self.zones = [absolute(z) for z in zones]

    def zone_of(self, fqdn: str) -> str:
        fqdn = absolute(fqdn)
        inside = [z for z in self.zones if fqdn == z or fqdn.endswith("." + z)]
        if not inside:
            raise DnsError(f"no zone codeb holds contains {fqdn}", {"name": fqdn})
        return max(inside, key=len)

    def publish(self, fqdn: str, values: list[str]) -> None:
        zone = self.zone_of(fqdn)
        rrset = RRset.of(fqdn, "TXT", [f'"{v}"' for v in values], CHALLENGE_TTL)
        for server in self.servers:
            with server.client() as api:
                api.patch(zone, [rrset], [])

    def visible(self, fqdn: str, values: list[str]) -> list[str]:
        missing = []
        for server in self.servers:
            try:
                answer = dnsquery.udp(
                    dnsmessage.make_query(absolute(fqdn), "TXT"),
                    server.ip,
                    port=server.dns_port,
                    timeout=2,
                )
            except (dnsexception.DNSException, OSError):
                missing.append(server.name)
                continue
            seen = {
                b"".join(r.strings).decode()
                for rrset in answer.answer
                if rrset.rdtype == dnsrdatatype.TXT
                for r in rrset
            }
            if not set(values) <= seen:
                missing.append(server.name)
        return missing

    def remove(self, fqdn: str) -> None:
        try:
            zone = self.zone_of(fqdn)
        except DnsError:
            return
        for server in self.servers:
            try:
                with server.client() as api:
                    api.patch(zone, [], [(absolute(fqdn), "TXT")])
            except DnsError:
                continue  # a left-over challenge record harms nothing; the next order replaces it
