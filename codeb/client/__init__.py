"""The client side of codeb's HTTP API, shared by the CLI (`codeb.cli`) and the MCP server:
`http` is a typed client with one method per endpoint, `flow` the confirm and follow flow
without any user interface."""

from codeb.client.flow import (
    PROTECTION_CODES,
    Step,
    executed_result,
    follow_events,
    kind_of,
    next_steps,
    operation_in,
    refused_by_protection,
)
from codeb.client.http import (
    DEFAULT_URL,
    EVENTS_WAIT_S,
    ApiError,
    ClientSettings,
    CodebClient,
    ConfigError,
    ConnectionFailed,
    Json,
    config_path,
    load_settings,
)

__all__ = [
    "DEFAULT_URL",
    "EVENTS_WAIT_S",
    "PROTECTION_CODES",
    "ApiError",
    "ClientSettings",
    "CodebClient",
    "ConfigError",
    "ConnectionFailed",
    "Json",
    "Step",
    "config_path",
    "executed_result",
    "follow_events",
    "kind_of",
    "load_settings",
    "next_steps",
    "operation_in",
    "refused_by_protection",
]
