"""What every remote command shares: exit codes, error reports, the confirm flow (MEDIUM:
warn, ask, confirm; HIGH/CRITICAL: show what is still required) and following an operation's
events until it ends."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codeb.cli.output import Output, duration, pairs, table
from codeb.client import (
    ApiError,
    CodebClient,
    Json,
    executed_result,
    follow_events,
    kind_of,
    next_steps,
    operation_in,
    refused_by_protection,
)

OK, FAILED, USAGE, REFUSED, AUTH, UNAVAILABLE = 0, 1, 2, 3, 4, 5
INTERRUPTED = 130  # Ctrl-C: stopped following (the operation goes on)

EXIT_CODES = """\
exit codes:
  0    ok (an operation that was followed succeeded)
  1    an operation failed, was canceled, timed out or was interrupted;
       protection logs --verify found a broken chain
  2    bad usage, or the API refused the input (400/404/409/410/422)
  3    refused by the Protection Layer, or a confirmation not given
       (declined, no TTY without --yes, queued HIGH/CRITICAL still waiting)
  4    authentication or authorisation (401, 403 other than protection)
  5    the API could not be reached, or answered with a server error (5xx)
  130  Ctrl-C while following: the operation goes on (codeb operations follow ID)"""

Render = Callable[[Json], None]


class UsageError(Exception):
    """A command line the CLI refuses before asking the API (exit 2)."""


@dataclass(frozen=True)
class Parents:
    """Options shared by leaf commands, as argparse parent parsers."""

    json: argparse.ArgumentParser
    act: argparse.ArgumentParser
    preview: argparse.ArgumentParser


def parents() -> Parents:
    json_p = argparse.ArgumentParser(add_help=False)
    json_p.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    act = argparse.ArgumentParser(add_help=False)
    act.add_argument("-y", "--yes", action="store_true", help="answer yes to a MEDIUM prompt")
    act.add_argument(
        "--no-follow", action="store_true", help="start an operation without following it"
    )
    preview = argparse.ArgumentParser(add_help=False)
    preview.add_argument(
        "--preview", action="store_true", help="show what would change; change nothing"
    )
    preview.add_argument(
        "--apply", action="store_true", help="with --preview: then apply exactly that plan"
    )
    preview.add_argument("--plan-hash", help="apply exactly a plan previewed earlier")
    return Parents(json_p, act, preview)


def exit_code_for(error: ApiError) -> int:
    if error.status == 0 or error.status >= 500:
        return UNAVAILABLE
    if refused_by_protection(error):
        return REFUSED
    if error.status in (401, 403):
        return AUTH
    return USAGE


def unmet_lines(unmet: Any) -> list[str]:
    if not isinstance(unmet, list):
        return []
    lines = []
    for item in unmet:
        if isinstance(item, dict):
            remedy = item.get("satisfy") or item.get("remedy") or ""
            lines.append(f"  - {item.get('requirement')}: {remedy}")
    return lines


def report_error(error: ApiError, out: Output, config_hint: str = "") -> int:
    if out.json_mode:
        out.data(error.body())
    out.warn(f"error: {error.message} [{error.code}]")
    details = dict(error.details)
    unmet = unmet_lines(details.pop("unmet", None))
    if unmet:
        out.warn("still required:")
        for line in unmet:
            out.warn(line)
    details.pop("reasons", None)
    for key, value in details.items():
        if isinstance(value, str | int | float | bool) or value is None:
            out.warn(f"  {key}: {value}")
    if error.code == "plan_changed":
        out.warn("the state changed since the preview: preview again (--preview)")
    if error.status == 401 and config_hint:
        out.warn(config_hint)
    return exit_code_for(error)


def _ask_tty() -> bool:
    return sys.stdin.isatty()


@dataclass
class Session:
    """One CLI invocation talking to the API."""

    client: CodebClient
    out: Output
    yes: bool = False
    follow: bool = True
    interactive: Callable[[], bool] = field(default=_ask_tty)
    read_line: Callable[[], str] = field(default=input)

    # --- answers ---------------------------------------------------------------------------

    def finish(self, answer: Json, render: Render | None = None) -> int:
        """Show an answer of a mutating request and carry it on: confirm flow, follow."""
        kind = kind_of(answer)
        if kind == "confirmation_required":
            return self._medium(answer, render)
        if kind == "queued":
            return self._queued(answer)
        if kind == "recorded":
            return self._recorded(answer)
        if self.out.json_mode:
            self.out.data(answer)
        inner = executed_result(answer)
        if inner is not answer and "entry" in answer:
            self.out.say(self.out.paint(f"{answer.get('operation')}: executed", "green"))
        operation = operation_in(inner)
        if not self.out.json_mode:
            if render is not None:
                render(inner)
            elif operation is None:
                self.out.say(pairs((k, v) for k, v in inner.items() if not isinstance(v, dict)))
        if operation is None:
            return OK
        if not self.follow:
            self.out.say(f"operation {operation['id']} started ({operation.get('status')})")
            self.out.say(f"  follow it: codeb operations follow {operation['id']}")
            return OK
        return self.follow_operation(operation["id"])

    def _medium(self, answer: Json, render: Render | None) -> int:
        out, token = self.out, answer["confirm_token"]
        out.say(out.paint(str(answer.get("warning") or answer.get("operation")), "yellow"))
        if self.yes:
            proceed = True
        elif self.interactive():
            print("Proceed? [y/N] ", end="", file=out.human, flush=True)
            try:
                reply = self.read_line()
            except EOFError:
                reply = ""
            proceed = reply.strip().lower() in ("y", "yes")
            if not proceed:  # withdraw the request rather than leave a live token behind
                self.client.cancel(token=token)
                out.say("not confirmed: nothing was changed")
                return REFUSED
        else:
            if out.json_mode:
                out.data(answer)
            out.say("not confirmed (no terminal to ask, and no --yes); nothing was changed yet.")
            out.say(f"confirm before {answer.get('token_expires_at')} with the same API key:")
            out.say(f"  codeb protection confirm {token}")
            return REFUSED
        return self.finish(self.client.confirm(token), render)

    def _queued(self, answer: Json) -> int:
        out, entry = self.out, answer.get("entry") or {}
        if out.json_mode:
            out.data(answer)
        token, entry_id = answer["confirm_token"], entry.get("id")
        name = shlex.quote(str((entry.get("target") or {}).get("name") or "NAME"))
        out.say(out.paint(f"QUEUED: {answer.get('warning')}", "yellow"))
        out.say(
            pairs(
                [
                    ("entry", entry_id),
                    ("operation", answer.get("operation")),
                    ("target", name),
                    ("cooldown ends", _cooldown(entry)),
                    ("expires", entry.get("expires_at")),
                    ("confirm token", f"{token}  (shown once; keep it)"),
                ]
            )
        )
        self._still_required(entry)
        steps = [(step.command, step.why) for step in next_steps(answer, shlex.quote)]
        width = max(len(cmd) for cmd, _ in steps)
        out.say("to continue (same API key; the final confirm after the cooldown):")
        for cmd, why in steps:
            out.say(f"  {cmd:<{width}}  # {why}")
        return REFUSED

    def _recorded(self, answer: Json) -> int:
        out, entry = self.out, answer.get("entry") or {}
        if out.json_mode:
            out.data(answer)
        target = (entry.get("target") or {}).get("name")
        out.say(
            f"confirmation recorded: {answer.get('operation')} of {target} "
            f"(entry {entry.get('id')}, {entry.get('confirmations')} confirmation(s)); "
            "not executed yet"
        )
        out.say(f"cooldown: {_cooldown(entry)}")
        self._still_required(entry)
        return OK

    def _still_required(self, entry: Json) -> None:
        lines = unmet_lines(entry.get("unmet"))
        if lines:
            self.out.say("still required:")
            for line in lines:
                self.out.say(line)

    # --- operations ------------------------------------------------------------------------

    def follow_operation(self, operation_id: str, emit_final: bool = False) -> int:
        """Print the events task by task until the operation ends; the exit code says how.
        With `emit_final`, --json mode prints the finished operation."""
        out = self.out
        out.say(f"following operation {operation_id} (Ctrl-C stops following, not the operation)")
        try:
            for event in follow_events(self.client, operation_id):
                for line in event_lines(event, out):
                    out.say(line)
            final = self.client.get_operation(operation_id)
        except KeyboardInterrupt:
            out.warn(f"\nstopped following; operation {operation_id} goes on on the server.")
            out.warn(f"  resume: codeb operations follow {operation_id}")
            out.warn(f"  cancel: codeb operations cancel {operation_id}")
            return INTERRUPTED
        except ApiError:
            out.warn(f"lost track of operation {operation_id}; it goes on on the server.")
            out.warn(f"  resume: codeb operations follow {operation_id}")
            raise
        if emit_final and out.json_mode:
            out.data(final)
        self.show_outcome(final)
        return OK if final.get("status") == "succeeded" else FAILED

    def show_outcome(self, op: Json) -> None:
        out = self.out
        recap = op.get("recap") or {}
        if recap:
            out.say("RECAP")
            out.say(table([{"host": h, **c} for h, c in recap.items()], RECAP_COLUMNS))
        status = str(op.get("status"))
        colour = "green" if status == "succeeded" else "red"
        rc = f" (rc {op['rc']})" if op.get("rc") not in (None, 0) else ""
        took = f" in {op['duration_s']}s" if op.get("duration_s") is not None else ""
        out.say(out.paint(f"operation {op.get('id')} {status}{rc}{took}", colour))
        if op.get("error"):
            out.say(f"  error: {op['error']}")


RECAP_COLUMNS = [
    ("HOST", "host"),
    ("OK", "ok"),
    ("CHANGED", "changed"),
    ("FAILED", "failures"),
    ("UNREACHABLE", "dark"),
    ("SKIPPED", "skipped"),
]
RESULTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
RESULT_COLOURS = {"ok": "green", "changed": "yellow", "skipped": "dim"}


def event_lines(event: Json, out: Output) -> list[str]:
    """One event as lines: `[host] TASK name ... ok (0.4s)`, plays, errors; [] for the rest."""
    kind, data = event.get("event"), event.get("data") or {}
    if kind == "playbook_on_play_start":
        return [out.paint(f"PLAY {data.get('play') or ''}".rstrip(), "bold")]
    if kind in ("error", "warning", "verbose") and data.get("stdout"):
        return [f"{kind}: {line}" for line in str(data["stdout"]).splitlines() if line.strip()]
    if kind not in RESULTS:
        return []
    result = "changed" if kind == "runner_on_ok" and event.get("changed") else RESULTS[kind]
    if kind == "runner_on_failed" and data.get("ignore_errors"):
        result = "failed (ignored)"
    took = f" ({event['duration']:.1f}s)" if isinstance(event.get("duration"), int | float) else ""
    word = out.paint(result, RESULT_COLOURS.get(result, "red"))
    lines = [f"[{event.get('host')}] TASK {event.get('task')} ... {word}{took}"]
    if kind in ("runner_on_failed", "runner_on_unreachable") and data.get("msg"):
        lines.append(f"    {data['msg']}")
    return lines


def _cooldown(entry: Json) -> str:
    left = entry.get("cooldown_remaining_seconds")
    ends = entry.get("cooldown_ends_at")
    if not left:
        return f"over (ended {ends})" if ends else "none"
    return f"{duration(left)} left (ends {ends})"
