"""`codeb containers ...` against the containers contract, over httpx.MockTransport (the
endpoints are being built): argument parsing, the requests sent, preview and apply, the
confirm flow and following the operation a deploy starts."""

from __future__ import annotations

import pytest

from codeb.cli import main
from tests.cli.fake_api import FakeApi, event, operation

OP = "op_0000000000000001"
EVENTS = f"/api/operations/{OP}/events"
PLAN = {
    "preview": True,
    "plan_hash": "ph_1",
    "changes": [
        {
            "host": "app1",
            "path": "/etc/containers/systemd/shop-staging-app.container",
            "action": "update",
            "diff": "--- before\n+++ after\n@@ -1 +1 @@\n-Image=shop:1.3\n+Image=shop:1.4\n",
        }
    ],
    "restarts": ["app1: shop-staging-app.service"],
}


def run(fake: FakeApi, capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), client=fake.client())
    out = capsys.readouterr()
    return code, out.out, out.err


def with_operation(fake: FakeApi, final_status: str = "succeeded") -> FakeApi:
    """The events and the final state of OP."""
    page = [
        event(1, "playbook_on_play_start", data={"play": "Deploy shop staging"}),
        event(2, "runner_on_ok", "Place the unit", changed=True, duration=0.41),
        event(3, "runner_on_ok", "Check health", duration=1.2),
        event(4, "playbook_on_stats"),
    ]
    recap = {"app1": {"ok": 2, "changed": 1, "failures": 0, "dark": 0, "skipped": 0}}
    fake.on(
        "GET",
        EVENTS,
        (
            200,
            {
                "operation_id": OP,
                "status": "running",
                "finished": False,
                "events": page[:2],
                "next_after": 2,
            },
        ),
        (
            200,
            {
                "operation_id": OP,
                "status": final_status,
                "finished": True,
                "events": page[2:],
                "next_after": 4,
            },
        ),
    )
    fake.on("GET", f"/api/operations/{OP}", (200, operation(status=final_status, recap=recap)))
    return fake


def executed(op_status: str = "queued") -> dict:
    return {
        "status": "executed",
        "operation": "deploy_staging",
        "level": "LOW",
        "result": {"operation": operation(status=op_status)},
    }


def test_staging_deploy_sends_the_contract_and_follows_task_by_task(capsys):
    fake = with_operation(FakeApi().on("POST", "/api/containers/deploy", (202, executed())))
    code, out, _ = run(fake, capsys, "containers", "deploy", "shop", "staging", "shop:1.4")
    assert code == 0, out
    (request,) = fake.sent("POST", "/api/containers/deploy")
    assert fake.body(request) == {"project": "shop", "environment": "staging", "image": "shop:1.4"}
    assert request.headers["X-Codeb-Client"] == "cli" and request.headers["X-API-Key"]
    assert "preview" not in request.url.params and "X-Plan-Hash" not in request.headers
    polls = fake.sent("GET", EVENTS)
    assert [(p.url.params["after"], p.url.params["wait"]) for p in polls] == [
        ("0", "10"),
        ("2", "10"),
    ]
    assert "PLAY Deploy shop staging" in out
    assert "[app1] TASK Place the unit ... changed (0.4s)" in out
    assert "[app1] TASK Check health ... ok (1.2s)" in out
    assert f"operation {OP} succeeded" in out and "app1  2   1" in out


def test_failed_operation_exits_1(capsys):
    fake = with_operation(
        FakeApi().on("POST", "/api/containers/deploy", (202, executed())), "failed"
    )
    code, out, _ = run(fake, capsys, "containers", "deploy", "shop", "preview", "shop:1.4")
    assert code == 1 and f"operation {OP} failed" in out


def test_production_deploy_confirms_with_yes_then_follows(capsys):
    pending = {
        "status": "confirmation_required",
        "operation": "deploy_production",
        "level": "MEDIUM",
        "warning": "MEDIUM: Deploys shop:1.4 to production.",
        "confirm_token": "cbt_tok",
        "entry": {"id": "pq_1"},
    }
    fake = with_operation(FakeApi().on("POST", "/api/containers/deploy", (202, pending)))
    fake.on("POST", "/api/protection/confirm", (200, executed()))
    code, out, _ = run(
        fake, capsys, "containers", "deploy", "shop", "production", "shop:1.4", "--yes"
    )
    assert code == 0, out
    assert "MEDIUM: Deploys shop:1.4 to production." in out
    (confirm,) = fake.sent("POST", "/api/protection/confirm")
    assert fake.body(confirm) == {"token": "cbt_tok"}
    assert f"operation {OP} succeeded" in out


