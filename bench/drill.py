"""Restore drills (issue 11): how long a drill of a 100 MB database takes.

On the real test fleet (app, db, cache, plus a storage server added and bootstrapped through
codeb, its Barman installed through the fleet's package proxy), in one run of
tests/backups/test_drills_fleet.py -k bench with CODEB_DRILL_BENCH=1: the staging db filled
to at least 100 MB (110,000 rows of 896 bytes), a base backup through the API, then drills
through the API (POST /api/backups/:id/verify -> operation finished): barman verify-backup,
barman recover --target-immediate into a scratch directory, a scratch PostgreSQL container
started on it, connections, the canary row, a count of every table's rows, the container
and data removed. Prints the drill through codeb (request to finished operation) and the
storage server's part alone (the Ansible module's own clock).

    sudo .venv/bin/python bench/drill.py [--rounds 2] [--json] [--also "redis or project_delete"]

Medians over the rounds; prints the load average (the machine is shared) and the date.
`--also` runs more tests of that file in the same fleet boot (the stack costs minutes)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--also", default="", help="a pytest -k expression run in the same boot")
    args = parser.parse_args(argv)
    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        figures_file = Path(tmp) / "figures.json"
        env = {
            **os.environ,
            "CODEB_DRILL_BENCH": "1",
            "CODEB_DRILL_BENCH_ROUNDS": str(args.rounds),
            "CODEB_DRILL_FIGURES": str(figures_file),
        }
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/backups/test_drills_fleet.py", "-q",
             *([] if args.also else ["-x"]),  # --also: one failure does not stop the rest
             "-k", f"bench or ({args.also})" if args.also else "bench",
             "-p", "no:cacheprovider"],
            cwd=REPO_ROOT, env=env, check=False,
        )  # fmt: skip
        if run.returncode != 0:
            print(f"(pytest exited {run.returncode}: see its output above)", file=sys.stderr)
        if not figures_file.exists():
            print("the benchmark's fleet run failed (see pytest's output above)", file=sys.stderr)
            return 1
        figures = json.loads(figures_file.read_text())
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.json:
        out = {**figures, "loadavg_before": load_before, "loadavg_after": loadavg(), "at": when}
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    mb = figures["database_bytes"] / 1024 / 1024
    print(f"restore drill of a {mb:.0f} MB database (median of {figures['rounds']} rounds)")
    print(f"  through codeb (request -> operation finished): {figures['drill_api_s']:.1f} s")
    print(f"  on the storage server (verify, recover, start, checks, cleanup): "
          f"{figures['drill_on_storage_s']:.1f} s")  # fmt: skip
    print(f"  load average: {load_before} before, {loadavg()} after ({when}, "
          f"{os.cpu_count()} cores)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
