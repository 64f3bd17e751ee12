"""codeb survives the loss of its own server (issue 18): its SQLite state replicated off the
control server by Litestream (`replica.py`, started with the serving process), a recovery
bundle of the keys that must not travel with it (`bundle.py`), and the restore that rebuilds
codeb from both (`service.py`; `codeb recovery export|restore|status`)."""

from __future__ import annotations

from codeb.api.declare import Op, answer
from codeb.features.recovery import schemas, service
from codeb.wiring import Configurator


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.recovery import api

    config.add_background("replicator", service.start_replicator_for)
    config.add_metrics(service.METRICS)
    config.add_route(
        "/api/recovery/status",
        api.RecoveryStatus,
        get=Op(
            "Whether codeb itself could be rebuilt now: the replica's lag (alarm when the "
            "replicator is down or the replica is too far behind) and the recovery bundle's age",
            {200: answer(schemas.RecoveryStatus, "each part ok, warning or alarm, with why")},
        ),
    )
