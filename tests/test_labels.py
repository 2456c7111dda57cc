"""The label guard: safe values, vocabularies, caps with one overflow series, nothing lost."""

from __future__ import annotations

import subprocess

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tamma_metrics import labels, record
from tamma_metrics.access import sync_metric_families
from tamma_metrics.models import Admission, LabelPolicy, MetricFamily
from tamma_metrics.roles import PRODUCT_MANAGER, seed_roles
from tests.utils import delta, parse

pytestmark = pytest.mark.django_db

# Every code point, lone surrogates, controls and unassigned ones included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=80)
ESCALATION_SAMPLES = ["tamma_escalations_total"]
CHANGE_SAMPLES = ["tamma_code_changes_total"]


def promtool_check(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(st.tuples(ANY_TEXT, ANY_TEXT, ANY_TEXT), min_size=1, max_size=8))
def test_any_unicode_is_served_safely_and_every_event_counts(client, values):
    before = parse(
        client.get(
            "/metrics",
            {"name[]": ESCALATION_SAMPLES + CHANGE_SAMPLES},
            HTTP_ACCEPT="text/plain;version=0.0.4",
        ).content.decode()
    )
    for severity, component, reason in values:
        record.escalation(
            escalation_type="blocked", severity=severity, component=component, reason=reason
        )
        record.code_change(
            change_type=reason, language=component, actor=severity, file_type=reason, count=2
        )

    openmetrics = client.get(
        "/metrics",
        {"name[]": ESCALATION_SAMPLES + CHANGE_SAMPLES},
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0",
    )
    after = parse(openmetrics.content.decode(), openmetrics=True)  # the strict parser
    change = delta(after, before)
    assert change.total("tamma_escalations_total") == len(values)
    assert change.total("tamma_code_changes_total") == 2 * len(values)

    text = client.get(
        "/metrics",
        {"name[]": ESCALATION_SAMPLES + CHANGE_SAMPLES},
        HTTP_ACCEPT="text/plain;version=0.0.4",
    ).content.decode()
    checked = promtool_check(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_whole_exposition_passes_promtool(client):
    record.ai_request(
        provider="anthropic",
        model="claude-sonnet",
        request_type="chat",
        outcome="success",
        duration_seconds=3,
        tokens={"input": 5},
        cost_usd=0.1,
    )
    text = client.get("/metrics", HTTP_ACCEPT="text/plain;version=0.0.4").content.decode()
    checked = promtool_check(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_closed_vocabularies_fold_to_other_and_count_the_fold(metrics):
    before = metrics()
    record.pr_created(provider="Anthropic", platform="sourcehut", issue_type="bug", actor="robot")
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_prs_created_total",
            provider="anthropic",
            platform="other",
            issue_type="bug",
            actor="other",
        )
        == 1
    )
    assert (
        change.value(
            "tamma_metrics_label_folds_total", family="prs_created_total", label="platform"
        )
        == 1
    )
    assert (
        change.value("tamma_metrics_label_folds_total", family="prs_created_total", label="actor")
        == 1
    )
    # Folded again on the next event, from the cache: still counted.
    record.pr_created(provider="anthropic", platform="sourcehut", issue_type="bug", actor="robot")
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_metrics_label_folds_total", family="prs_created_total", label="platform"
        )
        == 2
    )


def test_free_form_values_are_capped_then_fold(metrics):
    before = metrics()
    for i in range(10_000):
        record.escalation(
            escalation_type="blocked", severity="low", component="git", reason=f"Reason-{i}"
        )
    change = delta(metrics(), before)
    series = change.series("tamma_escalations_total")
    assert len(series) == 100 + 1  # the reason cap, plus "other"
    assert change.total("tamma_escalations_total") == 10_000
    assert (
        change.value(
            "tamma_escalations_total",
            escalation_type="blocked",
            severity="low",
            component="git",
            reason="other",
        )
        == 9_900
    )
    assert (
        change.value("tamma_metrics_label_folds_total", family="escalations_total", label="reason")
        == 9_900
    )
    # Free-form values keep their case; closed ones are lower-cased.
    assert (
        change.value(
            "tamma_escalations_total",
            escalation_type="blocked",
            severity="low",
            component="git",
            reason="Reason-0",
        )
        == 1
    )
    assert Admission.objects.filter(scope="value:reason").count() == 100


