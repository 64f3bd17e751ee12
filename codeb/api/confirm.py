"""The confirm contract on the HTTP side: reading a confirmation from a repeated request's
headers, and answering a guarded operation (200/201 executed, 202 not executed yet)."""

from __future__ import annotations

import falcon

from codeb.services import gate

CONFIRM_TOKEN_HEADER = "X-Confirm-Token"  # noqa: S105 (a header name)
CONFIRM_NAME_HEADER = "X-Confirm-Name"


def confirmation_from(req: falcon.Request) -> gate.Confirmation | None:
    token = req.get_header(CONFIRM_TOKEN_HEADER)
    if not token:
        return None
    return gate.Confirmation(token=token, typed_name=req.get_header(CONFIRM_NAME_HEADER))


def respond(resp: falcon.Response, answer: gate.Answer) -> None:
    resp.status = falcon.code_to_http_status(answer.status)
    resp.media = answer.body
    # A 202 carries a confirm token: never cached.
    resp.cache_control = ["no-store"]
