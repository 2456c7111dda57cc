from django.apps import AppConfig


class DemoSiteConfig(AppConfig):
    """The demo site as an app, so it can carry demo-only management commands."""

    name = "project"
    verbose_name = "Demo site"
