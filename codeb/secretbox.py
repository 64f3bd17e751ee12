"""Encryption of stored secrets (database and Redis passwords) with Fernet. The key lives in
a file outside the database, created 0600 on first start."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


def key_file(path: Path, generate: Callable[[], bytes]) -> tuple[bytes, bool]:
    """A key kept in its own file: read it, or create it (0600, atomically: O_EXCL, so two
    processes starting at once agree) with `generate()`. Returns (key, created now). A file
    others may read is refused rather than used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(generate())
        created = True
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"key file {path} must not be readable by others")
    return path.read_bytes().strip(), created


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        """Load the key, creating it (mode 0600, atomically) if it does not exist yet."""
        key, _ = key_file(path, Fernet.generate_key)
        return cls(key)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            # Never echo the ciphertext or anything derived from it.
            raise ValueError("stored secret cannot be decrypted with this key") from None


def generate_password(nbytes: int = 24) -> str:
    """A URL-safe password: safe to embed in postgresql:// and redis:// URLs unescaped."""
    return secrets.token_urlsafe(nbytes)
