from django.core.management.base import BaseCommand

from tamma_metrics.access import sync_metric_families


class Command(BaseCommand):
    help = "Create or update one MetricFamily row per catalogue family (also run on migrate)."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"{sync_metric_families()} metric families created.")
