from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import pages, views

app_name = "tamma_metrics"

schema = SpectacularAPIView.as_view(
    urlconf="tamma_metrics.api.urls",
    custom_settings={
        "TITLE": "tamma-metrics API",
        "DESCRIPTION": "Report events from Tamma's workers; read the metric catalogue, "
        "velocity and health.",
        "VERSION": "1",
    },
)

urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("metrics/health", views.health, name="health"),
    path("", include("tamma_metrics.api.urls")),
    # Pages for people, in the admin's look (staff only; linked from the admin's index).
    path("reports/velocity/", pages.velocity_page, name="velocity"),
    path("reports/delivery/", pages.delivery_page, name="delivery"),
    path("reports/health/", pages.health_page, name="health-page"),
    path("reports/families/", pages.families_page, name="families-page"),
    path("api/schema", login_not_required(schema), name="api-schema"),
    path(
        "api/docs",
        login_not_required(SpectacularSwaggerView.as_view(url_name="tamma_metrics:api-schema")),
        name="api-docs",
    ),
]
