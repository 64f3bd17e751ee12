"""Tool annotations derived from the rules table, never written by hand.

A tool either only reads (no rule: GET routes and previews, which change nothing) or requests
one guarded operation, whose effective rule decides its hints:

- `readOnlyHint`: the tool has no rule.
- `destructiveHint`: the rule puts a person between the request and its effect (MEDIUM and
  above: stopping, removing, deleting, a production deploy). LOW operations are the ones the
  table lets run at once.
- `idempotentHint`: reads, and SAFE operations (they only look); anything else may change
  something each time it is called.
- `openWorldHint`: false for every tool: codeb acts only on its own registry and the servers
  registered in it, never on an open set of outside entities.

The effective rules come from the API (`GET /api/protection/rules`, which includes what the
operator configured: a rule raised with CODEB_PROTECTION_RULES raises the tool's hints too);
the built-in table is the fallback when the API cannot be read at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.types import ToolAnnotations

from codeb.protection.rules import RULES, DangerLevel, Rule


def annotations_for(rule: Rule | None, title: str | None = None) -> ToolAnnotations:
    """The hints of a tool that requests `rule`'s operation (None: the tool only reads)."""
    if rule is None:
        return ToolAnnotations(
            title=title,
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        )
    return ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=rule.level >= DangerLevel.MEDIUM,
        idempotent_hint=rule.level <= DangerLevel.SAFE,
        open_world_hint=False,
    )


def rules_from_api(body: Mapping[str, Any]) -> dict[str, Rule]:
    """The effective rules from `GET /api/protection/rules`; unknown shapes raise ValueError."""
    rules: dict[str, Rule] = {}
    items = body.get("rules")
    if not isinstance(items, list):
        raise ValueError("the rules answer has no list of rules")
    for item in items:
        try:
            rules[str(item["operation"])] = Rule(
                str(item["operation"]),
                DangerLevel[str(item["level"])],
                tuple(str(r) for r in item.get("requires") or ()),
                str(item.get("message") or ""),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a rule the MCP server cannot read: {exc}") from None
    return rules


def default_rules() -> dict[str, Rule]:
    return dict(RULES)
