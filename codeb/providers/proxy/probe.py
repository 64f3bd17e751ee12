"""Live checks of a site through one proxy address, the way a browser would reach it but
without asking any resolver: a TLS handshake with SNI (the certificate it is served) and an
HTTP request with the site's Host, to an address codeb names."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

MAX_HEAD = 65536


@dataclass(frozen=True)
class TlsFacts:
    issuer: str
    subject: str
    names: list[str]
    not_after: dt.datetime
    trusted: bool  # the chain verifies against `cafile` (or the system's store) for this name
    verify_error: str | None

    def days_left(self, now: dt.datetime) -> float:
        return round((self.not_after - now).total_seconds() / 86400, 2)


@dataclass(frozen=True)
class HttpFacts:
    status: int
    latency_ms: float
    location: str | None
    body: bytes


def _connect(ip: str, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def tls_certificate(
    ip: str, port: int, server_name: str, *, cafile: str | None = None, timeout: float = 5.0
) -> TlsFacts:
    """Handshake with SNI `server_name`; read the leaf certificate whatever its trust, then say
    whether it verifies for that name. Raises OSError/ssl.SSLError when no handshake."""
    relaxed = ssl.create_default_context()
    relaxed.check_hostname = False
    relaxed.verify_mode = ssl.CERT_NONE
    with (
        _connect(ip, port, timeout) as raw,
        relaxed.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("the server sent no certificate")
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    trusted, error = True, None
    strict = ssl.create_default_context(cafile=cafile)
    try:
        with (
            _connect(ip, port, timeout) as raw,
            strict.wrap_socket(raw, server_hostname=server_name),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        trusted, error = False, exc.verify_message or str(exc)
    return TlsFacts(
        issuer=_name(cert.issuer),
        subject=_name(cert.subject),
        names=list(names),
        not_after=cert.not_valid_after_utc.replace(tzinfo=None),
        trusted=trusted,
        verify_error=error,
    )


def _name(name: x509.Name) -> str:
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        attrs = name.get_attributes_for_oid(oid)
        if attrs:
            return str(attrs[0].value)
    return name.rfc4514_string()


def http_get(
    ip: str,
    port: int,
    host: str,
    path: str = "/",
    *,
    tls: bool = True,
    cafile: str | None = None,
    verify: bool = False,
    timeout: float = 5.0,
) -> HttpFacts:
    """One HTTP/1.1 GET to ip:port with Host (and SNI) `host`; the status, the time to the
    answer, a redirect's Location and the start of the body."""
    started = time.monotonic()
    raw = _connect(ip, port, timeout)
    try:
        sock: socket.socket = raw
        if tls:
            ctx = ssl.create_default_context(cafile=cafile)
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(raw, server_hostname=host)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
            "User-Agent: codeb-status\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(request.encode("ascii"))
        data = b""
        while len(data) < MAX_HEAD:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        raw.close()
    latency_ms = round((time.monotonic() - started) * 1000, 1)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2) if lines and lines[0] else []
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer from {ip}:{port}")
    location = None
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "location":
            location = value.strip()
    return HttpFacts(int(parts[1]), latency_ms, location, body[:4096])
