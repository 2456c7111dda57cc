"""Create a fresh bearer token for the demo's `prometheus` role and print how to use it."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from project.tokens import rotate
from tamma_metrics.roles import PROMETHEUS

SNIPPET = """\
# prometheus.yml
scrape_configs:
  - job_name: tamma
    scrape_interval: 15s
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: {path}
    static_configs:
      - targets: ["{target}"]
"""


class Command(BaseCommand):
    help = "Rotate the demo scrape token of the 'prometheus' role; print it and a scrape config."

    def add_arguments(self, parser):
        parser.add_argument("--target", default="127.0.0.1:8000")
        parser.add_argument(
            "--file", default=str(Path(settings.BASE_DIR) / ".run" / "prometheus.token")
        )

    def handle(self, *args, target: str, file: str, **options):
        path = Path(file)
        secret = rotate("prometheus", PROMETHEUS, path)
        self.stdout.write(f"Scrape token of role '{PROMETHEUS}' (shown once, also in {path}):")
        self.stdout.write(f"  {secret}")
        self.stdout.write(f"  curl -H 'Authorization: Bearer {secret}' http://{target}/metrics")
        self.stdout.write(SNIPPET.format(path=path, target=target))
