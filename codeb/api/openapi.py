"""The OpenAPI 3.1 description of the HTTP API. Request schemas here are also what the API
validates bodies against, so the document and the behaviour cannot drift apart."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from codeb import __version__
from codeb.protection.rules import RULES
from codeb.services import operations

NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 48,
    "pattern": "^[a-z]([a-z0-9-]*[a-z0-9])?$",
}
TIMESTAMP = {"type": "string", "format": "date-time"}
NULLABLE_STRING = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "Ports": {
        "type": "object",
        "required": ["app_port", "db_port", "redis_port", "redis_db"],
        "properties": {
            "app_port": {"type": "integer"},
            "db_port": {"type": "integer"},
            "redis_port": {"type": "integer"},
            "redis_db": {"type": "integer"},
        },
    },
    "Project": {
        "type": "object",
        "required": ["id", "name", "type", "status", "environments", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "type": {"type": "string", "enum": ["nextjs", "remix", "nodejs", "static"]},
            "git_repo": NULLABLE_STRING,
            "status": {"type": "string", "enum": ["active", "archived", "deleted"]},
            "environments": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/Ports"},
            },
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
    },
    "ProjectCreate": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": NAME,
            "type": {"type": "string", "enum": ["nextjs", "remix", "nodejs", "static"]},
            "git_repo": {"type": ["string", "null"], "maxLength": 2000},
            "preview": {"type": "boolean", "description": "also create a preview environment"},
        },
    },
    "ProjectUpdate": {
        "type": "object",
        "additionalProperties": False,
        "description": "Only descriptive fields; name and status cannot be changed.",
        "properties": {
            "type": {"type": "string", "enum": ["nextjs", "remix", "nodejs", "static"]},
            "git_repo": {"type": ["string", "null"], "maxLength": 2000},
        },
    },
    "ProjectCreated": {
        "type": "object",
        "required": ["project", "environments", "env_files"],
        "properties": {
            "project": {"$ref": "#/components/schemas/Project"},
            "environments": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/Ports"},
            },
            "env_files": {
                "type": "object",
                "description": "The .env files; the only answer that ever shows the passwords.",
                "required": ["local", "staging", "production"],
                "additionalProperties": {"type": "string"},
            },
        },
    },
    "ProjectList": {
        "type": "object",
        "required": ["projects", "total", "limit", "offset"],
        "properties": {
            "projects": {"type": "array", "items": {"$ref": "#/components/schemas/Project"}},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "Environment": {
        "type": "object",
        "required": ["id", "project_id", "project", "name", "app_port", "db_port", "redis_port"],
        "properties": {
            "id": {"type": "string"},
            "project_id": {"type": "string"},
            "project": {"type": "string"},
            "name": {"type": "string", "enum": ["staging", "production", "preview"]},
            "app_port": {"type": "integer"},
            "db_port": {"type": "integer"},
            "redis_port": {"type": "integer"},
            "redis_db": {"type": "integer"},
            "domain": NULLABLE_STRING,
            "status": {"type": "string"},
            "db_name": {"type": "string"},
            "db_user": {"type": "string"},
            "created_at": TIMESTAMP,
        },
    },
    "EnvironmentCreate": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string", "enum": ["staging", "production", "preview"]}},
    },
    "EnvironmentCreated": {
        "type": "object",
        "required": ["environment", "env_file"],
        "properties": {
            "environment": {"$ref": "#/components/schemas/Environment"},
            "env_file": {"type": "string"},
        },
    },
    "EnvironmentList": {
        "type": "object",
        "required": ["environments"],
        "properties": {
            "environments": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Environment"},
            }
        },
    },
    "Server": {
        "type": "object",
        "required": ["id", "name", "ip", "role", "ssh_user", "ssh_port", "status"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "ip": {"type": "string"},
            "role": {
                "type": "string",
                "enum": ["control", "app", "db", "cache", "storage", "proxy", "dns"],
            },
            "ssh_user": {"type": "string"},
            "ssh_port": {"type": "integer"},
            "provider": {"type": "string"},
            "provider_id": NULLABLE_STRING,
            "status": {"type": "string"},
            "facts": {"type": ["object", "null"]},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
    },
    "ServerCreate": {
        "type": "object",
        "required": ["name", "ip", "role"],
        "additionalProperties": False,
        "properties": {
            "name": {**NAME, "maxLength": 63},
            "ip": {
                "type": "string",
                "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
                "description": "IPv4 or IPv6 address",
            },
            "role": {
                "type": "string",
                "enum": ["control", "app", "db", "cache", "storage", "proxy", "dns"],
            },
            "ssh_user": {"type": "string", "pattern": "^[a-z_][a-z0-9_-]{0,31}$"},
            "ssh_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "provider": {"type": "string", "minLength": 1, "maxLength": 40},
            "provider_id": {"type": ["string", "null"], "maxLength": 100},
            "bootstrap": {
                "type": "boolean",
                "description": "run the bootstrap playbook now (default true)",
            },
        },
    },
    "ServerUpdate": {
        "type": "object",
        "required": ["role"],
        "additionalProperties": False,
        "properties": {
            "role": {
                "type": "string",
                "enum": ["control", "app", "db", "cache", "storage", "proxy", "dns"],
            },
            "bootstrap": {
                "type": "boolean",
                "description": "run the bootstrap playbook now (default true): it installs "
                "what the new role needs",
            },
        },
    },
    "ServerList": {
        "type": "object",
        "required": ["servers"],
        "properties": {
            "servers": {"type": "array", "items": {"$ref": "#/components/schemas/Server"}}
        },
    },
    "ApiKey": {
        "type": "object",
        "required": ["name", "role", "prefix", "state", "created_at"],
        "properties": {
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ["admin", "operator", "agent", "readonly"]},
            "principal": {"type": "string", "description": "the person or service it belongs to"},
            "created_by": {
                "type": ["string", "null"],
                "description": "the key that created it (null: made on the server)",
            },
            "prefix": {"type": "string"},
            "state": {"type": "string", "enum": ["active", "expired", "revoked"]},
            "created_at": TIMESTAMP,
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
            "last_used_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "ApiKeyCreate": {
        "type": "object",
        "required": ["name", "role"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            "role": {"type": "string", "enum": ["admin", "operator", "agent", "readonly"]},
            "principal": {
                "type": "string",
                "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                "description": (
                    "the person or service the key belongs to (default: the caller's). An admin "
                    "key, or a key for another principal, is queued for another admin's approval"
                ),
            },
            "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 3650},
        },
    },
    "ApiKeyCreated": {
        "type": "object",
        "required": ["key", "api_key"],
        "properties": {
            "key": {"$ref": "#/components/schemas/ApiKey"},
            "api_key": {"type": "string", "description": "shown once, never again"},
        },
    },
    "ApiKeyList": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "version"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "version": {"type": "string"},
            "database": {"type": "string"},
        },
    },
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_name: str, description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema_name)}},
    }


def _errors(*statuses: int) -> dict:
    words = {
        400: "malformed request",
        401: "missing or invalid API key",
        403: "the key's role does not allow this, or the Protection Layer refuses it",
        404: "not found",
        409: "conflict with the current state",
        422: "invalid input",
        410: "the queue entry expired",
    }
    return {str(s): _json("Error", words[s]) for s in statuses}


def _op(summary: str, ok: dict, *errors: int, body: str | None = None, **extra: Any) -> dict:
    op: dict[str, Any] = {"summary": summary, "responses": {**ok, **_errors(401, *errors)}}
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        op["responses"].update(_errors(400, 422))
    op.update(extra)
    return op


PROJECT_PARAM = {
    "name": "project",
    "in": "path",
    "required": True,
    "description": "the project's id or its name",
    "schema": {"type": "string"},
}
ENV_PARAM = {
    "name": "env",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["staging", "production", "preview"]},
}
IP_PARAM = {"name": "ip", "in": "path", "required": True, "schema": {"type": "string"}}
KEY_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {
        "name": "offset",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**31},
    },
]


# --- The Protection Layer -------------------------------------------------------------------

CONFIRM_CONTRACT = """\
Every mutating operation passes the Protection Layer (rules: GET /api/protection/rules).
SAFE and LOW run at once and answer as usual (200/201). Anything not executed yet answers
**202** with `status` `confirmation_required` (MEDIUM) or `queued` (HIGH, CRITICAL), a warning
in words, the unmet requirements and a `confirm_token` shown once (256 bits, stored hashed).
The token is bound to the operation, the target, the exact parameters and the requesting key.

