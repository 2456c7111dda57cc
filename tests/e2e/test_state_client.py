"""The TypeScript client (clients/typescript) against the state API on real gunicorn workers.

A deterministic scenario of 30 issues with their lifecycles, pull requests, approvals,
escalations and two loops is replayed by ``clients/typescript/examples/scenario.mjs``
under Node: every observation shuffled with a fixed seed, about a fifth of them sent twice,
from 3 concurrent senders in batches of 10, some issues held back until the server has
answered ``not_found`` for a pull request or approval naming them (so the client must
retry those), and every 7th answer lost after the server committed (so the client sends
that batch again). Afterwards the rows equal the scenario's final state, each row was
created exactly once, and /metrics and the velocity report say what the rows say, exactly.
A second test checks what the client must not retry (401, 403, 413, a whole-request 400,
a rejected item) and that a not_found item is resent ``retries`` times, then returned.
"""

from __future__ import annotations

import collections
import json
import random
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.servers import ROOT, Gunicorn, Site, postgres
from tests.servers import require
from tests.utils import parse

CLIENT = ROOT / "clients" / "typescript"
SCRIPT = CLIENT / "examples" / "scenario.mjs"
SEED = 20261205
TERMINAL = ("succeeded", "failed", "timed_out")
OUTCOME = {"succeeded": "success", "failed": "failure", "timed_out": "timeout"}
FINAL_STATUSES = (
    ["succeeded"] * 9
    + ["failed"] * 5
    + ["timed_out"] * 3
    + ["cancelled"] * 3
    + ["queued"] * 4
    + ["in_progress"] * 3
    + ["awaiting_approval"] * 3
)
REPOSITORIES = [("github", "acme/shop"), ("gitlab", "acme/api")]
PROVIDERS = ["anthropic", "openai", "google", "mistral"]
ISSUE_TYPES = ["feature", "bug", "refactor", "test"]
PRIORITIES = ["low", "medium", "high", "critical"]
MINUTE = timedelta(minutes=1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def e2e_site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The site on a SQLite file, then on a private PostgreSQL (the production database):
    the whole module runs on each."""
    root = tmp_path_factory.mktemp(f"site-{request.param}")
    if request.param == "sqlite":
        yield Site.create(root)
        return
    with postgres() as database:
        yield Site.create(root, DATABASE_URL=database.url)


def iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass
class Scenario:
    """Observations of Tamma's work as it happened, and the state they leave."""

    issues: list[dict] = field(default_factory=list)
    pull_requests: list[dict] = field(default_factory=list)
    approvals: list[dict] = field(default_factory=list)
    escalations: list[dict] = field(default_factory=list)
    heartbeats: list[dict] = field(default_factory=list)
    late_issues: list[str] = field(default_factory=list)
    # The final state: issue key -> status, (platform, number) -> status, and so on.
    issue_status: dict[str, str] = field(default_factory=dict)
    pr_status: dict[str, str] = field(default_factory=dict)
    approval_status: dict[str, str] = field(default_factory=dict)
    escalation_issue: dict[str, str | None] = field(default_factory=dict)
    loop_status: dict[str, str] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "seed": SEED,
            "duplicate_share": 0.2,
            "senders": 3,
            "batch_size": 10,
            "lose_every": 7,
            "issues": self.issues,
            "pull_requests": self.pull_requests,
            "approvals": self.approvals,
            "escalations": self.escalations,
            "heartbeats": self.heartbeats,
            "late_issues": self.late_issues,
        }

    def pull_request(
        self,
        on_issue: dict,
        n: int,
        opened: datetime,
        end: str | None = None,
        ended: datetime | None = None,
    ) -> None:
        """A pull request opened at ``opened``, then ``end`` (merged, closed) at ``ended``."""
        platform = on_issue["platform"]
        number = 1 + sum(key.startswith(f"{platform}!") for key in self.pr_status)
        pr = {
            **on_issue,
            "number": number,
            "actor": "user" if n % 4 == 0 else "system",
            "merge_strategy": ["squash", "merge", "rebase"][n % 3],
            "created_at": iso(opened),
        }
        self.pull_requests.append({**pr, "status": "open", "observed_at": iso(opened)})
        if end:
            assert ended is not None
            last = {**pr, "status": end, "observed_at": iso(ended)}
            if end == "merged":
                last["merged_at"] = iso(ended)
            self.pull_requests.append(last)
        self.pr_status[f"{platform}!{number}"] = end or "open"

    def approval(
        self, on_issue: dict, n: int, name: str, kind: str, asked: datetime, end: str | None
    ) -> None:
        """An approval requested at ``asked``, decided ``end`` 30 minutes later (or not)."""
        item = {
            **on_issue,
            "external_id": name,
            "approval_type": kind,
            "priority": PRIORITIES[n % 4],
            "requested_at": iso(asked),
        }
        self.approvals.append({**item, "status": "pending", "observed_at": iso(asked)})
        if end:
            decided = iso(asked + 30 * MINUTE)
            self.approvals.append(
                {**item, "status": end, "decided_at": decided, "observed_at": decided}
            )
        self.approval_status[f"{on_issue['issue_external_id']}/{name}"] = end or "pending"


