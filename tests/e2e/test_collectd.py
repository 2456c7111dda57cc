"""StatsD backend -> a real StatsD server (collectd's statsd plugin) -> its Prometheus
endpoint (write_prometheus): the counters arrive with exact values."""

from __future__ import annotations

import socket

import pytest

from tamma_metrics import backends, record
from tests.servers import Server, free_port, http_get, require, wait_until
from tests.utils import parse

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

CONFIG = """\
Hostname "tamma-test"
FQDNLookup false
Interval 1
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
TypesDB "/usr/share/collectd/types.db"
AutoLoadPlugin false
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File STDOUT
</Plugin>
LoadPlugin statsd
<Plugin statsd>
  Host "127.0.0.1"
  Port "{statsd_port}"
</Plugin>
LoadPlugin write_prometheus
<Plugin write_prometheus>
  Host "127.0.0.1"
  Port "{http_port}"
</Plugin>
"""


@pytest.fixture
def collectd(tmp_path):
    """collectd in the foreground; yields (statsd port, Prometheus URL)."""
    binary = require("collectd")
    statsd_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    config = tmp_path / "collectd.conf"
    config.write_text(CONFIG.format(dir=tmp_path, statsd_port=statsd_port, http_port=http_port))
    server = Server([binary, "-f", "-C", str(config)], tmp_path)
    url = f"http://127.0.0.1:{http_port}/metrics"
    try:
        # Ready when a probe sent to the statsd port shows on the Prometheus endpoint.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:

            def probed() -> str:
                probe.sendto(b"probe:1|c", ("127.0.0.1", statsd_port))
                return http_get(url).text

            wait_until(probed, lambda text: 'statsd="probe"' in text)
        yield statsd_port, url
    finally:
        server.stop()
        assert "Unable to parse line" not in server.output()  # every line was valid StatsD


def statsd_series(text: str) -> dict[tuple[str, str], float]:
    """{(collectd metric, statsd name): value} from write_prometheus's exposition."""
    found = {}
    for (name, labels), value in parse(text).items():
        labels = dict(labels)
        if labels.get("statsd", "probe") != "probe":
            assert labels["instance"] == "tamma-test"
            found[(name, labels["statsd"])] = value
    return found


def test_counters_and_gauges_arrive_in_collectd_exactly(settings, collectd):
    statsd_port, url = collectd
    # collectd speaks plain StatsD: no DogStatsD tags, label values go in the name.
    settings.TAMMA_METRICS = {"BACKENDS": {"statsd": {"port": statsd_port, "tags": False}}}
    backends.reset()
    try:
        claude = {"provider": "anthropic", "model": "claude-sonnet", "request_type": "chat"}
        for tokens in ({"input": 1200, "output": 300}, {"input": 600}):
            record.ai_request(
                **claude, outcome="success", duration_seconds=2.5, tokens=tokens, cost_usd=0.5
            )
        record.ai_request(
            provider="openai",
            model="gpt-4o",
            request_type="chat",
            outcome="failure",
            duration_seconds=0.2,
        )
        record.code_change(change_type="update", language="go", actor="system", file_type="go")
        record.code_change(
            change_type="update", language="go", actor="system", file_type="go", count=4
        )
        record.connection_opened(connection_type="websocket", provider="github")
        record.connection_opened(connection_type="websocket", provider="github")
        record.connection_closed(connection_type="websocket", provider="github")
        backends.dispatcher().flush()
    finally:
        backends.reset()

    latency = "collectd_statsd_latency"
    expected = {
        (
            "collectd_statsd_derive_total",
            "tamma_ai_requests.anthropic.claude-sonnet.chat.success",
        ): 2,
        ("collectd_statsd_derive_total", "tamma_ai_requests.openai.gpt-4o.chat.failure"): 1,
        ("collectd_statsd_derive_total", "tamma_ai_tokens.anthropic.claude-sonnet.input"): 1800,
        ("collectd_statsd_derive_total", "tamma_ai_tokens.anthropic.claude-sonnet.output"): 300,
        ("collectd_statsd_derive_total", "tamma_ai_cost_usd.anthropic.claude-sonnet"): 1,
        ("collectd_statsd_derive_total", "tamma_code_changes.update.go.system.go"): 5,
        ("collectd_statsd_gauge", "tamma_active_connections.websocket.github"): 1,
    }
    timers = {
        (latency, "tamma_ai_request_duration_seconds.anthropic.claude-sonnet.chat.1k-10k-average"),
        (latency, "tamma_ai_request_duration_seconds.anthropic.claude-sonnet.chat.0-1k-average"),
        (latency, "tamma_ai_request_duration_seconds.openai.gpt-4o.chat.0-1k-average"),
    }

    def arrived(found: dict) -> bool:
        return {k: v for k, v in found.items() if k not in timers} == expected

    found = wait_until(lambda: statsd_series(http_get(url).text), arrived)
    # Timers arrive too; their value is a per-interval average, so only their names.
    assert set(found) == set(expected) | timers
