"""codeb's own DNS-01 issuer: an ACME (RFC 8555) client built on `acme`, the protocol library
of certbot (EFF), publishing each `_acme-challenge` TXT record on *every* authoritative dns
server through a `TxtPublisher` (codeb's PowerDNS servers through their HTTP API).

Why not certbot's dns-rfc2136 plugin: it sends its update to one server, and codeb's dns
servers each hold their own copy of a zone (no zone transfer between them), so the CA would
find the TXT record on one authoritative server and miss it on the others. codeb already
writes every zone on every server; the challenge record goes the same way, is checked on
each server by asking it directly, and is removed afterwards whatever the outcome.

The certificate is served by Caddy from files (Debian's Caddy has no DNS provider module).
Renewal, retries and the last issuance error live in codeb's database (the domains
feature); this module only speaks ACME."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from codeb.errors import CodebError

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
USER_AGENT = "codeb-dns01"


class AcmeError(CodebError):
    """An order that did not end in a certificate: the CA's or the DNS step's message."""

    status = 502
    code = "acme_error"


class TxtPublisher(Protocol):
    """Where a challenge record goes: every authoritative server of the zone."""

    def publish(self, fqdn: str, values: list[str]) -> None:
        """Set the TXT rrset `fqdn` (absolute) to `values` on every server."""

    def visible(self, fqdn: str, values: list[str]) -> list[str]:
        """The servers that do not answer every value yet (empty: all do)."""

    def remove(self, fqdn: str) -> None:
        """Remove the TXT rrset from every server (best effort, never raises)."""


@dataclass(frozen=True)
class Issued:
    fullchain_pem: str
    key_pem: str
    not_before: dt.datetime
    not_after: dt.datetime
    names: list[str]
    issuer: str
    account_uri: str


def new_account_key() -> str:
    """An RSA 2048 account key (PEM): what every ACME CA accepts for JWS RS256."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def new_certificate_key() -> str:
    """A P-256 key for the certificate (PEM), new for every order."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def certificate_facts(fullchain_pem: str) -> tuple[dt.datetime, dt.datetime, list[str], str]:
    """not_before, not_after (naive UTC), the DNS names and the issuer of the leaf."""
    leaf = x509.load_pem_x509_certificates(fullchain_pem.encode())[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return (
        leaf.not_valid_before_utc.replace(tzinfo=None),
        leaf.not_valid_after_utc.replace(tzinfo=None),
        list(names),
        leaf.issuer.rfc4514_string(),
    )


def serial_of(fullchain_pem: str) -> str:
    """The leaf's serial number in hex (names the files a proxy serves it from)."""
    return format(x509.load_pem_x509_certificates(fullchain_pem.encode())[0].serial_number, "x")


def challenge_name(identifier: str) -> str:
    """`_acme-challenge.<name>.` for a name or a wildcard (RFC 8555 8.4: the `*.` goes)."""
    bare = identifier[2:] if identifier.startswith("*.") else identifier
    return f"_acme-challenge.{bare.rstrip('.')}."


def _problem(exc: BaseException) -> str:
    if isinstance(exc, messages.Error):
        return f"{exc.typ}: {exc.detail}" if exc.detail else str(exc.typ)
    if isinstance(exc, errors.ValidationError):
        details = []
        for authzr in exc.failed_authzrs:
            for chall in authzr.body.challenges:
                if chall.error is not None:
                    details.append(
                        f"{authzr.body.identifier.value}: {chall.error.typ}: {chall.error.detail}"
                    )
        return "validation failed: " + ("; ".join(details) or "no detail from the CA")
    if isinstance(exc, errors.TimeoutError):
        return "the CA did not finish the order in time"
    return f"{type(exc).__name__}: {exc}"[:500]


def issue(
    directory_url: str,
    names: list[str],
    publisher: TxtPublisher,
    *,
    account_key_pem: str,
    email: str = "",
    ca_bundle: str | None = None,
    timeout_s: float = 180,
    propagation_timeout_s: float = 60,
    sleep: Callable[[float], None] = time.sleep,
) -> Issued:
    """One order for `names` (a wildcard included) answered with DNS-01: account (created or
    found again by its key), order, one TXT rrset per challenge name on every server (checked
    on every server before the CA is told), finalize with a fresh key. Raises AcmeError with
    the CA's message. The challenge records are removed afterwards in every case."""
    deadline = time.monotonic() + timeout_s
    key = jose.JWKRSA(
        key=serialization.load_pem_private_key(account_key_pem.encode(), password=None)
    )
    net = client.ClientNetwork(
        key,
        user_agent=USER_AGENT,
        verify_ssl=ca_bundle if ca_bundle else True,
        timeout=30,
    )
    published: list[str] = []
    try:
        try:
            directory = client.ClientV2.get_directory(directory_url, net)
            acme = client.ClientV2(directory, net)
            registration = messages.NewRegistration.from_data(
                email=email or None, terms_of_service_agreed=True
            )
            try:
                account = acme.new_account(registration)
            except errors.ConflictError as exc:
                # The key is known to the CA already: use that account.
                net.account = messages.RegistrationResource(
                    uri=exc.location, body=messages.Registration()
                )
                account = net.account
            cert_key = new_certificate_key()
            order = acme.new_order(crypto_util.make_csr(cert_key.encode(), names))
            # Every challenge's record first (a wildcard and its base name share one owner
            # name, so values are grouped), then the CA is asked to look.
            wanted: dict[str, list[str]] = {}
            answers = []
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                dns01 = [c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01)]
                if not dns01:
                    raise AcmeError(
                        f"the CA offers no dns-01 challenge for {authz.body.identifier.value}"
                    )
                response, validation = dns01[0].response_and_validation(key)
                fqdn = challenge_name(authz.body.identifier.value)
                wanted.setdefault(fqdn, []).append(validation)
                answers.append((dns01[0], response))
            for fqdn, values in wanted.items():
                publisher.publish(fqdn, values)
                published.append(fqdn)
            _wait_visible(publisher, wanted, propagation_timeout_s, sleep)
            for chall, response in answers:
                acme.answer_challenge(chall, response)
            remaining = max(5.0, deadline - time.monotonic())
            order = acme.poll_and_finalize(
                order, deadline=dt.datetime.now() + dt.timedelta(seconds=remaining)
            )
        except AcmeError:
            raise
        except (errors.Error, messages.Error, OSError, ValueError) as exc:
            raise AcmeError(_problem(exc), {"names": names}) from None
        except Exception as exc:  # requests' errors and anything else from the CA's side
            raise AcmeError(_problem(exc), {"names": names}) from None
    finally:
        for fqdn in published:
            publisher.remove(fqdn)
    not_before, not_after, covered, issuer = certificate_facts(order.fullchain_pem)
    return Issued(
        fullchain_pem=order.fullchain_pem,
        key_pem=cert_key,
        not_before=not_before,
        not_after=not_after,
        names=covered,
        issuer=issuer,
        account_uri=account.uri or "",
    )


def _wait_visible(
    publisher: TxtPublisher,
    wanted: dict[str, list[str]],
    timeout_s: float,
    sleep: Callable[[float], None],
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        missing = sorted(
            {s for fqdn, vals in wanted.items() for s in publisher.visible(fqdn, vals)}
        )
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AcmeError(
                "the challenge record is not answered by " + ", ".join(missing),
                {"servers": missing},
            )
        sleep(0.5)
