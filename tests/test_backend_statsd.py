"""StatsD backend: exact lines received by a real UDP socket, packet bounds, dead servers."""

from __future__ import annotations

import os
import socket

import pytest

from tamma_metrics import backends, record
from tamma_metrics.access import sync_metric_families
from tamma_metrics.backends import Sample
from tamma_metrics.backends.statsd import StatsdBackend
from tamma_metrics.catalogue import Family, Kind
from tests.servers import free_port
from tests.test_labels import CUSTOM
from tests.utils import delta, run_python

pytestmark = pytest.mark.django_db

AI = "provider:anthropic,model:claude-sonnet,request_type:chat"
GPT = "provider:openai,model:gpt-4o,request_type:chat"


@pytest.fixture
def listener():
    """A StatsD server stand-in: a UDP socket on a free port that we read ourselves."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on the socket (loopback delivery is done once send returns)."""
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(65535))
        except BlockingIOError:
            return datagrams


def lines(datagrams: list[bytes]) -> list[str]:
    return [line for d in datagrams for line in d.decode("utf-8").split("\n")]


@pytest.fixture
def use_statsd(settings, monkeypatch):
    # Only flush() sends: a tick between a test's scrape (its own response-time event)
    # and what it records would make two batches, and count a failing backend twice.
    monkeypatch.setattr(backends, "FLUSH_SECONDS", 3600)

    def configure(**options):
        settings.TAMMA_METRICS = {**settings.TAMMA_METRICS, "BACKENDS": {"statsd": options}}
        backends.reset()

    yield configure
    backends.reset()


def scenario() -> None:
    """Three AI requests with tokens and cost, two test runs, one connection."""
    record.ai_request(
        provider="anthropic",
        model="claude-sonnet",
        request_type="chat",
        outcome="success",
        duration_seconds=2.5,
        tokens={"input": 1200, "output": 300},
        cost_usd=0.021,
    )
    record.ai_request(
        provider="openai",
        model="gpt-4o",
        request_type="chat",
        outcome="failure",
        duration_seconds=0.75,
        tokens={"input": 800},
        cost_usd=0.004,
    )
    record.ai_request(
        provider="anthropic",
        model="claude-sonnet",
        request_type="chat",
        outcome="timeout",
        duration_seconds=30,
    )
    record.test_execution(
        test_type="unit",
        framework="pytest",
        language="python",
        result="success",
        duration_seconds=42.0,
    )
    record.test_execution(
        test_type="e2e",
        framework="playwright",
        language="typescript",
        result="failure",
        duration_seconds=95.5,
    )
    with record.track_connection(connection_type="websocket", provider="github"):
        pass


SCENARIO_LINES = [
    f"tamma_ai_requests:1|c|#{AI},outcome:success",
    f"tamma_ai_request_duration_seconds:2500|ms|#{AI},token_range:1k-10k",
    "tamma_ai_tokens:1200|c|#provider:anthropic,model:claude-sonnet,token_type:input",
    "tamma_ai_tokens:300|c|#provider:anthropic,model:claude-sonnet,token_type:output",
    "tamma_ai_cost_usd:0.021|c|#provider:anthropic,model:claude-sonnet",
    f"tamma_ai_requests:1|c|#{GPT},outcome:failure",
    f"tamma_ai_request_duration_seconds:750|ms|#{GPT},token_range:0-1k",
    "tamma_ai_tokens:800|c|#provider:openai,model:gpt-4o,token_type:input",
    "tamma_ai_cost_usd:0.004|c|#provider:openai,model:gpt-4o",
    f"tamma_ai_requests:1|c|#{AI},outcome:timeout",
    f"tamma_ai_request_duration_seconds:30000|ms|#{AI},token_range:0-1k",
    "tamma_test_execution_duration_seconds:42000|ms"
    "|#test_type:unit,framework:pytest,language:python,result:success",
    "tamma_test_execution_duration_seconds:95500|ms"
    "|#test_type:e2e,framework:playwright,language:typescript,result:failure",
    "tamma_active_connections:+1|g|#connection_type:websocket,provider:github",
    "tamma_active_connections:-1|g|#connection_type:websocket,provider:github",
]


def test_a_scenario_arrives_as_exact_statsd_lines(use_statsd, listener):
    use_statsd(port=listener.getsockname()[1])
    scenario()
    backends.dispatcher().flush()
    assert lines(received(listener)) == SCENARIO_LINES


