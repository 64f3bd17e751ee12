"""Runs a codeb module (plugins/module_utils/codeb_module.py says how one is written) on its
host without AnsiballZ: the arguments are checked here against the module's SPEC, then one
command over the task's connection, `python3 -c BOOT`, reads the module's source, the
module_utils it imports and the checked arguments from stdin, runs `run(params, check,
diff)` and prints the result as JSON.

Why: a module through AnsiballZ imports `ansible.module_utils.basic` on the host before it
does anything (0.2-0.3 s on a fleet host), which was most of what a one-host redeploy cost
over the same change by hand; this run starts in tens of milliseconds. What stays as it was:
the task's `environment:` (the run's CODEB_OPERATION_ID marker), become, check and diff
mode, the result's keys, and secrets: the arguments travel on stdin, never in argv, and
every no_log value is removed from the result (as AnsibleModule does).

A module opts in with an action plugin of its own name that is this class (see
codeb_quadlet_apply.py here); an async task falls back to the module through AnsiballZ."""

from __future__ import annotations

import json
import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any

from ansible import constants as C
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.json_utils import _filter_non_json_lines
from ansible.plugins.action import ActionBase

# What the host runs. It registers each module_utils source as ansible.module_utils.NAME
# (under empty package stubs: Ansible itself is never imported there), runs the module's
# source as a module, and prints run()'s result or the Fail's; anything else is a traceback
# on stderr and a non-zero exit.
BOOT = """\
import json, sys, types
d = json.loads(sys.stdin.buffer.read())
for p in ("ansible", "ansible.module_utils"):
    m = types.ModuleType(p); m.__path__ = []; sys.modules[p] = m
sys.modules["ansible"].module_utils = sys.modules["ansible.module_utils"]
def load(name, source):
    m = types.ModuleType(name); sys.modules[name] = m
    exec(compile(source, "<" + name + ">", "exec"), m.__dict__)
    return m
for n, s in d["utils"]:
    setattr(sys.modules["ansible.module_utils"], n, load("ansible.module_utils." + n, s))
m = load("codeb_direct_module", d["module"])
try:
    r = m.run(d["params"], d["check"], d["diff"])
except sys.modules["ansible.module_utils.codeb_module"].Fail as e:
    r = dict(e.result, failed=True)
sys.stdout.write(json.dumps(r))
"""
IMPORTS = re.compile(
    r"^\s*(?:from\s+ansible\.module_utils\.(\w+)\s+import"
    r"|from\s+ansible\.module_utils\s+import\s+([\w, ]+)"
    r"|import\s+ansible\.module_utils\.(\w+))",
    re.M,
)
# Imported only on the AnsiballZ path (codeb_module.main), never shipped.
NOT_SHIPPED = {"basic"}
UTILS_DIRS = (Path(__file__).resolve().parent.parent / "module_utils",)


def _imports(source: str) -> list[str]:
    names: list[str] = []
    for one, many, plain in IMPORTS.findall(source):
        for name in [one, plain, *(n.split(" as ")[0].strip() for n in many.split(","))]:
            if name and name not in NOT_SHIPPED and name not in names:
                names.append(name)
    return names


def _utils(source: str, dirs: tuple[Path, ...]) -> list[tuple[str, str]]:
    """The module_utils `source` imports, each after those it imports itself."""
    found: dict[str, str] = {}

    def visit(src: str) -> None:
        for name in _imports(src):
            if name in found:
                continue
            path = next((d / f"{name}.py" for d in dirs if (d / f"{name}.py").is_file()), None)
            if path is None:
                raise FileNotFoundError(f"module_utils {name!r} not found in {dirs}")
            found[name] = ""  # visiting: an import cycle stops here
            text = path.read_text()
            visit(text)
            found.pop(name)
            found[name] = text

    visit(source)
    return list(found.items())


def _namespace(source: str, utils: list[tuple[str, str]]) -> dict[str, Any]:
    """The module's globals, run here for its SPEC and CHECK_MODE (its code runs on the
    host). Its module_utils are registered under the names it imports them by."""
    for name, text in utils:
        full = f"ansible.module_utils.{name}"
        if full not in sys.modules:
            module = types.ModuleType(full)
            exec(compile(text, f"<{full}>", "exec"), module.__dict__)  # noqa: S102
            sys.modules[full] = module
    namespace: dict[str, Any] = {"__name__": "codeb_direct_module"}
    exec(compile(source, "<codeb_direct_module>", "exec"), namespace)  # noqa: S102
    return namespace


class ActionModule(ActionBase):
    _requires_connection = True

    def run(self, tmp: str | None = None, task_vars: dict | None = None) -> dict:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        name = (self._task.resolved_action or self._task.action).rsplit(".", 1)[-1]
        if self._task.async_val:
            return self._execute_module(module_name=name, task_vars=task_vars)
        found = self._shared_loader_obj.module_loader.find_plugin(name, mod_type=".py")
        if found is None:
            return {"failed": True, "msg": f"module {name} not found"}
        path = Path(found)
        source = path.read_text()
        utils = _utils(source, (path.parent.parent / "module_utils", *UTILS_DIRS))
        namespace = _namespace(source, utils)
        check = bool(self._task.check_mode)
        if check and not namespace.get("CHECK_MODE", False):
            return {"skipped": True, "msg": f"{name} does not support check mode"}
        # As AnsibleModule checks them, and its errors never show a no_log value either.
        validation = ArgumentSpecValidator(namespace["SPEC"]).validate(dict(self._task.args))
        no_log = validation._no_log_values
        if validation.error_messages:
            msg = f"invalid arguments for {name}: {'; '.join(validation.error_messages)}"
            return {"failed": True, "msg": remove_values(msg, no_log)}
        args = validation.validated_parameters
        payload = json.dumps(
            {
                "utils": utils,
                "module": source,
                "params": args,
                "check": check,
                "diff": bool(self._task.diff),
            }
        )
        python = self._python(task_vars)
        env = self._compute_environment_string()
        cmd = f"{env} {shlex.quote(python)} -c {shlex.quote(BOOT)}".strip()
        res = self._low_level_execute_command(cmd, sudoable=True, in_data=payload.encode())
        try:
            # As Ansible reads a module's output: lines around the JSON (a login banner, a
            # shell's warning) are dropped.
            text, _ = _filter_non_json_lines(res.get("stdout", ""), objects_only=True)
            out = json.loads(text)
            if not isinstance(out, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            tail = (res.get("stderr") or res.get("stdout") or "").strip()[-2000:]
            out = {
                "failed": True,
                "rc": res.get("rc"),
                "msg": f"{name} failed on the host (exit code {res.get('rc')}): {tail}",
            }
        result.update(remove_values(out, no_log))
        return result

    def _python(self, task_vars: dict) -> str:
        """The host's Python, as Ansible would pick it for a module (no discovery: codeb
        configures /usr/bin/python3)."""
        configured = task_vars.get("ansible_python_interpreter")
        if configured is None:
            configured = C.config.get_config_value("INTERPRETER_PYTHON", variables=task_vars)
        python = str(self._templar.template(configured))
        if python.startswith("auto"):
            discovered = task_vars.get("ansible_facts", {}).get("discovered_interpreter_python")
            python = discovered or "/usr/bin/python3"
        return python