def test_production_deploy_refused_names_the_unmet_requirements(capsys):
    refused = {
        "error": {
            "code": "protection_refused",
            "message": "requirements unmet",
            "details": {
                "reason": "requirements_unmet",
                "unmet": [
                    {"requirement": "staging_tested", "remedy": "deploy it to staging"},
                    {"requirement": "health_check_passed", "satisfy": "make it pass"},
                ],
            },
        }
    }
    fake = FakeApi().on("POST", "/api/containers/deploy", (403, refused))
    code, _, err = run(fake, capsys, "containers", "deploy", "shop", "production", "shop:9")
    assert code == 3
    assert "staging_tested: deploy it to staging" in err
    assert "health_check_passed: make it pass" in err


def test_list_and_show(capsys):
    container = {
        "id": "ctr_1",
        "project": "shop",
        "environment": "staging",
        "server_type": "app",
        "server_ip": "10.0.0.5",
        "container_name": "shop-staging-app",
        "image": "shop:1.4",
        "port_external": 3001,
        "port_internal": 3000,
        "status": "running",
        "health_status": "healthy",
    }
    fake = FakeApi().on("GET", "/api/containers", (200, {"containers": [container]}))
    fake.on("GET", "/api/containers/ctr_1", (200, {**container, "live": {"state": "running"}}))
    code, out, _ = run(fake, capsys, "containers", "list", "--project", "shop", "--env", "staging")
    assert code == 0
    assert out.splitlines()[1].split() == [
        "ctr_1",
        "shop",
        "staging",
        "10.0.0.5",
        "shop-staging-app",
        "shop:1.4",
        "3001->3000",
        "running",
        "healthy",
    ]
    (listing,) = fake.sent("GET", "/api/containers")
    assert dict(listing.url.params) == {"project": "shop", "environment": "staging"}
    code, out, _ = run(fake, capsys, "containers", "show", "ctr_1", "--live")
    assert code == 0 and "live (read from the host):" in out and "state: running" in out
    assert fake.sent("GET", "/api/containers/ctr_1")[0].url.params["live"] == "true"
    code, out, _ = run(fake, capsys, "containers", "list", "--json")
    assert code == 0 and '"container_name": "shop-staging-app"' in out


@pytest.mark.parametrize(
    ("action", "method", "path"),
    [
        ("start", "POST", "/api/containers/ctr_1/start"),
        ("stop", "POST", "/api/containers/ctr_1/stop"),
        ("restart", "POST", "/api/containers/ctr_1/restart"),
        ("remove", "DELETE", "/api/containers/ctr_1"),
        ("volume-delete", "DELETE", "/api/containers/ctr_1/volume"),
    ],
)
def test_actions_send_the_contract(capsys, action, method, path):
    fake = FakeApi().on(method, path, (202, executed()))
    code, out, _ = run(fake, capsys, "containers", action, "ctr_1", "--no-follow")
    assert code == 0, out
    assert len(fake.sent(method, path)) == 1
    assert f"codeb operations follow {OP}" in out


def test_stop_without_terminal_or_yes_exits_3(capsys):
    pending = {
        "status": "confirmation_required",
        "operation": "container_stop",
        "warning": "MEDIUM: Stops shop-staging-app.",
        "confirm_token": "cbt_x",
        "entry": {"id": "pq_1"},
    }
    fake = FakeApi().on("POST", "/api/containers/ctr_1/stop", (202, pending))
    code, out, _ = run(fake, capsys, "containers", "stop", "ctr_1")
    assert code == 3 and "codeb protection confirm cbt_x" in out
    assert not fake.sent("POST", "/api/protection/confirm")


