"""codeb.store.walindex on real SQLite files: the WAL-index header moves on every commit by
anyone (this connection, another thread's, another process's) and on nothing else; it is
None where it cannot be read safely; and reading it never drops SQLite's own locks on
`-shm` (a reader's snapshot still holds a checkpoint back afterwards)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from codeb.store import walindex

CHILD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA busy_timeout = 5000")
print(conn.execute(sys.argv[2]).fetchall())
"""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    return conn


def in_child(path: Path, sql: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def in_thread(fn):  # type: ignore[no-untyped-def]
    """Run fn in a new thread (its own walindex thread state) and return its result."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join(30)
    assert box, "the thread did not finish"
    return box[0]


def test_header_moves_on_every_commit_and_nothing_else(tmp_path):
    path = tmp_path / "db.sqlite3"
    conn = connect(path)
    first = walindex.header(conn)
    assert first is not None and len(first) == walindex.HEADER_BYTES
    conn.execute("SELECT count(*) FROM t").fetchall()
    assert walindex.header(conn) == first  # reads move nothing

    conn.execute("INSERT INTO t VALUES (1)")  # this connection's commit
    own = walindex.header(conn)
    assert own is not None and own != first

    other = connect(path)  # another connection of the process, in another thread
    in_thread(lambda: other.execute("INSERT INTO t VALUES (2)"))
    theirs = walindex.header(conn)
    assert theirs is not None and theirs != own

    in_child(path, "INSERT INTO t VALUES (3)")  # another process
    child = walindex.header(conn)
    assert child is not None and child != theirs
    assert walindex.header(conn) == child
    assert in_child(path, "SELECT count(*) FROM t") == "[(3,)]"


def test_none_where_there_is_no_wal_index(tmp_path):
    assert walindex.header(sqlite3.connect(":memory:")) is None
    plain = sqlite3.connect(tmp_path / "rollback.sqlite3", isolation_level=None)
    plain.execute("CREATE TABLE t (n INTEGER)")
    assert walindex.header(plain) is None


def test_reading_the_header_keeps_sqlites_locks(tmp_path):
    """POSIX locks die with any descriptor of their file: if walindex ever closed one that
    SQLite uses, a reader's lock would be gone and a checkpoint could reset the WAL under it."""
    path = tmp_path / "db.sqlite3"
    writer = connect(path)
    writer.execute("INSERT INTO t VALUES (1)")
    reader = connect(path)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchall() == [(1,)]  # snapshot taken
    writer.execute("INSERT INTO t VALUES (2)")
    # New connections in new threads map -shm (and replaced files are swept) meanwhile.
    for _ in range(3):
        assert in_thread(lambda: walindex.header(connect(path))) is not None
    # The reader's snapshot needs the WAL frame of row 1 kept: a RESTART checkpoint from
    # another process must find it busy, and the reader still sees its snapshot.
    busy = in_child(path, "PRAGMA wal_checkpoint(RESTART)")
    assert busy.startswith("[(1,"), busy
    assert reader.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM t").fetchall() == [(2,)]


def test_a_recreated_file_is_mapped_again(tmp_path):
    path = tmp_path / "db.sqlite3"
    conn = connect(path)
    assert walindex.header(conn) is not None
    shm = f"{path}-shm"
    before = walindex._maps[shm][0]
    conn.close()  # the last connection: SQLite checkpoints and deletes -wal and -shm
    if Path(shm).exists():
        pytest.skip("this SQLite keeps -shm after its last connection closed")
    again = connect(path)
    again.execute("INSERT INTO t VALUES (1)")
    header = walindex.header(again)
    # Our open descriptor keeps the old inode alive, so its number cannot be reused.
    assert header is not None and walindex._maps[shm][0] == Path(shm).stat().st_ino != before
    in_child(path, "INSERT INTO t VALUES (2)")
    assert walindex.header(again) != header  # the new file's header, not the old map's
