"""codeb's own recoverability over HTTP: whether the replica is current and when the recovery
bundle was last exported. Export and restore are server-side commands (`codeb recovery`): the
keys they handle never travel through the API."""

from __future__ import annotations

import falcon

from codeb.api.resources import Resource
from codeb.features.recovery import service


class RecoveryStatus(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = service.status(self.deps, service.replicator_of(self.deps))
