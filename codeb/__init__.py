"""codeb: a self-hosted, API-only server manager with a Protection Layer."""

__version__ = "0.1.0"
