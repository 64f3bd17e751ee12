"""The .env files match golden files: exactly the original design's format."""

from pathlib import Path

import pytest

from codeb.config import REPO_ROOT
from codeb.render import EnvFileValues, render_env_file

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
TEMPLATES = REPO_ROOT / "templates"

CASES = {
    "local": EnvFileValues(
        environment="local",
        app_port=3000,
        db_user="my_project",
        db_password="generated_password",
        db_name="my_project_dev",
    ),
    "staging": EnvFileValues(
        environment="staging",
        app_port=3001,
        db_user="my_project",
        db_password="generated_password",
        db_name="my_project_staging",
        db_host="141.164.42.213",
        db_port=15432,
        cache_host="64.176.226.119",
        redis_port=16379,
        redis_db=0,
        redis_password="redis_password",
    ),
    "production": EnvFileValues(
        environment="production",
        app_port=4001,
        db_user="my_project",
        db_password="generated_password",
        db_name="my_project_prod",
        db_host="141.164.42.213",
        db_port=25432,
        cache_host="64.176.226.119",
        redis_port=26379,
        redis_db=0,
        redis_password="redis_password",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_env_file_matches_golden(name):
    assert render_env_file(TEMPLATES, CASES[name]) == (GOLDEN / f"{name}.env").read_text()


def test_missing_value_is_an_error():
    """codeb's own template environment refuses an undefined value (never renders "")."""
    import jinja2

    from codeb.render import template_environment

    with pytest.raises(jinja2.UndefinedError):
        template_environment(TEMPLATES).get_template("env/server.env.j2").render(
            environment="staging", node_env="staging"
        )
