"""`codeb scaling check|up|down|history|policy` against a live API and the Vultr fake: the
key read from stdin (never argv), exit codes (0 ok, 1 a failed operation, 2 a refusal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from codeb.clock import SystemClock
from tests.providers.vultr_fake import VultrFake, serve
from tests.support import live_api

KEY = "VULTR-CLI-TEST-KEY-77aa01bb"


def test_cli_policy_check_up_history_down(tmp_path):
    fake = VultrFake(api_key=KEY, ip_after_s=3600)
    with serve(fake) as url, live_api(tmp_path, clock=SystemClock()) as api:
        env = {**os.environ, "CODEB_URL": api.base_url, "CODEB_API_KEY": api.admin_key,
               "CODEB_CLI_CONFIG": str(tmp_path / "none.toml")}  # fmt: skip

        def codeb(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "codeb", *argv], env=env, input=stdin,
                                  capture_output=True, text=True, timeout=180)  # fmt: skip

        r = codeb("scaling", "policy", "--api-key-stdin", "--set", f"cloud.api_url={url}",
                  "--set", "cloud.region=ams", "--set", "cloud.plan=vc2-1c-2gb",
                  "--set", "cloud.os_id=2625", "--set", "cloud.ready_timeout_s=1",
                  "--set", "cloud.poll_s=0.1", "--set", "policy.min_servers=0",
                  stdin=KEY + "\n")  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert KEY not in r.stdout + r.stderr
        r = codeb("scaling", "policy", "--json")
        shown = json.loads(r.stdout)
        assert shown["configured"] and shown["cloud"]["region"] == "ams" and KEY not in r.stdout
        r = codeb("scaling", "check")
        assert r.returncode == 0 and "decision: none" in r.stdout, r.stdout + r.stderr
        r = codeb("scaling", "up")  # follows the run: never ready, deleted
        assert r.returncode == 1, r.stdout + r.stderr
        r = codeb("scaling", "history", "--kind", "up")
        assert r.returncode == 0 and "wait_ready" in r.stdout and "deleted" in r.stdout, r.stdout
        r = codeb("scaling", "down", "--yes")
        assert r.returncode == 2, r.stdout + r.stderr  # nothing autoscaled to remove
        r = codeb("scaling", "policy", "--set", "nonsense")
        assert r.returncode == 2
    assert fake.live() == []