* MEDIUM: confirm within 15 minutes with `POST /api/protection/confirm {"token"}` or by
  repeating the same request with the header `X-Confirm-Token`. Single use.
* HIGH: needs a backup, two confirmations with the same key (the second types the target's
  name as `typed_name`, or `X-Confirm-Name` on a repeated request) and a 24 h cooldown from
  the request. Confirming during the cooldown records it (202 `confirmation_recorded`, with
  `cooldown_remaining_seconds`); only a confirmation after the cooldown executes.
* CRITICAL: also needs a verified backup, approval by another admin key
  (`POST /api/protection/approve {"id"}`, never by MCP) and a 48 h cooldown.
* Queue entries expire 7 days after their cooldown; until executed they can be cancelled
  (`POST /api/protection/cancel`). A confirmation that executes answers 200
  `{"status": "executed", "result"}`.

Refusals: 403 `protection_refused` (details.reason and every unmet requirement), 404
`confirm_token_unknown`, 409 `protection_entry_closed` (token spent: executed, cancelled or
failed) or `already_queued`, 410 `protection_entry_expired`, 422 `typed_name_mismatch`.
Every step is a row of the hash-chained log (GET /api/protection/logs)."""

CONFIRM_HEADERS = [
    {
        "name": "X-Confirm-Token",
        "in": "header",
        "description": "confirm token from an earlier 202 answer to this very request",
        "schema": {"type": "string"},
    },
    {
        "name": "X-Confirm-Name",
        "in": "header",
        "description": "the target's name typed out (the second confirmation of HIGH/CRITICAL)",
        "schema": {"type": "string"},
    },
]
LEVEL = {"type": "string", "enum": ["SAFE", "LOW", "MEDIUM", "HIGH", "CRITICAL"]}
STRINGS = {"type": "array", "items": {"type": "string"}}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS.update(
    {
        "Unmet": {
            "type": "object",
            "required": ["requirement", "satisfy"],
            "properties": {"requirement": {"type": "string"}, "satisfy": {"type": "string"}},
        },
        "QueueEntry": {
            "type": "object",
            "required": ["id", "operation", "danger_level", "level", "status", "target"],
            "properties": {
                "id": {"type": "string"},
                "operation": {"type": "string"},
                "danger_level": {"type": "integer", "minimum": 0, "maximum": 4},
                "level": LEVEL,
                "status": {
                    "type": "string",
                    "enum": ["pending", "executed", "cancelled", "expired", "failed"],
                },
                "target": {"type": "object"},
                "params": {"type": "object"},
                "warning": NULLABLE_STRING,
                "requested_by": NULLABLE_STRING,
                "key_name": NULLABLE_STRING,
                "created_at": TIMESTAMP,
                "cooldown_ends_at": TIMESTAMP,
                "cooldown_remaining_seconds": {"type": "integer", "minimum": 0},
                "expires_at": TIMESTAMP,
                "confirmations": {"type": "integer"},
                "last_confirmed_at": NULLABLE_TIME,
                "approved_by": NULLABLE_STRING,
                "approved_at": NULLABLE_TIME,
                "finished_at": NULLABLE_TIME,
                "unmet": {"type": "array", "items": {"$ref": "#/components/schemas/Unmet"}},
            },
        },
        "QueueList": {
            "type": "object",
            "required": ["entries", "total", "limit", "offset"],
            "properties": {
                "entries": {"type": "array", "items": {"$ref": "#/components/schemas/QueueEntry"}},
                "total": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        },
        "ProtectionPending": {
            "type": "object",
            "description": "202: not executed yet. The confirm_token is shown only here.",
            "required": ["status", "operation", "level", "warning", "confirm_token", "entry"],
            "properties": {
                "status": {"type": "string", "enum": ["confirmation_required", "queued"]},
                "operation": {"type": "string"},
                "danger_level": {"type": "integer"},
                "level": LEVEL,
                "warning": {"type": "string"},
                "confirm_token": {"type": "string"},
                "token_expires_at": TIMESTAMP,
                "reasons": STRINGS,
                "entry": {"$ref": "#/components/schemas/QueueEntry"},
                "confirm": {"type": "string", "description": "how to confirm, in words"},
            },
        },
        "ProtectionRecorded": {
            "type": "object",
            "description": "202: the confirmation is recorded; the operation still waits.",
            "required": ["status", "operation", "entry"],
            "properties": {
                "status": {"type": "string", "enum": ["confirmation_recorded"]},
                "operation": {"type": "string"},
                "level": LEVEL,
                "reasons": STRINGS,
                "entry": {"$ref": "#/components/schemas/QueueEntry"},
            },
        },
        "ProtectionExecuted": {
            "type": "object",
            "description": "`entry` only when a confirmation executed it; a LOW run has none",
            "required": ["status", "operation", "result"],
            "properties": {
                "status": {"type": "string", "enum": ["executed"]},
                "operation": {"type": "string"},
                "level": LEVEL,
                "entry": {"$ref": "#/components/schemas/QueueEntry"},
                "result": {"type": "object"},
            },
        },
        "ProtectionEntryAnswer": {
            "type": "object",
            "required": ["status", "entry"],
            "properties": {
                "status": {"type": "string", "enum": ["approved", "cancelled"]},
                "reasons": STRINGS,
                "entry": {"$ref": "#/components/schemas/QueueEntry"},
            },
        },
        "ProtectionConfirm": {
            "type": "object",
            "required": ["token"],
            "additionalProperties": False,
            "properties": {
                "token": {"type": "string", "minLength": 1, "maxLength": 200},
                "typed_name": {"type": "string", "maxLength": 200},
            },
        },
        "ProtectionApprove": {
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 64}},
        },
        "ProtectionCancel": {
            "type": "object",
            "additionalProperties": False,
            "anyOf": [{"required": ["id"]}, {"required": ["token"]}],
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 64},
                "token": {"type": "string", "minLength": 1, "maxLength": 200},
            },
        },
        "OperationLog": {
            "type": "object",
            "required": ["id", "operation", "danger_level", "status", "entry_hash"],
            "properties": {
                "id": {"type": "integer"},
                "project_id": NULLABLE_STRING,
                "operation": {"type": "string"},
                "danger_level": {"type": "integer"},
                "requested_by": {"type": "string"},
                "key_name": NULLABLE_STRING,
                "target": NULLABLE_STRING,
                "status": {"type": "string"},
                "details": {"type": "object"},
                "created_at": TIMESTAMP,
                "executed_at": NULLABLE_TIME,
                "prev_hash": NULLABLE_STRING,
                "entry_hash": NULLABLE_STRING,
            },
        },
        "ChainVerification": {
            "type": "object",
            "required": [
                "valid",
                "first_bad_id",
                "checked",
                "anchored_through",
                "unanchored",
                "problems",
            ],
            "description": (
                "The log is an HMAC chain (key outside the database) whose head is anchored in "
                "a file outside it after every commit: edits, deletions, truncation and forged "
                "appends each show as a problem."
            ),
            "properties": {
                "valid": {"type": "boolean"},
                "first_bad_id": {"type": ["integer", "null"]},
                "checked": {"type": "integer"},
                "anchored_through": {"type": ["integer", "null"]},
                "unanchored": {"type": "integer"},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["problem"],
                        "properties": {
                            "problem": {
                                "type": "string",
                                "enum": [
                                    "row_does_not_verify",
                                    "anchor_missing",
                                    "anchored_row_missing",
                                    "anchored_row_changed",
                                ],
                            },
                            "id": {"type": "integer"},
                            "file": {"type": "string"},
                        },
                    },
                },
            },
        },
        "OperationLogList": {
            "type": "object",
            "required": ["logs", "total", "limit", "offset"],
            "properties": {
                "logs": {"type": "array", "items": {"$ref": "#/components/schemas/OperationLog"}},
                "total": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
                "chain": {"$ref": "#/components/schemas/ChainVerification"},
            },
        },
        "ProtectionRules": {
            "type": "object",
            "required": ["rules", "overrides"],
            "properties": {
                "rules": {"type": "array", "items": {"type": "object"}},
                "overrides": STRINGS,
            },
        },
    }
)

PROTECTED_ANSWERS = {
    "200": {
        "description": "executed (with X-Confirm-Token: the ProtectionExecuted envelope)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    "202": {
        "description": "not executed yet: a confirm token, a queue entry or a confirmation",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [_ref("ProtectionPending"), _ref("ProtectionRecorded")],
                }
            }
        },
    },
}


def _pending_or(schema_name: str, description: str) -> dict:
    """A 202 that is either the route's own answer (a run started) or not executed yet."""
    return {
        "description": f"{description}, or not executed yet (a token or a queue entry)",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        _ref(schema_name),
                        _ref("ProtectionPending"),
                        _ref("ProtectionRecorded"),
                    ]
                }
            }
        },
    }


