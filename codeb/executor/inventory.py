"""The Ansible inventory, generated from the server registry (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GROUPS = ("control", "app", "db", "cache", "storage", "proxy", "dns")


@dataclass(frozen=True)
class Host:
    """A server a playbook runs on, as the inventory needs it."""

    name: str
    ip: str
    role: str
    ssh_user: str = "root"
    ssh_port: int = 22


@dataclass(frozen=True)
class SshSettings:
    private_key: Path
    known_hosts: Path
    connect_timeout: int = 10


def ssh_common_args(ssh: SshSettings) -> str:
    # accept-new records a host key on first contact and fails loudly if it ever changes.
    return (
        f"-o UserKnownHostsFile={ssh.known_hosts} -o StrictHostKeyChecking=accept-new "
        f"-o ConnectTimeout={ssh.connect_timeout} -o ServerAliveInterval=15 "
        "-o IdentitiesOnly=yes -o HashKnownHosts=no"
    )


def build_inventory(targets: list[Host], ssh: SshSettings) -> dict:
    """A YAML/JSON inventory: one group per role, every host addressed by its registry name."""
    groups: dict[str, dict] = {g: {"hosts": {}} for g in GROUPS}
    for t in targets:
        groups[t.role]["hosts"][t.name] = {
            "ansible_host": t.ip,
            "ansible_user": t.ssh_user,
            "ansible_port": t.ssh_port,
        }
    return {
        "all": {
            "vars": {
                "ansible_ssh_private_key_file": str(ssh.private_key),
                "ansible_ssh_common_args": ssh_common_args(ssh),
                "ansible_python_interpreter": "/usr/bin/python3",
            },
            "children": groups,
        }
    }
