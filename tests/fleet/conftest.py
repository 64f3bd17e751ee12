"""Makes the fleet fixture and marker available to the tests in this folder."""

from .fixtures import fleet, pytest_configure

__all__ = ["fleet", "pytest_configure"]