def _query(name: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "schema": schema}


def protection_paths() -> dict[str, Any]:
    queue_statuses = ["pending", "executed", "cancelled", "expired", "failed", "all"]
    log_statuses = ["requested", "token_issued", "confirmed", "approved", "rejected",
                    "cancelled", "expired", "executed", "failed"]  # fmt: skip
    return {
        "/api/protection/queue": {
            "get": _op(
                "Queue entries (pending by default) with unmet requirements and cooldown end",
                {"200": _json("QueueList", "entries, oldest first")},
                422,
                parameters=[
                    *PAGING,
                    _query("status", {"type": "string", "enum": queue_statuses}),
                    _query("operation", {"type": "string", "enum": list(RULES)}),
                ],
            )
        },
        "/api/protection/queue/{entry_id}": {
            "parameters": [
                {"name": "entry_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": _op("One queue entry", {"200": _json("QueueEntry", "the entry")}, 404),
        },
        "/api/protection/confirm": {
            "post": _op(
                "Confirm an operation with its token (same key as the request)",
                {
                    "200": _json("ProtectionExecuted", "executed"),
                    "202": {
                        "description": "confirmation recorded (still waiting), or executed "
                        "and an operation started (follow result.operation)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        _ref("ProtectionRecorded"),
                                        _ref("ProtectionExecuted"),
                                    ]
                                }
                            }
                        },
                    },
                },
                403,
                404,
                409,
                410,
                body="ProtectionConfirm",
                description=CONFIRM_CONTRACT,
            )
        },
        "/api/protection/approve": {
            "post": _op(
                "Approve a CRITICAL entry (admin key other than the requester's; not MCP)",
                {"200": _json("ProtectionEntryAnswer", "approval recorded; not executed")},
                403,
                404,
                409,
                410,
                body="ProtectionApprove",
            )
        },
        "/api/protection/cancel": {
            "post": _op(
                "Cancel a pending entry (the requesting key or an admin), by id or token",
                {"200": _json("ProtectionEntryAnswer", "cancelled")},
                403,
                404,
                409,
                410,
                body="ProtectionCancel",
            )
        },
        "/api/protection/logs": {
            "get": _op(
                "The operation log, newest first; verify=true adds the chain check",
                {"200": _json("OperationLogList", "log rows")},
                422,
                parameters=[
                    *PAGING,
                    _query("operation", {"type": "string"}),
                    _query("status", {"type": "string", "enum": log_statuses}),
                    _query("project", {"type": "string"}),
                    _query("key_name", {"type": "string"}),
                    _query("target", {"type": "string"}),
                    _query("verify", {"type": "string", "enum": ["true", "false"]}),
                ],
            )
        },
        "/api/protection/logs/verify": {
            "get": _op(
                "Verify the log's hash chain",
                {"200": _json("ChainVerification", "valid, or the first row that breaks it")},
            )
        },
        "/api/protection/rules": {
            "get": _op(
                "The effective rules: level, requirements and flow per operation",
                {"200": _json("ProtectionRules", "rules")},
            )
        },
    }


