from django.urls import path

from . import views

app_name = "tamma_metrics"

urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("metrics/health", views.health, name="health"),
]
