"""How `GET /api/projects` grows with the number of projects: 100, 1,000 and 10,000.

One codeb server (`python -m codeb serve`, fresh data dir) and one bare waitress app, as in
projects_throughput.py. For each size the project set grows to that size, then wrk measures,
side by side in one round each: the bare app, codeb's first page (`?limit=100`) and codeb's
last page (`?limit=100&offset=N-100`); and the time of one request right after a commit (no
cached page: read and serialized), the median of 15. Paging should keep both pages flat: a
page reads its 100 rows and their environments, and `total` is one count.

The first 100 projects are created through the API. The port ranges cap a fleet at a few
hundred projects with environments (568 database ports per environment kind), so beyond that
the rows are inserted straight into codeb's SQLite file by this script, with two active
environments each whose ports lie outside every range, and placeholder ciphertexts (a
listing never decrypts). The server sees them as any other commit (data_version moves).

    .venv/bin/python bench/projects_scale.py [--sizes 100,1000,10000] [--duration 4] [--json]

Every process it starts is stopped by its PID, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import BenchError, stop
from projects_throughput import (
    check_listing,
    create_projects,
    default_threads,
    ensure_wrk,
    measured_and_printed,
    run_wrk,
    start_bare,
    start_codeb,
)

API_CREATED = 100
PAGE = 100


def seed(db_path: Path, start: int, stop_at: int) -> None:
    """Projects start..stop_at-1 as rows, two environments each (see the module's note)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    projects, environments = [], []
    for i in range(start, stop_at):
        pid = str(uuid.uuid4())
        projects.append((pid, f"bench-{i:05d}", "nodejs", None, "bench-placeholder", now, now))
        for offset, env in enumerate(("staging", "production")):
            port = 100_000 + 10 * i + offset  # outside every range: never allocatable
            environments.append(
                (str(uuid.uuid4()), pid, env, port, port, port, 0, "bench", "bench", now)
            )
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO projects (id, name, type, git_repo, local_db_password, created_at,"
                " updated_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'active')",
                projects,
            )
            conn.executemany(
                "INSERT INTO environments (id, project_id, name, app_port, db_port, redis_port,"
                " redis_db, db_password, redis_password, created_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active')",
                environments,
            )
    finally:
        conn.close()


def measure(args: argparse.Namespace) -> dict:
    wrk = ensure_wrk()
    threads = args.threads or default_threads()
    load_before = os.getloadavg()[0]
    procs = []
    workdir = Path(tempfile.mkdtemp(prefix="codeb-bench-scale-"))
    rows = []
    try:
        codeb, key = start_codeb(workdir, threads, procs)
        bare = start_bare(workdir, threads, procs)
        db_path = workdir / "codeb-data" / "codeb.db"
        print(f"creating {API_CREATED} projects through the API ...", flush=True)
        create_projects(codeb, key, API_CREATED)
        have = API_CREATED
        for size in args.sizes:
            if size > have:
                t0 = time.monotonic()
                seed(db_path, have, size)
                have = size
                print(f"seeded up to {size} projects in {time.monotonic() - t0:.1f} s", flush=True)
            first = f"{codeb.base_url}/api/projects?limit={PAGE}"
            last = f"{codeb.base_url}/api/projects?limit={PAGE}&offset={size - PAGE}"
            for url in (first, last):
                check_listing(url, key, PAGE) if size == PAGE else _check_total(url, key, size)
            run_wrk(wrk, first, key, 1, args.connections, 2)  # warm-up
            row = {"projects": size}
            for name, url, k in (("bare", f"{bare.base_url}/", None), ("first", first, key),
                                 ("last", last, key)):  # fmt: skip
                s = run_wrk(wrk, url, k, args.duration, args.connections, 2)
                if s.errors:
                    raise BenchError(f"{name} at {size}: {s.errors} errors/non-2xx answers")
                row[name] = {"rps": s.rps, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms}
            row["uncached_ms"] = {
                "first": uncached_ms(db_path, first, key),
                "last": uncached_ms(db_path, last, key),
            }
            rows.append(row)
            print(
                f"{size:>6} projects: bare {row['bare']['rps']:8.1f} req/s | first page "
                f"{row['first']['rps']:8.1f} req/s p99 {row['first']['p99_ms']:6.2f} ms | "
                f"last page {row['last']['rps']:8.1f} req/s p99 {row['last']['p99_ms']:6.2f} ms | "
                f"after a commit: first {row['uncached_ms']['first']} ms, "
                f"last {row['uncached_ms']['last']} ms",
                flush=True,
            )
        for server in (codeb, bare):
            if server.proc.poll() is not None:
                raise BenchError(f"{server.name} died during the run:\n{server.log_text()[-4000:]}")
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "config": {
            "sizes": args.sizes,
            "duration_s": args.duration,
            "connections": args.connections,
            "server_threads": threads,
            "cpus": os.cpu_count(),
            "loadavg_1min_before": round(load_before, 2),
        },
        "rows": rows,
    }


