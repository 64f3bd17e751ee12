import pytest

from codeb.errors import ValidationFailed
from codeb.features.projects.service import PROJECT_NAME_MAX, db_name_for, db_user_for
from codeb.services.validation import validate_dns_label, validate_ip


@pytest.mark.parametrize("name", ["a", "my-project", "app1", "a-b-c", "x" * PROJECT_NAME_MAX])
def test_good_names(name):
    assert validate_dns_label(name, max_length=PROJECT_NAME_MAX) == name


@pytest.mark.parametrize(
    "name",
    ["", "My-project", "my_project", "-abc", "abc-", "1abc", "a b", "ä", "x" * 49, None, 5, "a.b"],
)
def test_bad_names(name):
    with pytest.raises(ValidationFailed):
        validate_dns_label(name, max_length=PROJECT_NAME_MAX)


def test_database_names_fit_postgres_identifier_limit():
    longest = "x" * PROJECT_NAME_MAX
    for env in ("staging", "production", "preview", "local"):
        assert len(db_name_for(longest, env)) <= 63
    assert db_user_for("my-project") == "my_project"
    assert db_name_for("my-project", "production") == "my_project_prod"
    assert db_name_for("my-project", "local") == "my_project_dev"


def test_ip_normalised():
    assert validate_ip("2001:db8:0:0::1") == "2001:db8::1"
    with pytest.raises(ValidationFailed):
        validate_ip("300.1.1.1")
