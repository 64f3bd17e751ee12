"""What counts as drift between a container's row and what its host reports, and what a
deploy plan hash binds (pure: no database, no hosts)."""

from __future__ import annotations

from codeb.features.containers.service import deploy_plan_hash, drift_of
from codeb.render.units import plan_environment
from codeb.store.models import Container
from tests.deploy.values import TEMPLATES, golden_values

V1, V2 = "localhost/app:v1", "localhost/app:v2"


def row(**kw) -> Container:
    return Container(**{"status": "running", "image": V1, "image_id": "a" * 64, **kw})


def seen(**kw) -> dict:
    return {
        "running": True,
        "image": V1,
        "image_id": "a" * 64,
        "unit_image": V1,
        "drift": [],
        **kw,
    }


def test_in_sync():
    assert drift_of(row(), seen()) == []


def test_a_stopped_row_of_a_stopped_container_is_in_sync():
    assert drift_of(row(status="stopped"), seen(running=False, drift=["not running"])) == []


def test_the_hand_edit_of_issue_16():
    # The unit file says v2 and was reloaded; the container still runs v1.
    drift = drift_of(
        row(),
        seen(unit_image=V2, drift=["started before its files last changed: a change was ..."]),
    )
    assert drift == [
        f"the unit file names {V2}, not {V1}",
        "started before its files last changed: a change was ...",
    ]


def test_what_runs_is_not_what_the_row_says():
    drift = drift_of(row(), seen(image=V2, image_id="b" * 64, unit_image=V2))
    assert f"the registry says {V1}; the container runs {V2}" in drift
    assert "the registry says image id aaaaaaaaaaaa; the container runs bbbbbbbbbbbb" in drift
    assert drift_of(row(), seen(running=False, drift=["not running"])) == [
        "the registry says running; the container is not running"
    ]
    assert drift_of(row(status="stopped"), seen()) == [
        "the registry says stopped; the container is running"
    ]


def test_a_plan_hash_binds_its_from_state():
    plan = plan_environment(TEMPLATES, golden_values())
    state = {"app": "1" * 64, "db": "2" * 64, "cache": "3" * 64}
    h = deploy_plan_hash(plan, state)
    assert h == deploy_plan_hash(plan, dict(state))
    assert h != deploy_plan_hash(plan, {**state, "app": "4" * 64})  # the host moved
    other = plan_environment(TEMPLATES, golden_values(app_image="registry.example.com/x:2"))
    assert h != deploy_plan_hash(other, state)  # another target
