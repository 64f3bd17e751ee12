"""Every file codeb writes (units, proxy config, DNS records, .env files) is rendered here from
the top-level `templates/`, so it can be tested against golden files and diffed before applying."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2


@lru_cache(maxsize=8)
def template_environment(templates_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, never an empty string
        autoescape=False,  # noqa: S701 -- plain-text config files, never HTML
        keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class EnvFileValues:
    environment: str  # local, staging, production, preview
    app_port: int
    db_user: str
    db_password: str
    db_name: str
    db_host: str = "localhost"
    db_port: int = 5432
    cache_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str = ""


NODE_ENV = {"local": "development", "staging": "staging", "production": "production"}


def render_env_file(templates_dir: Path, values: EnvFileValues) -> str:
    """Render one .env file in the design's exact format."""
    env = template_environment(templates_dir)
    if values.environment == "local":
        template = env.get_template("env/local.env.j2")
    else:
        template = env.get_template("env/server.env.j2")
    return template.render(
        node_env=NODE_ENV.get(values.environment, values.environment),
        **values.__dict__,
    )
