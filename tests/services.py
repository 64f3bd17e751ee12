"""Real servers started by the test suite itself, on free loopback ports, stopped by PID."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import free_port


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def postgres_available() -> bool:
    return _pg_bindir() is not None and os.geteuid() == 0


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a URL of an empty database `codeb`."""
    bindir = _pg_bindir()
    assert bindir is not None, "PostgreSQL is not installed (make test installs it)"
    root = Path(tempfile.mkdtemp(prefix="codeb-pg-"))
    os.chmod(root, 0o755)
    datadir = root / "data"
    port = free_port()
    as_pg = ["runuser", "-u", "postgres", "--"]
    shutil.chown(root, "postgres")
    pwfile = root / "pw"
    pwfile.write_text("codeb-test\n")
    shutil.chown(pwfile, "postgres")
    subprocess.run(
        [
            *as_pg,
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "-A",
            "md5",
            f"--pwfile={pwfile}",
        ],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *as_pg,
            str(bindir / "postgres"),
            "-D",
            str(datadir),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={root}",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "log", "wb"),
    )
    try:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1",
                    port=port,
                    user="postgres",
                    password="codeb-test",
                    dbname="postgres",
                )
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((root / "log").read_text()) from None
                time.sleep(0.1)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE codeb")
        conn.close()
        yield f"postgresql://postgres:codeb-test@127.0.0.1:{port}/codeb"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(admin_url: str, name: str) -> str:
    """A new empty database on the same server (for tests that need their own)."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name
