import pytest

from codeb.errors import PortsExhausted
from codeb.services.ports import PORT_RANGES, PortRange, allocate_ports, lowest_free
from codeb.store.db import open_database
from codeb.store.models import ALL_MODELS, Project


def test_ranges_are_the_designs():
    assert PORT_RANGES["staging"]["app"] == PortRange(3001, 3999)
    assert PORT_RANGES["production"]["db"] == PortRange(25432, 25999)
    assert PORT_RANGES["preview"]["redis"] == PortRange(36379, 36999)


def test_ranges_never_overlap():
    seen: list[PortRange] = [r for env in PORT_RANGES.values() for r in env.values()]
    for i, a in enumerate(seen):
        for b in seen[i + 1 :]:
            assert a.last < b.first or b.last < a.first, (a, b)


def test_lowest_free_reuses_holes():
    r = PortRange(10, 14)
    assert lowest_free(r, set()) == 10
    assert lowest_free(r, {10, 11, 13}) == 12
    assert lowest_free(r, {10, 11, 12, 13, 14}) is None


@pytest.fixture
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'p.db'}")
    with database.connection_context():
        database.create_tables(ALL_MODELS)
        yield database


def _project(pid):
    return Project.create(id=pid, name=pid.replace("_", "-"), type="nodejs", local_db_password="x")


def test_allocation_and_exhaustion_in_a_small_range(db):
    small = {
        "staging": {"app": PortRange(1, 2), "db": PortRange(11, 12), "redis": PortRange(21, 22)}
    }
    _project("p_a"), _project("p_b"), _project("p_c")
    with db.atomic():
        assert allocate_ports(db, "staging", "p_a", small) == {"app": 1, "db": 11, "redis": 21}
        assert allocate_ports(db, "staging", "p_b", small) == {"app": 2, "db": 12, "redis": 22}
    with pytest.raises(PortsExhausted) as info, db.atomic():
        allocate_ports(db, "staging", "p_c", small)
    assert "1-2" in info.value.message
    assert info.value.status == 409