def test_10000_distinct_values_make_at_most_cap_series_plus_one_overflow(metrics):
    sync_metric_families()
    MetricFamily.objects.filter(name="escalations_total").update(max_series=50)
    LabelPolicy.objects.filter(label="component", family="").update(max_values=20_000)
    labels.invalidate()
    before = metrics()
    for i in range(10_000):
        record.escalation(
            escalation_type="safety", severity="high", component=f"part-{i}", reason="cap_test"
        )
    after = metrics()
    change = delta(after, before)
    series = change.series("tamma_escalations_total")
    assert len(series) == 50 + 1
    assert change.total("tamma_escalations_total") == 10_000
    overflow = dict.fromkeys(("escalation_type", "severity", "component", "reason"), "overflow")
    assert change.value("tamma_escalations_total", **overflow) == 10_000 - 50
    assert change.value("tamma_metrics_label_overflow_total", family="escalations_total") == (
        10_000 - 50
    )
    assert after.value("tamma_metrics_series", family="tamma_escalations_total") == 50


def test_an_admin_edit_of_a_vocabulary_changes_folding_on_the_next_event(client, metrics):
    labels.seed_policies()
    policy = LabelPolicy.objects.get(label="provider", family="")
    before = metrics()
    record.ai_request(
        provider="deepseek", model="r1", request_type="chat", outcome="success", duration_seconds=1
    )
    response = client.post(
        f"/admin/tamma_metrics/labelpolicy/{policy.pk}/change/",
        {
            "label": "provider",
            "family": "",
            "closed": "on",
            "allowed_values": policy.allowed_values + "\nDeepSeek",
            "max_values": "",
            "fold_value": "other",
        },
    )
    assert response.status_code == 302
    record.ai_request(
        provider="deepseek", model="r1", request_type="chat", outcome="success", duration_seconds=1
    )
    change = delta(metrics(), before)
    common = {"model": "r1", "request_type": "chat", "outcome": "success"}
    assert change.value("tamma_ai_requests_total", provider="other", **common) == 1
    assert change.value("tamma_ai_requests_total", provider="deepseek", **common) == 1


def test_other_processes_see_policy_edits_within_the_refresh_interval(settings, monkeypatch):
    labels.seed_policies()
    labels.generation()
    family = labels.rule("prs_created_total", "platform")
    assert "sourcehut" not in family.values
    # An edit made elsewhere sends no signal here: the periodic check finds it.
    LabelPolicy.objects.filter(label="platform", family="").update(
        allowed_values="github\nsourcehut", updated_at=timezone.now()
    )
    assert "sourcehut" not in labels.rule("prs_created_total", "platform").values
    clock = [labels.time.monotonic() + 3600]
    monkeypatch.setattr(labels.time, "monotonic", lambda: clock[0])
    labels.generation()
    assert "sourcehut" in labels.rule("prs_created_total", "platform").values


CUSTOM = [
    {
        "name": "releases_total",
        "type": "counter",
        "help": "Releases made by Tamma.",
        "labels": ["environment", "service"],
    },
    {
        "name": "review_rounds",
        "type": "histogram",
        "help": "Review rounds per PR.",
        "labels": ["repository"],
        "buckets": [1, 2, 3, 5, 8],
    },
    {
        "name": "backlog_size",
        "type": "gauge",
        "help": "Issues in the backlog.",
        "labels": ["platform"],
        "audience": "operations",
    },
]


@pytest.fixture
def custom_families(settings):
    settings.TAMMA_METRICS = {"CUSTOM_FAMILIES": CUSTOM}
    sync_metric_families()


