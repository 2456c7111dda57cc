"""Hostile requests to /metrics: whatever Authorization, Accept, Accept-Encoding and
name[] hold, the answer is never a 5xx, and a 200 is always valid exposition."""

from __future__ import annotations

import gzip
import re

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tamma_metrics import record
from tamma_metrics.models import ApiToken
from tamma_metrics.roles import PROMETHEUS, seed_roles
from tests.utils import parse, unescape_names

pytestmark = pytest.mark.django_db

header_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=60
)
media = st.sampled_from(
    ["text/plain", "application/openmetrics-text", "*/*", "text/*", "application/json", ""]
)
params = st.lists(
    st.sampled_from(
        [
            "version=0.0.4",
            "version=1.0.0",
            "version=2.0.0",
            "version=x",
            "q=0",
            "q=0.5",
            "q=1",
            "q=-1",
            "q=abc",
            "escaping=allow-utf-8",
            "escaping=values",
            "escaping=dots",
            "escaping=nope",
            "charset=utf-8",
        ]  # fmt: skip
    ),
    max_size=3,
)
accept = st.one_of(
    header_text,
    st.lists(st.tuples(media, params).map(lambda t: ";".join([t[0], *t[1]])), max_size=4).map(
        ",".join
    ),
)
encodings = st.one_of(
    header_text,
    st.lists(
        st.sampled_from(["gzip", "gzip;q=0", "deflate", "br", "*", "*;q=0", "identity", "x"]),
        max_size=3,
    ).map(", ".join),
)
names = st.lists(
    st.one_of(header_text, st.sampled_from(["tamma_queue_depth", "tamma_ai_requests_total", ""])),
    max_size=3,
)


@pytest.fixture
def token():
    seed_roles()
    user = User.objects.create_user("fuzz")
    user.groups.add(Group.objects.get(name=PROMETHEUS))
    return ApiToken.create_for(user, "fuzz")[1]


@given(accept=accept, encoding=encodings, wanted=names, bearer=st.booleans())
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_headers_get_a_valid_answer(token, accept, encoding, wanted, bearer):
    headers = {"HTTP_ACCEPT": accept, "HTTP_ACCEPT_ENCODING": encoding}
    if bearer:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    response = Client().get("/metrics", {"name[]": wanted}, **headers)
    assert response.status_code in (200, 401, 429)
    if response.status_code != 200:
        return
    body = response.content
    if response.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    content_type = response["Content-Type"]
    escaping = re.search(r"escaping=([\w-]+)", content_type)
    text = unescape_names(body.decode("utf-8"), escaping[1] if escaping else "underscores")
    parse(text, openmetrics=content_type.startswith("application/"))


@given(authorization=st.one_of(header_text, st.binary(max_size=40).map(lambda b: b.hex())))
@settings(max_examples=150, deadline=None)
def test_any_authorization_gets_401_never_a_500(authorization):
    for scheme in ("", "Bearer ", "Basic ", "bearer tmm_", "Basic Og=="):
        response = Client().get("/metrics", HTTP_AUTHORIZATION=scheme + authorization)
        assert response.status_code in (401, 429), (scheme, authorization)


@pytest.mark.parametrize("escaping", ["underscores", "dots", "values", "allow-utf-8"])
@pytest.mark.parametrize("media", ["application/openmetrics-text", "text/plain"])
def test_every_escaping_parses_with_each_family_whole(token, media, escaping):
    """Two series of one histogram, so a sample name read as another family would clash:
    once unescaped as the response declares, every family keeps all its samples."""
    for provider in ("anthropic", "openai"):
        record.ai_request(provider=provider, model="m", request_type="chat", outcome="success",
                          duration_seconds=1.5, tokens={}, cost_usd=0)  # fmt: skip
    response = Client().get(
        "/metrics",
        HTTP_ACCEPT=f"{media};version=1.0.0;escaping={escaping}",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 200
    assert f"escaping={escaping}" in response["Content-Type"]
    text = unescape_names(response.content.decode(), escaping)
    samples = parse(text, openmetrics=media.startswith("application/"))
    name = "tamma_ai_request_duration_seconds_count"
    assert {dict(labels)["provider"] for labels in samples.series(name)} >= {"anthropic", "openai"}
