"""Dashboards proven: every PromQL expression of deploy/grafana/ and deploy/prometheus/rules/
names only served series, and a real Prometheus evaluates each one with data.

1. Without servers: every Grafana panel target, Grafana template variable and rule
   expression is collected and tokenized; each metric name it uses must be served by the
   app (a catalogue family's sample name, a runtime pattern such as ``process_*``), be one
   of Prometheus's own series (``up``, ``ALERTS``) or a recording rule's ``record`` name.
2. End to end: gunicorn (3 workers) serves the demo site, a Prometheus scrapes it every
   second and evaluates the shipped rule files every second; after two rounds of demo
   traffic every expression is queried through the HTTP API and must succeed with data.
   Alert conditions that are false on demo traffic are checked per case (see ALERTS).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tamma_metrics import catalogue
from tests.e2e.servers import ROOT, Gunicorn, Prometheus, ScrapeJob, Site
from tests.servers import http_get

GRAFANA = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
# At least this many expressions per file, so that no check below passes vacuously.
AT_LEAST = {
    "tamma-overview.json": 14,
    "tamma-delivery.json": 28,
    "tamma-alerts.yml": 7,
    "tamma-delivery.yml": 7,
    "tamma-recording.yml": 7,
}

# Series that Prometheus itself writes: per scrape target, and per alerting rule.
PROMETHEUS_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_post_metric_relabeling",
    "scrape_samples_scraped",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
}

# PromQL of Prometheus 2.42. Functions are case-sensitive; aggregations and keywords not.
FUNCTIONS = {
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "end",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
}
AGGREGATIONS = {
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}

# Grafana's built-in variables, as an instant query over the demo's minutes of data
# reads them: a 1m window holds about 60 samples at the 1 s scrape interval.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1m",
    "__interval_ms": "60000",
    "__range_ms": "60000",
    "__range_s": "60",
}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z0-9]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],@:])
    """,
    re.VERBOSE,
)
_CLOSERS = {"(": ")", "{": "}", "[": "]"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int


def tokenize(expr: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if not match:
            raise ValueError(f"cannot read {expr[position : position + 20]!r} in {expr!r}")
        if match.lastgroup not in ("space", "comment"):
            tokens.append(Token(match.lastgroup, match.group(), match.start(), match.end()))
        position = match.end()
    return tokens


def _matching(tokens: list[Token], opener: int) -> int:
    """Index of the bracket that closes ``tokens[opener]``."""
    stack = []
    for index in range(opener, len(tokens)):
        text = tokens[index].text if tokens[index].kind == "op" else ""
        if text in _CLOSERS:
            stack.append(_CLOSERS[text])
        elif text in _CLOSERS.values():
            if not stack or stack.pop() != text:
                break
            if not stack:
                return index
    raise ValueError(f"unbalanced {tokens[opener].text!r} at {tokens[opener].start}")


def _balanced(tokens: list[Token]) -> bool:
    stack = []
    for token in tokens:
        if token.kind == "op" and token.text in _CLOSERS:
            stack.append(_CLOSERS[token.text])
        elif (
            token.kind == "op"
            and token.text in _CLOSERS.values()
            and (not stack or stack.pop() != token.text)
        ):
            return False
    return not stack


def referenced_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, problems) of a PromQL expression.

    A name is an identifier that is not a function or aggregation (followed by ``(``),
    keyword, or label name (inside ``{...}``, or the list after ``by``, ``without``,
    ``on``, ``ignoring``, ``group_left``, ``group_right``), or the value of a
    ``__name__="..."`` matcher. Strings, numbers, durations (inside ``[...]``) and Grafana
    variables are no names. Problems: unknown functions, ``__name__`` regular expressions.
    """
    tokens = tokenize(expr)
    names: set[str] = set()
    problems: set[str] = set()
    if not _balanced(tokens):
        return names, {"unbalanced brackets"}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1].text if index + 1 < len(tokens) else ""
        if token.text == "{" and token.kind == "op":
            close = _matching(tokens, index)
            inside = tokens[index + 1 : close]
            for position, matcher in enumerate(inside[:-2]):
                if matcher.text == "__name__":
                    operator, value = inside[position + 1], inside[position + 2]
                    if operator.text == "=" and value.kind == "string":
                        names.add(value.text[1:-1])
                    else:
                        problems.add(f"__name__{operator.text}{value.text}")
            index = close + 1
            continue
        if token.text == "[" and token.kind == "op":
            index = _matching(tokens, index) + 1
            continue
        if token.kind == "ident":
            word = token.text.lower()
            if word in GROUPING and following == "(":
                index = _matching(tokens, index + 1) + 1
                continue
            if word in GROUPING or word in KEYWORDS:
                pass
            elif word in AGGREGATIONS and following.lower() in ("by", "without"):
                pass  # sum by (label) (...)
            elif following == "(":
                if token.text not in FUNCTIONS and word not in AGGREGATIONS:
                    problems.add(f"unknown function {token.text}()")
            else:
                names.add(token.text)
        index += 1
    return names, problems


def _top_level(tokens: list[Token]) -> Iterator[tuple[int, Token]]:
    """The tokens outside any bracket."""
    depth = 0
    for index, token in enumerate(tokens):
        if token.kind == "op" and token.text in _CLOSERS.values():
            depth -= 1
        elif depth == 0:
            yield index, token
        if token.kind == "op" and token.text in _CLOSERS:
            depth += 1


def _without_modifiers(expr: str) -> str:
    """``expr`` without leading ``bool``, ``on (...)``, ``group_left (...)`` and the like."""
    tokens = tokenize(expr)
    index = 0
    while index < len(tokens) and tokens[index].text.lower() in GROUPING | {"bool"}:
        has_list = index + 1 < len(tokens) and tokens[index + 1].text == "("
        index = _matching(tokens, index + 1) + 1 if has_list else index + 1
    return expr[tokens[index].start :] if index < len(tokens) else ""


def _is_scalar_literal(expr: str) -> bool:
    return all(t.kind == "number" or t.text in "+-*/%^()" for t in tokenize(expr))


def condition_operands(expr: str) -> list[str]:
    """The operands of an alert condition, without its thresholds.

    ``A > 0.2 and B >= 10`` gives ``[A, B]``: split at the top-level ``and``, then cut
    each part at its last top-level comparison and keep the side that is not a number
    (both sides when neither is). ``or`` and ``unless`` stay: one side of them may be
    empty by design. Comparisons inside brackets (``max(x > 0)``) are filters, kept.
    """
    tokens = tokenize(expr)
    cuts = [t for _, t in _top_level(tokens) if t.kind == "ident" and t.text.lower() == "and"]
    starts = [0, *(t.end for t in cuts)]
    ends = [*(t.start for t in cuts), len(expr)]
    operands = []
    for start, end in zip(starts, ends, strict=True):
        part = _without_modifiers(expr[start:end]).strip()
        top = [t for _, t in _top_level(tokenize(part))]
        compared = [t for t in top if t.text in COMPARISONS]
        # ``x > 1 or y`` is ``(x > 1) or y``: a threshold under or/unless stays.
        if not compared or any(
            t.kind == "ident" and t.text.lower() in ("or", "unless") for t in top
        ):
            operands.append(part)
            continue
        left = part[: compared[-1].start].strip()
        right = _without_modifiers(part[compared[-1].end :]).strip()
        operands += condition_operands(left)
        if not _is_scalar_literal(right):
            operands += condition_operands(right)
    return operands


_MATCHER_VARIABLE = re.compile(
    r"""(?P<label>\w+)\s*(?P<op>=~|=)\s*"(?P<value>\$\{?(?P<a>\w+)(?::\w+)?\}?|\[\[(?P<b>\w+)\]\])\""""
)
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str) -> tuple[str, list[str]]:
    """``expr`` as Prometheus can run it, and the substitutions made.

    Grafana's interval and range variables become the durations of GRAFANA_BUILTINS; a
    dashboard variable in a label matcher (``job="$job"``, ``job=~"$job"``) becomes
    ``job=~".*"``, every value. A variable anywhere else has no safe stand-in: ValueError.
    """
    done: list[str] = []

    def matcher(match: re.Match) -> str:
        name = match["a"] or match["b"]
        if name in GRAFANA_BUILTINS:
            return match.group()
        done.append(f'{match.group()} -> {match["label"]}=~".*"')
        return f'{match["label"]}=~".*"'

    expr = _MATCHER_VARIABLE.sub(matcher, expr)

    def builtin(match: re.Match) -> str:
        name = next(group for group in match.groups() if group)
        if name not in GRAFANA_BUILTINS:
            raise ValueError(f"no substitution for the Grafana variable {match.group()}")
        done.append(f"{match.group()} -> {GRAFANA_BUILTINS[name]}")
        return GRAFANA_BUILTINS[name]

    return _VARIABLE.sub(builtin, expr), done


