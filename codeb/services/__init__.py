"""Use cases, one module per area. Nothing here knows about HTTP."""
