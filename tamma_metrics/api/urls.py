"""The API's routes; the schema is generated from exactly these."""

from django.contrib.auth.decorators import login_not_required
from django.urls import path

from . import views

urlpatterns = [
    path("api/v1/events", login_not_required(views.EventsView.as_view()), name="api-events"),
    path(
        "api/v1/families",
        login_not_required(views.FamiliesView.as_view()),
        name="api-families",
    ),
    path(
        "api/v1/velocity",
        login_not_required(views.VelocityView.as_view()),
        name="api-velocity",
    ),
    path("api/v1/health", login_not_required(views.HealthView.as_view()), name="api-health"),
]
