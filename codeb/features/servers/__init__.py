"""The server registry and bootstrap runs (use cases in service.py)."""

from __future__ import annotations

from codeb.api.declare import Op, answer, path
from codeb.features.operations.schemas import Operation
from codeb.features.protection.schemas import EXECUTED, NOT_YET, PENDING, pending_or
from codeb.features.servers import schemas
from codeb.features.servers import service as servers
from codeb.wiring import Configurator

IP = path("ip")


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.servers import api

    config.add_appliers(servers.APPLIERS)
    config.add_runner_jobs(servers.JOBS)
    config.add_route(
        "/api/servers",
        api.Servers,
        get=Op(
            "The server registry",
            {200: answer(schemas.ServerList, "servers")},
            (422,),
            params=schemas.LIST_QUERY,
        ),
        post=Op(
            "Register a server (server_register); unless bootstrap is false, a bootstrap "
            "run starts (202)",
            {
                201: answer(schemas.ServerRegistered, "registered, no run started"),
                202: answer(
                    (schemas.ServerRegistered, *NOT_YET),
                    "registered and a run started, or not executed yet",
                ),
            },
            (403, 404, 409, 410),
            body=schemas.ServerCreate,
            guarded=True,
        ),
    )
    config.add_route(
        "/api/servers/ssh-key",
        api.ServerSshKey,
        get=Op(
            "codeb's SSH public key, to authorise on a new server",
            {200: answer(schemas.SshPublicKey, "the key")},
        ),
    )
    config.add_route(
        "/api/servers/{ip}",
        api.Server,
        params=(IP,),
        get=Op("A server", {200: answer(schemas.Server, "the server")}, (404,)),
        put=Op(
            "Change a server's role (server_update); unless bootstrap is false, a bootstrap "
            "run installs what the new role needs (202)",
            {
                200: answer(schemas.ServerRegistered, "updated, no run started"),
                202: answer(
                    (schemas.ServerRegistered, *NOT_YET),
                    "updated and a run started, or not executed yet",
                ),
            },
            (403, 404, 409, 410),
            body=schemas.ServerUpdate,
            guarded=True,
        ),
        delete=Op(
            "Delete a server (CRITICAL: queued; see the confirm contract)",
            {200: EXECUTED, 202: PENDING},
            (403, 404, 409, 410, 422),
            guarded=True,
        ),
    )
    config.add_route(
        "/api/servers/{ip}/stats",
        api.ServerStats,
        params=(IP,),
        get=Op(
            "Live CPU, load, memory, disk and container counts (cached briefly)",
            {200: answer(schemas.ServerStats, "figures")},
            (404, 409, 503),
        ),
    )
    config.add_route(
        "/api/servers/{ip}/bootstrap",
        api.ServerBootstrap,
        params=(IP,),
        post=Op(
            "Run the bootstrap again (server_bootstrap); follow the operation",
            {202: pending_or(Operation, "started")},
            (403, 404, 409, 410),
            guarded=True,
        ),
    )
