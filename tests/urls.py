"""The demo site's URLs: the landing page, the admin and the app."""

from project.urls import urlpatterns

__all__ = ["urlpatterns"]