def test_plain_statsd_puts_label_values_in_the_name(use_statsd, listener):
    use_statsd(port=listener.getsockname()[1], tags=False, prefix="ci.")
    record.ai_request(
        provider="openai",
        model="gpt-4.1",  # a dot would add a Graphite level: it becomes _
        request_type="chat",
        outcome="success",
        duration_seconds=0.0125,
        tokens={"input": 5},
    )
    record.connection_opened(connection_type="http", provider="anthropic")
    backends.dispatcher().flush()
    assert lines(received(listener)) == [
        "ci.tamma_ai_requests.openai.gpt-4_1.chat.success:1|c",
        "ci.tamma_ai_request_duration_seconds.openai.gpt-4_1.chat.0-1k:12.5|ms",
        "ci.tamma_ai_tokens.openai.gpt-4_1.input:5|c",
        "ci.tamma_active_connections.http.anthropic:+1|g",
    ]


def test_custom_gauges_are_set_and_other_histograms_sent_raw(settings, use_statsd, listener):
    settings.TAMMA_METRICS = {"CUSTOM_FAMILIES": CUSTOM}
    sync_metric_families()
    use_statsd(port=listener.getsockname()[1])
    record.metric("review_rounds", 3, repository="acme/app")
    record.metric("backlog_size", 42, platform="github")
    record.metric("backlog_size", -2.5, platform="github")
    record.metric("releases_total", 2, environment="prod", service="api")
    backends.dispatcher().flush()
    assert lines(received(listener)) == [
        "tamma_review_rounds:3|h|#repository:acme/app",
        "tamma_backlog_size:42|g|#platform:github",
        # "-2.5" alone would be a delta in StatsD: a negative value is reached from 0.
        "tamma_backlog_size:0|g|#platform:github",
        "tamma_backlog_size:-2.5|g|#platform:github",
        "tamma_releases:2|c|#environment:prod,service:api",
    ]


def test_lines_share_datagrams_up_to_max_packet(use_statsd, listener):
    use_statsd(port=listener.getsockname()[1], max_packet=200)
    for _ in range(41):
        record.code_change(change_type="create", language="go", actor="system", file_type="go")
    backends.dispatcher().flush()
    datagrams = received(listener)
    line = b"tamma_code_changes:1|c|#change_type:create,language:go,actor:system,file_type:go"
    assert len(line) == 80  # two lines and a newline fit in 200 bytes, three do not
    assert datagrams == [line + b"\n" + line] * 20 + [line]
    assert max(len(d) for d in datagrams) == 161


def sample(name: str, kind: str, operation: str, value: float, **labels: str) -> Sample:
    family = Family(name.removeprefix("tamma_"), Kind(kind), "help", tuple(labels))
    return Sample(family, operation, value, labels)


def test_packing_is_greedy_and_never_cuts_a_line():
    backend = StatsdBackend(max_packet=64)
    samples = [
        sample("tamma_a_total", "counter", "inc", 1),  # "tamma_a:1|c": 11 bytes
        sample("tamma_b_total", "counter", "inc", 2),
        sample("tamma_" + "x" * 70 + "_total", "counter", "inc", 3),  # 81 bytes > 64
        sample("tamma_c", "gauge", "dec", 4),
    ]
    assert backend.packets(samples) == [
        b"tamma_a:1|c\ntamma_b:2|c",
        b"tamma_" + b"x" * 70 + b":3|c",
        b"tamma_c:-4|g",
    ]


@pytest.mark.parametrize(
    ("sample_", "line"),
    [
        (sample("tamma_c_total", "counter", "inc", 0.5), "tamma_c:0.5|c"),
        (sample("tamma_h_seconds", "histogram", "observe", 0.021), "tamma_h_seconds:21|ms"),
        (sample("tamma_h_seconds", "histogram", "observe", 1e-7), "tamma_h_seconds:0|ms"),
        (sample("tamma_h_seconds", "histogram", "observe", 0.0001234), "tamma_h_seconds:0.123|ms"),
        (sample("tamma_g", "gauge", "inc", -2), "tamma_g:-2|g"),
        (sample("tamma_g", "gauge", "dec", -2), "tamma_g:+2|g"),
        (sample("tamma_g", "gauge", "set", 0), "tamma_g:0|g"),
        (sample("tamma_job:rate", "gauge", "set", 1, a="x:y"), "tamma_job_rate:1|g|#a:x:y"),
    ],
)
def test_line_format(sample_, line):
    assert StatsdBackend().line(sample_) == line