def uncached_ms(db_path: Path, url: str, key: str, times: int = 15) -> float:
    """Median time of one request right after a commit by another connection, which empties
    every per-thread cache (codeb.store.db.ThreadCache): the page is read and serialized."""
    import statistics

    from projects_throughput import http

    conn = sqlite3.connect(db_path, timeout=30)
    took = []
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_touch (n INTEGER)")
        for n in range(times):
            with conn:
                conn.execute("INSERT INTO bench_touch (n) VALUES (?)", (n,))
            t0 = time.perf_counter()
            status, _ = http("GET", url, key)
            took.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise BenchError(f"GET {url} answered {status}")
    finally:
        conn.close()
    return round(statistics.median(took), 2)


def _check_total(url: str, key: str, size: int) -> None:
    from projects_throughput import http

    status, answer = http("GET", url, key)
    if status != 200 or answer["total"] != size or len(answer["projects"]) != PAGE:
        raise BenchError(f"GET {url} answered {status}: total {answer.get('total')}")


def report(result: dict) -> str:
    cfg, rows = result["config"], result["rows"]
    lines = [
        "",
        f"GET /api/projects?limit={PAGE} by project count; ratio = codeb ÷ bare waitress of the "
        f"same row; {cfg['server_threads']} server threads, wrk -c{cfg['connections']}, "
        f"{cfg['duration_s']} s each, {cfg['cpus']} CPUs (load before "
        f"{cfg['loadavg_1min_before']:.2f})",
        f"  {'projects':>8} {'bare r/s':>9} {'first r/s':>10} {'ratio':>6} {'p99 ms':>7}"
        f" {'last r/s':>9} {'ratio':>6} {'p99 ms':>7}   one request after a commit (ms):"
        " first, last page",
    ]
    base = rows[0]["first"]["rps"] if rows else 0
    for r in rows:
        b = r["bare"]["rps"] or 1
        lines.append(
            f"  {r['projects']:>8} {r['bare']['rps']:>9.1f} {r['first']['rps']:>10.1f}"
            f" {r['first']['rps'] / b:>6.2f} {r['first']['p99_ms']:>7.2f}"
            f" {r['last']['rps']:>9.1f} {r['last']['rps'] / b:>6.2f} {r['last']['p99_ms']:>7.2f}"
            f"   {r['uncached_ms']['first']:>6.2f} {r['uncached_ms']['last']:>6.2f}"
        )
    if rows and base:
        worst = min(min(r["first"]["rps"], r["last"]["rps"]) for r in rows)
        lines.append(
            f"  flatness: the slowest page at any size serves {worst / base:.2f} of the first "
            f"page at {rows[0]['projects']} projects"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="project counts, ascending")
    parser.add_argument("--duration", type=int, default=4, help="seconds per measurement (4)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--threads", type=int, default=0, help="waitress threads")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes integers separated by commas")
    if args.sizes != sorted(args.sizes) or args.sizes[0] < PAGE or args.sizes[-1] > 100_000:
        parser.error(f"--sizes must be ascending, from {PAGE} to 100000")
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be between 1 and 60 seconds")
    return measured_and_printed(measure, report, args)


if __name__ == "__main__":
    sys.exit(main())
