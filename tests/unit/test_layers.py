"""The layering rules, checked on the real code: nothing below the HTTP layer pulls in Falcon,
even indirectly (each module is imported in a fresh interpreter, so one module's imports cannot
hide another's), and only the runner imports ansible_runner."""

from __future__ import annotations

import ast
import pathlib
import pkgutil
import subprocess
import sys

import pytest

import codeb


def _modules() -> list[str]:
    names = [
        m.name
        for m in pkgutil.walk_packages(codeb.__path__, "codeb.")
        if not m.name.startswith("codeb._content")
    ]
    return sorted(names)


def _below_http(name: str) -> bool:
    # The HTTP layer: codeb.api, each feature's api.py, and the app that assembles them.
    parts = name.split(".")
    if name in ("codeb.app", "codeb.__main__") or parts[1] == "api":
        return False
    if parts[1] in ("features", "cli", "mcp", "client") and parts[-1] in ("api", "app", "serve"):
        return False
    return parts[1] not in ("cli", "mcp")


PROBE = """
import importlib, sys
name = sys.argv[1]
importlib.import_module(name)
print("falcon" in sys.modules)
"""


@pytest.mark.parametrize("name", [n for n in _modules() if _below_http(n)])
def test_nothing_below_the_http_layer_imports_falcon(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, name], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False", f"{name} pulls in Falcon"


def test_only_the_runner_imports_ansible_runner() -> None:
    root = pathlib.Path(codeb.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n.split(".")[0] == "ansible_runner" for n in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers == {"executor/runner.py"}
