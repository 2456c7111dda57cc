"""Keep the demo's live loops alive as Tamma does: post their heartbeats to the state API
with the orchestrator token, every ``--every`` seconds, until the server that `make run`
started stops. Without it, every loop's heartbeat ages past LOOP_HEARTBEAT_TTL_SECONDS a
few minutes after the demo starts, and the health report turns degraded for no reason a
real deployment would have."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tamma_metrics.conf import app_settings

from .seed_demo import LOOPS


def live_loops() -> list[dict[str, str]]:
    """The demo loops seeded as alive; the ones seeded stale or stopped stay as they are."""
    ttl = app_settings.LOOP_HEARTBEAT_TTL_SECONDS
    return [
        {"name": name, "mode": mode, "environment": environment, "status": status}
        for name, mode, environment, status, age in LOOPS
        if status == "running" and age < ttl
    ]


class Command(BaseCommand):
    help = "Post the demo loops' heartbeats to the state API until the server stops."
    requires_system_checks: list[str] = []  # the server that runs beside it reports them

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", default="127.0.0.1:8000")
        parser.add_argument(
            "--token-file", default=str(Path(settings.BASE_DIR) / ".run" / "orchestrator.token")
        )
        parser.add_argument("--every", type=float, default=60.0)
        parser.add_argument("--once", action="store_true", help="One heartbeat, then exit.")

    def handle(self, *args, target: str, token_file: str, every: float, once: bool, **options):
        token = Path(token_file).read_text().strip()
        parent, sent = os.getppid(), False
        while True:
            try:
                self.beat(target, token)
                sent = True
            except urllib.error.HTTPError as error:
                # A refused token (another `make run` rotated it) will not come back.
                raise CommandError(f"heartbeats refused by {target}: HTTP {error.code}") from error
            except OSError as error:
                if once:
                    raise CommandError(f"heartbeats not sent to {target}: {error}") from error
                # The server is still starting (or restarting after a code change): retry.
            if once:
                return
            time.sleep(every if sent else min(every, 1.0))
            if os.getppid() != parent:
                return  # the server that started us has stopped

    def beat(self, target: str, token: str) -> None:
        now = datetime.now(UTC).isoformat()
        body = json.dumps({"items": [{**loop, "observed_at": now} for loop in live_loops()]})
        request = urllib.request.Request(
            f"http://{target}/api/v1/loops/heartbeat",
            data=body.encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        if answer.get("rejected"):
            print(f"demo_heartbeats: rejected: {answer['results']}", file=sys.stderr)
