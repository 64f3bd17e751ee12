"""The reverse proxy (Caddy): the whole Caddyfile rendered from what codeb knows, validated
before it replaces the running one, and the running configuration read back for status."""

from codeb.providers.proxy.caddy import (
    CaddyOptions,
    LocalCaddy,
    ProxyConfigRejected,
    ProxyError,
    ProxyProvider,
    Site,
    caddyfile_diff,
    hosts_in_config,
    render_caddyfile,
)

__all__ = [
    "CaddyOptions",
    "LocalCaddy",
    "ProxyConfigRejected",
    "ProxyError",
    "ProxyProvider",
    "Site",
    "caddyfile_diff",
    "hosts_in_config",
    "render_caddyfile",
]