OPERATION_STATUS = {"type": "string", "enum": list(operations.STATUSES)}
SCHEMAS.update(
    {
        "Operation": {
            "type": "object",
            "required": ["id", "kind", "status", "targets", "created_at", "recap"],
            "properties": {
                "id": {"type": "string"},
                "kind": {"type": "string"},
                "status": OPERATION_STATUS,
                "targets": STRINGS,
                "project_id": NULLABLE_STRING,
                "server_id": {"type": ["integer", "null"]},
                "requested_by": {"type": "string"},
                "key_name": NULLABLE_STRING,
                "params": {"type": "object"},
                "created_at": TIMESTAMP,
                "started_at": NULLABLE_TIME,
                "finished_at": NULLABLE_TIME,
                "duration_s": {"type": ["number", "null"]},
                "rc": {"type": ["integer", "null"]},
                "error": NULLABLE_STRING,
                "recap": {
                    "type": "object",
                    "description": "per host: ok, changed, failures, dark, skipped, ...",
                    "additionalProperties": {"type": "object"},
                },
                "result": {"type": "object"},
            },
        },
        "OperationList": {
            "type": "object",
            "required": ["operations", "total"],
            "properties": {
                "operations": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Operation"},
                },
                "total": {"type": "integer"},
            },
        },
        "OperationEvents": {
            "type": "object",
            "required": ["operation_id", "status", "finished", "events", "next_after"],
            "properties": {
                "operation_id": {"type": "string"},
                "status": OPERATION_STATUS,
                "finished": {"type": "boolean"},
                "next_after": {"type": "integer"},
                "events": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["seq", "event"],
                        "properties": {
                            "seq": {"type": "integer"},
                            "event": {"type": "string"},
                            "host": NULLABLE_STRING,
                            "task": NULLABLE_STRING,
                            "changed": {"type": "boolean"},
                            "failed": {"type": "boolean"},
                            "duration": {"type": ["number", "null"]},
                            "data": {"type": "object"},
                        },
                    },
                },
            },
        },
        "ServerRegistered": {
            "type": "object",
            "required": ["server", "operation"],
            "properties": {
                "server": {"$ref": "#/components/schemas/Server"},
                "operation": {
                    "oneOf": [{"$ref": "#/components/schemas/Operation"}, {"type": "null"}]
                },
            },
        },
        "ServerStats": {
            "type": "object",
            "required": ["server", "ip", "cpu", "load", "memory", "disk", "cached"],
            "properties": {
                "server": {"type": "string"},
                "ip": {"type": "string"},
                "gathered_at": TIMESTAMP,
                "cpu": {"type": "object"},
                "load": {"type": "object"},
                "memory": {"type": "object"},
                "disk": {"type": "object"},
                "containers": {"type": ["object", "null"]},
                "cached": {"type": "boolean"},
            },
        },
        "SshPublicKey": {
            "type": "object",
            "required": ["public_key"],
            "properties": {"public_key": {"type": "string"}},
        },
    }
)
OPERATION_PARAM = {
    "name": "operation_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def executor_paths() -> dict[str, Any]:
    return {
        "/api/servers/ssh-key": {
            "get": _op(
                "codeb's SSH public key, to authorise on a new server",
                {"200": _json("SshPublicKey", "the key")},
            )
        },
        "/api/servers/{ip}/stats": {
            "parameters": [IP_PARAM],
            "get": _op(
                "Live CPU, load, memory, disk and container counts (cached briefly)",
                {
                    "200": _json("ServerStats", "figures"),
                    "503": _json("Error", "the host could not be read"),
                },
                404,
                409,
            ),
        },
        "/api/servers/{ip}/bootstrap": {
            "parameters": [IP_PARAM],
            "post": _op(
                "Run the bootstrap again (server_bootstrap); follow the operation",
                {"202": _pending_or("Operation", "started")},
                403,
                404,
                409,
                410,
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
        "/api/operations": {
            "get": _op(
                "Operations, newest first",
                {"200": _json("OperationList", "operations")},
                422,
                parameters=[
                    *PAGING,
                    _query("status", OPERATION_STATUS),
                    _query("kind", {"type": "string", "maxLength": 64}),
                ],
            )
        },
        "/api/operations/{operation_id}": {
            "parameters": [OPERATION_PARAM],
            "get": _op(
                "An operation: status, timings, per-host recap",
                {"200": _json("Operation", "the operation")},
                404,
            ),
        },
        "/api/operations/{operation_id}/events": {
            "parameters": [OPERATION_PARAM],
            "get": _op(
                "Runner events after `after`, in order; `wait` long-polls up to 30 s",
                {"200": _json("OperationEvents", "events")},
                404,
                422,
                parameters=[
                    _query("after", {"type": "integer", "minimum": 0, "maximum": 2**31}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000}),
                    _query("wait", {"type": "integer", "minimum": 0, "maximum": 30}),
                ],
            ),
        },
        "/api/operations/{operation_id}/cancel": {
            "parameters": [OPERATION_PARAM],
            "post": _op(
                "Cancel a queued or running operation (operation_cancel; an agent key only its "
                "own); the ansible process is stopped",
                {"200": _json("Operation", "cancel requested"), "202": PROTECTED_ANSWERS["202"]},
                403,
                404,
                409,
                410,
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
    }


CONTAINER = {
    "type": "object",
    "required": ["id", "project_id", "environment", "server_type", "container_name", "status"],
    "properties": {
        "id": {"type": "string"},
        "project_id": {"type": "string"},
        "environment": {"type": "string"},
        "server_type": {"type": "string", "enum": ["app", "db", "redis"]},
        "server_ip": {"type": "string"},
        "container_name": {"type": "string"},
        "image": {"type": "string"},
        "image_id": NULLABLE_STRING,
        "previous_image": NULLABLE_STRING,
        "port_external": {"type": ["integer", "null"]},
        "port_internal": {"type": ["integer", "null"]},
        "volume": NULLABLE_STRING,
        "status": {"type": "string"},
        "health_status": NULLABLE_STRING,
        "health_checked_at": NULLABLE_TIME,
        "last_operation_id": NULLABLE_STRING,
        "created_at": NULLABLE_TIME,
        "updated_at": NULLABLE_TIME,
        "live": {
            "type": "object",
            "description": "with ?live=true: read from the host; `drift` lists how the host "
            "differs from this row (`in_sync` when it does not)",
        },
    },
}
SCHEMAS.update(
    {
        "Container": CONTAINER,
        "ContainerList": {
            "type": "object",
            "required": ["containers"],
            "properties": {"containers": {"type": "array", "items": _ref("Container")}},
        },
        "DeployRequest": {
            "type": "object",
            "required": ["project", "environment", "image"],
            "additionalProperties": False,
            "properties": {
                "project": {"type": "string", "minLength": 1, "maxLength": 100},
                "environment": {"type": "string", "enum": ["staging", "production", "preview"]},
                "image": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$",
                    "description": "image reference, e.g. registry.example/app:1.2",
                },
            },
        },
        "Preview": {
            "type": "object",
            "required": ["preview", "plan_hash", "changes", "restarts", "changed"],
            "properties": {
                "preview": {"type": "boolean", "enum": [True]},
                "plan_hash": {
                    "type": "string",
                    "description": "send as X-Plan-Hash to apply exactly this plan",
                },
                "changes": {"type": "array", "items": {"type": "object"}},
                "restarts": STRINGS,
                "changed": {"type": "boolean"},
            },
        },
    }
)
PREVIEW_PARAMS = [
    _query("preview", {"type": "string", "enum": ["true", "false", "1", "0"]}),
    {
        "name": "X-Plan-Hash",
        "in": "header",
        "description": "apply exactly the previewed plan (409 plan_changed if the state moved)",
        "schema": {"type": "string"},
    },
    *CONFIRM_HEADERS,
]
CONTAINER_PARAM = {
    "name": "container_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
CONTAINER_ANSWERS = {
    "200": {
        "description": "with ?preview=true: what would change (nothing changed)",
        "content": {"application/json": {"schema": _ref("Preview")}},
    },
    "202": {
        "description": "an operation started (LOW, or confirmed), or not executed yet "
        "(confirm token, queue entry)",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        _ref("ProtectionExecuted"),
                        _ref("ProtectionPending"),
                        _ref("ProtectionRecorded"),
                    ]
                }
            }
        },
    },
}


