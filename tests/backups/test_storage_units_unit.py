"""The storage server's systemd units as roles/codeb_backup_storage renders them, and the WAL
closing code its modules and units share (module_utils/codeb_barman_wal.py), without a fleet:

- the WAL receiver and Barman's maintenance run (which files the streamed WAL, and starts a
  receiver itself when none runs) yield to the databases: batch CPU scheduling (no wakeup
  preemption of the db's processes), a lower nice, the lowest best-effort IO priority; never
  SCHED_IDLE nor the idle IO class, which could starve the receiver on a saturated host and
  let WAL fall behind;
- the scheduled full and incremental backups close their last WAL file with the shared
  script (commit, pg_switch_wal(), commit, archive-wal until filed), not with `barman
  switch-wal --force --archive`, which waited for the source's next WAL record;
- the script refuses bad arguments and reports a missing connection string."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "codeb_backup_storage"
SCRIPT = ROLE / "module_utils" / "codeb_barman_wal.py"


def _render(name: str, **extra: object) -> dict[str, list[str]]:
    """The unit's [Service] keys (each key's values in order), rendered with the role's
    defaults and vars as Ansible would (undefined names fail)."""
    context = {
        **yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()),
        **yaml.safe_load((ROLE / "vars" / "main.yml").read_text()),
        **extra,
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),  # Ansible's includes: the role's
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    text = env.get_template(f"{name}.j2").render(context)
    keys: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


@pytest.mark.parametrize("unit", ["codeb-barman-receive-wal@.service", "codeb-barman-cron.service"])
def test_wal_receiver_and_archiving_yield_to_the_databases(unit):
    keys = _render(unit)
    assert keys["CPUSchedulingPolicy"] == ["batch"]
    assert keys["Nice"] == ["10"]
    assert keys["IOSchedulingClass"] == ["best-effort"]
    assert keys["IOSchedulingPriority"] == ["7"]


def test_priorities_are_the_roles_settings():
    keys = _render(
        "codeb-barman-receive-wal@.service",
        codeb_backup_storage_receiver_nice=5,
        codeb_backup_storage_receiver_cpu_policy="other",
        codeb_backup_storage_receiver_io_priority=4,
    )
    assert keys["Nice"] == ["5"] and keys["CPUSchedulingPolicy"] == ["other"]
    assert keys["IOSchedulingPriority"] == ["4"]


def test_role_refuses_priorities_that_could_starve_the_receiver():
    """SCHED_IDLE (weight 3) or the idle IO class could leave the receiver behind for as long
    as the host is busy: the role's argument spec does not offer them."""
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert "idle" not in options["codeb_backup_storage_receiver_cpu_policy"]["choices"]
    assert options["codeb_backup_storage_receiver_io_priority"]["choices"] == list(range(8))


@pytest.mark.parametrize(
    "unit", ["codeb-barman-backup@.service", "codeb-barman-incremental@.service"]
)
def test_scheduled_backups_close_their_wal_with_the_shared_script(unit):
    keys = _render(unit)
    closing = keys["ExecStartPost"][0]
    assert closing == "/usr/bin/python3 /usr/local/lib/codeb/codeb_barman_wal.py close %i 60"
    assert not any("switch-wal" in v for v in keys["ExecStartPost"])
    # The role installs that script from module_utils (the file the modules import), and the
    # WAL receiver beside it (it imports the script's lock and wake-up code).
    tasks = yaml.safe_load((ROLE / "tasks" / "configure.yml").read_text())
    (copy,) = [t for t in tasks if "module_utils/" in t.get("ansible.builtin.copy", {}).get(
        "src", "")]  # fmt: skip
    assert copy["ansible.builtin.copy"]["src"].endswith("module_utils/{{ item | basename }}")
    assert copy["loop"] == [
        "{{ __codeb_backup_storage_wal_script }}",
        "{{ __codeb_backup_storage_receiver_script }}",
    ]
    names = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    for var in ("__codeb_backup_storage_wal_script", "__codeb_backup_storage_receiver_script"):
        assert (ROLE / "module_utils" / Path(names[var]).name).is_file()
    # The scheduled backup streams while barman backup runs (it needs the slot active).
    assert keys["ExecStart"][0].startswith(
        "/usr/bin/python3 /usr/local/lib/codeb/codeb_barman_receiver.py stream %i -- "
        "/usr/bin/barman -q backup "
    )


def test_both_modules_use_the_shared_wal_closing_code():
    for module in ("codeb_barman_restore.py", "codeb_barman_close_wal.py"):
        source = (ROLE / "library" / module).read_text()
        assert "from ansible.module_utils.codeb_barman_wal import" in source
        assert "pg_switch_wal())" not in source and "def conninfo_of" not in source  # no copy


@pytest.mark.parametrize(
    "args", [[], ["close"], ["switch", "shop-staging-db"], ["close", "Bad;name"]]
)
def test_script_refuses_bad_arguments(args):
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


def test_no_connection_string_is_reported_not_guessed(tmp_path):
    spec = importlib.util.spec_from_file_location("codeb_barman_wal", SCRIPT)
    wal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wal)
    assert wal.close_and_file_wal("shop-staging-db", None) == "no conninfo"
    (tmp_path / "shop-staging-db.conf").write_text(
        "[shop-staging-db]\nconninfo = host=10.0.0.2 port=5432 user=codeb_backup dbname=postgres\n"
    )
    assert wal.conninfo_of("shop-staging-db", str(tmp_path)) == (
        "host=10.0.0.2 port=5432 user=codeb_backup dbname=postgres"
    )


def test_every_barman_backup_runs_while_the_receiver_streams():
    """barman backup starts only with the slot active, and between bursts it is not: every
    route that takes a base backup (the on-request task, the scheduled full and incremental
    units) runs it under `codeb_barman_receiver.py stream`."""
    routes = 0
    for path in sorted((ROLE / "tasks").glob("*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            argv = str((task.get("ansible.builtin.command") or {}).get("argv", ""))
            if "['backup'" in argv:
                routes += 1
                assert argv.lstrip("{ ").startswith("__codeb_backup_storage_streaming"), path
    for path in sorted((ROLE / "templates").glob("*.service.j2")):
        for start in _render(path.name.removesuffix(".j2")).get("ExecStart", []):
            if " backup " in f"{start} ":
                routes += 1
                assert " stream %i -- /usr/bin/barman -q backup " in start, path
    assert routes == 3
