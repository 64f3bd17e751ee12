"""Projects and their environments over HTTP."""

from __future__ import annotations

import falcon

from codeb.api.body import read_json, read_query
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.projects import schemas
from codeb.features.projects import service as projects


class Projects(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # The serialized page, cached per thread until the next commit (see list_projects_json).
        resp.data = projects.list_projects_json(self.deps, **read_query(req, schemas.LIST_QUERY))
        resp.content_type = falcon.MEDIA_JSON

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ProjectCreate)
        # The answer carries the generated passwords: respond() marks it no-store.
        respond(
            resp,
            projects.create_project(self.deps, req.context.actor, body, confirmation_from(req)),
        )


class Project(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        resp.media = projects.get_project(project)

    def on_put(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        body = read_json(req, schemas.ProjectUpdate)
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
        body = read_json(req, schemas.EnvironmentCreate)
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
