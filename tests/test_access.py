"""Authentication on /metrics and per-role, per-family visibility."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from tamma_metrics import access, catalogue, record
from tamma_metrics.models import ApiToken, MetricFamily
from tamma_metrics.roles import OPERATOR, PRODUCT_MANAGER, PROMETHEUS, seed_roles
from tamma_metrics.scrape import queries
from tests.utils import basic, parse

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def user_in(role: str | None, username: str = "someone", **fields) -> User:
    user = User.objects.create_user(username, password="pw", **fields)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def token_for(user: User, **fields) -> str:
    return ApiToken.create_for(user, "test", **fields)[1]


def families_in(text: str) -> set[str]:
    """Owners of every family with a HELP line in the text (counters' HELP keeps _total)."""
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    return {
        catalogue.owner_of(name) or catalogue.owner_of(name.removesuffix("_total")) or name
        for name in names
    }


@pytest.fixture
def roles():
    seed_roles()
    record.escalation(escalation_type="blocked", severity="low", component="git", reason="x")


def scrape_text(client: Client, **headers: str) -> str:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return response.content.decode()


def test_without_credentials_401_names_basic_and_bearer(anonymous):
    response = anonymous.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Basic realm="tamma-metrics"')
    assert 'Bearer realm="tamma-metrics"' in response["WWW-Authenticate"]
    assert response["Cache-Control"] == "no-store"
    assert "Authorization" in response["Vary"]


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!notbase64",
        "Basic " + "QUJD",  # "ABC": no colon
        "Basic " + "w6k6w6k=",  # latin-1 bytes, not UTF-8
        "Basic",
        "Bearer",
        "Bearer tmm_x",
        "Bearer tmm_abcd1234_" + "é" * 10,
        "Bearer " + "a" * 5000,
        "Digest username=x",
        "Bearer tmm_deadbeef_wrongsecret",
    ],
)
def test_malformed_or_wrong_credentials_are_401_never_500(anonymous, header):
    response = anonymous.get("/metrics", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response


def test_matrix_of_roles_and_families(roles, anonymous):
    every = {f.name for f in catalogue.FAMILIES} | set(catalogue.RUNTIME_PATTERNS)
    business = {f.name for f in catalogue.FAMILIES if f.audience is catalogue.Audience.BUSINESS}
    seen = {}
    for role in (PROMETHEUS, OPERATOR, PRODUCT_MANAGER):
        user = user_in(role, username=f"u-{role}")
        seen[role] = families_in(scrape_text(anonymous, **bearer(token_for(user))))
    assert seen[PROMETHEUS] == every
    assert seen[OPERATOR] == seen[PROMETHEUS]
    assert seen[PRODUCT_MANAGER] == business
    assert "process_*" not in seen[PRODUCT_MANAGER]


def test_a_user_granted_one_family_sees_exactly_it(anonymous, roles):
    user = user_in(None, "single")
    assign_perm("view_metricfamily", user, MetricFamily.objects.get(name="queue_depth"))
    text = scrape_text(anonymous, HTTP_AUTHORIZATION=basic("single", "pw"))
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        "# HELP tamma_queue_depth Work items queued and not yet started.",
        "# TYPE tamma_queue_depth gauge",
    ]
    assert set(parse(text).names()) == {"tamma_queue_depth"}


def test_invisible_families_are_never_queried(anonymous, roles):
    user = user_in(None, "escalations-only")
    assign_perm("view_metricfamily", user, MetricFamily.objects.get(name="escalations_total"))
    token = token_for(user)
    with CaptureQueriesContext(connection) as run:
        scrape_text(anonymous, **bearer(token))
    assert not [
        q for q in run if "tamma_metrics_issue" in q["sql"] or "tamma_metrics_approval" in q["sql"]
    ]


def test_no_family_permitted_is_403(anonymous, roles):
    user_in(None, "nobody")
    response = anonymous.get("/metrics", HTTP_AUTHORIZATION=basic("nobody", "pw"))
    assert response.status_code == 403


