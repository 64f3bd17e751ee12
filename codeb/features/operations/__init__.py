"""Operations: what the runner does, its events, and cancelling it (operation_cancel). The
operation records themselves (codeb.services.operations) are shared by every feature that
starts runs."""

from __future__ import annotations

from codeb.api.declare import Op, answer, path
from codeb.features.operations import cancel, schemas
from codeb.features.protection.schemas import PENDING
from codeb.wiring import Configurator

OPERATION = path("operation_id")


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.operations import api

    config.add_appliers(cancel.APPLIERS)
    config.add_route(
        "/api/operations",
        api.Operations,
        get=Op(
            "Operations, newest first",
            {200: answer(schemas.OperationList, "operations")},
            (422,),
            params=schemas.LIST_QUERY,
        ),
    )
    config.add_route(
        "/api/operations/{operation_id}",
        api.OperationItem,
        params=(OPERATION,),
        get=Op(
            "An operation: status, timings, per-host recap",
            {200: answer(schemas.Operation, "the operation")},
            (404,),
        ),
    )
    config.add_route(
        "/api/operations/{operation_id}/events",
        api.OperationEvents,
        params=(OPERATION,),
        get=Op(
            "Runner events after `after`, in order; `wait` long-polls up to 30 s",
            {200: answer(schemas.OperationEvents, "events")},
            (404, 422),
            params=schemas.EVENTS_QUERY,
        ),
    )
    config.add_route(
        "/api/operations/{operation_id}/cancel",
        api.OperationCancel,
        params=(OPERATION,),
        post=Op(
            "Cancel a queued or running operation (operation_cancel; an agent key only its "
            "own); the ansible process is stopped",
            {200: answer(schemas.Operation, "cancel requested"), 202: PENDING},
            (403, 404, 409, 410),
            guarded=True,
        ),
    )
