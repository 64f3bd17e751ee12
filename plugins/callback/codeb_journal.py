"""Ansible callback: a run made by hand (ansible-playbook with codeb's ansible.cfg) leaves a
JSON-lines journal that codeb imports into its operation log when it next runs. Only names
and statuses are written, never task results, so no secret can leak into the journal."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from pathlib import Path

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: codeb_journal
type: notification
short_description: write a journal of manual runs for codeb
description: Writes $CODEB_JOURNAL_DIR (or $CODEB_DATA_DIR/journal, or var/journal) JSON lines.
"""


def _journal_dir() -> Path:
    if os.environ.get("CODEB_JOURNAL_DIR"):
        return Path(os.environ["CODEB_JOURNAL_DIR"])
    if os.environ.get("CODEB_DATA_DIR"):
        return Path(os.environ["CODEB_DATA_DIR"]) / "journal"
    return Path(__file__).resolve().parents[2] / "var" / "journal"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "codeb_journal"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._file = None
        self._enabled = os.environ.get("CODEB_JOURNAL", "on") != "off"

    def _write(self, record: dict) -> None:
        if not self._enabled:
            return
        if self._file is None:
            directory = _journal_dir()
            directory.mkdir(parents=True, exist_ok=True)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            path = directory / f"{stamp}-{os.getpid()}.jsonl.part"
            self._file = open(path, "a", encoding="utf-8")
        record["at"] = dt.datetime.now(dt.UTC).isoformat()
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def v2_playbook_on_start(self, playbook) -> None:
        self._write(
            {
                "event": "start",
                "playbook": os.path.basename(playbook._file_name),
                "user": getpass.getuser(),
                "machine": socket.gethostname(),
            }
        )

    def _result(self, status: str, result) -> None:
        self._write(
            {
                "event": "task",
                "status": status,
                "host": result._host.get_name(),
                "task": result._task.get_name(),
                "changed": bool(result._result.get("changed")),
            }
        )

    def v2_runner_on_ok(self, result) -> None:
        self._result("changed" if result._result.get("changed") else "ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._result("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_unreachable(self, result) -> None:
        self._result("unreachable", result)

    def v2_runner_on_skipped(self, result) -> None:
        self._result("skipped", result)

    def v2_playbook_on_stats(self, stats) -> None:
        recap = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._write({"event": "end", "recap": recap})
        if self._file is not None:
            path = Path(self._file.name)
            self._file.close()
            path.rename(path.with_suffix(""))  # .jsonl.part -> .jsonl: complete
            self._file = None
