"""Every real webhook payload of the corpus (tests/corpus.py: octokit's GitHub examples,
GitLab's documented examples) delivered as the platform would: signed (GitHub) or with the
secret token (GitLab), under a fresh delivery id.

Whatever a payload means to the app, the answer is one the documentation lists
(docs/webhooks.md): never a 5xx; 200 applied (or ignored, with the row's result), 202 ignored
with a reason, or 400 naming a field; the deliveries counter moves by exactly one, under that
outcome; and a redelivery under the same id is a duplicate that changes no row and counts
nothing but itself (a rejected delivery was not recorded, so it is rejected again).

Which rows each delivery writes is left to tests/test_webhooks.py. The cases where the app
holds the pull request or merge request the payload names (so that it can be applied) are
marked ``holds_pull_request``: their assertions are the ones to tighten.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from django.apps import apps
from django.test import Client

from tamma_metrics import catalogue
from tamma_metrics.catalogue import Source
from tamma_metrics.models import PullRequest
from tests import factories
from tests.corpus import (
    CorpusMissing,
    github_events,
    github_examples,
    gitlab_docs,
)
from tests.utils import Samples, delta

pytestmark = pytest.mark.django_db(transaction=True)

GITHUB_SECRET = "It's a Secret to Everybody"
GITLAB_TOKEN = "gitlab-secret-token"
DELIVERIES = "tamma_metrics_webhook_deliveries_total"
OUTCOMES = {"applied", "unchanged", "stale", "conflict", "ignored", "rejected", "duplicate"}

# The GitHub events the app writes rows from (docs/webhooks.md); every example of each
# is delivered. Of the others, every example of these, and the first of every other event.
GITHUB_HANDLED = ("pull_request", "pull_request_review", "deployment_status", "issues")
GITHUB_UNHANDLED_ALL = (
    "ping",
    "deployment",
    "pull_request_review_comment",
    "pull_request_review_thread",
)
# Events whose examples name a pull request the app could hold.
GITHUB_HOLDS = ("pull_request", "pull_request_review")
# X-Gitlab-Event of each documented payload, by the first part of its file name.
GITLAB_EVENTS = {
    "build": "Job Hook",
    "deployment": "Deployment Hook",
    "issue": "Issue Hook",
    "member": "Member Hook",
    "merge_request": "Merge Request Hook",
    "note": "Note Hook",
    "pipeline": "Pipeline Hook",
    "push": "Push Hook",
}

# Cases that answer 5xx today ({case id: why}), expected to fail until the app is fixed.
KNOWN_5XX: dict[str, str] = {}


@dataclass(frozen=True)
class Held:
    """The pull request (merge request) a payload names, as the app would hold it."""

    repository: str
    number: int
    created_at: str


@dataclass(frozen=True)
class Case:
    platform: str  # github, gitlab
    event: str  # X-GitHub-Event, X-Gitlab-Event
    body: bytes  # exactly what is sent and signed
    held: Held | None = None


def _github_cases() -> list[Any]:
    cases = []
    for event in github_events():
        if event in GITHUB_HANDLED or event in GITHUB_UNHANDLED_ALL:
            examples = github_examples(event)
        else:
            examples = github_examples(event)[:1]
        seen: dict[str, int] = {}
        for example in examples:
            action = example.get("action")
            index = seen[str(action)] = seen.get(str(action), -1) + 1
            name = f"{event}.{action}.{index}" if action else f"{event}.{index}"
            body = json.dumps(example, ensure_ascii=False).encode()
            if event in GITHUB_HOLDS:
                pr = example["pull_request"]
                held = Held(example["repository"]["full_name"], pr["number"], pr["created_at"])
                cases.append(_param(Case("github", event, body, held), name))
                cases.append(_param(Case("github", event, body), f"{name}.not_held"))
            else:
                cases.append(_param(Case("github", event, body), name))
    return cases


def _gitlab_cases() -> list[Any]:
    cases = []
    for name, body in gitlab_docs().items():
        kind = name.split(".", 1)[0]
        case = Case("gitlab", GITLAB_EVENTS[kind], body)
        if kind == "merge_request":
            attributes = json.loads(body)["object_attributes"]
            project = json.loads(body)["project"]["path_with_namespace"]
            held = Held(project, attributes["iid"], attributes["created_at"])
            cases.append(_param(Case("gitlab", case.event, body, held), f"gitlab.{name}"))
            cases.append(_param(case, f"gitlab.{name}.not_held"))
        else:
            cases.append(_param(case, f"gitlab.{name}"))
    return cases


def _param(case: Case, name: str) -> Any:
    marks: list[Any] = []
    if case.held is not None:
        marks.append(pytest.mark.holds_pull_request)
    if name in KNOWN_5XX:
        marks.append(pytest.mark.xfail(reason=KNOWN_5XX[name], strict=False))
    return pytest.param(case, id=name, marks=marks)


try:
    GITHUB_CASES = _github_cases()
except CorpusMissing as missing:
    # One failing case that says what to do, rather than an error that stops the run.
    GITHUB_CASES = [pytest.param(missing, id="github.corpus_missing")]
GITLAB_CASES = _gitlab_cases()


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.TAMMA_METRICS = {
        "WEBHOOK_SECRETS": {"github": GITHUB_SECRET, "gitlab": GITLAB_TOKEN},
        # A test delivers a whole group, with three scrapes per delivery.
        "THROTTLE_RATE": "100000/m",
        "API_THROTTLE_RATE": "100000/m",
    }


def send(case: Case, delivery: str):
    """POST ``case`` as its platform does; a 500 is answered, not raised."""
    client = Client(raise_request_exception=False)
    if case.platform == "github":
        meta = {
            "HTTP_X_GITHUB_EVENT": case.event,
            "HTTP_X_GITHUB_DELIVERY": delivery,
            "HTTP_X_GITHUB_HOOK_ID": "292430182",
            "HTTP_USER_AGENT": "GitHub-Hookshot/044aadd",
            "HTTP_X_HUB_SIGNATURE": "sha1=" + _hmac(hashlib.sha1, case.body),
            "HTTP_X_HUB_SIGNATURE_256": "sha256=" + _hmac(hashlib.sha256, case.body),
        }
        url = "/api/v1/webhooks/github"
    else:
        # Idempotency-Key stays the same across GitLab's retries; the event UUID need not.
        meta = {
            "HTTP_X_GITLAB_EVENT": case.event,
            "HTTP_X_GITLAB_TOKEN": GITLAB_TOKEN,
            "HTTP_IDEMPOTENCY_KEY": delivery,
            "HTTP_X_GITLAB_EVENT_UUID": str(uuid.uuid4()),
            "HTTP_USER_AGENT": "GitLab/18.2.0",
        }
        url = "/api/v1/webhooks/gitlab"
    return client.post(url, case.body, content_type="application/json", **meta)


def _hmac(digest: Any, body: bytes) -> str:
    return hmac.new(GITHUB_SECRET.encode(), body, digest).hexdigest()


def hold(held: Held, platform: str) -> None:
    """The pull request as Tamma would have written it: open, seen at its creation (a row
    an earlier example of the same pull request left is written anew)."""
    forget(held, platform)
    created = datetime.fromisoformat(held.created_at.replace("Z", "+00:00"))
    issue = factories.issue(platform=platform, repository=held.repository)
    factories.pull_request(
        issue,
        number=held.number,
        created_at=created,
        first_commit_at=created,
        observed_at=created,
    )


def forget(held: Held, platform: str) -> None:
    """No pull request of ``held``'s number: the app does not hold it."""
    PullRequest.objects.filter(
        platform=platform, repository=held.repository, number=held.number
    ).delete()


