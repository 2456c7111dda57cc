"""The shipped Prometheus configuration: valid for promtool, every rule unit-tested, and
every metric name it uses served by the app (default prefix ``tamma_``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tamma_metrics import catalogue

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = sorted((DEPLOY / "rules").glob("*.yml"))
TESTS = sorted((DEPLOY / "tests").glob("*.yml"))
TOKEN_PATH = "/etc/prometheus/tamma.token"


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: run scripts/bootstrap.sh (Debian package prometheus)"
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_files_are_there():
    assert (DEPLOY / "prometheus.yml").is_file()
    assert [p.name for p in RULES] == ["tamma-alerts.yml", "tamma-recording.yml"]
    assert [p.name for p in TESTS] == ["alerts.yml", "recording.yml"]


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
    assert "SUCCESS: 2 rule files found" in done.stdout
    assert done.stdout.count("SUCCESS: 7 rules found") == 2


def test_promtool_check_rules():
    done = promtool("check", "rules", *[str(p) for p in RULES])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS: 7 rules found") == 2


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


def _records() -> list[str]:
    text = (DEPLOY / "rules" / "tamma-recording.yml").read_text()
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


def test_every_recording_rule_is_tested_with_values():
    text = (DEPLOY / "tests" / "recording.yml").read_text()
    records = _records()
    assert len(records) == 7
    for record in records:
        checked = re.findall(
            rf"- expr: {re.escape(record)}\n.*\n\s+exp_samples:\n\s+- labels: '{re.escape(record)}",
            text,
        )
        assert checked, record


def test_the_grafana_dashboard_queries_known_series(tmp_path):
    dashboard = json.loads((DEPLOY.parent / "grafana" / "tamma-overview.json").read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels) == 12
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    recorded = set(_records())
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
    assert used_records == recorded  # every recording rule has a panel
    # promtool has no expression check: wrap each query in a rule, which it parses.
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        rules += [f"      - record: dashboard:check:{i}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(rules) + "\n")
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout
