"""The AOF side of Redis copies, with a real redis-server (7.0, on a free loopback port) and
the role's own module functions (roles/codeb_redis_backup/library/codeb_redis.py): a cache
running with appendonly yes is copied as its WHOLE multi-part appendonlydir/ (the manifest,
the base and the incr file it names; keys written after the rewrite live only in the incr
part), and a new server started with appendonly yes on the unpacked copy has every key;
started with appendonly no on it, it would be empty (components.md's pitfall, the other way
round). A tar naming a path outside the directory is refused; a manifest naming a part that
is gone fails after its retries instead of packing half a copy."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

MODULE = Path(__file__).resolve().parents[2] / "roles/codeb_redis_backup/library/codeb_redis.py"


def _module():
    spec = importlib.util.spec_from_file_location("codeb_redis_module", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


codeb_redis = _module()


class Server:
    def __init__(self, directory: Path, appendonly: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(directory), "--appendonly", appendonly],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG" and "loading:0" in self.cli(
                "INFO", "persistence"
            ):
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return out.stdout

    def keys(self) -> dict[str, str]:
        names = sorted(self.cli("KEYS", "*").split())
        return {k: self.cli("GET", k).strip() for k in names}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()


def _rewritten(s: Server) -> None:
    before = int(s.cli("INFO", "persistence").split("aof_rewrites:")[1].split()[0])
    assert "rewriting started" in s.cli("BGREWRITEAOF")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = s.cli("INFO", "persistence")
        done = int(info.split("aof_rewrites:")[1].split()[0]) > before
        if done and "aof_rewrite_in_progress:0" in info:
            return
        time.sleep(0.05)
    raise AssertionError("BGREWRITEAOF did not finish")


def test_the_whole_multi_part_aof_is_copied_and_restores(tmp_path, servers):
    live_dir, new_dir, empty_dir = (tmp_path / n for n in ("live", "new", "empty"))
    for d in (live_dir, new_dir, empty_dir):
        d.mkdir()
    live = Server(live_dir, "yes")
    servers.append(live)
    for i in range(200):
        live.cli("SET", f"order:{i}", f"v{i}")
    _rewritten(live)  # order:* now in the base
    for i in range(50):
        live.cli("SET", f"later:{i}", f"w{i}")  # only in the incr part
    live.cli("SET", "codeb:canary", "cn_0123")
    time.sleep(1.2)  # appendfsync everysec
    archive = tmp_path / "copy.tar"
    files = codeb_redis.pack_aof(str(live_dir / "appendonlydir"), "appendonly.aof", str(archive))
    assert files[0] == "appendonly.aof.manifest"
    assert any(f.endswith(".base.rdb") for f in files) and any(
        f.endswith(".incr.aof") for f in files
    )
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted(files)
    name = codeb_redis.unpack_aof(str(archive), str(new_dir / "appendonlydir"))
    assert name == "appendonly.aof"
    restored = Server(new_dir, "yes")
    servers.append(restored)
    want = live.keys()
    assert len(want) == 251
    assert restored.keys() == want
    # The same files with appendonly no: the AOF is ignored and the database is empty.
    codeb_redis.unpack_aof(str(archive), str(empty_dir / "appendonlydir"))
    ignored = Server(empty_dir, "no")
    servers.append(ignored)
    assert ignored.cli("DBSIZE").strip() == "0"


def test_a_copy_naming_paths_outside_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"x"
        for evil in ("../escape", "appendonly.aof.manifest"):
            info = tarfile.TarInfo(evil)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(RuntimeError, match="unexpected AOF file name"):
        codeb_redis.unpack_aof(str(archive), str(tmp_path / "out"))
    assert not (tmp_path / "escape").exists()


def test_history_parts_are_left_out(tmp_path):
    d = tmp_path / "appendonlydir"
    d.mkdir()
    (d / "appendonly.aof.manifest").write_text(
        "file appendonly.aof.1.base.rdb seq 1 type h\n"
        "file appendonly.aof.2.base.rdb seq 2 type b\n"
        "file appendonly.aof.2.incr.aof seq 2 type i\n"
    )
    for name in ("appendonly.aof.2.base.rdb", "appendonly.aof.2.incr.aof"):
        (d / name).write_bytes(b"x")  # the history part is already gone
    files = codeb_redis.pack_aof(str(d), "appendonly.aof", str(tmp_path / "c.tar"))
    assert files == ["appendonly.aof.manifest", "appendonly.aof.2.base.rdb",
                     "appendonly.aof.2.incr.aof"]  # fmt: skip
    with tarfile.open(tmp_path / "c.tar") as tar:
        manifest = tar.extractfile("appendonly.aof.manifest").read().decode()
    assert "type h" not in manifest and "appendonly.aof.2.incr.aof" in manifest


def test_a_part_gone_fails_instead_of_packing_half(tmp_path):
    d = tmp_path / "appendonlydir"
    d.mkdir()
    (d / "appendonly.aof.manifest").write_text(
        "file appendonly.aof.3.base.rdb seq 3 type b\nfile appendonly.aof.3.incr.aof seq 3 type i\n"
    )
    (d / "appendonly.aof.3.base.rdb").write_bytes(b"REDIS")
    with pytest.raises(RuntimeError, match="kept changing"):
        codeb_redis.pack_aof(str(d), "appendonly.aof", str(tmp_path / "c.tar"), tries=2)