def test_inactive_users_and_their_tokens_get_nothing(anonymous, roles):
    user = user_in(PROMETHEUS, "gone")
    token = token_for(user)
    user.is_active = False
    user.save()
    assert anonymous.get("/metrics", **bearer(token)).status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=basic("gone", "pw")).status_code == 401


def test_password_with_colons_works(anonymous, roles):
    User.objects.create_user("pm", password="a:b::c").groups.add(
        Group.objects.get(name=PRODUCT_MANAGER)
    )
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=basic("pm", "a:b::c")).status_code == 200


def test_expired_and_revoked_tokens_are_refused(anonymous, roles):
    user = user_in(PROMETHEUS, "bot")
    expired = token_for(user, expires_at=timezone.now() - timedelta(seconds=1))
    assert anonymous.get("/metrics", **bearer(expired)).status_code == 401
    live = token_for(user, expires_at=timezone.now() + timedelta(days=1))
    assert anonymous.get("/metrics", **bearer(live)).status_code == 200
    ApiToken.objects.filter(user=user).update(revoked_at=timezone.now())
    assert anonymous.get("/metrics", **bearer(live)).status_code == 401


def test_only_a_digest_is_stored_and_last_used_is_written_once_a_minute(anonymous, roles):
    user = user_in(PROMETHEUS, "scraper-bot")
    token_obj, secret = ApiToken.create_for(user, "prom")
    assert secret.startswith(f"tmm_{token_obj.prefix}_")
    assert len(secret.split("_", 2)[2]) >= 43  # 32 random bytes, base64url
    stored = ApiToken.objects.filter(pk=token_obj.pk).values().get()
    assert secret.split("_", 2)[2] not in str(stored)
    with CaptureQueriesContext(connection) as run:
        for _ in range(3):
            anonymous.get("/metrics", name="x", **bearer(secret))
    updates = [q for q in run if q["sql"].startswith("UPDATE") and "apitoken" in q["sql"]]
    assert len(updates) == 1
    assert ApiToken.objects.get(pk=token_obj.pk).last_used_at is not None


def test_a_permission_change_shows_on_the_next_scrape(anonymous, roles):
    user = user_in(PRODUCT_MANAGER, "pm2")
    token = token_for(user)
    assert "queue_depth" not in families_in(scrape_text(anonymous, **bearer(token)))
    group = Group.objects.get(name=PRODUCT_MANAGER)
    assign_perm("view_metricfamily", group, MetricFamily.objects.get(name="queue_depth"))
    assert "queue_depth" in families_in(scrape_text(anonymous, **bearer(token)))
    remove_perm("view_metricfamily", group, MetricFamily.objects.get(name="queue_depth"))
    assert "queue_depth" not in families_in(scrape_text(anonymous, **bearer(token)))
    user.groups.clear()
    assert anonymous.get("/metrics", **bearer(token)).status_code == 403


def test_query_count_does_not_grow_with_the_number_of_families(anonymous, roles):
    user = user_in(None, "grower")
    token = token_for(user)
    rows = list(MetricFamily.objects.exclude(name__in=list(queries.GAUGES)))
    assign_perm("view_metricfamily", user, rows[0])
    scrape_text(anonymous, **bearer(token))  # first use writes last_used_at
    access.bump_version()  # measure both with the permission cache cold
    with CaptureQueriesContext(connection) as one:
        scrape_text(anonymous, **bearer(token))
    for row in rows[1:]:
        assign_perm("view_metricfamily", user, row)
    access.bump_version()
    with CaptureQueriesContext(connection) as many:
        scrape_text(anonymous, **bearer(token))
    assert len(many) == len(one)


def test_session_of_a_staff_member_works_in_a_browser(roles):
    browser = Client()
    browser.force_login(user_in(OPERATOR, "ops", is_staff=True))
    assert browser.get("/metrics").status_code == 200


def test_auth_can_be_switched_off_explicitly(anonymous, settings):
    settings.TAMMA_METRICS = {"AUTH_ENABLED": False}
    assert anonymous.get("/metrics").status_code == 200


