"""Runs operations in background threads. Runs that touch the same server are serialised by
leases in the `locks` table (a wait with a timeout); runs on different servers go side by
side. Events are queued by the runner's handler and written in batches by another thread, so
the handler never blocks the run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from peewee import IntegrityError

from codeb.executor.events import EventRecord, host_recap
from codeb.executor.inventory import SshSettings
from codeb.executor.runner import PlaybookRun, RunOutcome, run_playbook
from codeb.store.models import Lock, Operation, OperationEvent

log = logging.getLogger("codeb.worker")

FINAL_STATES = frozenset({"succeeded", "failed", "canceled", "timeout", "interrupted"})
OUTCOME_STATUS = {
    "successful": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
    "timeout": "timeout",
}


class JobFailed(Exception):
    """Raised by a job before or after its playbook to fail the operation with a message."""


@dataclass(frozen=True)
class Job:
    """What an operation kind runs: `build` makes the playbook run (may raise JobFailed);
    `finish` records its effect on the state, inside a write transaction."""

    build: Callable[[Any, Operation], PlaybookRun]
    finish: Callable[[Any, Operation, RunOutcome, list[EventRecord]], dict | None]


class EventWriter:
    """Drains a queue of events into operation_events in batches."""

    def __init__(self, deps: Any, operation_id: str, batch: int = 200, every_s: float = 0.2):
        self._deps = deps
        self._op = operation_id
        self._batch = batch
        self._every = every_s
        self._queue: queue.SimpleQueue[EventRecord | None] = queue.SimpleQueue()
        self.records: list[EventRecord] = []
        self._thread = threading.Thread(target=self._drain, name=f"events-{operation_id}")
        self._thread.start()

    def put(self, record: EventRecord) -> None:
        self._queue.put(record)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _drain(self) -> None:
        pending: list[EventRecord] = []
        done = False
        while not done:
            deadline = time.monotonic() + self._every
            while len(pending) < self._batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                pending.append(item)
            if pending:
                self._write(pending)
                self.records.extend(pending)
                pending = []

    def _write(self, records: list[EventRecord]) -> None:
        now = self._deps.clock.now()
        rows = [
            {
                "operation": self._op,
                "seq": r.seq,
                "event": r.event,
                "host": r.host,
                "task": r.task,
                "changed": r.changed,
                "failed": r.failed,
                "duration": r.duration,
                "data": r.data,
                "created_at": now,
            }
            for r in records
        ]
        try:
            with self._deps.db.connection_context(), self._deps.write():
                OperationEvent.insert_many(rows).on_conflict_ignore().execute()
        except Exception:
            log.exception("could not store %d events of operation %s", len(rows), self._op)


class Worker:
    def __init__(self, deps: Any, jobs: dict[str, Job], ssh: SshSettings) -> None:
        self._deps = deps
        self._jobs = jobs
        self._ssh = ssh
        self._pool = ThreadPoolExecutor(
            max_workers=deps.settings.worker_threads, thread_name_prefix="codeb-run"
        )
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # -- called by services -------------------------------------------------------------
    def register(self, kind: str, job: Job) -> None:
        self._jobs[kind] = job

    def submit(self, operation_id: str) -> None:
        """Start an operation whose row is committed (call after the transaction)."""
        with self._lock:
            self._cancel[operation_id] = threading.Event()
        self._pool.submit(self._run_safely, operation_id)

    def cancel(self, operation_id: str) -> bool:
        with self._lock:
            flag = self._cancel.get(operation_id)
        if flag is None:
            return False
        flag.set()
        return True

    def shutdown(self) -> None:
        with self._lock:
            for flag in self._cancel.values():
                flag.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the run ------------------------------------------------------------------------
    def _run_safely(self, operation_id: str) -> None:
        try:
            with self._deps.db.connection_context():
                self._run(operation_id)
        except Exception as exc:  # a bug must fail the operation, never leave it running
            log.exception("operation %s crashed", operation_id)
            with self._deps.db.connection_context():
                self._finish(operation_id, "failed", None, f"internal error: {type(exc).__name__}")
        finally:
            with self._lock:
                self._cancel.pop(operation_id, None)
            with self._deps.db.connection_context(), self._deps.write():
                Lock.delete().where(Lock.operation_id == operation_id).execute()

    def _run(self, operation_id: str) -> None:
        op = Operation.get_by_id(operation_id)
        flag = self._cancel[operation_id]
        job = self._jobs[op.kind]
        resources = [f"server:{name}" for name in sorted(op.targets or [])]
        if not self._acquire(operation_id, resources, flag):
            if flag.is_set():
                self._finish(operation_id, "canceled", None, "canceled while waiting")
            return
        now = self._deps.clock.now()
        with self._deps.write():
            updated = (
                Operation.update(status="running", started_at=now)
                .where((Operation.id == operation_id) & (Operation.status == "queued"))
                .execute()
            )
        if not updated:
            return  # canceled (or recovered) before it started
        try:
            run = job.build(self._deps, op)
        except JobFailed as exc:
            self._finish(operation_id, "failed", None, str(exc))
            return
        # Every remote process of the run carries this marker (see playbooks/cancel.yml).
        run = dataclasses.replace(
            run, extravars={**run.extravars, "codeb_operation_id": operation_id}
        )
        writer = EventWriter(self._deps, operation_id)
        try:
            outcome = run_playbook(
                run,
                ssh=self._ssh,
                work_dir=self._deps.settings.data_dir / "runs",
                on_event=writer.put,
                should_cancel=flag.is_set,
            )
        finally:
            writer.close()
        status = OUTCOME_STATUS.get(outcome.status, "failed")
        recap = host_recap(writer.records)
        error = None if status == "succeeded" else describe_failure(outcome, writer.records)
        result: dict = {"recap": recap}
        if outcome.status in ("canceled", "timeout"):
            result["remote_cleanup"] = self._stop_remote_work(run, operation_id)
        try:
            with self._deps.write():
                extra = job.finish(
                    self._deps, Operation.get_by_id(operation_id), outcome, writer.records
                )
            result.update(extra or {})
        except JobFailed as exc:
            status, error = "failed", str(exc)
        self._finish(operation_id, status, outcome.rc, error, result)

    def _stop_remote_work(self, run: PlaybookRun, operation_id: str) -> str:
        """Killing ansible-playbook does not stop what a task started on a host: find those
        processes by the run's marker and stop them."""
        cleanup = PlaybookRun(
            playbook="cancel.yml",
            targets=run.targets,
            limit=run.limit,
            extravars={"codeb_cancel_operation_id": operation_id},
            timeout_s=120,
        )
        outcome = run_playbook(
            cleanup,
            ssh=self._ssh,
            work_dir=self._deps.settings.data_dir / "runs",
            on_event=lambda record: None,
        )
        return outcome.status

    def _acquire(self, operation_id: str, resources: list[str], flag: threading.Event) -> bool:
        settings = self._deps.settings
        deadline = time.monotonic() + settings.lock_wait_s
        lease = dt.timedelta(seconds=settings.run_timeout_s + 60)
        while True:
            now = self._deps.clock.now()
            try:
                with self._deps.write():
                    # Leases outlive a run only if its process died without cleaning up.
                    Lock.delete().where(
                        Lock.resource.in_(resources) & (Lock.expires_at < now)
                    ).execute()
                    for resource in resources:
                        Lock.insert(
                            resource=resource,
                            operation_id=operation_id,
                            acquired_at=now,
                            expires_at=now + lease,
                        ).execute()
                return True
            except IntegrityError:
                pass
            if flag.is_set():
                return False
            if time.monotonic() > deadline:
                holders = [
                    lk.operation_id for lk in Lock.select().where(Lock.resource.in_(resources))
                ]
                self._finish(
                    operation_id,
                    "failed",
                    None,
                    f"timed out after {settings.lock_wait_s}s waiting for "
                    f"operation(s) {', '.join(sorted(set(holders)))} on the same server",
                )
                return False
            flag.wait(0.25)

    def _finish(
        self,
        operation_id: str,
        status: str,
        rc: int | None,
        error: str | None,
        result: dict | None = None,
    ) -> None:
        with self._deps.write():
            Operation.update(
                status=status,
                rc=rc,
                error=error,
                result=result,
                finished_at=self._deps.clock.now(),
            ).where(
                (Operation.id == operation_id) & (Operation.status.not_in(list(FINAL_STATES)))
            ).execute()


def describe_failure(outcome: RunOutcome, records: list[EventRecord]) -> str:
    """A sentence an operator can act on: which host failed at which task, and why."""
    if outcome.status == "canceled":
        return "canceled by request"
    if outcome.status == "timeout":
        return "the run exceeded its timeout and was stopped"
    for rec in records:
        if rec.event == "runner_on_unreachable":
            msg = str(rec.data.get("msg", "")).strip()
            return f"host {rec.host} is unreachable: {msg}"[:500]
    for rec in records:
        if rec.failed:
            msg = str(rec.data.get("msg") or rec.data.get("stderr") or "").strip()
            return f"task '{rec.task}' failed on {rec.host}: {msg}"[:500]
    messages = [
        str(rec.data["stdout"]).strip()
        for rec in records
        if rec.event in ("verbose", "error") and "error" in str(rec.data.get("stdout", "")).lower()
    ]
    if messages:
        return " ".join(messages)[:500]
    return f"ansible-playbook exited with rc={outcome.rc}"
