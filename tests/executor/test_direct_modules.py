"""codeb's modules run two ways (plugins/module_utils/codeb_module.py): through the action
plugin codeb_direct (no AnsiballZ) and through AnsiballZ. The same module, run by the real
ansible-playbook both ways on this machine (connection local), gives the same result:
arguments checked and defaulted by the same spec, module_utils found and imported by the
module (one importing another), check and diff mode, the task's environment, Fail's result;
and the direct way never shows a no_log value, in its result or in its errors."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

MODULE = """\
from ansible.module_utils.codeb_module import Fail, main
from ansible.module_utils.codeb_t_outer import describe

SPEC = {
    "word": {"type": "str", "required": True},
    "times": {"type": "int", "default": 2},
    "secret": {"type": "str", "default": "", "no_log": True},
    "fail": {"type": "bool", "default": False},
}
CHECK_MODE = CHECK


def run(p, check, diff):
    if p["fail"]:
        raise Fail("asked to fail with " + p["secret"], word=p["word"])
    return {"changed": not check, "said": describe(p["word"], p["times"]), "check": check,
            "diff_mode": diff, "marker": __import__("os").environ.get("CODEB_T_MARKER"),
            "echo": p["secret"]}


if __name__ == "__main__":
    main(SPEC, run, CHECK_MODE)
"""
OUTER = """\
from ansible.module_utils.codeb_t_inner import repeat


def describe(word, times):
    return "said " + repeat(word, times)
"""
INNER = """\
def repeat(word, times):
    return " ".join([word] * times)
"""
PLAYBOOK = """\
- name: Both ways
  hosts: localhost
  connection: local
  gather_facts: false
  # As codeb's secrets, from variables (the playbook's text is shown in errors).
  vars_files:
    - secret.yml
  environment:
    CODEB_T_MARKER: op_123
  tasks:
    - name: Default
      codeb_t_echo:
        word: hi
      register: default
    - name: In check mode, with diff
      codeb_t_echo:
        word: hi
        times: "3"
      check_mode: true
      diff: true
      register: checked
    - name: A secret
      codeb_t_echo:
        word: hi
        secret: "{{ the_secret }}"
      register: secret
    - name: Fails
      codeb_t_echo:
        word: hi
        secret: "{{ the_secret }}"
        fail: true
      register: failed
      ignore_errors: true
    - name: Bad arguments
      codeb_t_echo:
        word: hi
        times: many
        secret: "{{ the_secret }}"
      register: bad
      ignore_errors: true
    - name: Keep the results
      ansible.builtin.copy:
        content: "{{ {'default': default, 'checked': checked, 'secret': secret,
                      'failed': failed, 'bad': bad} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def _tree(tmp: Path, check_mode: bool) -> Path:
    role = tmp / "roles" / "t"
    (role / "library").mkdir(parents=True)
    (role / "module_utils").mkdir()
    (role / "tasks").mkdir()
    (role / "library" / "codeb_t_echo.py").write_text(
        MODULE.replace("CHECK_MODE = CHECK", f"CHECK_MODE = {check_mode}")
    )
    (role / "module_utils" / "codeb_t_outer.py").write_text(OUTER)
    (role / "module_utils" / "codeb_t_inner.py").write_text(INNER)
    (role / "tasks" / "main.yml").write_text("---\n- name: Nothing\n  ansible.builtin.meta: noop\n")
    actions = tmp / "action"
    actions.mkdir()
    (actions / "codeb_t_echo.py").write_text(
        (ROOT / "plugins" / "action" / "codeb_quadlet_apply.py").read_text()
    )
    # The role's module and module_utils are found as codeb's are: the play lists the role.
    book = PLAYBOOK.replace("  tasks:\n", "  roles:\n    - t\n  tasks:\n", 1)
    (tmp / "play.yml").write_text(book)
    (tmp / "secret.yml").write_text("the_secret: s3cr3t-value\n")
    return tmp


def _run(tmp: Path, direct: bool) -> dict:
    out = tmp / ("direct.json" if direct else "ansiballz.json")
    actions = [str(ROOT / "plugins" / "action")] + ([str(tmp / "action")] if direct else [])
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(tmp / "roles"),
        "ANSIBLE_ACTION_PLUGINS": ":".join(actions),
        "ANSIBLE_MODULE_UTILS": str(ROOT / "plugins" / "module_utils"),
        "ANSIBLE_INVENTORY": "localhost,",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
        "CODEB_JOURNAL": "off",
    }
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), str(tmp / "play.yml"), "-e", f"out={out}"],
        env=env, cwd=tmp, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if direct:
        assert "s3cr3t-value" not in proc.stdout + proc.stderr
    return json.loads(out.read_text())