def _container_op(summary: str, *extra_errors: int, body: str | None = None) -> dict:
    return _op(
        summary, CONTAINER_ANSWERS, 403, 404, 409, 410, 422, *extra_errors,
        body=body, parameters=PREVIEW_PARAMS, description=CONFIRM_CONTRACT,
    )  # fmt: skip


def container_paths() -> dict[str, Any]:
    return {
        "/api/containers": {
            "get": _op(
                "Containers, optionally of one project / environment",
                {"200": _json("ContainerList", "containers")},
                404,
                422,
                parameters=[
                    _query("project", {"type": "string", "maxLength": 100}),
                    _query(
                        "environment",
                        {"type": "string", "enum": ["staging", "production", "preview"]},
                    ),
                ],
            )
        },
        "/api/containers/deploy": {
            "post": _container_op(
                "Deploy an image to an environment (staging LOW; production MEDIUM, needs the "
                "same image healthy in staging); the first deploy also provisions PostgreSQL "
                "and Redis; a failing version is rolled back",
                body="DeployRequest",
            )
        },
        "/api/containers/drift-check": {
            "post": _op(
                "Compare what runs on every host with the registry (SAFE, read-only): an "
                "operation whose result lists the containers that drifted",
                {"202": CONTAINER_ANSWERS["202"]},
                403,
                409,
            )
        },
        "/api/containers/{container_id}": {
            "parameters": [CONTAINER_PARAM],
            "get": _op(
                "A container; ?live=true reads its state from the host",
                {"200": _json("Container", "the container")},
                404,
                409,
                422,
                parameters=[
                    _query("live", {"type": "string", "enum": ["true", "false", "1", "0"]})
                ],
            ),
            "delete": _container_op("Remove a container (MEDIUM; stopped first; keeps the volume)"),
        },
        "/api/containers/{container_id}/start": {
            "parameters": [CONTAINER_PARAM],
            "post": _container_op("Start a container (LOW)"),
        },
        "/api/containers/{container_id}/stop": {
            "parameters": [CONTAINER_PARAM],
            "post": _container_op("Stop a container (MEDIUM: confirm token)"),
        },
        "/api/containers/{container_id}/restart": {
            "parameters": [CONTAINER_PARAM],
            "post": _container_op("Restart a container (LOW)"),
        },
        "/api/containers/{container_id}/volume": {
            "parameters": [CONTAINER_PARAM],
            "delete": _container_op("Delete a container's data volume (HIGH: queued)"),
        },
    }


