"""Cross-cutting concerns, in the order a request meets them: its timing and id, one
database connection per request, authentication and role checks, strict parameters.

Two Falcon components: RequestPipeline (timing, id, authentication, parameters; its parts
are plain classes) around DatabaseSession. Falcon calls every component's methods on every
request, and on a cached `GET /api/projects` five components' calls and repeated lookups
were a sixth of codeb's own time (issue 15). The session stays a component of its own so
that an error closing it is turned into the answer by Falcon before the pipeline records
the request's status."""

from __future__ import annotations

import random
import time

import falcon

from codeb.errors import Forbidden, ValidationFailed
from codeb.features.keys import service as keys
from codeb.metrics import metrics_for
from codeb.services.context import CLIENTS, Deps
from codeb.services.validation import has_control_characters
from codeb.store.db import begin_request, end_request, is_sqlite

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestPipeline:
    """The outer middleware component. process_response runs whatever process_request did
    or did not get to (Falcon calls it after any failure), so it checks what is there."""

    def __init__(self, deps: Deps, document: dict) -> None:
        self._metrics = metrics_for(deps)
        self._authentication = Authentication(deps)
        self._parameters = StrictParameters(document)
        # A request id ties an answer to its log lines; it authorises nothing, so it needs
        # no secrecy: Python's generator (seeded from the OS at start-up) instead of
        # os.urandom, whose system call hands the GIL to another waitress thread.
        self._random = random.Random()  # noqa: S311 (not a secret: see above)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        context = req.context
        # First: the time covers the rest of the pipeline too.
        context.started = time.perf_counter()
        context.request_id = self._random.getrandbits(64).to_bytes(8, "big").hex()

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        # Methods the resource does not serve: Falcon answers 405 by itself.
        if not hasattr(resource, "on_" + req.method.lower()):
            return
        # Authentication first: an unauthenticated caller learns nothing about parameters.
        if getattr(resource, "auth_required", True):
            self._authentication.check(req, resource)
        self._parameters.check(req, params)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        context = req.context
        request_id = getattr(context, "request_id", None)
        if request_id is not None:
            resp.set_header("X-Request-Id", request_id)
        started = getattr(context, "started", None)
        if started is not None:
            # Counted and timed for GET /api/metrics by route template, never the raw path
            # (uri_template is None when no route matched: a 404 for an unknown path).
            route = req.uri_template if resource is not None else None
            seconds = time.perf_counter() - started
            self._metrics.observe_request(req.method, route, resp.status_code, seconds)


class DatabaseSession:
    """Open the connection before the resource runs and close it afterwards, as Peewee
    recommends for web apps. On SQLite each waitress thread keeps its connection instead
    (Peewee's connection state is per thread): opening one costs more than most requests,
    and the caches of codeb.store.db (ThreadCache) live as long as it. Every request starts
    by reading the SQLite change token (begin_request), so a commit made by anyone before the
    request started is always seen."""

    def __init__(self, deps: Deps) -> None:
        self._db = deps.db
        self._keep_open = is_sqlite(deps.db)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Asked first: Database.connect takes a lock shared by every thread even when this
        # thread's connection is open (the state it checks is per thread, so nothing races).
        if self._db.is_closed():
            self._db.connect()
        begin_request(self._db)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        end_request()
        if self._db.is_closed():
            return
        if not self._keep_open:
            self._db.close()
            return
        # No transaction may outlive its request (it would hold a snapshot or the write lock).
        conn = self._db.connection()
        if conn.in_transaction:
            conn.rollback()


class Authentication:
    """Every route needs X-API-Key unless its resource says `auth_required = False`.
    readonly keys may only read; a resource marks admin-only methods in `admin_methods`.
    X-Codeb-Client is recorded as `requested_by`, never used to authorise."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def check(self, req: falcon.Request, resource: object) -> None:
        client = req.get_header("X-Codeb-Client") or "api"
        if client not in CLIENTS:
            raise ValidationFailed(
                "X-Codeb-Client must be one of: " + ", ".join(CLIENTS),
                {"header": "X-Codeb-Client", "allowed": list(CLIENTS)},
            )
        actor = keys.authenticate(self._deps, req.get_header("X-API-Key"), client)
        # agent keys may request changes; what they may never do (confirm, approve, cancel
        # others' entries) is decided by the Protection Layer from the key's role.
        method = req.method
        if method not in READ_METHODS and not actor.has_role("agent"):
            raise Forbidden(
                f"a {actor.role} key may only read", {"role": actor.role, "method": method}
            )
        if method in getattr(resource, "admin_methods", ()) and not actor.has_role("admin"):
            raise Forbidden("this needs an admin key", {"role": actor.role})
        req.context.actor = actor


ACCEPTED_QUERIES = 1024


class StrictParameters:
    """Path and query parameters are refused (422) rather than guessed at: a control character
    in any of them, an unknown query parameter (`?limt=5` is a typo the caller wants to hear
    about) or one given twice. What is known comes from the OpenAPI document (generated from
    the routes' declarations)."""

    def __init__(self, document: dict) -> None:
        self._known: dict[tuple[str, str], frozenset[str]] = {}
        self._accepted: set[tuple[str, str, str]] = set()
        for path, item in document["paths"].items():
            shared = [p for p in item.get("parameters", []) if p.get("in") == "query"]
            for method, op in item.items():
                if method == "parameters":
                    continue
                params = shared + [p for p in op.get("parameters", []) if p.get("in") == "query"]
                self._known[(path, method.upper())] = frozenset(p["name"] for p in params)

    def check(self, req: falcon.Request, params: dict) -> None:
        # Control characters are refused in every path segment and query value, as in bodies.
        bad = sorted(
            k for k, v in params.items() if isinstance(v, str) and has_control_characters(v)
        )
        if bad:
            raise ValidationFailed("path parameters contain control characters", {"fields": bad})
        if not req.query_string:
            return
        seen = (req.uri_template, req.method, req.query_string)
        if seen in self._accepted:
            return
        known = self._known.get((req.uri_template, req.method), frozenset())
        # Blank values and blank names count too (req.params may drop them).
        given = falcon.uri.parse_query_string(req.query_string, keep_blank=True)
        bad = sorted(
            name
            for name, value in given.items()
            for v in (value if isinstance(value, list) else [value])
            if has_control_characters(name) or has_control_characters(v)
        )
        if bad:
            raise ValidationFailed("query parameters contain control characters", {"fields": bad})
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValidationFailed(
                "unknown query parameters: " + ", ".join(unknown),
                {"unknown": unknown, "allowed": sorted(known)},
            )
        # Every query parameter is a single value: `?limit=1&limit=500` is ambiguous (the
        # API would silently pick one), so it is refused rather than guessed.
        repeated = sorted(name for name, value in given.items() if isinstance(value, list))
        if repeated:
            raise ValidationFailed(
                "query parameters given more than once: " + ", ".join(repeated),
                {"repeated": repeated},
            )
        # The verdict depends only on the route, the method and the query string, and clients
        # repeat the same few (a poller's `?limit=100`): accepted ones are remembered, up to
        # a bound, so the next identical request skips the parse.
        if len(self._accepted) >= ACCEPTED_QUERIES:
            self._accepted.clear()
        self._accepted.add(seen)
