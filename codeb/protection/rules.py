"""The one table of danger levels and requirements (pure: no Falcon, no Peewee).

A rule's level decides the flow and implies requirements of its own (MEDIUM needs a confirmed
token; HIGH two confirmations, a backup and a 24 h cooldown; CRITICAL a verified backup, another
admin's approval and a 48 h cooldown). Configuration may make a rule stricter; only an explicit
override may weaken one, and each override applied is logged at start-up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal


class DangerLevel(IntEnum):
    SAFE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


# Every requirement, in the order refusals list them, with what would satisfy it.
REQUIREMENTS: dict[str, str] = {
    "backup_exists": "a completed backup of the target's project/environment must exist",
    "backup_verified": (
        "a backup of every database the target concerns must have been restored into a "
        "scratch instance and checked (backups.verified_at set: POST /api/backups/:id/verify) "
        "and be no older than CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS"
    ),
    "container_stopped": "stop the container(s) first",
    "staging_tested": "the same image must be running in the project's staging environment",
    "health_check_passed": "the staging container running this image must pass its health check",
    "user_confirmation": "confirm with the token: POST /api/protection/confirm {token}",
    "name_confirmation": (
        "a second confirmation that types the target's name: "
        "POST /api/protection/confirm {token, typed_name}"
    ),
    "admin_approval": (
        "approval by an admin key other than the requesting one: POST /api/protection/approve {id}"
    ),
    "cooldown_24h": "wait until 24 hours after the request",
    "cooldown_48h": "wait until 48 hours after the request",
}
# Facts read from the state (the others come from the queue entry and the clock).
STATE_REQUIREMENTS = frozenset(
    ("backup_exists", "backup_verified", "container_stopped", "staging_tested",
     "health_check_passed")
)  # fmt: skip
COOLDOWNS: dict[str, dt.timedelta] = {
    "cooldown_24h": dt.timedelta(hours=24),
    "cooldown_48h": dt.timedelta(hours=48),
}
# Requirements that need a queue entry living across time (and a final confirm after it).
QUEUE_REQUIREMENTS = frozenset({"name_confirmation", "admin_approval", *COOLDOWNS})

LEVEL_REQUIREMENTS: dict[DangerLevel, tuple[str, ...]] = {
    DangerLevel.SAFE: (),
    DangerLevel.LOW: (),
    DangerLevel.MEDIUM: ("user_confirmation",),
    DangerLevel.HIGH: ("user_confirmation", "name_confirmation", "backup_exists", "cooldown_24h"),
    DangerLevel.CRITICAL: (
        "user_confirmation",
        "name_confirmation",
        "backup_verified",
        "admin_approval",
        "cooldown_48h",
    ),
}

Flow = Literal["run", "token", "queue"]


def ordered(names: Iterable[str]) -> tuple[str, ...]:
    wanted = set(names)
    return tuple(name for name in REQUIREMENTS if name in wanted)


@dataclass(frozen=True)
class Rule:
    operation: str
    level: DangerLevel
    requires: tuple[str, ...] = ()
    message: str = ""
    # Requirements the level implies that this rule's own design waives (an in-place restore
    # is HIGH without the 24 h cooldown: an incident can't wait). Own `requires` win.
    waives: tuple[str, ...] = ()

    @property
    def requirements(self) -> tuple[str, ...]:
        """The rule's own requirements and those its level implies (less what it waives)."""
        implied = (r for r in LEVEL_REQUIREMENTS[self.level] if r not in self.waives)
        return ordered((*implied, *self.requires))

    @property
    def flow(self) -> Flow:
        names = set(self.requirements)
        if names & QUEUE_REQUIREMENTS:
            return "queue"
        if "user_confirmation" in names:
            return "token"
        return "run"

    @property
    def cooldown(self) -> dt.timedelta:
        return max(
            (COOLDOWNS[name] for name in self.requirements if name in COOLDOWNS),
            default=dt.timedelta(0),
        )

    def at_least_as_strict_as(self, other: Rule) -> bool:
        return self.level >= other.level and set(self.requirements) >= set(other.requirements)

    def merged_with(self, other: Rule) -> Rule:
        """The stricter union of two rules for one operation."""
        return Rule(
            self.operation,
            max(self.level, other.level),
            ordered((*self.requires, *other.requires)),
            self.message or other.message,
            tuple(w for w in self.waives if w in other.waives),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "level": self.level.name,
            "danger_level": int(self.level),
            "requires": list(self.requirements),
            "flow": self.flow,
            "message": self.message,
        }


