"""The placement decision (pure): least loaded, explicit choices, replicas, and what it
refuses (moving data, dropping a replica that still has a container)."""

from __future__ import annotations

import pytest

from codeb.errors import ValidationFailed
from codeb.services.fleet import Candidate, PlacementRefused, choose, decide


def servers(role: str, *specs: tuple[int, bool, int]) -> list[Candidate]:
    """(id, ready, load) per server, named <role><id>."""
    return [Candidate(i, f"{role}{i}", ready, load) for i, ready, load in specs]


def pool(app=((1, True, 0),), db=((1, True, 0),), cache=((1, True, 0),)) -> dict:
    return {
        "app": servers("app", *app),
        "db": servers("db", *db),
        "redis": servers("cache", *cache),
    }


def test_least_loaded_then_ready_then_oldest():
    cs = servers("app", (1, True, 3), (2, True, 1), (3, True, 1), (4, False, 0))
    assert choose(cs).name == "app2"  # lowest load among ready; ties go to the lowest id
    assert choose(cs, exclude={"app2"}).name == "app3"
    assert choose(servers("app", (5, False, 2), (6, False, 0))).name == "app6"
    assert choose([]) is None


def test_one_server_per_role_is_what_it_always_was():
    assert decide({}, pool(), {}) == {"app": ["app1"], "db": ["db1"], "redis": ["cache1"]}


def test_recorded_placement_is_kept_whatever_the_loads():
    current = {"app": ["app2"], "db": ["db1"], "redis": ["cache1"]}
    cands = pool(app=((1, True, 0), (2, True, 9)))
    assert decide(current, cands, {}) == current


def test_unplaced_components_go_to_the_least_loaded():
    cands = pool(app=((1, True, 4), (2, True, 2)), db=((1, True, 1), (2, True, 0)))
    got = decide({"redis": ["cache1"]}, cands, {})
    assert got == {"app": ["app2"], "db": ["db2"], "redis": ["cache1"]}


def test_replicas_spread_over_the_least_loaded_counting_each_choice():
    cands = pool(app=((1, True, 0), (2, True, 0), (3, True, 1)))
    got = decide({"app": ["app1"]}, cands, {"app": {"app1"}}, replicas=3)
    assert got["app"] == ["app1", "app2", "app3"]
    # From nothing: two replicas on the two least loaded, not twice the same server.
    assert decide({}, cands, {}, replicas=2)["app"] == ["app1", "app2"]


def test_replicas_never_removes_and_never_invents_servers():
    cands = pool(app=((1, True, 0), (2, True, 0)))
    with pytest.raises(PlacementRefused, match="replicas only adds"):
        decide({"app": ["app1", "app2"]}, cands, {}, replicas=1)
    with pytest.raises(PlacementRefused, match="more app servers than the 2"):
        decide({}, cands, {}, replicas=3)


def test_explicit_app_servers():
    cands = pool(app=((1, True, 0), (2, True, 5)))
    assert decide({}, cands, {}, {"app": ["app2"]})["app"] == ["app2"]
    # A replica without a container may be dropped; one with a container may not (removing
    # it is DELETE /api/containers/:id, a MEDIUM operation, never a cheaper deploy).
    current = {"app": ["app1", "app2"]}
    assert decide(current, cands, {"app": {"app2"}}, {"app": ["app2"]})["app"] == ["app2"]
    with pytest.raises(PlacementRefused) as refused:
        decide(current, cands, {"app": {"app1", "app2"}}, {"app": ["app2"]})
    assert refused.value.details["servers"] == ["app1"]
    with pytest.raises(ValidationFailed):
        decide({}, cands, {}, {"app": ["app1"]}, replicas=2)


def test_data_is_never_moved():
    cands = pool(db=((1, True, 0), (2, True, 0)))
    current = {"db": ["db1"]}
    # Placed but never run: an explicit choice moves the placement.
    assert decide(current, cands, {}, {"db": ["db2"]})["db"] == ["db2"]
    # A container (or a removed container's volume) on db1: refused.
    with pytest.raises(PlacementRefused, match="data lives there") as refused:
        decide(current, cands, {"db": {"db1"}}, {"db": ["db2"]})
    assert refused.value.status == 409
    # Asking for where it is changes nothing.
    assert decide(current, cands, {"db": {"db1"}}, {"db": ["db1"]})["db"] == ["db1"]


def test_no_server_of_a_role():
    with pytest.raises(PlacementRefused, match="no cache server") as refused:
        decide({}, pool(cache=()), {})
    assert refused.value.details == {"component": "redis", "role": "cache", "servers": 0}


def test_only_the_components_asked_for():
    assert decide({}, pool(db=()), {}, components=("app",)) == {"app": ["app1"]}
