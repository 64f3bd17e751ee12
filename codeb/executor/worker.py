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
from typing import Any, Protocol

from peewee import IntegrityError

from codeb.executor.events import EventRecord, host_recap, host_tasks
from codeb.executor.inventory import SshSettings
from codeb.executor.runner import PlaybookRun, RunOutcome, run_playbook, stop_zygote
from codeb.store.models import Lock, Operation, OperationEvent

log = logging.getLogger("codeb.worker")

STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "timeout", "interrupted")
FINAL_STATES = frozenset(STATUSES[2:])
OUTCOME_STATUS = {
    "successful": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
    "timeout": "timeout",
}


class JobFailed(Exception):
    """Raised by a job before or after its playbook to fail the operation with a message."""


@dataclass(frozen=True)
class JobResult:
    status: str  # succeeded, failed, canceled, timeout
    error: str | None
    result: dict


class Job(Protocol):
    """What an operation kind does: run one or more playbooks through `ctx.run` (events are
    stored as they come, the cancel flag and remote cleanup are handled) and record the
    effect on the state."""

    def run(self, ctx: RunContext) -> JobResult: ...


@dataclass(frozen=True)
class PlaybookJob:
    """The common shape: one playbook, then `finish` records its effect (in a transaction)."""

    build: Callable[[Any, Operation], PlaybookRun]
    finish: Callable[[Any, Operation, RunOutcome, list[EventRecord]], dict | None]

    def run(self, ctx: RunContext) -> JobResult:
        outcome, records = ctx.run(self.build(ctx.deps, ctx.operation))
        status = OUTCOME_STATUS.get(outcome.status, "failed")
        error = None if status == "succeeded" else describe_failure(outcome, records)
        with ctx.deps.write():
            extra = self.finish(ctx.deps, ctx.operation, outcome, records) or {}
        return JobResult(status, error, {**ctx.cleanup, **extra})


class CancelFlag(threading.Event):
    """A cancel request that remembers when it was made (to measure how fast runs stop)."""

    requested_at: float | None = None

    def set(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        super().set()


class RunContext:
    """What a job sees: the operation, the deps, and `run` for each playbook it needs."""

    def __init__(self, worker: Worker, operation: Operation, cancel: threading.Event) -> None:
        self._worker = worker
        self.deps = worker._deps
        self.operation = operation
        self.cancel = cancel
        self.records: list[EventRecord] = []
        # The records of the runs that do the operation's work (not of probes made after it):
        # the recap and the list of tasks that ran are theirs.
        self.primary_records: list[EventRecord] = []
        self.cleanup: dict[str, str] = {}
        self.last_rc: int | None = None
        self.cancel_stopped_after_s: float | None = None

    @property
    def canceled(self) -> bool:
        return self.cancel.is_set()

    def run(
        self, run: PlaybookRun, *, cancellable: bool = True, primary: bool = True
    ) -> tuple[RunOutcome, list[EventRecord]]:
        """Run a playbook as part of this operation; its events follow the earlier runs'.
        A run that is not `cancellable` (a read-only probe settling the registry after a
        cancel) runs to its end even when the operation was canceled."""
        op_id = self.operation.id
        # Every remote process of the run carries this marker (see playbooks/cancel.yml).
        run = dataclasses.replace(run, extravars={**run.extravars, "codeb_operation_id": op_id})
        offset = max((r.seq for r in self.records), default=0)
        writer = EventWriter(self.deps, op_id, seq_offset=offset)
        try:
            outcome = run_playbook(
                run,
                ssh=self._worker._ssh,
                work_dir=self.deps.settings.data_dir / "runs",
                on_event=writer.put,
                should_cancel=self.cancel.is_set if cancellable else (lambda: False),
            )
        finally:
            writer.close()
        if outcome.status == "canceled":
            self.note_stopped()
        self.records.extend(writer.records)
        if primary:
            self.primary_records.extend(writer.records)
            self.last_rc = outcome.rc
        if outcome.status in ("canceled", "timeout"):
            self.cleanup["remote_cleanup"] = self._worker._stop_remote_work(run, op_id)
        return outcome, writer.records

    def note_stopped(self) -> None:
        """The job has stopped its work because of the cancel: remember how long it took."""
        requested_at = getattr(self.cancel, "requested_at", None)
        if requested_at is not None and self.cancel_stopped_after_s is None:
            self.cancel_stopped_after_s = round(time.monotonic() - requested_at, 3)

    def recap(self) -> dict[str, dict[str, int]]:
        return host_recap(self.primary_records)

    def ran(self) -> dict[str, list[dict[str, str]]]:
        """Which tasks ran on which host (see `host_tasks`)."""
        return host_tasks(self.primary_records)


class EventWriter:
    """Drains a queue of events into operation_events in batches."""

    def __init__(
        self,
        deps: Any,
        operation_id: str,
        batch: int = 200,
        every_s: float = 0.2,
        seq_offset: int = 0,
    ):
        self._deps = deps
        self._offset = seq_offset
        self._op = operation_id
        self._batch = batch
        self._every = every_s
        self._queue: queue.SimpleQueue[EventRecord | None] = queue.SimpleQueue()
        self.records: list[EventRecord] = []
        self._thread = threading.Thread(target=self._drain, name=f"events-{operation_id}")
        self._thread.start()

    def put(self, record: EventRecord) -> None:
        if self._offset:
            record = dataclasses.replace(record, seq=record.seq + self._offset)
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
            self._cancel[operation_id] = CancelFlag()
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
        stop_zygote(self._deps.settings.data_dir / "runs")

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
        ctx = RunContext(self, Operation.get_by_id(operation_id), flag)
        try:
            done = job.run(ctx)
        except JobFailed as exc:
            done = JobResult("failed", str(exc), {})
        result = {"recap": ctx.recap(), **done.result}
        if done.status != "succeeded":
            # Exactly what was done on each host before the run stopped or failed.
            result.setdefault("ran", ctx.ran())
        if flag.is_set():
            result["cancel"] = {"stopped_after_s": ctx.cancel_stopped_after_s}
        self._finish(operation_id, done.status, ctx.last_rc, done.error, result)

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