L = DangerLevel
_TABLE: tuple[Rule, ...] = (
    # The original design's four rules, exactly.
    Rule("volume_delete", L.HIGH, ("backup_exists", "user_confirmation", "cooldown_24h"),
         "Deleting a volume destroys its data; it waits 24 hours and needs a backup."),
    Rule("container_remove", L.MEDIUM, ("container_stopped", "user_confirmation"),
         "Removing a container needs it stopped first, and a confirmation."),
    Rule("db_drop", L.CRITICAL, ("backup_verified", "admin_approval", "cooldown_48h"),
         "Dropping a database needs a verified backup, another admin's approval and 48 hours."),
    Rule("deploy_production", L.MEDIUM, ("staging_tested", "health_check_passed"),
         "A production deploy needs the same image tested and healthy in staging."),
    # Every other mutating operation.
    Rule("project_create", L.LOW, (), "Creates a project, its environments and their ports."),
    Rule("project_update", L.LOW, (), "Changes a project's descriptive fields."),
    Rule("project_delete", L.CRITICAL, (),
         "Deleting a project removes it and all its environments and releases their ports."),
    Rule("environment_create", L.LOW, (), "Adds an environment with its own ports."),
    Rule("environment_delete", L.HIGH, (),
         "Deleting an environment removes it and releases its ports."),
    Rule("environment_delete_production", L.CRITICAL, (),
         "Deleting production removes what the project exists for: it costs a project delete."),
    Rule("container_start", L.LOW, (), "Starts a container."),
    Rule("container_restart", L.LOW, (), "Restarts a container."),
    Rule("container_stop", L.MEDIUM, (), "Stopping a container takes its service down."),
    Rule("container_drift_check", L.SAFE, (),
         "Reads every container's host state and reports what differs from the registry."),
    Rule("deploy_staging", L.LOW, (), "Deploys an image to staging."),
    Rule("deploy_preview", L.LOW, (), "Deploys an image to a preview environment."),
    Rule("domain_set", L.LOW, (), "Points a domain at an environment."),
    Rule("domain_delete", L.MEDIUM, (), "Deleting a domain makes the site unreachable by it."),
    Rule("backup_create", L.LOW, (), "Takes a backup."),
    Rule("backup_delete", L.HIGH, (), "Deleting a backup loses a restore point for good."),
    Rule("backup_restore", L.HIGH, (),
         "Restoring in place overwrites the live data (a safety backup is taken first); no "
         "cooldown: an incident can't wait.", waives=("cooldown_24h",)),
    Rule("backup_restore_new", L.LOW, (),
         "Restores a backup into a new database container; the live data is not touched."),
    Rule("backup_verify", L.LOW, (),
         "A restore drill: restores a backup into a scratch container on the storage server, "
         "checks it and removes it; nothing live is touched."),
    Rule("redis_copy_create", L.LOW, (),
         "Copies a cache component's Redis data (a completed BGSAVE) to the storage server."),
    Rule("redis_restore_new", L.LOW, (),
         "Restores a Redis copy into a new Redis container; the live cache is not touched."),
    Rule("redis_restore", L.HIGH, (),
         "Restoring a Redis copy in place replaces the live cache's data; no cooldown: an "
         "incident can't wait.", waives=("cooldown_24h",)),
    Rule("redis_verify", L.LOW, (),
         "A restore drill of a Redis copy in a scratch container on the storage server."),
    Rule("server_register", L.LOW, (), "Adds a server to the registry."),
    Rule("server_update", L.LOW, (), "Changes a server's registry entry."),
    Rule("server_delete", L.CRITICAL, (), "Deleting a server removes everything on it."),
    Rule("scale_up", L.LOW, (), "Adds a server at the provider (it costs money)."),
    Rule("scale_down", L.MEDIUM, (),
         "Scaling down drains an autoscaled app server and destroys it (never one holding data)."),
    Rule("scaling_configure", L.LOW, (),
         "Changes the autoscaling policy, its cloud settings or the stored Vultr API key."),
    Rule("scaling_check", L.SAFE, (),
         "Reads the app pool's load and answers the autoscaling decision; acts on nothing."),
    Rule("api_key_create", L.LOW, (), "Creates a non-admin API key for the caller's principal."),
    Rule("api_key_grant", L.MEDIUM, ("admin_approval",),
         "An admin key, or a key for another principal, needs another admin's approval."),
    Rule("api_key_revoke", L.LOW, (), "Revokes an API key."),
    Rule("operation_cancel", L.LOW, (), "Cancels a running operation (its hosts are reconciled)."),
    Rule("server_bootstrap", L.LOW, (), "Runs the bootstrap playbook on a server again."),
    Rule("schedule_run", L.LOW, (), "Runs a periodic job now instead of at its next time."),
)  # fmt: skip
RULES: dict[str, Rule] = {rule.operation: rule for rule in _TABLE}
# Rules of the design whose features are not built yet: no route reaches them. Every other
# rule must have an applier (checked at start-up); a feature that lands removes its names.
NOT_BUILT: frozenset[str] = frozenset()
# No sequence of cheaper operations may reach the effect of a dearer one: each operation here
# has (at least) the effective rule of the one it is bound to, after configuration too.
DOMINATED_BY: dict[str, str] = {
    "environment_delete_production": "project_delete",
}


