"""Autoscaling of the app pool with the Vultr API v2 (issue 14): the policy in settings, a
check that answers the decision with its inputs and reasons, scale up (LOW) and down
(MEDIUM) through the Protection Layer, the history of every decision and action, a
scheduled check that acts only when enabled, and the orphan sweep (at start-up and in the
scheduled check)."""

from __future__ import annotations

from codeb.api.declare import Op, answer
from codeb.features.protection.schemas import PENDING, pending_or
from codeb.features.scaling import jobs, metrics, schemas, service
from codeb.wiring import Configurator


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.scaling import api

    config.add_appliers(service.APPLIERS)
    config.add_runner_jobs(jobs.JOBS)
    config.add_schedules(service.SCHEDULES)
    config.add_background("scaling_orphan_sweep", jobs.start_sweep)
    config.add_metrics(metrics.METRICS)
    config.add_route(
        "/api/scaling/policy",
        api.Policy,
        get=Op(
            "The autoscaling policy, the cloud settings (never the key) and the app pool",
            {200: answer(schemas.PolicyView, "policy, cloud, pool")},
        ),
        put=Op(
            "Change the policy, the cloud settings or the Vultr API key (scaling_configure, "
            "LOW); the key is stored encrypted and never answered",
            {200: answer(schemas.PolicyView, "the settings now"), 202: PENDING},
            (403, 404, 409, 410),
            body=schemas.ScalingConfigure,
            guarded=True,
        ),
    )
    config.add_route(
        "/api/scaling/check",
        api.Check,
        post=Op(
            "Evaluate the policy on live stats of the app pool: the decision with its inputs "
            "and reasons (scaling_check, SAFE: acts on nothing; recorded in the history)",
            {200: answer(schemas.CheckAnswer, "the decision"), 202: PENDING},
            (403, 404, 410, 503),
            guarded=True,
        ),
    )
    config.add_route(
        "/api/scaling/up",
        api.Up,
        post=Op(
            "Add one app server (scale_up, LOW): create, wait ready, pin, bootstrap, place, "
            "proxy, health; a failure deletes the instance",
            {202: pending_or(schemas.Started, "the scale-up operation started")},
            (403, 404, 409, 410),
            body=schemas.ScaleUp,
            guarded=True,
        ),
    )
    config.add_route(
        "/api/scaling/down",
        api.Down,
        post=Op(
            "Remove one autoscaled app server (scale_down, MEDIUM): drain, stop, delete the "
            "instance, unregister; servers holding data or not made by autoscaling are refused",
            {202: pending_or(schemas.Started, "the scale-down operation started")},
            (403, 404, 409, 410),
            body=schemas.ScaleDown,
            guarded=True,
        ),
    )
    config.add_route(
        "/api/scaling/history",
        api.History,
        get=Op(
            "Every decision and action: inputs, steps with durations, cost, outcome",
            {200: answer(schemas.History, "newest first")},
            (422,),
            params=schemas.HISTORY_QUERY,
        ),
    )
