"""A change token for a SQLite database in WAL mode that costs no system call: the WAL-index
header, read through a memory map of the database's `-shm` file.

Every connection to a WAL database (any thread, any process) shares `-shm`, whose first 96
bytes are two copies of the WAL-index header (https://www.sqlite.org/walformat.html, "The
WAL-Index Header"). A writer rewrites both at every commit and whenever the WAL restarts,
the second copy first; readers find the data through this header, so a commit is visible to
nobody before the header shows it. A header whose two copies are equal is therefore no older
than any commit a read started after it could see: its bytes are a change token.

Why not `PRAGMA data_version`: Python's sqlite3 releases the GIL for every step of a
statement, twice for that one, and with waitress's threads waiting for the GIL every release
hands it to another thread. Reading a memory map keeps it (issue 15: a loaded
`GET /api/projects` did ~30 % more requests per CPU second without those two releases).

Two rules keep the map safe:
- POSIX record locks belong to a process and a file, and closing ANY descriptor of the file
  drops all of the process's locks on it, SQLite's included. The descriptor under a map is
  closed only once the path names another file, i.e. when SQLite no longer uses the old one.
- The header is read only on behalf of a connection that has itself opened `-shm` (it ran a
  read first) and is still open: while any connection of this process has it open, SQLite
  neither truncates nor deletes the file (both need the exclusive lock that every user's
  shared lock prevents), so the map never reads past the file's end.
Anything else (no file name, another journal mode, copies caught mid-update) answers None and
the caller falls back to `PRAGMA data_version`.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
import threading

HEADER_BYTES = 48
# iVersion of the only WAL-index format (SQLite 3.7.0 onwards) and isInit's offset.
WAL_INDEX_VERSION = 3007000
IS_INIT_OFFSET = 12

_lock = threading.Lock()
# Path of the -shm file -> (inode, descriptor, map).
_maps: dict[str, tuple[int, int, mmap.mmap]] = {}
# Descriptors that may name a file SQLite uses but could not be mapped: kept, never closed.
_kept: list[int] = []
_thread = threading.local()


def _shm_path(conn: sqlite3.Connection) -> str | None:
    """The `-shm` path of the connection's main database, None unless it is a file in WAL
    mode. Runs a read, so SQLite has opened (and initialised) `-shm` when it answers."""
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":
        return None
    conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    path = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
    return f"{path}-shm" if path else None


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _forget_replaced() -> None:
    """Close the maps of files their path no longer names. SQLite deletes `-shm` only when
    its last connection closes, so a file that is gone or replaced is nobody's any more
    (closing its descriptor drops no lock anyone holds)."""
    for path, (inode, fd, view) in list(_maps.items()):
        if _inode(path) != inode:
            del _maps[path]
            view.close()
            os.close(fd)


def _map(path: str) -> mmap.mmap | None:
    """The process's map of `path`, made again when the path names another file."""
    inode = _inode(path)
    if inode is None:
        return None
    with _lock:
        known = _maps.get(path)
        if known and known[0] == inode:
            return known[2]
        _forget_replaced()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.fstat(fd)
            view = None
            if stat.st_ino == inode and stat.st_size >= 2 * HEADER_BYTES:
                view = mmap.mmap(fd, 2 * HEADER_BYTES, access=mmap.ACCESS_READ)
        except OSError:
            view = None
        if view is None:
            _kept.append(fd)  # may be SQLite's file: closing it would drop its locks
            return None
        _maps[path] = (inode, fd, view)
        return view


def header(conn: sqlite3.Connection) -> bytes | None:
    """The WAL-index header as seen now, or None when it cannot be read safely (the caller
    then asks SQLite). Call it with `conn` open and outside a transaction."""
    local = _thread
    if getattr(local, "conn", None) is not conn:
        # A new connection of this thread: map only after it has opened -shm itself.
        path = _shm_path(conn)
        local.conn, local.view = conn, (_map(path) if path else None)
    view: mmap.mmap | None = local.view
    if view is None:
        return None
    try:
        first, second = view[:HEADER_BYTES], view[HEADER_BYTES : 2 * HEADER_BYTES]
    except ValueError:  # closed: the path names another file now
        local.conn = None
        return None
    if first != second or first[IS_INIT_OFFSET] != 1:
        return None
    if struct.unpack_from("=I", first)[0] != WAL_INDEX_VERSION:
        return None
    return first
