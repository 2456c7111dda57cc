"""Create a fresh bearer token for the demo's `orchestrator` role (the state API) and
print how Tamma would use it."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from project.tokens import rotate
from tamma_metrics.roles import ORCHESTRATOR

EXAMPLE = """\
  curl -X POST http://{target}/api/v1/issues -H 'Authorization: Bearer {secret}' \\
    -H 'Content-Type: application/json' -d '{{"platform": "github", "repository": "acme/shop",
    "external_id": "1", "issue_type": "bug", "provider": "anthropic", "status": "queued",
    "observed_at": "{now}"}}'
"""


class Command(BaseCommand):
    help = "Rotate the demo token of the 'orchestrator' role (Tamma writing its state); print it."

    def add_arguments(self, parser):
        parser.add_argument("--target", default="127.0.0.1:8000")
        parser.add_argument(
            "--file", default=str(Path(settings.BASE_DIR) / ".run" / "orchestrator.token")
        )

    def handle(self, *args, target: str, file: str, **options):
        path = Path(file)
        secret = rotate("tamma", ORCHESTRATOR, path)
        self.stdout.write(
            f"State token of role '{ORCHESTRATOR}' for Tamma (shown once, also in {path}):"
        )
        self.stdout.write(f"  {secret}")
        now = timezone.now().replace(microsecond=0).isoformat().replace("+00:00", "Z")
        self.stdout.write(EXAMPLE.format(target=target, secret=secret, now=now))
