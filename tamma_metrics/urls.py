from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views

app_name = "tamma_metrics"

schema = SpectacularAPIView.as_view(
    urlconf="tamma_metrics.api.urls",
    custom_settings={
        "TITLE": "tamma-metrics API",
        "DESCRIPTION": "Report events from Tamma's workers; read the metric catalogue.",
        "VERSION": "1",
    },
)

urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("metrics/health", views.health, name="health"),
    path("", include("tamma_metrics.api.urls")),
    path("api/schema", login_not_required(schema), name="api-schema"),
    path(
        "api/docs",
        login_not_required(SpectacularSwaggerView.as_view(url_name="tamma_metrics:api-schema")),
        name="api-docs",
    ),
]
