"""The PowerDNS Authoritative HTTP API (4.7+), with plain httpx. The API key travels only in
the X-API-Key header: it is never logged, never part of a message or an exception."""

from __future__ import annotations

from typing import Any

import httpx

from codeb.providers.dns.base import (
    DnsAuthFailed,
    DnsError,
    DnsRejected,
    DnsUnavailable,
    Record,
    RRset,
    Soa,
    absolute,
)

TIMEOUT_S = 5.0


class PowerDns:
    """One PowerDNS server's API (`http://host:port`, server id `localhost`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        name: str | None = None,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name or base_url
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1/servers/localhost",
            headers={"X-API-Key": api_key, "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PowerDns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Protocol ---------------------------------------------------------------------
    def list_zones(self) -> list[str]:
        return sorted(z["name"] for z in self._request("GET", "/zones").json())

    def get_rrsets(self, zone: str) -> list[RRset] | None:
        response = self._request("GET", f"/zones/{absolute(zone)}", allow=(404, 422))
        if response.status_code in (404, 422):
            return None
        return [_rrset_from_api(r) for r in response.json().get("rrsets", [])]

    def create_zone(self, zone: str, soa: Soa, nameservers: list[RRset]) -> bool:
        zone = absolute(zone)
        soa_rrset = RRset(zone, "SOA", soa.ttl, (Record(soa.content()),))
        body = {
            "name": zone,
            "kind": "Native",
            "nameservers": [],
            # Every change made through the API raises the serial (secondaries notice it).
            "soa_edit_api": "DEFAULT",
            "rrsets": [_rrset_to_api(r, with_changetype=False) for r in [soa_rrset, *nameservers]],
        }
        response = self._request("POST", "/zones", json=body, allow=(409,))
        if response.status_code == 409:
            # Already there (another codeb run, or a retry): make its SOA and NS ours.
            self.patch(zone, [soa_rrset, *nameservers], [])
            return False
        return True

    def patch(self, zone: str, replace: list[RRset], delete: list[tuple[str, str]]) -> None:
        if not replace and not delete:
            return
        rrsets = [_rrset_to_api(r) for r in replace] + [
            {"name": absolute(name), "type": rtype, "changetype": "DELETE"}
            for name, rtype in delete
        ]
        self._request("PATCH", f"/zones/{absolute(zone)}", json={"rrsets": rrsets})

    def delete_zone(self, zone: str) -> bool:
        response = self._request("DELETE", f"/zones/{absolute(zone)}", allow=(404, 422))
        return response.status_code == 204

    # -- plumbing -------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, *, json: Any = None, allow: tuple[int, ...] = ()
    ) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=json)
        except httpx.TimeoutException:
            raise DnsUnavailable(
                f"DNS server {self.name} did not answer its API in time",
                {"dns_server": self.name},
            ) from None
        except httpx.TransportError as exc:
            raise DnsUnavailable(
                f"cannot reach the API of DNS server {self.name}: {type(exc).__name__}",
                {"dns_server": self.name},
            ) from None
        status = response.status_code
        if status < 300 or status in allow:
            return response
        message = _api_message(response)
        details = {"dns_server": self.name, "status": status}
        if status in (401, 403):
            raise DnsAuthFailed(
                f"DNS server {self.name} refused codeb's API key ({status})", details
            )
        if status in (400, 404, 409, 422):
            raise DnsRejected(f"DNS server {self.name} rejected the change: {message}", details)
        raise DnsError(f"DNS server {self.name} failed ({status}): {message}", details)


def _api_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:500]
    return response.reason_phrase


def _rrset_to_api(rrset: RRset, with_changetype: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": absolute(rrset.name),
        "type": rrset.type,
        "ttl": rrset.ttl,
        "records": [{"content": r.content, "disabled": r.disabled} for r in rrset.records],
    }
    if with_changetype:
        out["changetype"] = "REPLACE"
    return out


def _rrset_from_api(data: dict[str, Any]) -> RRset:
    records = tuple(
        sorted(
            (Record(r["content"], bool(r.get("disabled"))) for r in data.get("records", [])),
            key=lambda r: r.content,
        )
    )
    return RRset(data["name"], data["type"], int(data.get("ttl") or 0), records)
