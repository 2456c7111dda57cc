from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    # A small landing page linking the reports, the admin, /metrics and the API docs.
    path("", login_not_required(TemplateView.as_view(template_name="landing.html")), name="home"),
    path("admin/", admin.site.urls),
    path("", include("tamma_metrics.urls")),
]
