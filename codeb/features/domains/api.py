"""Domains and DNS zones over HTTP. Create and delete can be previewed with `?preview=true`
(the Caddyfile diff and the rrset changes; nothing changes)."""

from __future__ import annotations

import falcon

from codeb.api.body import query_choice, query_text, read_json
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.domains import schemas
from codeb.features.domains import service as domains

PLAN_HEADER = "X-Plan-Hash"


def _preview(req: falcon.Request) -> bool:
    return query_choice(req, "preview", ("true", "false", "1", "0")) in ("true", "1")


class Domains(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = domains.list_domains(self.deps, project=query_text(req, "project", 100))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.DomainRequest)
        respond(
            resp,
            domains.create_domain(
                self.deps,
                req.context.actor,
                body,
                preview=_preview(req),
                confirmation=confirmation_from(req),
                expected_plan=req.get_header(PLAN_HEADER),
            ),
        )


class DomainItem(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, domain: str) -> None:
        resp.media = domains.get_domain(domain)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, domain: str) -> None:
        respond(
            resp,
            domains.delete_domain(
                self.deps,
                req.context.actor,
                domain,
                preview=_preview(req),
                confirmation=confirmation_from(req),
                expected_plan=req.get_header(PLAN_HEADER),
            ),
        )


class DomainStatus(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, domain: str) -> None:
        resp.media = domains.domain_status(self.deps, domain)


class Zones(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = domains.list_zones(self.deps)
