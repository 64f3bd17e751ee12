"""codeb's own state off the control server (issue 18): the Litestream replica's lag under a
burst of writes, and the time to rebuild codeb from the replica and the recovery bundle.

In one run, on loopback only: a real S3 server (SeaweedFS, `weed mini`, every port pinned), a
real codeb API (waitress, in this process) replicating with a real Litestream child.

1. Lag: `--bursts` bursts of `--burst` project creations through the HTTP API as fast as one
   client goes; a sampler reads the replica's position (`litestream status` + `ltx`) every
   0.5 s. Prints, per run, the median and max number of transactions the replica was behind
   while writing, and the median time from the burst's last write until the replica held it
   (the loss window if the server died at that moment).
2. Restore: `--rounds` rounds alternating `codeb recovery restore` (service.restore_bundle:
   open the bundle, restore, verify the chain and a password, install) and the same replica
   restored by hand with `litestream restore`; medians and the ratio codeb ÷ by hand.

    .venv/bin/python bench/recovery.py [--bursts 3] [--burst 100] [--rounds 3] [--json]

Every process it starts is stopped by its PID (weed by its process group, Litestream by the
the replicator codeb itself started); the temporary directory is removed."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO_ROOT, say

sys.path.insert(0, str(REPO_ROOT))

from codeb.clock import SystemClock
from codeb.features.recovery import replica, service
from tests.s3 import seaweedfs
from tests.support import live_api, make_settings

PASSPHRASE = "bench passphrase, not a secret"


def sample_lag(settings, stop: threading.Event, samples: list[int]) -> None:
    config, db = service.litestream_config(settings), service.sqlite_path(settings)
    while not stop.is_set():
        try:
            behind = replica.position(config, db).behind
            if behind is not None:
                samples.append(behind)
        except replica.ReplicaError:
            pass
        stop.wait(0.5)


def catch_up_s(settings, timeout: float = 120) -> float:
    config, db = service.litestream_config(settings), service.sqlite_path(settings)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if replica.position(config, db).behind == 0:
                return time.monotonic() - start
        except replica.ReplicaError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the replica did not catch up in {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="codeb-bench-recovery-"))
    result: dict = {}
    try:
        with seaweedfs(work / "s3") as s3:
            data = work / "control"
            data.mkdir(mode=0o700)
            replica.write_credentials(
                data / "replica.credentials", s3.access_key_id, s3.secret_access_key
            )
            overrides = {
                "replica_url": f"s3://{s3.bucket}/bench/codeb.db",
                "replica_endpoint": s3.endpoint,
            }
            bundle_file = work / "bench.bundle"
            behind, caught_up, rates = [], [], []
            # The serving process starts the replicator itself.
            with live_api(data, clock=SystemClock(), **overrides) as api, api.client() as c:
                catch_up_s(api.deps.settings)
                for b in range(args.bursts):
                    stop, samples = threading.Event(), []
                    sampler = threading.Thread(
                        target=sample_lag, args=(api.deps.settings, stop, samples)
                    )
                    sampler.start()
                    started = time.monotonic()
                    for i in range(args.burst):
                        r = c.post("/api/projects", json={"name": f"b{b}-p{i}"})
                        if r.status_code != 201:
                            raise RuntimeError(r.text)
                    rates.append(args.burst / (time.monotonic() - started))
                    caught_up.append(catch_up_s(api.deps.settings))
                    stop.set()
                    sampler.join()
                    behind.extend(samples)
                    say(f"burst {b + 1}: caught up {caught_up[-1]:.2f} s after")
                with api.deps.db.connection_context():
                    service.export_bundle(api.deps, bundle_file, PASSPHRASE)
                catch_up_s(api.deps.settings)
            result["lag"] = {
                "bursts": args.bursts,
                "writes_per_burst": args.burst,
                "project_creates_per_s_median": round(statistics.median(rates), 1),
                "transactions_behind_median": statistics.median(behind) if behind else 0,
                "transactions_behind_max": max(behind, default=0),
                "catch_up_s_median": round(statistics.median(caught_up), 3),
                "catch_up_s_max": round(max(caught_up), 3),
            }
            codeb_s, by_hand_s = [], []
            config = data / "litestream" / "litestream.yml"
            for r in range(args.rounds):
                target = work / f"restored-{r}"
                started = time.monotonic()
                service.restore_bundle(make_settings(target), bundle_file, PASSPHRASE)
                codeb_s.append(time.monotonic() - started)
                out = work / f"by-hand-{r}.db"
                started = time.monotonic()
                replica.restore(config, service.sqlite_path(make_settings(data)), out)
                by_hand_s.append(time.monotonic() - started)
                say(f"restore {r + 1}: codeb {codeb_s[-1]:.2f} s, by hand {by_hand_s[-1]:.2f} s")
            result["restore"] = {
                "rounds": args.rounds,
                "codeb_s_median": round(statistics.median(codeb_s), 3),
                "by_hand_s_median": round(statistics.median(by_hand_s), 3),
                "ratio": round(statistics.median(codeb_s) / statistics.median(by_hand_s), 2),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        lag, rest = result["lag"], result["restore"]
        print(f"replica lag, {lag['bursts']} bursts of {lag['writes_per_burst']} project creates "
              f"({lag['project_creates_per_s_median']}/s):")  # fmt: skip
        print(f"  transactions behind while writing: median {lag['transactions_behind_median']}, "
              f"max {lag['transactions_behind_max']}")  # fmt: skip
        print(f"  caught up after the last write: median {lag['catch_up_s_median']} s, "
              f"max {lag['catch_up_s_max']} s")  # fmt: skip
        print(f"restore ({rest['rounds']} rounds): codeb {rest['codeb_s_median']} s, litestream "
              f"by hand {rest['by_hand_s_median']} s, ratio {rest['ratio']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
