"""The server registry over HTTP: register, change, delete, bootstrap, read live figures."""

from __future__ import annotations

import falcon

from codeb.api.body import read_json, read_query
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.servers import schemas
from codeb.features.servers import service as servers


class Servers(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"servers": servers.list_servers(**read_query(req, schemas.LIST_QUERY))}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ServerCreate)
        # 202 while the bootstrap run is in flight (or not executed yet); 201 when registered.
        answer = servers.register_server(self.deps, req.context.actor, body, confirmation_from(req))
        respond(resp, answer)


class Server(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, ip: str) -> None:
        resp.media = servers.get_server(ip)

    def on_put(self, req: falcon.Request, resp: falcon.Response, ip: str) -> None:
        body = read_json(req, schemas.ServerUpdate)
        respond(
            resp,
            servers.update_server(self.deps, req.context.actor, ip, body, confirmation_from(req)),
        )

    def on_delete(self, req: falcon.Request, resp: falcon.Response, ip: str) -> None:
        respond(
            resp, servers.delete_server(self.deps, req.context.actor, ip, confirmation_from(req))
        )


class ServerSshKey(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = servers.ssh_public_key(self.deps)


class ServerStats(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, ip: str) -> None:
        resp.media = servers.server_stats(self.deps, ip)


class ServerBootstrap(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, ip: str) -> None:
        respond(
            resp,
            servers.bootstrap_server(self.deps, req.context.actor, ip, confirmation_from(req)),
        )