def test_seed_roles_is_idempotent_and_syncs_rows():
    first = seed_roles()
    assert (
        first[PROMETHEUS]
        == MetricFamily.objects.count()
        == (len(catalogue.FAMILIES) + len(catalogue.RUNTIME_PATTERNS))
    )
    assert seed_roles() == {PROMETHEUS: 0, OPERATOR: 0, PRODUCT_MANAGER: 0}


def test_create_api_token_command_prints_a_working_token(anonymous, roles):
    user_in(PROMETHEUS, "cmd")
    out = io.StringIO()
    call_command("create_api_token", user="cmd", expires_days=30, stdout=out)
    token = out.getvalue().strip()
    assert anonymous.get("/metrics", **bearer(token)).status_code == 200
    assert ApiToken.objects.get(user__username="cmd").expires_at > timezone.now()


def test_create_api_token_makes_users_only_in_roles_that_exist(anonymous, roles):
    """A typo in the role fails, listing the roles, and creates nothing."""
    with pytest.raises(CommandError) as refused:
        call_command("create_api_token", user="scraper", create_user="promethues")
    assert str(refused.value) == (
        "No role named 'promethues'. Roles: operator, orchestrator, product-manager, "
        "prometheus, worker (python manage.py seed_roles creates the presets)."
    )
    assert not User.objects.filter(username="scraper").exists()
    assert not Group.objects.filter(name="promethues").exists()
    out = io.StringIO()
    call_command("create_api_token", user="scraper", create_user=PROMETHEUS, stdout=out)
    assert anonymous.get("/metrics", **bearer(out.getvalue().strip())).status_code == 200
    assert list(User.objects.get(username="scraper").groups.values_list("name", flat=True)) == [
        PROMETHEUS
    ]


def test_admin_grants_a_family_to_a_role_and_creates_tokens(client, anonymous, roles):
    group = Group.objects.create(name="finance")
    family = MetricFamily.objects.get(name="ai_cost_usd_total")
    response = client.post(
        "/admin/tamma_metrics/metricfamily/",
        {"action": "grant_to_role", "role": group.pk, "_selected_action": [family.pk]},
    )
    assert response.status_code == 302
    user = user_in("finance", "cfo")
    response = client.post(
        "/admin/tamma_metrics/apitoken/add/", {"name": "cfo-laptop", "user": user.pk}, follow=True
    )
    shown = [str(m) for m in response.context["messages"] if "Copy it now" in str(m)]
    assert len(shown) == 1
    secret = shown[0].rsplit(" ", 1)[1]
    text = scrape_text(anonymous, **bearer(secret))
    assert families_in(text) == {"ai_cost_usd_total"}
    # Shown once: the change page does not contain it.
    token = ApiToken.objects.get(name="cfo-laptop")
    page = client.get(f"/admin/tamma_metrics/apitoken/{token.pk}/change/")
    assert secret not in page.content.decode()
    assert page.status_code == 200


def test_guardian_object_permission_admin_grants_one_family_to_a_group(client, anonymous, roles):
    group = Group.objects.create(name="auditors")
    family = MetricFamily.objects.get(name="escalations_total")
    base = f"/admin/tamma_metrics/metricfamily/{family.pk}/permissions/"
    assert client.get(base).status_code == 200
    response = client.post(
        f"{base}group-manage/{group.pk}/", {"permissions": ["view_metricfamily"]}
    )
    assert response.status_code == 302
    user_in("auditors", "auditor")
    text = scrape_text(anonymous, HTTP_AUTHORIZATION=basic("auditor", "pw"))
    assert families_in(text) == {"escalations_total"}


def test_families_no_row_covers_are_for_superusers_only(client, anonymous, roles):
    from prometheus_client import Counter

    Counter("acme_host_widgets", "A host project's own counter.").inc()
    operator = token_for(user_in(OPERATOR, "op"))
    assert "acme_host_widgets_total" not in scrape_text(anonymous, **bearer(operator))
    assert "acme_host_widgets_total 1.0" in scrape_text(client)  # the superuser