# What the API refuses in every string it is given (body, path, query): control characters.
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u001f\u007f]*$"


def _plain_string(schema: dict) -> bool:
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    return "string" in types and not ({"enum", "pattern", "format", "anyOf"} & set(schema))


def _refuse_control_characters(paths: dict[str, Any]) -> None:
    """Say in the document what the API enforces for every operation: no string it receives
    (request bodies, path and query parameters) may hold a control character."""
    bodies = set()
    for item in paths.values():
        shared = item.get("parameters", [])
        for key, op in item.items():
            if key == "parameters":
                continue
            checked = False
            for param in [*shared, *op.get("parameters", [])]:
                schema = param.get("schema", {})
                if param.get("in") in ("path", "query") and schema.get("type") == "string":
                    checked = True
                    if _plain_string(schema):
                        param["schema"] = {**schema, "pattern": NO_CONTROL_CHARACTERS}
            if checked and "422" not in op["responses"]:
                op["responses"].update(_errors(422))
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                bodies.add(ref.rsplit("/", 1)[1])
    for name in bodies:
        for prop, schema in SCHEMAS[name].get("properties", {}).items():
            if _plain_string(schema):
                SCHEMAS[name]["properties"][prop] = {**schema, "pattern": NO_CONTROL_CHARACTERS}