def test_a_value_statsd_cannot_carry_is_left_out():
    backend = StatsdBackend()
    assert backend.packets([sample("tamma_g", "gauge", "set", float("nan"))]) == []


def test_a_dead_port_is_counted_and_recording_unharmed(use_statsd, metrics):
    use_statsd(port=free_port(socket.SOCK_DGRAM))  # nothing listens there
    before = metrics()
    scenario()  # completes: the timing is measured in benchmarks/backends.py
    backends.dispatcher().flush()
    change = delta(metrics(), before)
    ai = {"provider": "anthropic", "model": "claude-sonnet", "request_type": "chat"}
    assert change.value("tamma_ai_requests_total", **ai, outcome="success") == 1
    assert change.value("tamma_ai_requests_total", **ai, outcome="timeout") == 1
    # The ICMP refusal reached the connected socket: one batch, one error.
    assert change.value("tamma_metrics_backend_errors_total", backend="statsd") == 1


def test_each_batch_to_a_dead_port_raises_and_a_revived_server_receives(listener):
    port = listener.getsockname()[1]
    listener.close()
    backend = StatsdBackend(port=port)
    batch = [sample("tamma_c_total", "counter", "inc", 1)]
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError, match=f"statsd 127.0.0.1:{port}"):
            backend.send(batch)
    revived = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    revived.bind(("127.0.0.1", port))
    revived.setblocking(False)
    try:
        backend.send(batch)  # no stale refusal is left to fail it
        assert received(revived) == [b"tamma_c:1|c"]
    finally:
        revived.close()
        backend.close()


def test_an_unresolvable_host_is_counted(use_statsd, metrics):
    use_statsd(host="statsd.invalid", port=8125)
    before = metrics()
    record.code_change(change_type="delete", language="go", actor="user", file_type="go")
    backends.dispatcher().flush()
    change = delta(metrics(), before)
    assert change.value("tamma_metrics_backend_errors_total", backend="statsd") == 1
    assert (
        change.value(
            "tamma_code_changes_total",
            change_type="delete",
            language="go",
            actor="user",
            file_type="go",
        )
        == 1
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [({"port": 0}, "statsd port must be 1-65535"), ({"max_packet": 10}, "at least 64 bytes")],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        StatsdBackend(**options)


def test_a_dead_server_is_logged_once_a_minute_and_counted_every_time(metrics, caplog):
    dispatcher = backends.Dispatcher([StatsdBackend(port=free_port(socket.SOCK_DGRAM))], 10)
    before = metrics()
    batch = [sample("tamma_c_total", "counter", "inc", 1)]
    with caplog.at_level("WARNING", logger="tamma_metrics.backends"):
        for _ in range(3):
            dispatcher._send(batch)
    dispatcher.flush()
    assert (
        delta(metrics(), before).value("tamma_metrics_backend_errors_total", backend="statsd") == 3
    )
    assert [r.getMessage() for r in caplog.records] == [
        "tamma_metrics: backend statsd failed (logged at most every 60 s)"
    ]


EXITING_PROCESS = """
import django
from django.conf import settings
from django.core.management import call_command

django.setup()
call_command("migrate", verbosity=0)  # the label guard admits values in the database
settings.TAMMA_METRICS = {"BACKENDS": {"statsd": {"port": %d}}}
from tamma_metrics import record

record.escalation(escalation_type="budget", severity="low", component="cli", reason="quota")
"""


@pytest.mark.slow
def test_a_process_that_exits_at_once_still_sends_its_events(listener, tmp_path):
    # The dispatcher waits 0.5 s for more events before sending; the exit hook must not.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    code = EXITING_PROCESS % listener.getsockname()[1]
    run_python("-c", code, env=env)
    listener.setblocking(True)
    listener.settimeout(10)  # the datagram is already there; this only bounds a failure
    assert listener.recv(65535) == (
        b"tamma_escalations:1|c|#escalation_type:budget,severity:low,component:cli,reason:quota"
    )
