#!/usr/bin/python3
"""Ansible module: close the source's current WAL file and wait until Barman has filed it on
this storage server (after a base backup: the backup's last WAL is then here, and Barman can
mark it DONE). The work is module_utils/codeb_barman_wal.py's, shared with the restore
module and the scheduled backup's unit: commit, pg_switch_wal(), commit, then `barman
archive-wal` until the closed segment is filed, instead of `barman switch-wal --force
--archive`, which waited for the source's next WAL record (up to ~15 s on an idle db)."""

import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.codeb_barman_wal import close_and_file_wal, conninfo_of

DOCUMENTATION = r"""
module: codeb_barman_close_wal
short_description: Close the source's current WAL file and wait until Barman filed it
description: See roles/codeb_backup_storage/tasks/backup.yml.
options:
  server: {type: str, required: true}
  wal_timeout: {type: int, default: 60}
  barman_home: {type: path, default: /var/lib/barman}
  barman_conf_dir: {type: path, default: /etc/barman.d}
"""


def main():
    module = AnsibleModule(
        argument_spec={
            "server": {"type": "str", "required": True},
            "wal_timeout": {"type": "int", "default": 60},
            "barman_home": {"type": "path", "default": "/var/lib/barman"},
            "barman_conf_dir": {"type": "path", "default": "/etc/barman.d"},
        },
    )
    p = module.params
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,120}", p["server"]) or p["wal_timeout"] < 1:
        module.fail_json(msg="invalid arguments: server or wal_timeout")
    t0 = time.monotonic()
    said = close_and_file_wal(
        p["server"], conninfo_of(p["server"], p["barman_conf_dir"]), p["wal_timeout"],
        p["barman_home"],
    )  # fmt: skip
    seconds = round(time.monotonic() - t0, 3)
    if not said.endswith(" filed"):
        module.fail_json(msg=f"the WAL switch did not reach this server: {said}", seconds=seconds)
    module.exit_json(changed=False, msg=f"{said} in {seconds:.1f} s", wal=said, seconds=seconds)


if __name__ == "__main__":
    main()
