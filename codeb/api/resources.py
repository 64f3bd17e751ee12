"""Resources: small classes that translate HTTP to one service call and back."""

from __future__ import annotations

import falcon

from codeb import __version__
from codeb.api.body import query_choice, query_int, read_json
from codeb.api.confirm import confirmation_from, respond
from codeb.api.openapi import build_document
from codeb.services import keys, projects, servers
from codeb.services.context import Deps


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps


class Health(Resource):
    auth_required = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self.deps.db.execute_sql("SELECT 1")
            database = "ok"
        except Exception:
            database = "unavailable"
        resp.media = {
            "status": "ok" if database == "ok" else "degraded",
            "version": __version__,
            "database": database,
        }


class OpenApi(Resource):
    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self._document = build_document()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document


class Projects(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # The serialized page, cached per thread until the next commit (see list_projects_json).
        resp.data = projects.list_projects_json(
            self.deps,
            limit=query_int(req, "limit", 100, 1, 500),
            offset=query_int(req, "offset", 0, 0, 2**31),
            status=query_choice(req, "status", ("active", "archived")),
        )
        resp.content_type = falcon.MEDIA_JSON

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "ProjectCreate")
        # The answer carries the generated passwords: respond() marks it no-store.
        respond(
            resp,
            projects.create_project(self.deps, req.context.actor, body, confirmation_from(req)),
        )


class Project(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        resp.media = projects.get_project(project)

    def on_put(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        body = read_json(req, "ProjectUpdate")
        answer = projects.update_project(
            self.deps, req.context.actor, project, body, confirmation_from(req)
        )
        respond(resp, answer)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        answer = projects.delete_project(
            self.deps, req.context.actor, project, confirmation_from(req)
        )
        respond(resp, answer)


class Environments(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        resp.media = projects.list_environments(project)

    def on_post(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        body = read_json(req, "EnvironmentCreate")
        respond(
            resp,
            projects.create_environment(
                self.deps, req.context.actor, project, body, confirmation_from(req)
            ),
        )


class Environment(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, project: str, env: str) -> None:
        resp.media = projects.get_environment(project, env)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, project: str, env: str) -> None:
        answer = projects.delete_environment(
            self.deps, req.context.actor, project, env, confirmation_from(req)
        )
        respond(resp, answer)


class Servers(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        role = query_choice(req, "role", servers.SERVER_ROLES)
        resp.media = {"servers": servers.list_servers(role)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "ServerCreate")
        # 202 while the bootstrap run is in flight (or not executed yet); 201 when registered.
        answer = servers.register_server(self.deps, req.context.actor, body, confirmation_from(req))
        respond(resp, answer)


class Server(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, ip: str) -> None:
        resp.media = servers.get_server(ip)

    def on_put(self, req: falcon.Request, resp: falcon.Response, ip: str) -> None:
        body = read_json(req, "ServerUpdate")
        respond(
            resp,
            servers.update_server(self.deps, req.context.actor, ip, body, confirmation_from(req)),
        )

    def on_delete(self, req: falcon.Request, resp: falcon.Response, ip: str) -> None:
        respond(
            resp, servers.delete_server(self.deps, req.context.actor, ip, confirmation_from(req))
        )


class Keys(Resource):
    admin_methods = ("GET", "POST")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"keys": keys.list_keys(self.deps)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "ApiKeyCreate")
        # 201 with the key (shown once) when it runs at once; 202 queued for an admin key
        # or another principal's key. respond() marks both no-store.
        respond(resp, keys.request_key(self.deps, req.context.actor, body, confirmation_from(req)))


class Key(Resource):
    admin_methods = ("DELETE",)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        respond(
            resp, keys.request_revoke(self.deps, req.context.actor, name, confirmation_from(req))
        )
