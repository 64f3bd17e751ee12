"""One package per capability. Each has `includeme(config)` (codeb.wiring.Configurator) that
declares, once, its routes with their request/response shapes, its appliers, its runner jobs
and its periodic jobs; `api.py` (Falcon resources: with codeb/api the only modules that import
falcon), `schemas.py` (msgspec Structs and query parameters) and `service.py` (use cases).
The app is built from the explicit list codeb.app.FEATURES; see the README's Layout."""
