from django.apps import AppConfig


class TammaMetricsConfig(AppConfig):
    name = "tamma_metrics"
    verbose_name = "Tamma metrics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing registers the system checks and the model signal receivers;
        # nothing here touches the database.
        from . import checks, receivers  # noqa: F401
