from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TammaMetricsConfig(AppConfig):
    name = "tamma_metrics"
    verbose_name = "Tamma metrics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing registers the system checks and the model signal receivers;
        # connecting signals touches no database.
        from . import access, checks, labels, receivers  # noqa: F401
        from .scrape import mmap_guard

        # Before the first metric file: a full folder must be an error, never a SIGBUS.
        mmap_guard.install()
        access.connect_signals()
        labels.connect_signals()
        post_migrate.connect(_sync_families, sender=self, dispatch_uid="tamma_sync_families")


def _sync_families(**kwargs: object) -> None:
    from .access import sync_metric_families
    from .labels import seed_policies

    sync_metric_families()
    seed_policies()