def test_custom_families_record_by_name_with_the_same_policy(custom_families, metrics):
    before = metrics()
    record.metric("releases_total", environment="Prod", service="api\n")
    record.metric("releases_total", 2, environment="prod", service="api")
    record.metric("review_rounds", 3, repository="acme/app")
    record.metric("backlog_size", 42, platform="sourcehut")
    after = metrics()
    change = delta(after, before)
    assert change.value("tamma_releases_total", environment="Prod", service="api") == 1
    assert change.value("tamma_releases_total", environment="prod", service="api") == 2
    assert change.value("tamma_review_rounds_count", repository="acme/app") == 1
    assert change.value("tamma_review_rounds_bucket", repository="acme/app", le="2.0") == 0
    assert change.value("tamma_review_rounds_bucket", repository="acme/app", le="3.0") == 1
    assert after.value("tamma_backlog_size", platform="other") == 42  # closed vocabulary


def test_custom_families_get_rows_and_role_permissions(custom_families, anonymous):
    seed_roles()
    assert MetricFamily.objects.filter(name="releases_total", audience="business").exists()
    pm = Group.objects.get(name=PRODUCT_MANAGER)
    assert pm.metricfamilygrouppermission_set.filter(content_object__name="releases_total").exists()
    assert not pm.metricfamilygrouppermission_set.filter(
        content_object__name="backlog_size"
    ).exists()


def test_unknown_family_or_label_is_a_clear_error(custom_families):
    with pytest.raises(ValueError, match="unknown metric family 'deploys_total'"):
        record.metric("deploys_total")
    with pytest.raises(ValueError, match=r"unknown \['env'\], missing \['environment'\]"):
        record.metric("releases_total", env="prod", service="api")
    with pytest.raises(ValueError, match="computed, not recorded"):
        record.metric("queue_depth", queue_type="issues", priority="low")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "x_total", "type": "counter", "help": "h", "labels": ["email"]}, "not allowed"),
        ({"name": "x", "type": "counter", "help": "h"}, "end in _total"),
        ({"name": "x_seconds", "type": "histogram", "help": "h", "buckets": [2, 1]}, "increasing"),
        ({"name": "queue_depth", "type": "gauge", "help": "h"}, "redefine"),
        ({"name": "x", "type": "summary", "help": "h"}, "type must be"),
    ],
)
def test_bad_custom_families_are_system_check_errors(settings, spec, message):
    from tamma_metrics import checks

    settings.TAMMA_METRICS = {"CUSTOM_FAMILIES": [spec]}
    errors = [e for e in checks.check_settings() if e.id == "tamma_metrics.E010"]
    assert len(errors) == 1
    assert message in errors[0].msg


def test_every_vocabulary_belongs_to_a_label_and_the_models_share_it():
    """One source: each default policy is for a label some family has, and a model
    field that feeds a label offers only that label's values, with the same names."""
    from tamma_metrics import catalogue
    from tamma_metrics.models import Approval, Escalation, Issue, PullRequest

    used = {label for family in catalogue.FAMILIES for label in family.labels}
    assert set(labels.DEFAULT_POLICIES) <= used, set(labels.DEFAULT_POLICIES) - used
    fields = {
        (Issue, "provider"): "provider",
        (Issue, "platform"): "platform",
        (Issue, "issue_type"): "issue_type",
        (Issue, "complexity"): "complexity",
        (Issue, "priority"): "priority",
        (PullRequest, "actor"): "actor",
        (PullRequest, "merge_strategy"): "merge_strategy",
        (Approval, "approval_type"): "approval_type",
        (Approval, "priority"): "priority",
        (Escalation, "escalation_type"): "escalation_type",
        (Escalation, "severity"): "severity",
    }
    for (model, name), label in fields.items():
        offered = dict(model._meta.get_field(name).choices)
        vocabulary = catalogue.VOCABULARIES[label]
        assert offered.items() <= vocabulary.items(), (model.__name__, name)
    assert labels.DEFAULT_POLICIES["token_type"] == record.TOKEN_TYPES
