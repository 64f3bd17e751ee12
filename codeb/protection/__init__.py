"""The Protection Layer: danger levels, requirements and the append-only operation log."""
