"""The OpenAPI 3.1 description of the HTTP API. Request schemas here are also what the API
validates bodies against, so the document and the behaviour cannot drift apart."""

from __future__ import annotations

from typing import Any

from codeb import __version__

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
            "role": {"type": "string", "enum": ["control", "app", "db", "cache", "storage"]},
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
            "ip": {"type": "string", "maxLength": 45, "description": "IPv4 or IPv6 address"},
            "role": {"type": "string", "enum": ["control", "app", "db", "cache", "storage"]},
            "ssh_user": {"type": "string", "pattern": "^[a-z_][a-z0-9_-]{0,31}$"},
            "ssh_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "provider": {"type": "string", "minLength": 1, "maxLength": 40},
            "provider_id": {"type": ["string", "null"], "maxLength": 100},
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
            "role": {"type": "string", "enum": ["admin", "operator", "readonly"]},
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
            "role": {"type": "string", "enum": ["admin", "operator", "readonly"]},
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
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]


def build_document() -> dict:
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
                {"201": _json("ProjectCreated", "created")},
                403,
                409,
                body="ProjectCreate",
            ),
        },
        "/api/projects/{project}": {
            "parameters": [PROJECT_PARAM],
            "get": _op("A project", {"200": _json("Project", "the project")}, 404),
            "put": _op(
                "Change a project's type or repository",
                {"200": _json("Project", "updated")},
                403,
                404,
                body="ProjectUpdate",
            ),
            "delete": _op(
                "Delete a project (CRITICAL: goes through the Protection Layer)",
                {"202": {"description": "queued for confirmation"}},
                403,
                404,
            ),
        },
        "/api/projects/{project}/environments": {
            "parameters": [PROJECT_PARAM],
            "get": _op("A project's environments", {"200": _json("EnvironmentList", "list")}, 404),
            "post": _op(
                "Add an environment (e.g. preview); answers with its .env file",
                {"201": _json("EnvironmentCreated", "created")},
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
                "Delete an environment (HIGH: goes through the Protection Layer)",
                {"202": {"description": "queued for confirmation"}},
                403,
                404,
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
                            "enum": ["control", "app", "db", "cache", "storage"],
                        },
                    }
                ],
            ),
            "post": _op(
                "Register a server",
                {"201": _json("Server", "registered")},
                403,
                409,
                body="ServerCreate",
            ),
        },
        "/api/servers/{ip}": {
            "parameters": [IP_PARAM],
            "get": _op("A server", {"200": _json("Server", "the server")}, 404),
        },
        "/api/keys": {
            "get": _op("API keys (admin)", {"200": _json("ApiKeyList", "keys")}, 403),
            "post": _op(
                "Create an API key (admin); the key is shown once",
                {"201": _json("ApiKeyCreated", "created")},
                403,
                409,
                body="ApiKeyCreate",
            ),
        },
        "/api/keys/{name}": {
            "parameters": [KEY_PARAM],
            "delete": _op(
                "Revoke an API key (admin)", {"200": _json("ApiKey", "revoked")}, 403, 404
            ),
        },
    }
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