def rows() -> dict[str, list[dict[str, Any]]]:
    """Every row of the app's tables but Admission's: the label values admitted for the
    request metrics (a status code first answered, ...), whatever the endpoint."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in apps.get_app_config("tamma_metrics").get_models()
        if model.__name__ != "Admission"
    }


def outcome_of(response) -> str:
    """The outcome the answer says, after checking it is one the documentation lists."""
    body = response.content.decode(errors="replace")[:2000]
    assert response.status_code < 500, f"{response.status_code}: {body}"
    assert response["Content-Type"].startswith("application/json"), body
    answer = response.json()
    assert isinstance(answer, dict), body
    if response.status_code == 200:
        if answer == {"outcome": "duplicate"}:
            return "duplicate"
        assert set(answer) == {"outcome", "result"}, body
        # "applied" only when a row changed; otherwise what the row's answer was.
        expected = {"created": "applied", "updated": "applied"}.get(
            answer["result"], answer["result"]
        )
        assert answer["outcome"] in ("applied", "unchanged", "stale"), body
        assert answer["outcome"] == expected, body
        return answer["outcome"]
    if response.status_code == 409:
        assert answer["outcome"] == "conflict" and answer["errors"], body
        return "conflict"
    if response.status_code == 202:
        assert set(answer) == {"outcome", "detail"}, body
        assert answer["outcome"] == "ignored", body
        assert answer["detail"].startswith("Ignored: "), body
        return "ignored"
    assert response.status_code == 400, body
    # A field named, with its message(s); not a body that is not JSON.
    assert answer and "detail" not in answer, body
    for field, messages in answer.items():
        assert field and isinstance(messages, list) and messages, body
        assert all(isinstance(message, str) and message for message in messages), body
    return "rejected"


def counted(change: Samples, platform: str) -> dict[str, float]:
    """How the deliveries counter moved, by outcome, for ``platform`` (and no other)."""
    series = change.series(DELIVERIES)
    assert {dict(labels).get("platform") for labels in series} <= {platform}, series
    return {dict(labels)["outcome"]: value for labels, value in series.items()}


# The app's own families and those of the requests it answered, not of the rows.
OWN = ("tamma_metrics_", "tamma_api_")


# Gauges computed from the rows at scrape time: the rows a group's earlier examples made
# (a held pull request's issue is queued) show in them whenever the shared cache of database
# gauges expires, which no delivery causes. What a redelivery must not move is a counter.
COMPUTED = tuple(
    f"tamma_{family.name}" for family in catalogue.families() if family.source is Source.DATABASE
)


def domain_series(change: Samples) -> dict[Any, float]:
    """The recorded series that moved other than the app's own and its requests'."""
    return {
        key: value
        for key, value in change.items()
        if key[0].startswith("tamma_") and not key[0].startswith(OWN) and key[0] not in COMPUTED
    }


def deliver_twice(case: Case, metrics) -> None:
    before = metrics()
    delivery = str(uuid.uuid4())
    first = send(case, delivery)
    outcome = outcome_of(first)
    assert outcome in OUTCOMES - {"duplicate"}
    assert counted(delta(metrics(), before), case.platform) == {outcome: 1}

    written, before = rows(), metrics()
    again = send(case, delivery)
    if outcome in ("rejected", "conflict"):  # not recorded: the same answer again
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        redelivered = outcome
    else:
        assert (again.status_code, again.json()) == (200, {"outcome": "duplicate"})
        redelivered = "duplicate"
    assert rows() == written
    change = delta(metrics(), before)
    assert counted(change, case.platform) == {redelivered: 1}
    assert domain_series(change) == {}


def _grouped(cases: list[Any]) -> list[Any]:
    """The cases as one test per event and holding (a flush of every table follows each
    test of this module: one per example made the module the suite's slowest on
    PostgreSQL); the events the app does not handle are one group."""
    groups: dict[str, list[tuple[str, Case]]] = {}
    for param in cases:
        case = param.values[0]
        if not isinstance(case, Case):
            return [param]  # the corpus is missing: its one failing case
        event = case.event if case.event in (*GITHUB_HANDLED, *GITLAB_EVENTS.values()) else "other"
        holding = ".held" if case.held else ".not_held" if param.id.endswith("not_held") else ""
        groups.setdefault(f"{case.platform}.{event}{holding}", []).append((param.id, case))
    return [
        pytest.param(
            members,
            id=group,
            marks=[pytest.mark.holds_pull_request] if group.endswith(".held") else [],
        )
        for group, members in groups.items()
    ]


def deliver_all(members: list[tuple[str, Case]], metrics) -> None:
    for name, case in members:
        if case.held is not None:
            hold(case.held, case.platform)
        elif name.endswith("not_held"):
            payload = json.loads(case.body)
            number = (payload.get("pull_request") or {}).get("number") or payload.get(
                "object_attributes", {}
            ).get("iid")
            forget(Held(_repository(payload), number, ""), case.platform)
        try:
            deliver_twice(case, metrics)
        except AssertionError as failed:
            raise AssertionError(f"{name}: {failed}") from None


def _repository(payload: dict[str, Any]) -> str:
    return (payload.get("repository") or {}).get("full_name") or payload["project"][
        "path_with_namespace"
    ]


@pytest.mark.parametrize("members", _grouped(GITHUB_CASES))
def test_real_github_deliveries_answer_as_documented(members, metrics):
    if isinstance(members, CorpusMissing):
        pytest.fail(str(members), pytrace=False)
    deliver_all(members, metrics)


@pytest.mark.parametrize("members", _grouped(GITLAB_CASES))
def test_real_gitlab_deliveries_answer_as_documented(members, metrics):
    deliver_all(members, metrics)


def _bursts() -> list[Any]:
    """Octokit's pull_request examples of one pull request whose ``updated_at`` is the
    same second, in the package's order and reversed: 15:21:18Z holds closed,
    converted_to_draft and ready_for_review (tests/fixtures/README.md)."""
    try:
        examples = github_examples("pull_request")
    except CorpusMissing as missing:
        return [pytest.param(missing, "", id="github.corpus_missing")]
    bursts: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for example in examples:
        pr = example["pull_request"]
        key = (example["repository"]["full_name"], pr["number"], pr["updated_at"])
        bursts.setdefault(key, []).append(example)
    cases = []
    for (_, _, second), burst in bursts.items():
        if len({example["action"] for example in burst}) < 2:
            continue
        for order, listed in (("in_order", burst), ("reversed", burst[::-1])):
            cases.append(
                pytest.param(
                    listed,
                    order,
                    id=f"pull_request.{second}.{order}",
                    marks=pytest.mark.holds_pull_request,
                )
            )
    return cases


@pytest.mark.parametrize(("burst", "order"), _bursts())
def test_a_same_second_burst_answers_as_documented(burst, order, metrics):
    """Each delivery of the burst, one after another on the pull request the app holds,
    answers as documented and counts once; which row results is for the semantics to say."""
    if isinstance(burst, CorpusMissing):
        pytest.fail(str(burst), pytrace=False)
    pr = burst[0]["pull_request"]
    hold(Held(burst[0]["repository"]["full_name"], pr["number"], pr["created_at"]), "github")
    before = metrics()
    outcomes: dict[str, float] = {}
    for example in burst:
        body = json.dumps(example, ensure_ascii=False).encode()
        outcome = outcome_of(send(Case("github", "pull_request", body), str(uuid.uuid4())))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert counted(delta(metrics(), before), "github") == outcomes
