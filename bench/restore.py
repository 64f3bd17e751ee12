"""PostgreSQL backups (issue 10): what a point-in-time restore through codeb costs against the
same restore by hand, and what WAL shipping costs the database.

On the real test fleet (app, db, cache, plus a storage server added and bootstrapped through
codeb, its Barman installed through the fleet's package proxy), in one run of
tests/backups/test_storage_fleet.py -k bench with CODEB_BACKUP_BENCH=1 (the staging db's
first backup through the API, then both restores of each round side by side):

1. **PITR through codeb ÷ by hand** (target <= 1.2): a restore of the staging db's backup to a
   second just written, into a new container on the storage server: through codeb's backups
   service (request -> operation `succeeded`, i.e. recovery over and the server accepting
   writes) against the same steps over SSH with Barman's own commands (switch-wal --archive,
   recover --target-time --target-action promote, volume, unit, start, wait for promotion).
   codeb runs the restore as one Ansible module on the storage server
   (roles/codeb_backup_storage/library/codeb_barman_restore.py: one round trip, not one per
   step).
   Each API restore is split into its parts (request, wait for the worker, ansible-runner's
   and ansible-playbook's start-up, the module's task and its steps, the run's end, the
   client's last poll), so what codeb adds beyond the restore itself shows.
   Which side goes first alternates each round (as bench/redeploy.py does): the second may
   find the archiver or the caches warm from the first.
2. **pgbench TPS with WAL shipping on ÷ off** (target >= 0.95): `pgbench -c 4 -j 2 -T N`
   inside the db container with the storage server's WAL receiver running as deployed
   (pg_receivewal in bursts every 5 s on the slot: module_utils/codeb_barman_receiver.py),
   then stopped (off: the receiver's unit and Barman's minute timer stopped, since barman
   cron starts a receiver itself when none runs; checked: no walsender on the db);
   `--tps-rounds` rounds in a rotating order, each run after a CHECKPOINT, each shipping
   run once a burst begun after the receiver's restart has succeeded (its catch-up is a
   restart's cost, not shipping's), after one uncounted warm-up run. A third side streams
   every commit at once (the receiver with interval 0: a walsender woken by each commit,
   what codeb did before the bursts). Prints the ratio of the medians, the median of each
   round's own ratio, the CPU seconds each kind of process used per run (walsender,
   pg_receivewal, the receiver, Barman, postgres, pgbench) and how far the slot was behind
   after each shipping run. With --split-cpus, the same on ÷ off once more with the db
   guest on CPU 0 and the storage guest on CPU 1 (a cpuset each): on this machine the two
   guests share the CPUs, in production the storage server is another machine.
3. **A base backup's WAL close**: Barman's `switch-wal --force --archive` ÷ the shared close
   (module_utils/codeb_barman_wal.py), alternating, 4 each, and a backup through the API.

    sudo .venv/bin/python bench/restore.py [--rounds 2] [--seconds 15] [--tps-rounds 6]
        [--split-cpus] [--json]

Medians over the rounds; prints the load average (the machine is shared)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def print_cpu(figures: dict, sides: tuple[str, ...]) -> None:
    """The median CPU seconds per pgbench run of each kind of process, per side."""
    for side in sides:
        runs = figures.get(f"pgbench_cpu_s_{side}_rounds") or []
        kinds = sorted({k for r in runs for k in r})
        medians = {k: statistics.median(r.get(k, 0) for r in runs) for k in kinds}
        if medians:
            print(f"  CPU s per run, {side:8} (median): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=15, help="each pgbench run")
    parser.add_argument("--tps-rounds", type=int, default=6, help="pgbench on/off pairs")
    parser.add_argument(
        "--split-cpus",
        action="store_true",
        help="also measure pgbench on / off with the db and the storage server each on a CPU "
        "of its own (as on separate machines)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures_file = Path(tmp) / "figures.json"
        env = {
            **os.environ,
            "CODEB_BACKUP_BENCH": "1",
            "CODEB_BACKUP_BENCH_ROUNDS": str(args.rounds),
            "CODEB_BACKUP_BENCH_SECONDS": str(args.seconds),
            "CODEB_BACKUP_BENCH_TPS_ROUNDS": str(args.tps_rounds),
            "CODEB_BACKUP_FIGURES": str(figures_file),
            "CODEB_BACKUP_BENCH_SPLIT_CPUS": "1" if args.split_cpus else "0",
        }
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/backups/test_storage_fleet.py", "-x",
             "-q", "-s", "-k", "bench", "-p", "no:cacheprovider"],
            cwd=REPO_ROOT, env=env, check=False,
        )  # fmt: skip
        if run.returncode != 0 or not figures_file.exists():
            print("the benchmark's fleet run failed (see pytest's output above)", file=sys.stderr)
            return 1
        figures = json.loads(figures_file.read_text())
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True))
        return 0
    print(f"PITR restore through codeb   {figures['pitr_api_s']:7.1f} s (median)")
    print(f"PITR restore by hand         {figures['pitr_by_hand_s']:7.1f} s")
    print(
        f"  rounds: through codeb {figures.get('pitr_api_rounds_s')}, by hand "
        f"{figures.get('pitr_by_hand_rounds_s')}, order {figures.get('pitr_order')}"
    )
    print(f"  by hand's switch-wal       {figures.get('pitr_by_hand_switch_wal_s')}")
    print(f"  codeb / by hand            {figures['pitr_api_over_by_hand']:7.2f}  (target <= 1.2)")
    if "pitr_api_covered_s" in figures:
        print(
            f"PITR to round 0's target     {figures['pitr_api_covered_s']:7.1f} s  (covered by "
            f"the archive: {figures.get('pitr_api_covered_steps')})"
        )
    print(f"pgbench TPS, WAL shipping    {figures['pgbench_tps_wal_on']:7.1f}  (bursts)")
    print(f"pgbench TPS, receiver off    {figures['pgbench_tps_wal_off']:7.1f}")
    print(f"  on / off                   {figures['pgbench_on_over_off']:7.2f}  (target >= 0.95)")
    print(
        f"  median of the pairs' ratio {figures.get('pgbench_round_ratio_median', 0):7.2f}  "
        f"({len(figures.get('pgbench_round_ratios') or [])} pairs, alternating order)"
    )
    if "pgbench_tps_wal_per_commit" in figures:
        print(
            "pgbench TPS, every commit streamed at once "
            f"{figures['pgbench_tps_wal_per_commit']:.1f}"
            f" (÷ off {figures['pgbench_per_commit_over_off']:.2f}; rounds "
            f"{[round(x) for x in figures['pgbench_tps_per_commit_rounds']]})"
        )
    print(f"  order {figures.get('pgbench_order')}")
    print(f"  walsenders after each off run {figures.get('pgbench_walsenders_after_off_runs')}")
    print(f"  db: {figures.get('pgbench_db_settings')}; {figures.get('pgbench_replication')}")
    print(f"  receiver: {figures.get('pgbench_receiver_args')}")
    print_cpu(figures, ("on", "per_commit", "off"))
    for side in ("on", "per_commit"):
        shares = figures.get(f"pgbench_shipping_cpu_share_{side}_rounds")
        if shares:
            print(f"  shipping's CPU ÷ the db's and shipping's, {side}: median "
                  f"{statistics.median(shares):.3f} (runs {shares})")  # fmt: skip
    for side in ("on", "per_commit"):
        lags = figures.get(f"pgbench_receiver_lag_after_{side}_runs")
        if lags:
            print(
                f"  slot behind after each {side} run (bytes written on the db the receiver "
                f"had not confirmed as flushed): {lags}"
            )
    if "split_cpus_pgbench_on_over_off" in figures:
        split = {k.removeprefix("split_cpus_"): v for k, v in figures.items()
                 if k.startswith("split_cpus_")}  # fmt: skip
        print(
            f"pgbench TPS, db and storage server each on a CPU of its own: on "
            f"{split['pgbench_tps_wal_on']:.1f}, off {split['pgbench_tps_wal_off']:.1f}, "
            f"on / off {split['pgbench_on_over_off']:.2f} (pairs' median "
            f"{split['pgbench_round_ratio_median']:.2f}, {split['pgbench_round_ratios']})"
        )
        print_cpu(split, ("on", "off"))
    print(f"a backup on request          {figures.get('backup_before_restores_s', 0):7.1f} s")
    print(f"a backup after the restores  {figures.get('backup_after_restores_s', 0):7.1f} s")
    print(
        f"a base backup's WAL close: switch-wal --force --archive "
        f"{figures.get('wal_close_switch_wal_archive_s')} s, the shared close "
        f"{figures.get('wal_close_shared_s')} s"
    )
    print("where an API restore's time goes (median of the rounds):")
    parts = figures.get("pitr_api_breakdown") or []
    for key in ("request_s", "queued_s", "runner_start_s", "before_module_s", "module_task_s",
                "run_end_s", "poll_s"):  # fmt: skip
        values = [p[key] for p in parts if isinstance(p.get(key), int | float)]
        if values:
            print(f"  {key:26} {statistics.median(values):7.2f} s")
    for p in parts:
        print(f"  module: {p.get('module_steps')}")
    print(f"load average (1 min)         {figures['loadavg_1m']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
