"""Values shared by the rendering tests and the fleet tests."""

from __future__ import annotations

from dataclasses import replace

from codeb.config import REPO_ROOT
from codeb.render import EnvFileValues, render_env_file
from codeb.render.units import EnvironmentUnits

TEMPLATES = REPO_ROOT / "templates"

# Recognisable, URL-safe, and never a substring of anything else in the files.
DB_PASSWORD = "dbPw-7Qx2Lr9Vt4Kz8Wm3"
REDIS_PASSWORD = "rdPw-5Hn6Jc1Ys0Fd2Gb7"


def golden_values(**overrides: object) -> EnvironmentUnits:
    """The values the golden files were rendered from."""
    app_env = render_env_file(
        TEMPLATES,
        EnvFileValues(
            environment="staging",
            app_port=3001,
            db_user="my_project",
            db_password=DB_PASSWORD,
            db_name="my_project_staging",
            db_host="141.164.42.213",
            db_port=15432,
            cache_host="64.176.226.119",
            redis_port=16379,
            redis_password=REDIS_PASSWORD,
        ),
    )
    values = EnvironmentUnits(
        project="my-project",
        environment="staging",
        app_image="registry.example.com/my-project:1.4.2",
        app_port=3001,
        app_env=app_env,
        db_user="my_project",
        db_password=DB_PASSWORD,
        db_name="my_project_staging",
        db_port=15432,
        redis_password=REDIS_PASSWORD,
        redis_port=16379,
    )
    return replace(values, **overrides) if overrides else values