@dataclass(frozen=True)
class AppliedOverride:
    operation: str
    before: Rule
    after: Rule


def _parse_level(value: object, where: str) -> DangerLevel:
    try:
        if isinstance(value, str):
            return DangerLevel[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool):
            return DangerLevel(value)
    except (KeyError, ValueError):
        pass
    raise ValueError(f"{where}: level must be one of {', '.join(L.__members__)}")


def _parse_entry(operation: str, spec: object, where: str) -> tuple[DangerLevel | None, tuple]:
    if operation not in RULES:
        raise ValueError(f"{where}: unknown operation {operation!r}")
    if not isinstance(spec, Mapping) or set(spec) - {"level", "requires"}:
        raise ValueError(f"{where}.{operation}: expected a table with level and/or requires")
    level = _parse_level(spec["level"], f"{where}.{operation}") if "level" in spec else None
    requires = spec.get("requires", ())
    if not isinstance(requires, list | tuple) or any(r not in REQUIREMENTS for r in requires):
        raise ValueError(
            f"{where}.{operation}: requires must list names from {', '.join(REQUIREMENTS)}"
        )
    return level, tuple(requires)


def configure(
    stricter: Mapping[str, Any], overrides: Mapping[str, Any]
) -> tuple[dict[str, Rule], list[AppliedOverride]]:
    """The effective table. `stricter` may only raise levels and add requirements (anything
    else is an error); `overrides` replace rules outright and are returned to be logged."""
    rules = dict(RULES)
    for operation, spec in stricter.items():
        level, requires = _parse_entry(operation, spec, "protection_rules")
        base = rules[operation]
        # A stricter entry adds to the rule's own requirements; it never drops them.
        wanted = Rule(operation, level or base.level, ordered((*base.requires, *requires)),
                      base.message, base.waives)  # fmt: skip
        if not wanted.at_least_as_strict_as(base):
            raise ValueError(
                f"protection_rules.{operation} would weaken the rule (level {base.level.name}); "
                "weakening needs protection_rule_overrides"
            )
        rules[operation] = base.merged_with(wanted)
    for operation, dearer in DOMINATED_BY.items():
        rules[operation] = rules[operation].merged_with(
            Rule(operation, rules[dearer].level, rules[dearer].requires)
        )
    applied = []
    for operation, spec in overrides.items():
        level, requires = _parse_entry(operation, spec, "protection_rule_overrides")
        before = rules[operation]
        after = Rule(
            operation,
            level if level is not None else before.level,
            requires if "requires" in spec else before.requires,
            before.message,
            before.waives,
        )
        rules[operation] = after
        applied.append(AppliedOverride(operation, before, after))
    return rules, applied