@dataclass(frozen=True)
class Expression:
    file: str
    where: str  # panel and target, variable, or rule
    expr: str
    kind: str  # "panel", "variable", "record" or "alert"
    name: str = ""  # the rule's record or alert name
    evaluate: bool = True  # False for Grafana-only syntax such as label_values()

    def __str__(self) -> str:
        return f"{self.file} ({self.where}): {' '.join(self.expr.split())}"


def _grafana_targets(node: object, file: str, panel: str = "") -> Iterator[Expression]:
    if isinstance(node, dict):
        panel = str(node["title"]) if "targets" in node and "title" in node else panel
        if isinstance(node.get("expr"), str):
            where = f"panel {panel!r} target {node.get('refId', '?')}"
            yield Expression(file, where, node["expr"], "panel")
        for key, value in node.items():
            if key != "templating":  # variables: see _grafana_variables
                yield from _grafana_targets(value, file, panel)
    elif isinstance(node, list):
        for item in node:
            yield from _grafana_targets(item, file, panel)


# Grafana's Prometheus variable functions, which Prometheus cannot evaluate.
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((?P<args>.*)\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((?P<expr>.*)\)\s*$", re.S)
_NO_METRIC = re.compile(r"^\s*(label_names|metrics)\s*\(.*\)\s*$", re.S)


def _grafana_variables(dashboard: dict, file: str) -> Iterator[Expression]:
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":  # datasource, custom, interval, constant...
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        where = f"variable ${variable.get('name')}"
        if match := _LABEL_VALUES.match(query):
            # label_values(selector, label) or label_values(label): check the selector's
            # names; Grafana asks the series API, not the query API.
            args = match["args"]
            tokens = tokenize(args)
            commas = [t for _, t in _top_level(tokens) if t.text == ","]
            if commas:
                yield Expression(file, where, args[: commas[-1].start], "variable", evaluate=False)
        elif match := _QUERY_RESULT.match(query):
            yield Expression(file, where, match["expr"], "variable")
        elif not _NO_METRIC.match(query):
            yield Expression(file, where, query, "variable")


def grafana_expressions(path: Path) -> list[Expression]:
    dashboard = json.loads(path.read_text())
    return [*_grafana_targets(dashboard, path.name), *_grafana_variables(dashboard, path.name)]


def rule_expressions(path: Path) -> list[Expression]:
    found = []
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            where = f"group {group['name']} {kind} {rule[kind]}"
            found.append(Expression(path.name, where, rule["expr"], kind, rule[kind]))
    return found


def all_expressions() -> list[Expression]:
    return [
        *(e for path in GRAFANA for e in grafana_expressions(path)),
        *(e for path in RULE_FILES for e in rule_expressions(path)),
    ]


def recorded_names() -> set[str]:
    return {e.name for e in all_expressions() if e.kind == "record"}


def served(name: str) -> bool:
    """Whether the app, Prometheus or a recording rule writes series called ``name``."""
    samples = set()
    for family in catalogue.families():
        if family.kind is catalogue.Kind.HISTOGRAM:
            samples.update(family.full_name + s for s in ("_bucket", "_sum", "_count"))
        else:
            samples.add(family.full_name)  # counters' full names end in _total
    runtime = tuple(pattern.removesuffix("*") for pattern in catalogue.RUNTIME_PATTERNS)
    return (
        name in samples
        or name.startswith(runtime)
        or name in PROMETHEUS_SERIES
        or name in recorded_names()
    )


# ---------------------------------------------------------------------------------------
# Without servers


def test_the_name_reader_on_hard_cases():
    names = referenced_names(
        'sum by (provider, le) (rate(tamma_x_bucket{job=~"$job", le!="+Inf"}[$__rate_interval]'
        " offset 5m)) / on (provider) group_left (model) max without(instance) (tamma_y)"
        ' > bool 0.5 and {__name__="tamma_z", a="b"} unless absent(up) or vector(1)'
        " # a comment with tamma_comment"
    )
    assert names == ({"tamma_x_bucket", "tamma_y", "tamma_z", "up"}, set())
    assert referenced_names("SUM(foo) BY (bar)") == ({"foo"}, set())
    assert referenced_names("sum(rate(foo[5m])")[1] == {"unbalanced brackets"}
    assert referenced_names('rat(a{__name__=~"b.*"})')[1] == {
        "unknown function rat()",
        '__name__=~"b.*"',
    }
    assert substitute('rate(a{job="$job",x=~"${x:regex}"}[$__rate_interval])') == (
        'rate(a{job=~".*",x=~".*"}[1m])',
        ['job="$job" -> job=~".*"', 'x=~"${x:regex}" -> x=~".*"', "$__rate_interval -> 1m"],
    )
    with pytest.raises(ValueError, match=r"\$metric"):
        substitute("$metric")
    assert condition_operands("a > 0.2\n  and sum by (p) (b) >= 10") == ["a", "sum by (p) (b)"]
    assert condition_operands("time() - max(c > 0) > 4 * 3600") == ["time() - max(c > 0)"]
    assert condition_operands("(d or vector(0)) == bool 0 unless e") == [
        "(d or vector(0)) == bool 0 unless e"
    ]
    assert condition_operands("rate(f[5m]) > on (x) rate(g[5m])") == ["rate(f[5m])", "rate(g[5m])"]


def test_every_expression_names_only_served_series():
    expressions = all_expressions()
    per_file: dict[str, int] = {}
    for expression in expressions:
        per_file[expression.file] = per_file.get(expression.file, 0) + 1
    files = {p.name for p in [*GRAFANA, *RULE_FILES]}
    assert set(per_file) == files, f"files without any expression: {files - set(per_file)}"
    for file, minimum in AT_LEAST.items():
        assert per_file.get(file, 0) >= minimum, (file, per_file)
    print(f"\nexpressions per file: {per_file}")

    wrong = []
    for expression in expressions:
        try:
            names, problems = referenced_names(expression.expr)
        except ValueError as error:  # a character PromQL does not have
            names, problems = set(), {str(error)}
        unknown = sorted({n for n in names if not served(n)} | problems)
        if not names and not problems:
            unknown.append("(no metric name at all)")
        if unknown:
            wrong.append(f"{expression} -> {', '.join(unknown)}")
    assert not wrong, "names the app does not serve:\n" + "\n".join(wrong)


# ---------------------------------------------------------------------------------------
# End to end

# Every alerting rule, with its state on the demo traffic below and why. An alert's
# expression is a condition: when it does not hold, the query rightly returns nothing, so
# for every alert that is not "fires" the test also evaluates the condition's operands
# without their thresholds (condition_operands), and each of those must return data. The
# whole expression must run without error and be in the state listed ("either": not
# asserted). A new alert fails the test until it has a line here.
ALERTS = {
    # The target answers every scrape: up is 1, never 0.
    "TammaTargetDown": "quiet",
    # The demo's AI requests fail or time out 7% of the time (threshold 20%); per
    # provider at most about 7% with 10 requests or more.
    "TammaAIFailureRatioHigh": "quiet",
    # The demo's latencies are lognormal around 3.3 s (p95 about 15 s, threshold 60 s),
    # but provider "local" has only a handful of requests and its p95, read from wide
    # buckets, is about 50 s: too close to the threshold to assert either way.
    "TammaAILatencyP95High": "either",
    # About one processed issue in ten escalates (threshold one in four).
    "TammaEscalationRatioHigh": "quiet",
    # The second round of traffic processes issues: the queue drains.
    "TammaQueueNotDraining": "quiet",
    # seed_demo's pending approvals were requested days ago (threshold 4 h).
    "TammaApprovalPendingTooLong": "fires",
    # The database gauges work: collector up is 1, never 0.
    "TammaDatabaseCollectorDown": "quiet",
}


class RulesPrometheus(Prometheus):
    """Prometheus that also evaluates the shipped rule files, every ``interval``."""

    def __init__(self, root: Path, jobs: Iterable[ScrapeJob], rule_files: list[Path]) -> None:
        super().__init__(root, jobs, interval="1s")
        self.rule_files = rule_files

    def write_config(self) -> Path:
        config_file = super().write_config()
        config = json.loads(config_file.read_text())  # the base class writes JSON
        copies = self.root / "rules"
        copies.mkdir(exist_ok=True)
        config["rule_files"] = [str(shutil.copy(path, copies)) for path in self.rule_files]
        config["global"]["evaluation_interval"] = "1s"
        config_file.write_text(json.dumps(config, indent=2))
        return config_file

    def rules(self) -> list[dict]:
        answer = json.loads(http_get(f"{self.url}/api/v1/rules").body)
        assert answer["status"] == "success", answer
        return [rule for group in answer["data"]["groups"] for rule in group["rules"]]

    def run(self, expr: str) -> tuple[list[dict] | None, str]:
        """(result, "") or (None, the error) of an instant query."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        answer = http_get(url)
        try:
            payload = json.loads(answer.body)
        except ValueError:
            return None, f"HTTP {answer.status}: {answer.text[:200]}"
        if payload.get("status") != "success":
            return None, f"{payload.get('errorType')}: {payload.get('error')}"
        return payload["data"]["result"], ""


@pytest.fixture(scope="module")
def prometheus_server(
    tmp_path_factory: pytest.TempPathFactory, gunicorn_server: Gunicorn, scrape_token: str
) -> Iterator[RulesPrometheus]:
    jobs = [ScrapeJob("tamma", gunicorn_server.address, scrape_token)]
    root = tmp_path_factory.mktemp("prometheus")
    with RulesPrometheus(root, jobs, RULE_FILES) as prometheus:
        prometheus.wait_for('sum(up{job="tamma"})', 1)
        yield prometheus


def _processed(site: Site) -> int:
    return site.sql(
        "SELECT COUNT(*) FROM tamma_metrics_issue "
        "WHERE status IN ('succeeded', 'failed', 'timed_out')"
    )


def _traffic(site: Site, server: Gunicorn, prometheus: Prometheus, issues: int) -> None:
    """Demo issues up to ``issues`` plus health checks, then wait until scraped."""
    site.manage("seed_demo", "--issues", str(issues))
    for _ in range(10):
        assert server.get("/metrics/health").status == 200
    prometheus.wait_for('sum(tamma_issues_processed_total{job="tamma"})', _processed(site))


def _has_data(result: list[dict] | None) -> bool:
    """At least one sample that is a number (histogram_quantile of nothing gives NaN)."""
    return any(not math.isnan(float(series["value"][1])) for series in result or [])


def test_every_expression_returns_data_from_the_real_prometheus(
    e2e_site, gunicorn_server, prometheus_server
):
    started = time.monotonic()
    # Two rounds: a series first seen at its current value has no increase() in
    # Prometheus, so the ratios (whose denominators keep only increases above 0) have
    # data only once counters that were already scraped grow again.
    _traffic(e2e_site, gunicorn_server, prometheus_server, 150)
    _traffic(e2e_site, gunicorn_server, prometheus_server, 300)

    expressions = [e for e in all_expressions() if e.evaluate]
    assert {e.name for e in expressions if e.kind == "alert"} == set(ALERTS)
    rules = prometheus_server.rules()
    assert len(rules) == len([e for e in expressions if e.kind in ("record", "alert")])

    # What each query must give: data, except the alert conditions that are not "fires"
    # in ALERTS, whose operands must have data instead.
    checks: list[tuple[Expression, str, str]] = []  # (origin, query, "fires", "quiet"...)
    substitutions = []
    for expression in expressions:
        query, done = substitute(expression.expr)
        substitutions += [f"{expression}: {s}" for s in done]
        state = ALERTS[expression.name] if expression.kind == "alert" else "fires"
        checks.append((expression, query, state))
        if state != "fires":
            checks += [(expression, operand, "fires") for operand in condition_operands(query)]
    names = sorted({n for e in expressions for n in referenced_names(e.expr)[0]})
    present = f'count by (__name__) ({{__name__=~"{"|".join(names)}"}})'  # [a-z_:] only

    def failures() -> list[str]:
        problems = []
        for rule in prometheus_server.rules():
            if rule["health"] != "ok" or rule.get("lastError"):
                problems.append(f"rule {rule['name']}: {rule['health']} {rule.get('lastError')}")
            if rule["lastEvaluation"].startswith("0001-"):
                problems.append(f"rule {rule['name']}: not evaluated yet")
        result, error = prometheus_server.run(present)
        missing = set(names) - {series["metric"]["__name__"] for series in result or []}
        problems += [f"no series {name} in Prometheus {error}" for name in sorted(missing)]
        for origin, query, state in checks:
            result, error = prometheus_server.run(query)
            if error:
                problems.append(f"{origin} -> {error}")
            elif state == "fires" and not _has_data(result):
                shown = "" if query == origin.expr else f" (query: {' '.join(query.split())})"
                problems.append(f"{origin}{shown} -> no data")
            elif state == "quiet" and result:
                problems.append(f"{origin} -> fires on demo traffic, expected quiet: {result}")
        return problems

    # Recording rules evaluate every second on what was scraped: a few seconds at most.
    deadline = time.monotonic() + 30
    while (problems := failures()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not problems, "\n".join(problems)
    print(
        f"\n{len(checks)} queries of {len(expressions)} expressions, {len(names)} series, "
        f"all as expected after {time.monotonic() - started:.1f}s; Grafana substitutions: "
        + ("; ".join(substitutions) or "none")
    )