KEYS = ("changed", "said", "check", "diff_mode", "marker", "echo", "failed", "msg", "word")


def _comparable(result: dict) -> dict:
    return {k: result[k] for k in KEYS if k in result}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    tmp = _tree(tmp_path_factory.mktemp("direct"), check_mode=True)
    return _run(tmp, direct=True), _run(tmp, direct=False)


def test_the_direct_way_gives_what_ansiballz_gives(both):
    direct, ansiballz = both
    for task in ("default", "checked", "secret", "failed"):
        assert _comparable(direct[task]) == _comparable(ansiballz[task]), task
    d = direct["default"]
    assert d["said"] == "said hi hi" and d["changed"] is True and d["marker"] == "op_123"
    c = direct["checked"]
    assert c["said"] == "said hi hi hi" and c["check"] is True and c["diff_mode"] is True
    assert c["changed"] is False
    assert direct["failed"]["failed"] is True and direct["failed"]["word"] == "hi"
    assert "invocation" not in direct["default"]  # no arguments echoed back


def test_no_log_values_never_come_back(both):
    direct, ansiballz = both
    for results in (direct, ansiballz):
        text = json.dumps(results)
        assert "s3cr3t-value" not in text
    assert direct["secret"]["echo"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"  # as AnsibleModule
    assert direct["failed"]["msg"] == "asked to fail with ********"
    assert direct["bad"]["failed"] is True and "times" in direct["bad"]["msg"]


def test_a_module_without_check_mode_is_skipped_in_check_mode(tmp_path):
    tmp = _tree(tmp_path, check_mode=False)
    direct, ansiballz = _run(tmp, direct=True), _run(tmp, direct=False)
    assert direct["checked"]["skipped"] is True and ansiballz["checked"]["skipped"] is True
    assert "said" not in direct["checked"]


def _action_plugin():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "codeb_direct_under_test", ROOT / "plugins" / "action" / "codeb_direct.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_host_side_runs_where_ansible_cannot_be_imported(tmp_path):
    """The very command a host runs (BOOT, the payload on stdin), by a Python that cannot
    import Ansible (-I -S: no site-packages): the module, its nested module_utils and
    codeb_module run, and a Fail comes back as a failed result."""
    direct = _action_plugin()
    tree = _tree(tmp_path, check_mode=True)
    library = tree / "roles" / "t" / "library" / "codeb_t_echo.py"
    source = library.read_text()
    utils = direct._utils(source, (library.parent.parent / "module_utils", *direct.UTILS_DIRS))
    assert [name for name, _ in utils] == ["codeb_module", "codeb_t_inner", "codeb_t_outer"]

    def host(params: dict) -> dict:
        payload = {"utils": utils, "module": source, "params": params, "check": False,
                   "diff": False}  # fmt: skip
        probe = subprocess.run(
            [sys.executable, "-I", "-S", "-c", "import ansible"], capture_output=True, check=False
        )
        assert probe.returncode != 0  # Ansible really is out of reach
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", direct.BOOT], input=json.dumps(payload),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    params = {"word": "hi", "times": 2, "secret": "", "fail": False}
    assert host(params)["said"] == "said hi hi"
    failed = host({**params, "fail": True})
    assert failed["failed"] is True and failed["word"] == "hi"


def test_every_module_with_the_direct_action_keeps_the_contract():
    """Each action plugin that is codeb_direct names a module written for it (SPEC,
    CHECK_MODE, run, main at the end, nothing from `basic` at the top), whose SPEC has
    exactly the options its DOCUMENTATION lists: the direct way checks arguments against
    SPEC, the AnsiballZ way and ansible-doc against the same."""
    direct = _action_plugin()
    opted = sorted(
        p.stem for p in (ROOT / "plugins" / "action").glob("*.py")
        if p.stem != "codeb_direct" and 'action_loader.get("codeb_direct"' in p.read_text()
    )  # fmt: skip
    assert {"codeb_quadlet_apply", "codeb_quadlet_probe", "codeb_barman_restore"} <= set(opted)
    for name in opted:
        (path,) = ROOT.glob(f"roles/*/library/{name}.py")
        source = path.read_text()
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                assert node.module != "ansible.module_utils.basic", name
        utils = direct._utils(source, (path.parent.parent / "module_utils", *direct.UTILS_DIRS))
        namespace = direct._namespace(source, utils)
        assert callable(namespace["run"]) and isinstance(namespace["CHECK_MODE"], bool), name
        documented = yaml.safe_load(namespace["DOCUMENTATION"])["options"]
        assert set(documented) == set(namespace["SPEC"]), name
        assert source.rstrip().endswith("main(SPEC, run, CHECK_MODE)"), name