def lifecycle(final: str, n: int) -> list[str]:
    """The statuses an issue went through to reach ``final``."""
    if final == "queued":
        return ["queued"]
    if final == "cancelled" and n % 2:
        return ["queued", "cancelled"]  # cancelled before it started
    path = ["queued", "in_progress"]
    if final == "awaiting_approval" or (final == "succeeded" and n % 2):
        path.append("awaiting_approval")
    return path if final in path else [*path, final]


def build_scenario(now: datetime) -> Scenario:
    """30 issues over the last three days (all in the past, all in velocity's window)."""
    rng = random.Random(SEED)
    finals = FINAL_STATUSES[:]
    rng.shuffle(finals)
    s = Scenario()
    base = now.replace(microsecond=0) - timedelta(days=3)
    for n, final in enumerate(finals):
        platform, repository = REPOSITORIES[n % 2]
        external_id = str(1000 + n)
        key = f"{platform}|{repository}|{external_id}"
        s.issue_status[key] = final
        t0 = base + n * 40 * MINUTE
        at = {
            "queued": t0,
            "in_progress": t0 + 10 * MINUTE,
            "awaiting_approval": t0 + 30 * MINUTE,
        }
        issue = {
            "platform": platform,
            "repository": repository,
            "external_id": external_id,
            "issue_type": ISSUE_TYPES[n % 4],
            "provider": PROVIDERS[n % 4],
            "complexity": ["low", "medium", "high"][n % 3],
            "priority": PRIORITIES[n % 4],
            "title": f"Issue {n}",
            "created_at": iso(t0),
        }
        path = lifecycle(final, n)
        for status in path:
            observed = at.get(status, t0 + 120 * MINUTE)
            item = {**issue, "status": status, "observed_at": iso(observed)}
            if status != "queued":  # the times known when this state was seen
                item["started_at"] = iso(at["in_progress"] if "in_progress" in path else observed)
            if status in (*TERMINAL, "cancelled"):
                item["completed_at"] = iso(observed)
            s.issues.append(item)
        on_issue = {
            "platform": platform,
            "repository": repository,
            "issue_external_id": external_id,
        }

        if final == "succeeded":
            if n % 3 == 0:  # a first attempt closed, then one merged
                s.pull_request(on_issue, n, t0 + 20 * MINUTE, "closed", t0 + 35 * MINUTE)
            s.pull_request(on_issue, n, t0 + 40 * MINUTE, "merged", t0 + 100 * MINUTE)
        elif final == "failed":
            s.pull_request(on_issue, n, t0 + 40 * MINUTE, "closed", t0 + 100 * MINUTE)
        elif final in ("awaiting_approval", "in_progress") and n % 2 == 0:
            s.pull_request(on_issue, n, t0 + 40 * MINUTE)  # still open

        if "awaiting_approval" in path:
            decision = None if final == "awaiting_approval" else "approved"
            s.approval(on_issue, n, "merge-1", "merge", at["awaiting_approval"], decision)
        if final == "failed" and n % 2:
            s.approval(on_issue, n, "review-1", "code_review", t0 + 15 * MINUTE, "rejected")
        if final == "in_progress":
            s.approval(on_issue, n, "plan-1", "plan", t0 + 12 * MINUTE, None)

        if final in ("failed", "timed_out"):
            name = f"esc-{external_id}"
            s.escalations.append(
                {
                    **on_issue,
                    "external_id": name,
                    "escalation_type": "test_failure" if final == "failed" else "blocked",
                    "severity": ["medium", "high"][n % 2],
                    "component": "worker",
                    "reason": "tests_red" if final == "failed" else "no_progress",
                    "created_at": iso(t0 + 110 * MINUTE),
                    "observed_at": iso(t0 + 110 * MINUTE),
                }
            )
            s.escalation_issue[name] = external_id
    for k, name in enumerate(("esc-budget-1", "esc-safety-1")):  # about no issue
        moment = base + (10 + k) * timedelta(hours=1)
        s.escalations.append(
            {
                "external_id": name,
                "escalation_type": ["budget", "safety"][k],
                "severity": "critical",
                "component": "orchestrator",
                "reason": ["budget_exceeded", "unsafe_command"][k],
                "created_at": iso(moment),
                "observed_at": iso(moment),
            }
        )
        s.escalation_issue[name] = None
    # Two loops, a heartbeat 90 s and 20 s ago each: one still running, one stopped.
    for name, mode, last in (
        ("orchestrator-1", "orchestrator", "running"),
        ("worker-1", "worker", "stopped"),
    ):
        for ago, status in ((90, "running"), (20, last)):
            s.heartbeats.append(
                {
                    "name": name,
                    "mode": mode,
                    "environment": "production",
                    "status": status,
                    "observed_at": iso(now - timedelta(seconds=ago)),
                }
            )
        s.loop_status[name] = last
    # Issues held back until a dependant item was answered not_found: the first three
    # with both a pull request and an approval.
    with_both = {pr["issue_external_id"] for pr in s.pull_requests} & {
        a["issue_external_id"] for a in s.approvals
    }
    s.late_issues = [key for key in s.issue_status if key.rsplit("|", 1)[1] in with_both][:3]
    return s


