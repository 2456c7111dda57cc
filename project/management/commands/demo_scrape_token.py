"""Create a fresh bearer token for the demo's `prometheus` role and print how to use it."""

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.utils import timezone

from tamma_metrics.models import ApiToken
from tamma_metrics.roles import PROMETHEUS, seed_roles

TOKEN_NAME = "make-run"

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
        seed_roles()
        user, _ = get_user_model().objects.get_or_create(username="prometheus")
        user.set_unusable_password()  # the scraper signs in with its token only
        user.save()
        user.groups.add(Group.objects.get(name=PROMETHEUS))
        ApiToken.objects.filter(user=user, name=TOKEN_NAME, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        _, secret = ApiToken.create_for(user, TOKEN_NAME)
        path = Path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret + "\n")
        path.chmod(0o600)
        self.stdout.write(f"Scrape token of role '{PROMETHEUS}' (shown once, also in {path}):")
        self.stdout.write(f"  {secret}")
        self.stdout.write(f"  curl -H 'Authorization: Bearer {secret}' http://{target}/metrics")
        self.stdout.write(SNIPPET.format(path=path, target=target))
