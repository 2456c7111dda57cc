"""Property-based fuzzing of the API from its own OpenAPI schema: no server error, ever.

schemathesis's pytest plugin does not run under pytest 9 here, so the operations'
strategies are driven with hypothesis directly.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth.models import Group, User
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tamma_metrics.models import ApiToken, IngestedEvent
from tamma_metrics.roles import OPERATOR, ORCHESTRATOR, seed_roles

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def wsgi_app():
    """Django's WSGI app inside the test's transaction: like the test client, keep the
    request signals from closing the test's database connection."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def worker_headers() -> dict[str, str]:
    seed_roles()
    user = User.objects.create_user("fuzz-worker")
    # Reports events, writes state and sees every family: every operation can answer 200.
    user.groups.add(Group.objects.get(name=ORCHESTRATOR), Group.objects.get(name=OPERATOR))
    return {"Authorization": f"Bearer {ApiToken.create_for(user, 'fuzz')[1]}"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_a_server_error(wsgi_app, worker_headers, settings, mode):
    settings.TAMMA_METRICS = {"API_THROTTLE_RATE": "100000/m"}  # hundreds of requests
    schema = schemathesis.openapi.from_wsgi("/api/schema", wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "POST /api/v1/events",
        "GET /api/v1/families",
        "GET /api/v1/velocity",
        "GET /api/v1/delivery",
        "POST /api/v1/webhooks/github",
        "POST /api/v1/webhooks/gitlab",
        "GET /api/v1/health",
        "POST /api/v1/issues",
        "POST /api/v1/pull-requests",
        "POST /api/v1/approvals",
        "POST /api/v1/escalations",
        "POST /api/v1/loops/heartbeat",
        "POST /api/v1/deployments",
        "POST /api/v1/incidents",
    }
    statuses: set[int] = set()
    for operation in operations:

        @hypothesis_settings(
            max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case):
            response = case.call_and_validate(headers=worker_headers, checks=[not_a_server_error])
            statuses.add(response.status_code)

        call()
    # The fuzzing reached real outcomes, not only one kind of refusal.
    assert statuses & {200, 400}
    if mode is GenerationMode.POSITIVE:
        assert IngestedEvent.objects.exists() or 200 in statuses
        assert 201 in statuses  # valid state items were generated and written
