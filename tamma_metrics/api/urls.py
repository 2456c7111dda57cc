"""The API's routes; the schema is generated from exactly these."""

from django.contrib.auth.decorators import login_not_required
from django.urls import path

from . import github, gitlab, views
from .state import StateView

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
    path(
        "api/v1/delivery",
        login_not_required(views.DeliveryView.as_view()),
        name="api-delivery",
    ),
    path("api/v1/health", login_not_required(views.HealthView.as_view()), name="api-health"),
    path(
        "api/v1/webhooks/github",
        login_not_required(github.GitHubWebhookView.as_view()),
        name="api-webhook-github",
    ),
    path(
        "api/v1/webhooks/gitlab",
        login_not_required(gitlab.GitLabWebhookView.as_view()),
        name="api-webhook-gitlab",
    ),
    # The state API (docs/state.md): rows by natural key.
    *(
        path(f"api/v1/{route}", login_not_required(StateView.of(kind)), name=f"api-{kind}")
        for route, kind in (
            ("issues", "issues"),
            ("pull-requests", "pull-requests"),
            ("approvals", "approvals"),
            ("escalations", "escalations"),
            ("loops/heartbeat", "loops"),
            ("deployments", "deployments"),
            ("incidents", "incidents"),
        )
    ),
]
