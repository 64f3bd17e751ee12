"""HTTP only: Falcon resources, middleware and the one error shape."""