SCHEDULE_TIME = {"type": ["string", "null"], "format": "date-time"}
SCHEMAS.update(
    {
        "Schedule": {
            "type": "object",
            "required": [
                "name",
                "description",
                "interval_s",
                "enabled",
                "running",
                "last_run",
                "next_run_at",
            ],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "interval_s": {"type": "integer", "minimum": 1},
                "enabled": {"type": "boolean"},
                "running": {"type": "boolean", "description": "a process holds its lease now"},
                "last_run": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["started_at", "finished_at", "status", "result", "error"],
                            "properties": {
                                "started_at": TIMESTAMP,
                                "finished_at": SCHEDULE_TIME,
                                "status": {
                                    "type": ["string", "null"],
                                    "enum": ["running", "succeeded", "failed", None],
                                },
                                "result": {"type": ["object", "null"]},
                                "error": NULLABLE_STRING,
                            },
                        },
                    ]
                },
                "next_run_at": {
                    **SCHEDULE_TIME,
                    "description": "null while the job is disabled (CODEB_SCHEDULES)",
                },
            },
        },
        "ScheduleDue": {
            "type": "object",
            "required": ["schedule"],
            "properties": {"schedule": {"$ref": "#/components/schemas/Schedule"}},
        },
        "ScheduleList": {
            "type": "object",
            "required": ["schedules"],
            "properties": {
                "schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}
            },
        },
    }
)


JOB_PARAM = {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}


def schedule_paths() -> dict[str, Any]:
    return {
        "/api/schedules": {
            "get": _op(
                "Periodic jobs: interval, last run (result or error) and next run",
                {"200": _json("ScheduleList", "every declared job, by name")},
            )
        },
        "/api/schedules/{job}/run": {
            "parameters": [JOB_PARAM],
            "post": _op(
                "Run a periodic job at the scheduler's next tick (schedule_run, LOW); the "
                "same lease as its periodic runs keeps it from running twice at once",
                {
                    "200": {
                        "description": "due now (with X-Confirm-Token: the executed envelope)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        _ref("ScheduleDue"),
                                        _ref("ProtectionExecuted"),
                                    ]
                                }
                            }
                        },
                    },
                    "202": PROTECTED_ANSWERS["202"],
                },
                403,
                404,
                409,
                410,
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
    }


