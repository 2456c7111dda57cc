"""The shipped Prometheus configuration: valid for promtool, every rule unit-tested, and
every metric name it uses served by the app (default prefix ``tamma_``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tamma_metrics import catalogue

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = sorted((DEPLOY / "rules").glob("*.yml"))
TESTS = sorted((DEPLOY / "tests").glob("*.yml"))
TOKEN_PATH = "/etc/prometheus/tamma.token"
# Rules per file; each recording rule file has its unit tests (rules file -> tests file).
RULE_COUNTS = {"tamma-alerts.yml": 7, "tamma-delivery.yml": 7, "tamma-recording.yml": 7}
RECORDING_TESTS = {"tamma-delivery.yml": "delivery.yml", "tamma-recording.yml": "recording.yml"}


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: run scripts/bootstrap.sh (Debian package prometheus)"
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_files_are_there():
    assert (DEPLOY / "prometheus.yml").is_file()
    assert [p.name for p in RULES] == [
        "tamma-alerts.yml",
        "tamma-delivery.yml",
        "tamma-recording.yml",
    ]
    assert [p.name for p in TESTS] == ["alerts.yml", "delivery.yml", "recording.yml"]


def _rule_counts_found(stdout: str) -> dict[str, int]:
    """promtool's "Checking <file>" then "SUCCESS: <n> rules found", per file name."""
    found = re.findall(r"^Checking (\S+)\n\s+SUCCESS: (\d+) rules found$", stdout, re.M)
    return {Path(name).name: int(count) for name, count in found}


def test_promtool_check_config(tmp_path):
    # The shipped file names the token's production path; a full check needs the file
    # to exist, so check a copy that points at a token made here.
    shipped = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    copy = tmp_path / "prometheus"
    shutil.copytree(DEPLOY, copy)
    token = tmp_path / "tamma.token"
    token.write_text("tmm_test_not-a-real-token")
    config = copy / "prometheus.yml"
    text = config.read_text()
    assert text.count(TOKEN_PATH) == 1
    config.write_text(text.replace(TOKEN_PATH, str(token)))
    done = promtool("check", "config", "prometheus.yml", cwd=copy)
    assert done.returncode == 0, done.stdout + done.stderr
    # rule_files were found and checked
    assert f"SUCCESS: {len(RULE_COUNTS)} rule files found" in done.stdout
    assert _rule_counts_found(done.stdout) == RULE_COUNTS


def test_promtool_check_rules():
    done = promtool("check", "rules", *[str(p) for p in RULES])
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rule_counts_found(done.stdout) == RULE_COUNTS


def test_promtool_test_rules():
    done = promtool("test", "rules", *[str(p) for p in TESTS])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(TESTS)