def rows(site: Site, query: str) -> list[str]:
    """The ``line`` of each row of ``query``, sorted: the whole table compared at once."""
    joined = (
        "string_agg(line, chr(10))"
        if site.env["DATABASE_URL"].startswith("postgres")
        else "group_concat(line, char(10))"
    )
    text = site.sql(f"SELECT COALESCE({joined}, '') FROM ({query}) AS q")
    return sorted(text.split("\n")) if text else []


def lines(state: dict[str, str | None]) -> list[str]:
    return sorted(f"{key}={value or '-'}" for key, value in state.items())


def replay(scenario: Scenario, server: Gunicorn, token: str, tmp_path: Path) -> dict[str, Any]:
    node = require("node")
    if not (CLIENT / "dist" / "index.js").exists():
        pytest.fail("clients/typescript/dist is missing: run `make bootstrap`")
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps(scenario.payload()))
    done = subprocess.run(
        [node, str(SCRIPT), str(scenario_file)],
        cwd=CLIENT,
        env={"PATH": "/usr/bin:/bin", "TAMMA_URL": server.url(""), "TAMMA_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"node failed:\n{done.stderr}\n{server.tail()}"
    return json.loads(done.stdout)


def test_typescript_client_replays_a_scenario_exactly(
    e2e_site: Site, gunicorn_server: Gunicorn, tmp_path: Path
) -> None:
    scenario = build_scenario(datetime.now(UTC))
    token = e2e_site.token("tamma", "orchestrator")
    summary = replay(scenario, gunicorn_server, token, tmp_path)

    # Every item answered, in place (its key is the item's); none rejected, in conflict
    # or left not_found. The client retried the items that named a held-back issue until
    # it was there, and the batches whose answer was lost.
    assert summary.get("failures") is None, summary["failures"]
    assert summary["misplaced"] == 0
    assert sum(seen.get("not_found", 0) for seen in summary["seen"].values()) > 0, summary
    assert summary["lost"] > 0, summary
    rows_of = {
        "issues": len(scenario.issue_status),
        "pull_requests": len(scenario.pr_status),
        "approvals": len(scenario.approval_status),
        "escalations": len(scenario.escalation_issue),
        "heartbeats": len(scenario.loop_status),
    }
    observations = {kind: len(getattr(scenario, kind)) for kind in rows_of}
    assert sum(summary["sent"].values()) > sum(observations.values())  # some sent twice
    for kind, created in rows_of.items():
        final = summary["final"][kind]
        assert sum(final.values()) == summary["sent"][kind] >= observations[kind], (kind, summary)
        # Each row created exactly once over every answer the server gave (lost ones
        # included), whatever the order, the duplicates, the resends and the senders.
        assert summary["seen"][kind].get("created") == created, (kind, summary["seen"])

    # The rows are the scenario's final state, row by row.
    site = e2e_site
    assert lines(scenario.issue_status) == rows(
        site,
        "SELECT platform || '|' || repository || '|' || external_id || '=' || status AS line "
        "FROM tamma_metrics_issue",
    )
    assert lines(scenario.pr_status) == rows(
        site,
        "SELECT platform || '!' || number || '=' || status AS line FROM tamma_metrics_pullrequest",
    )
    assert lines(scenario.approval_status) == rows(
        site,
        "SELECT i.external_id || '/' || a.external_id || '=' || a.status AS line "
        "FROM tamma_metrics_approval a JOIN tamma_metrics_issue i ON i.id = a.issue_id",
    )
    assert lines(scenario.escalation_issue) == rows(
        site,
        "SELECT e.external_id || '=' || COALESCE(i.external_id, '-') AS line "
        "FROM tamma_metrics_escalation e LEFT JOIN tamma_metrics_issue i ON i.id = e.issue_id",
    )
    assert lines(scenario.loop_status) == rows(
        site, "SELECT name || '=' || status AS line FROM tamma_metrics_autonomousloop"
    )

    def count(table: str, where: str = "TRUE") -> int:
        return site.sql(f"SELECT COUNT(*) FROM tamma_metrics_{table} WHERE {where}")

    by_status = collections.Counter(scenario.issue_status.values())
    for status, n in by_status.items():
        assert count("issue", f"status = '{status}'") == n, status
    processed = {status: count("issue", f"status = '{status}'") for status in TERMINAL}
    pr_rows = count("pullrequest")
    merged_rows = count("pullrequest", "status = 'merged'")
    pending_rows = count("approval", "status = 'pending'")
    decided_rows = count("approval", "status != 'pending'")
    escalation_rows = count("escalation")
    queued_rows = count("issue", "status = 'queued'")
    running_loops = count("autonomousloop", "status = 'running'")
    assert (sum(processed.values()), pr_rows, merged_rows) == (17, len(scenario.pr_status), 9)
    assert (pending_rows, escalation_rows, queued_rows, running_loops) == (
        collections.Counter(scenario.approval_status.values())["pending"],
        len(scenario.escalation_issue),
        4,
        1,
    )

    # /metrics says what the rows say, exactly.
    answer = gunicorn_server.get("/metrics", e2e_site.token("prom", "prometheus"))
    assert answer.status == 200, answer.text[:500]
    samples = parse(answer.text)
    for status, n in processed.items():
        assert samples.total("tamma_issues_processed_total", outcome=OUTCOME[status]) == n, status
    assert samples.total("tamma_issues_processed_total") == sum(processed.values())
    assert samples.total("tamma_issue_completion_duration_seconds_count") == sum(processed.values())
    assert samples.total("tamma_prs_created_total") == pr_rows
    assert samples.total("tamma_prs_merged_total") == merged_rows
    assert samples.total("tamma_escalations_total") == escalation_rows
    assert samples.total("tamma_approval_wait_duration_seconds_count") == decided_rows
    assert samples.total("tamma_pending_approvals") == pending_rows
    assert samples.total("tamma_queue_depth") == queued_rows
    assert samples.total("tamma_active_autonomous_loops") == running_loops

    # So does the velocity report over the last 30 days.
    answer = gunicorn_server.get(
        "/api/v1/velocity?days=30", e2e_site.token("pm", "product-manager")
    )
    assert answer.status == 200, answer.text[:500]
    report = json.loads(answer.body)
    totals = report["totals"]
    assert totals["completed"] == sum(processed.values())
    assert totals["succeeded"] == processed["succeeded"]
    assert totals["prs_opened"] == pr_rows
    assert totals["prs_merged"] == merged_rows
    per_day = report["completed_per_day"]
    for status, n in processed.items():
        assert sum(day[OUTCOME[status]] for day in per_day) == n, status
    assert report["autonomy"]["finished"] == sum(processed.values())
    assert sum(row["count"] for row in report["escalations"]) == escalation_rows


PROBES = """
import { TammaMetrics, TammaMetricsError } from "CLIENT_URL";

const [baseUrl, orchestrator, worker] = process.argv.slice(2);
let requests = 0;
const counting = (url, init) => (requests++, fetch(url, init));
const loop = (mode) => ({
  name: "probe", mode, environment: "development", status: "running", observed_at: new Date(),
});
let deep = "x";
for (let i = 0; i < 20; i++) deep = [deep];
const pr = {
  platform: "github", repository: "acme/none", number: 1, issue_external_id: "404",
  status: "open", observed_at: new Date().toISOString(),
};

async function probe(name, token, call, options = {}) {
  requests = 0;
  const client = new TammaMetrics({ baseUrl, token, fetch: counting, ...options });
  try {
    const results = await call(client);
    return { name, requests, results };
  } catch (error) {
    if (!(error instanceof TammaMetricsError)) throw error;
    return { name, requests, status: error.status, body: error.body };
  }
}

console.log(JSON.stringify([
  await probe("bad token", "tmm_not_a_token", (c) => c.heartbeat([loop("cli")])),
  await probe("no change_domain", worker, (c) => c.heartbeat([loop("cli")])),
  await probe("over the batch limit", orchestrator,
    (c) => c.heartbeat(Array.from({ length: 501 }, () => loop("bogus"))), { batchSize: 501 }),
  await probe("nested too deep", orchestrator, (c) => c.heartbeat([{ ...loop("cli"), deep }])),
  await probe("rejected", orchestrator, (c) => c.heartbeat([loop("bogus")])),
  await probe("issue never sent", orchestrator, (c) => c.pullRequests([pr]), { retries: 2 }),
]));
"""


def test_typescript_client_surfaces_what_retrying_cannot_fix(
    e2e_site: Site, gunicorn_server: Gunicorn, tmp_path: Path
) -> None:
    """401, 403, 413 and a whole-request 400 are thrown after one request; a rejected
    item is returned, not retried; a not_found item is resent ``retries`` times, then
    returned. Nothing of it writes a row."""
    node = require("node")
    if not (CLIENT / "dist" / "index.js").exists():
        pytest.fail("clients/typescript/dist is missing: run `make bootstrap`")
    script = tmp_path / "probes.mjs"
    script.write_text(PROBES.replace("CLIENT_URL", (CLIENT / "dist" / "index.js").as_uri()))
    loops_before = e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_autonomousloop")
    tokens = [e2e_site.token("tamma", "orchestrator"), e2e_site.token("worker-1", "worker")]
    done = subprocess.run(
        [node, str(script), gunicorn_server.url(""), *tokens],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    probes = {probe.pop("name"): probe for probe in json.loads(done.stdout)}

    for name, status in (
        ("bad token", 401),
        ("no change_domain", 403),
        ("over the batch limit", 413),
        ("nested too deep", 400),
    ):
        assert (probes[name]["status"], probes[name]["requests"]) == (status, 1), (name, probes)
    rejected = probes["rejected"]
    assert rejected["requests"] == 1
    [result] = rejected["results"]
    assert (result["index"], result["status"], list(result["errors"])) == (0, "rejected", ["mode"])
    never = probes["issue never sent"]
    assert never["requests"] == 3  # the first request and 2 resends
    [result] = never["results"]
    assert (result["index"], result["status"]) == (0, "not_found")
    assert "issue_external_id" in result["errors"]
    assert e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_autonomousloop") == loops_before
