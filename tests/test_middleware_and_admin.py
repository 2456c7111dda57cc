"""The response-time middleware and the admin pages of the domain models."""

from __future__ import annotations

import pytest

from tests import factories
from tests.utils import delta

pytestmark = pytest.mark.django_db


def test_response_times_are_labelled_by_route_name(anonymous, metrics):
    before = metrics()
    anonymous.get("/metrics/health")
    anonymous.get("/no/such/page/12345")
    anonymous.post("/metrics")
    change = delta(metrics(), before)
    name = "tamma_api_response_duration_seconds_count"
    assert (
        change.value(
            name,
            endpoint="tamma_metrics:health",
            method="get",
            status_code="200",
            user_type="anonymous",
        )
        == 1
    )
    assert (
        change.value(
            name, endpoint="unmatched", method="get", status_code="404", user_type="anonymous"
        )
        == 1
    )
    assert (
        change.value(
            name,
            endpoint="tamma_metrics:metrics",
            method="post",
            status_code="405",
            user_type="anonymous",
        )
        == 1
    )
    assert not any("12345" in value for labels in change for _, value in labels[1])


def test_token_and_basic_callers_are_labelled_by_kind_never_by_name(metrics):
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from tamma_metrics.roles import PROMETHEUS, WORKER
    from tests.utils import basic, client_of

    scraper = client_of(PROMETHEUS, "prom-scraper")  # a bearer token (seeds the roles)
    worker = client_of(WORKER, "worker-1")
    for username, staff in (("basic-user", False), ("basic-staff", True)):
        user = User.objects.create_user(username, password="pw", is_staff=staff)
        user.groups.add(Group.objects.get(name=PROMETHEUS))
    before = metrics()
    assert scraper.get("/metrics").status_code == 200
    assert worker.get("/api/v1/families").status_code == 200
    assert Client().get("/metrics", HTTP_AUTHORIZATION=basic("basic-user", "pw")).status_code == 200
    assert (
        Client().get("/metrics", HTTP_AUTHORIZATION=basic("basic-staff", "pw")).status_code == 200
    )
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer tmm_no_such").status_code == 401
    change = delta(metrics(), before)
    counts = {
        (labels["endpoint"], labels["status_code"], labels["user_type"]): value
        for (name, items), value in change.items()
        if name == "tamma_api_response_duration_seconds_count"
        for labels in [dict(items)]
    }
    # The superuser's session scrapes of ``metrics`` are staff.
    assert counts == {
        ("tamma_metrics:metrics", "200", "service"): 1,
        ("tamma_metrics:api-families", "200", "service"): 1,
        ("tamma_metrics:metrics", "200", "user"): 1,
        ("tamma_metrics:metrics", "200", "staff"): 2,
        ("tamma_metrics:metrics", "401", "anonymous"): 1,
    }


@pytest.fixture
def admin_client(client):
    return client  # signed in as a superuser


@pytest.mark.parametrize(
    "model", ["issue", "pullrequest", "approval", "escalation", "autonomousloop"]
)
def test_admin_changelists_filter_and_search(admin_client, model):
    issue = factories.issue(repository="acme/search-me")
    factories.pull_request(issue)
    factories.approval(issue)
    factories.escalation(issue=issue)
    factories.loop(name="search-me-loop")
    url = f"/admin/tamma_metrics/{model}/"
    assert admin_client.get(url).status_code == 200
    response = admin_client.get(url, {"q": "search-me"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
    assert response.context["cl"].has_filters


@pytest.mark.django_db(transaction=True)
def test_admin_edit_of_an_issue_counts_the_transition(admin_client, metrics):
    issue = factories.issue(status="in_progress")
    before = metrics()
    page = admin_client.get(f"/admin/tamma_metrics/issue/{issue.pk}/change/")
    form = page.context["adminform"].form
    data = {name: "" if (v := form[name].value()) is None else v for name in form.fields}
    data.update(status="succeeded", completed_at_0="", completed_at_1="")
    data.update(
        {
            f"started_at_{i}": part
            for i, part in enumerate(
                [issue.started_at.strftime("%Y-%m-%d"), issue.started_at.strftime("%H:%M:%S")]
            )
        }
    )
    response = admin_client.post(f"/admin/tamma_metrics/issue/{issue.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_issues_processed_total",
            provider="anthropic",
            platform="github",
            issue_type="bug",
            outcome="success",
        )
        == 1
    )


def test_a_full_folder_never_fails_a_request_in_django_prometheus_middleware(
    client, metrics, monkeypatch
):
    """django-prometheus' counters cannot get their place in a full folder (ENOSPC from
    the space claim): the request is answered all the same, the lost count counted."""
    import errno

    from project.middleware import Metrics

    class Full:
        def inc(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        def labels(self, *args, **kwargs):
            return self

    instance = Metrics.get_instance()
    before = metrics()
    with monkeypatch.context() as full:
        full.setattr(instance, "requests_total", Full())
        full.setattr(instance, "responses_total", Full())
        assert client.get("/metrics/health").status_code in (200, 503)
    lost = metrics().value("tamma_metrics_errors_total", stage="disk") - before.value(
        "tamma_metrics_errors_total", stage="disk"
    )
    assert lost == 2  # one per counter, the request's and its response's
