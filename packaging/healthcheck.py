"""The container's health check (Quadlet HealthCmd): exit 0 when codeb's API answers
GET /api/health with 200 and a healthy status, 1 otherwise. Standard library only."""

import json
import os
import sys
import urllib.request

port = os.environ.get("CODEB_PORT", "8080")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=3) as resp:
        ok = resp.status == 200 and json.load(resp).get("status") == "ok"
except (OSError, ValueError):
    ok = False
sys.exit(0 if ok else 1)
