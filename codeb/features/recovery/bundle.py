"""The recovery bundle: the secrets that must not sit beside the replicated database (the
Fernet key, the log's HMAC key, codeb's SSH key, the replica's credentials), sealed with a
passphrase the operator types.

Format (one file): a magic line, a JSON header line (KDF parameters, salt, nonce, a passphrase
check), then AES-256-GCM ciphertext of a JSON payload, with the magic and header as associated
data (changing any header byte breaks the tag). The key comes from scrypt (memory-hard; the
`cryptography` package's implementation). The passphrase check is an HMAC under a second key
derived beside the encryption key, so a wrong passphrase is told apart from a damaged file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"codeb-recovery-bundle 1\n"
# scrypt at 2^17 x 8: 128 MiB and about half a second per try, OWASP's floor for scrypt.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE = 12
_CHECK_LABEL = b"codeb recovery passphrase check"


class BundleError(Exception):
    """A bundle that cannot be opened; the message says why, never what it holds."""


class NotABundle(BundleError):
    pass


class WrongPassphrase(BundleError):
    pass


class DamagedBundle(BundleError):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


def _keys(passphrase: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    material = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.encode())
    return material[:32], material[32:]


def _check(check_key: bytes) -> str:
    return hmac.new(check_key, _CHECK_LABEL, hashlib.sha256).hexdigest()


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BundleError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")


def seal(payload: dict[str, Any], passphrase: str) -> bytes:
    """Encrypt a JSON-serialisable payload under the passphrase."""
    check_passphrase(passphrase)
    salt, nonce = os.urandom(16), os.urandom(12)
    key, check_key = _keys(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    header = json.dumps(
        {
            "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": _b64(salt),
            "cipher": "AES-256-GCM",
            "nonce": _b64(nonce),
            "check": _check(check_key),
        },
        sort_keys=True,
    ).encode()
    aad = MAGIC + header + b"\n"
    body = AESGCM(key).encrypt(nonce, json.dumps(payload, sort_keys=True).encode(), aad)
    return aad + body


def open_sealed(data: bytes, passphrase: str) -> dict[str, Any]:
    """Decrypt a bundle; raises NotABundle, WrongPassphrase or DamagedBundle."""
    if not data.startswith(MAGIC):
        raise NotABundle("this file is not a codeb recovery bundle")
    rest = data[len(MAGIC) :]
    header_line, sep, body = rest.partition(b"\n")
    if not sep:
        raise DamagedBundle("the bundle is damaged: its header is cut off")
    try:
        header = json.loads(header_line)
        kdf = header["kdf"]
        if kdf.get("name") != "scrypt" or header.get("cipher") != "AES-256-GCM":
            raise ValueError("unknown algorithm")
        n, r, p = (int(kdf[k]) for k in ("n", "r", "p"))
        # Bounds keep a crafted header from asking for gigabytes of memory.
        if not (2**14 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4):
            raise ValueError("KDF parameters out of range")
        salt, nonce = _unb64(header["salt"]), _unb64(header["nonce"])
        check = header["check"]
        if len(nonce) != 12 or not isinstance(check, str):
            raise ValueError("bad nonce or check")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DamagedBundle("the bundle is damaged: its header cannot be read") from None
    key, check_key = _keys(passphrase, salt, n, r, p)
    if not hmac.compare_digest(_check(check_key), check):
        raise WrongPassphrase("wrong passphrase for this recovery bundle")
    try:
        plain = AESGCM(key).decrypt(nonce, body, MAGIC + header_line + b"\n")
    except InvalidTag:
        raise DamagedBundle(
            "the bundle is damaged: its contents fail authentication (changed or cut off)"
        ) from None
    try:
        payload = json.loads(plain)
    except ValueError:
        raise DamagedBundle("the bundle is damaged: its contents are not readable") from None
    if not isinstance(payload, dict):
        raise DamagedBundle("the bundle is damaged: unexpected contents")
    return payload