@lru_cache(maxsize=1)
def build_document() -> dict:
    """Built once: the OpenAPI resource serves it and the query-parameter check reads it."""
    paths: dict[str, Any] = {
        "/api/health": {
            "get": {
                "summary": "Liveness of the API (no key needed; nothing sensitive)",
                "security": [],
                "responses": {"200": _json("Health", "the API answers")},
            }
        },
        "/api/openapi.json": {
            "get": _op(
                "This document",
                {
                    "200": {
                        "description": "OpenAPI 3.1 document",
                        "content": {"application/json": {}},
                    }
                },
            )
        },
        "/api/projects": {
            "get": _op(
                "List projects",
                {"200": _json("ProjectList", "projects, oldest first")},
                422,
                parameters=[
                    *PAGING,
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["active", "archived"]},
                    },
                ],
            ),
            "post": _op(
                "Create a project: environments, ports and .env files (passwords shown once)",
                {
                    "201": _json("ProjectCreated", "created"),
                    "202": {
                        "description": "only if configuration made this operation stricter "
                        "than LOW: a confirm token (see the confirm contract)",
                        "content": {"application/json": {"schema": _ref("ProtectionPending")}},
                    },
                },
                403,
                409,
                body="ProjectCreate",
            ),
        },
        "/api/projects/{project}": {
            "parameters": [PROJECT_PARAM],
            "get": _op("A project", {"200": _json("Project", "the project")}, 404),
            "put": _op(
                "Change a project's type or repository (LOW: logged, then runs)",
                {"200": _json("Project", "updated"), "202": PROTECTED_ANSWERS["202"]},
                403,
                404,
                409,
                410,
                body="ProjectUpdate",
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
            "delete": _op(
                "Delete a project (CRITICAL: queued; see the confirm contract)",
                PROTECTED_ANSWERS,
                403,
                404,
                409,
                410,
                422,
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
        "/api/projects/{project}/environments": {
            "parameters": [PROJECT_PARAM],
            "get": _op("A project's environments", {"200": _json("EnvironmentList", "list")}, 404),
            "post": _op(
                "Add an environment (e.g. preview); answers with its .env file",
                {
                    "201": _json("EnvironmentCreated", "created"),
                    "202": {
                        "description": "only if configuration made this operation stricter "
                        "than LOW: a confirm token (see the confirm contract)",
                        "content": {"application/json": {"schema": _ref("ProtectionPending")}},
                    },
                },
                403,
                404,
                409,
                body="EnvironmentCreate",
            ),
        },
        "/api/projects/{project}/environments/{env}": {
            "parameters": [PROJECT_PARAM, ENV_PARAM],
            "get": _op("An environment", {"200": _json("Environment", "the environment")}, 404),
            "delete": _op(
                "Delete an environment (HIGH: queued; see the confirm contract)",
                PROTECTED_ANSWERS,
                403,
                404,
                409,
                410,
                422,
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
        "/api/servers": {
            "get": _op(
                "The server registry",
                {"200": _json("ServerList", "servers")},
                422,
                parameters=[
                    {
                        "name": "role",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": ["control", "app", "db", "cache", "storage", "proxy", "dns"],
                        },
                    }
                ],
            ),
            "post": _op(
                "Register a server (server_register); unless bootstrap is false, a bootstrap "
                "run starts (202)",
                {
                    "201": _json("ServerRegistered", "registered, no run started"),
                    "202": {
                        "description": "registered and a run started, or not executed yet",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        _ref("ServerRegistered"),
                                        _ref("ProtectionPending"),
                                        _ref("ProtectionRecorded"),
                                    ]
                                }
                            }
                        },
                    },
                },
                403,
                404,
                409,
                410,
                body="ServerCreate",
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
        "/api/servers/{ip}": {
            "parameters": [IP_PARAM],
            "get": _op("A server", {"200": _json("Server", "the server")}, 404),
            "put": _op(
                "Change a server's role (server_update); unless bootstrap is false, a "
                "bootstrap run installs what the new role needs (202)",
                {
                    "200": _json("ServerRegistered", "updated, no run started"),
                    "202": {
                        "description": "updated and a run started, or not executed yet",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        _ref("ServerRegistered"),
                                        _ref("ProtectionPending"),
                                        _ref("ProtectionRecorded"),
                                    ]
                                }
                            }
                        },
                    },
                },
                403,
                404,
                409,
                410,
                body="ServerUpdate",
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
            "delete": _op(
                "Delete a server (CRITICAL: queued; see the confirm contract)",
                PROTECTED_ANSWERS,
                403,
                404,
                409,
                410,
                422,
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
        "/api/keys": {
            "get": _op("API keys (admin)", {"200": _json("ApiKeyList", "keys")}, 403),
            "post": _op(
                "Create an API key (admin; api_key_create LOW for a non-admin key of the "
                "caller's principal, else api_key_grant: queued for another admin's approval); "
                "the key is shown once",
                {"201": _json("ApiKeyCreated", "created"), "202": PROTECTED_ANSWERS["202"]},
                403,
                404,
                409,
                410,
                body="ApiKeyCreate",
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
        "/api/keys/{name}": {
            "parameters": [KEY_PARAM],
            "delete": _op(
                "Revoke an API key (admin; api_key_revoke)",
                {"200": _json("ApiKey", "revoked"), "202": PROTECTED_ANSWERS["202"]},
                403,
                404,
                409,
                410,
                parameters=CONFIRM_HEADERS,
                description=CONFIRM_CONTRACT,
            ),
        },
    }
    paths.update(protection_paths())
    paths.update(executor_paths())
    paths.update(container_paths())
    paths.update(schedule_paths())
    _refuse_control_characters(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "codeb",
            "version": __version__,
            "description": (
                "Self-hosted server manager. Every request needs X-API-Key; X-Codeb-Client "
                "(api, cli, mcp) says which client asks and is recorded, never trusted. "
                'Errors are always {"error": {"code", "message", "details"}}.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "parameters": {
                "client": {
                    "name": "X-Codeb-Client",
                    "in": "header",
                    "schema": {"type": "string", "enum": ["api", "cli", "mcp"]},
                }
            },
        },
    }
