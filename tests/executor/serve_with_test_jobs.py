"""`codeb serve` plus a test-only endpoint that starts the slow test playbook, so a test can
kill -9 the API in the middle of a real run."""

from __future__ import annotations

import falcon
import waitress

from codeb.app import build_deps, create_app, start_runtime
from codeb.config import load_settings
from codeb.features.keys import service as keys
from codeb.services import operations
from tests.executor.helpers import SLOW_JOB


class StartSlow:
    def __init__(self, deps):
        self.deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        with self.deps.write():
            op = operations.create_operation(
                self.deps, req.context.actor, "test_slow", body.pop("targets"), body
            )
        operations.dispatch(self.deps, op.id)
        resp.media = operations.operation_view(op)
        resp.status = falcon.HTTP_202


def main() -> None:
    settings = load_settings()
    deps = start_runtime(build_deps(settings))
    deps.worker.register("test_slow", SLOW_JOB)
    with deps.db.connection_context():
        first = keys.ensure_admin_key(deps)
    if first:
        print(f"admin key shown once: {first}", flush=True)
    app = create_app(deps)
    app.add_route("/api/test/slow", StartSlow(deps))
    print(f"serving on {settings.port}", flush=True)
    waitress.serve(app, host="127.0.0.1", port=settings.port, threads=4)


if __name__ == "__main__":
    main()