def test_volume_delete_queued_shows_what_is_required(capsys):
    queued = {
        "status": "queued",
        "operation": "volume_delete",
        "level": "HIGH",
        "warning": "HIGH: Deletes the volume shop-staging-db-data.",
        "confirm_token": "cbt_v",
        "token_expires_at": "2026-01-09T12:00:00Z",
        "entry": {
            "id": "pq_9",
            "target": {"name": "shop-staging-db-data"},
            "cooldown_remaining_seconds": 86400,
            "cooldown_ends_at": "2026-01-02T12:00:00Z",
            "unmet": [
                {"requirement": "backup_exists", "satisfy": "back it up"},
                {"requirement": "user_confirmation", "satisfy": "confirm"},
            ],
        },
    }
    fake = FakeApi().on("DELETE", "/api/containers/ctr_1/volume", (202, queued))
    code, out, _ = run(fake, capsys, "containers", "volume-delete", "ctr_1")
    assert code == 3
    assert "pq_9" in out and "24h 00m left (ends 2026-01-02T12:00:00Z)" in out
    assert "backup_exists: back it up" in out
    assert "codeb protection confirm cbt_v --name shop-staging-db-data" in out


def test_preview_shows_the_diff_and_changes_nothing(capsys):
    fake = FakeApi().on("POST", "/api/containers/deploy", (200, PLAN))
    code, out, _ = run(
        fake, capsys, "containers", "deploy", "shop", "staging", "shop:1.4", "--preview"
    )
    assert code == 0
    (request,) = fake.requests
    assert request.url.params["preview"] == "true" and "X-Plan-Hash" not in request.headers
    assert "PREVIEW: nothing was changed (plan ph_1)" in out
    assert "[app1] update /etc/containers/systemd/shop-staging-app.container" in out
    assert "    -Image=shop:1.3" in out and "    +Image=shop:1.4" in out
    assert "\033[" not in out  # no colour off a terminal
    assert "would restart: app1: shop-staging-app.service" in out
    assert "codeb containers deploy shop staging shop:1.4 --plan-hash ph_1" in out


def test_preview_apply_sends_the_plan_hash_then_the_confirm_flow(capsys):
    pending = {
        "status": "confirmation_required",
        "operation": "container_stop",
        "warning": "MEDIUM: Stops it.",
        "confirm_token": "cbt_s",
        "entry": {"id": "pq"},
    }
    fake = with_operation(
        FakeApi().on("POST", "/api/containers/ctr_1/stop", (200, PLAN), (202, pending))
    )
    fake.on("POST", "/api/protection/confirm", (200, executed()))
    code, out, _ = run(fake, capsys, "containers", "stop", "ctr_1", "--preview", "--apply", "-y")
    assert code == 0, out
    preview, real = fake.sent("POST", "/api/containers/ctr_1/stop")
    assert preview.url.params["preview"] == "true"
    assert "preview" not in real.url.params and real.headers["X-Plan-Hash"] == "ph_1"
    assert len(fake.sent("POST", "/api/protection/confirm")) == 1
    assert f"operation {OP} succeeded" in out


def test_plan_changed_is_refused_with_exit_3(capsys):
    moved = {"error": {"code": "plan_changed", "message": "the state moved", "details": {}}}
    fake = FakeApi().on("POST", "/api/containers/ctr_1/restart", (409, moved))
    code, _, err = run(fake, capsys, "containers", "restart", "ctr_1", "--plan-hash", "ph_1")
    assert code == 3 and "preview again" in err
    assert fake.requests[0].headers["X-Plan-Hash"] == "ph_1"


@pytest.mark.parametrize(
    "flags", [("--apply",), ("--preview", "--plan-hash", "ph_1")], ids=["apply-alone", "both"]
)
def test_preview_flag_misuse_is_usage(capsys, flags):
    fake = FakeApi()
    code, _, err = run(fake, capsys, "containers", "start", "ctr_1", *flags)
    assert code == 2 and err.startswith("error: --") and not fake.requests


def test_ctrl_c_stops_following_and_says_how_to_resume(capsys):
    fake = FakeApi().on("POST", "/api/containers/ctr_1/restart", (202, executed()))
    fake.on("GET", EVENTS, (200, KeyboardInterrupt()))
    code, _, err = run(fake, capsys, "containers", "restart", "ctr_1")
    assert code == 130
    assert f"resume: codeb operations follow {OP}" in err
    assert not fake.sent("POST", f"/api/operations/{OP}/cancel")
