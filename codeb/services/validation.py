"""Input rules shared by the use cases (pure functions)."""

from __future__ import annotations

import ipaddress
import re

from codeb.errors import ValidationFailed

# A DNS label: the name becomes part of container names, hostnames and database names.
# Always fullmatch(): `$` in a Python regex also matches before a final newline, so
# `match("^...$")` accepted "evil\n".
_DNS_LABEL = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# C0 controls and DEL: never part of a name, an image, a path or a free-text field.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def validate_dns_label(value: object, field: str = "name", max_length: int = 63) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationFailed(f"{field} is required", {"field": field})
    if len(value) > max_length:
        raise ValidationFailed(f"{field} must be at most {max_length} characters", {"field": field})
    if not _DNS_LABEL.fullmatch(value):
        raise ValidationFailed(
            f"{field} must be lowercase letters, digits and single hyphens, start with a letter "
            "and not end with a hyphen",
            {"field": field, "value": value, "pattern": _DNS_LABEL.pattern},
        )
    return value


def validate_key_name(value: object, field: str = "name") -> str:
    """API key names and principals."""
    if not isinstance(value, str) or not _KEY_NAME.fullmatch(value):
        raise ValidationFailed(
            f"{field} must be 1-64 letters, digits, '.', '_' or '-'",
            {"field": field, "pattern": _KEY_NAME.pattern},
        )
    return value


def validate_ip(value: object, field: str = "ip") -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ValidationFailed(f"{field} is not a valid IP address", {"field": field}) from None


def validate_choice(value: object, choices: tuple[str, ...], field: str) -> str:
    if value not in choices:
        raise ValidationFailed(
            f"{field} must be one of: {', '.join(choices)}", {"field": field, "allowed": choices}
        )
    return str(value)


def has_control_characters(value: str) -> bool:
    return CONTROL_CHARACTERS.search(value) is not None
