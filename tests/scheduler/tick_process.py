"""One codeb process that ticks its scheduler once (for the two-process lease test).

Usage: python -m tests.scheduler.tick_process DATA_DIR START_ISO GO_FILE RUNS_FILE
It opens the data directory like `codeb serve` does, waits until GO_FILE exists (so both
processes tick at the same moment), ticks once at START_ISO and prints what it ran."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

from codeb.app import build_deps
from codeb.clock import FrozenClock
from codeb.services.scheduler import Job, Scheduler
from tests.support import make_settings


def main() -> None:
    data_dir, start, go, runs = sys.argv[1:5]
    runs_file = Path(runs)

    def record(deps: object) -> dict:
        with open(runs_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # long enough for the other process to try its claim meanwhile
        return {"pid": os.getpid()}

    job = Job("contended", "counts its runs", dt.timedelta(minutes=1), record)
    deps = build_deps(make_settings(Path(data_dir)), FrozenClock(dt.datetime.fromisoformat(start)))
    scheduler = Scheduler(deps, {job.name: job})
    deadline = time.monotonic() + 30
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.01)
    print(",".join(scheduler.tick()) or "-", flush=True)


if __name__ == "__main__":
    main()
