"""Build hook: a wheel carries codeb's Ansible content and templates.

codeb runs playbooks/, roles/, plugins/ and ansible.cfg, and renders templates/; in a checkout
they sit beside the package. A wheel holds packages only, so build_py copies them into the
build directory as package data under codeb/_content/ (never into the source tree), where
codeb.config.content_root() finds them once installed. An editable install skips the copy:
it runs from the checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# What codeb reads at run time, relative to the repository root (codeb.config.CONTENT).
CONTENT = ("ansible.cfg", "playbooks", "roles", "plugins", "templates", "inventory")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "hosts.yml")


class BuildPyWithContent(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "codeb" / "_content"
        # A role removed from the tree must not survive in a stale build directory.
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in CONTENT:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=IGNORE)
            elif source.is_file():
                shutil.copy2(source, target / name)
            else:
                raise FileNotFoundError(f"codeb's content is missing: {source}")


setup(cmdclass={"build_py": BuildPyWithContent})