def _served_names() -> set[str]:
    names = set()
    for family in catalogue.families():
        full = family.full_name
        if family.kind is catalogue.Kind.HISTOGRAM:
            names.update(f"{full}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(full)
    return names


@pytest.mark.parametrize("path", [*RULES, *TESTS], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_metric_name_matches_the_catalogue(path):
    text = path.read_text()
    # Names after a colon are inside recording rule names (level:metric:operation).
    used = set(re.findall(r"(?<![A-Za-z0-9_:])tamma_[a-z0-9_]+", text))
    assert used, path
    assert used <= _served_names(), sorted(used - _served_names())


def _alerts() -> list[str]:
    return re.findall(
        r"^\s*- alert: (\w+)$", (DEPLOY / "rules" / "tamma-alerts.yml").read_text(), re.M
    )


def _records(rules: str = "tamma-recording.yml") -> list[str]:
    text = (DEPLOY / "rules" / rules).read_text()
    return re.findall(r"^\s*- record: (\S+)$", text, re.M)


def test_every_alert_is_tested_firing_and_not_firing():
    text = (DEPLOY / "tests" / "alerts.yml").read_text()
    alerts = _alerts()
    assert alerts == [
        "TammaTargetDown",
        "TammaAIFailureRatioHigh",
        "TammaAILatencyP95High",
        "TammaEscalationRatioHigh",
        "TammaQueueNotDraining",
        "TammaApprovalPendingTooLong",
        "TammaDatabaseCollectorDown",
    ]
    for alert in alerts:
        quiet = re.findall(rf"alertname: {alert}\n\s+exp_alerts: \[\]", text)
        firing = re.findall(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels:", text)
        assert quiet and firing, alert


@pytest.mark.parametrize("rules", sorted(RECORDING_TESTS))
def test_every_recording_rule_is_tested_with_values(rules):
    text = (DEPLOY / "tests" / RECORDING_TESTS[rules]).read_text()
    assert f"  - ../rules/{rules}\n" in text
    records = _records(rules)
    assert len(records) == RULE_COUNTS[rules]
    for record in records:
        checked = re.findall(
            rf"- expr: {re.escape(record)}\n.*\n\s+exp_samples:\n\s+- labels: '{re.escape(record)}",
            text,
        )
        assert checked, record


# A dashboard's Grafana variables, as values promtool can parse: matchers on every value,
# the time range as a day.
GRAFANA_VARIABLES = {
    r'"\$(platform|environment|provider)"': '".*"',
    r"\$__range_s\b": "86400",
    r"\$__range\b": "1d",
    r"\$__rate_interval\b": "5m",
}


@pytest.mark.parametrize(
    ("dashboard", "panels", "rules"),
    [
        # Every rule of tamma-recording.yml has a panel in the operator dashboard; every
        # rule of tamma-delivery.yml one in the delivery dashboard, which also reads some
        # of tamma-recording.yml's.
        ("tamma-overview.json", 12, "tamma-recording.yml"),
        ("tamma-delivery.json", 21, "tamma-delivery.yml"),
    ],
)
def test_the_grafana_dashboard_queries_known_series(tmp_path, dashboard, panels, rules):
    board = json.loads((DEPLOY.parent / "grafana" / dashboard).read_text())
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"]) == panels
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    recorded = {record for name in RECORDING_TESTS for record in _records(name)}
    used_records = set()
    for expr in exprs:
        names = set(re.findall(r"[a-z_:]*tamma[a-z0-9_:]*", expr))
        assert names, expr
        for name in names:
            if ":" in name:
                assert name in recorded, name
                used_records.add(name)
            else:
                assert name in _served_names(), name
    assert set(_records(rules)) <= used_records  # every recording rule has a panel
    # promtool has no expression check: wrap each query in a rule, which it parses.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = re.sub(variable, value, expr)
        assert "$" not in expr, expr
        lines += [f"      - record: dashboard:check:{i}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(lines) + "\n")
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


ALERTMANAGER = DEPLOY.parent / "alertmanager" / "alertmanager.yml"


def test_alerts_reach_alertmanager_once_per_pair():
    """Alerts go to Alertmanager without the replica label, so an HA pair's two copies
    are one alert; remote write keeps it for the store to deduplicate."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert set(config["global"]["external_labels"]) == {"cluster", "replica"}
    alerting = config["alerting"]
    assert alerting["alert_relabel_configs"] == [{"action": "labeldrop", "regex": "replica"}]
    assert alerting["alertmanagers"][0]["static_configs"][0]["targets"]


def _remote_write_examples() -> dict[str, str]:
    """Each commented `remote_write:` example of prometheus.yml, uncommented, by store."""
    examples: dict[str, list[str]] = {}
    store, block = "", None
    for line in (DEPLOY / "prometheus.yml").read_text().splitlines():
        header = re.match(r"# (VictoriaMetrics|Thanos|Grafana Mimir)\b", line)
        if header:
            store = header.group(1)
        if line == "# remote_write:":
            block = examples.setdefault(store, [])
        if block is not None and (line == "# remote_write:" or line.startswith("#   ")):
            block.append(line[2:])
        else:
            block = None
    return {name: "\n".join(lines) for name, lines in examples.items()}


@pytest.mark.parametrize("store", ["VictoriaMetrics", "Thanos", "Grafana Mimir"])
def test_each_remote_write_example_is_valid(tmp_path, store):
    example = _remote_write_examples()[store]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["remote_write"] = yaml.safe_load(example)["remote_write"]
    config.pop("rule_files")  # checked above; the copy lives elsewhere
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = promtool("check", "config", "--syntax-only", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    relabel = config["remote_write"][0].get("write_relabel_configs", [])
    # VictoriaMetrics and Mimir must not see the pair as two series; Thanos needs the label.
    dropped = {"action": "labeldrop", "regex": "replica"} in relabel
    assert dropped == (store != "Thanos")


def test_amtool_checks_the_alertmanager_example():
    binary = shutil.which("amtool")
    assert binary, "amtool is missing: run scripts/bootstrap.sh (prometheus-alertmanager)"
    done = subprocess.run(
        [binary, "check-config", str(ALERTMANAGER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    # One page per alert and instance: the route groups by both.
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    assert route["group_by"] == ["alertname", "instance"]
