// Replays a scenario of observations through the client, the way several Tamma
// processes would deliver them: shuffled, some twice, from concurrent senders, pull
// requests and approvals possibly before their issue. tests/e2e/test_state_client.py
// writes the scenario and checks the database and /metrics against it.
//
//   npm run build
//   TAMMA_URL=http://127.0.0.1:8000 TAMMA_TOKEN=tmm_... node examples/scenario.mjs scenario.json
//
// scenario.json: {"seed", "duplicate_share", "senders", "batch_size", "lose_every",
// "issues", "pull_requests", "approvals", "escalations", "heartbeats", "late_issues"}.
// Each list holds items as docs/state.md describes them. The observations of the issues
// named in "late_issues" ("platform|repository|external_id") are held back until the
// server has answered not_found for an item naming one: the client has to retry those.
// The answer of every "lose_every"-th request is lost, as if the connection broke after
// the server committed: the client sends the batch again.
// Prints a JSON summary of the answers on stdout.
import { readFileSync } from "node:fs";

import { TammaMetrics } from "../dist/index.js";

const METHODS = {
  issues: "issues",
  pull_requests: "pullRequests",
  approvals: "approvals",
  escalations: "escalations",
  heartbeats: "heartbeat",
};
const KINDS = Object.keys(METHODS);

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { TAMMA_URL: baseUrl, TAMMA_TOKEN: token } = process.env;
if (!baseUrl || !token) throw new Error("set TAMMA_URL and TAMMA_TOKEN");

// mulberry32: a seeded generator, so every run sends the same sequence.
function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = generator(scenario.seed);

// Every observation once, ~duplicate_share of them twice; every other one with its
// observed_at as a Date (the client serialises it), then shuffled (Fisher-Yates).
const sends = [];
for (const kind of KINDS) {
  for (const [n, item] of (scenario[kind] ?? []).entries()) {
    const copy = n % 2 ? { ...item, observed_at: new Date(item.observed_at) } : item;
    sends.push({ kind, item: copy });
    if (random() < scenario.duplicate_share) sends.push({ kind, item: copy });
  }
}
for (let i = sends.length - 1; i > 0; i--) {
  const j = Math.floor(random() * (i + 1));
  [sends[i], sends[j]] = [sends[j], sends[i]];
}

const late = new Set(scenario.late_issues ?? []);
const isLate = ({ kind, item }) =>
  kind === "issues" && late.has(`${item.platform}|${item.repository}|${item.external_id}`);

// Every item answer the server gave, per kind, retries and lost answers included, and
// the HTTP statuses: seen by wrapping fetch, as the client's callers only get the final
// answers.
const KIND_OF_PATH = Object.fromEntries(
  ["issues", "pull-requests", "approvals", "escalations", "loops/heartbeat"].map((p, i) => [`/api/v1/${p}`, KINDS[i]]),
);
const seen = Object.fromEntries(KINDS.map((kind) => [kind, {}]));
const http = {};
let requests = 0;
let lost = 0;
let notFoundSeen;
const firstNotFound = new Promise((resolve) => (notFoundSeen = resolve));
// Never wait forever: the summary then says no not_found was seen.
const fallback = setTimeout(notFoundSeen, 20_000);
if (late.size === 0) notFoundSeen();

async function countingFetch(url, init) {
  const number = ++requests;
  const response = await fetch(url, init);
  http[response.status] = (http[response.status] ?? 0) + 1;
  const body = await response.clone().json().catch(() => undefined);
  const counts = seen[KIND_OF_PATH[new URL(url).pathname]];
  for (const result of body?.results ?? []) {
    counts[result.status] = (counts[result.status] ?? 0) + 1;
    if (result.status === "not_found") notFoundSeen();
  }
  if (scenario.lose_every && number % scenario.lose_every === 0) {
    lost++;
    throw new TypeError("fetch failed (the answer was lost)");
  }
  return response;
}

// Each sender is a client of its own sending its share of every kind concurrently;
// the batches of one call go one after another.
async function sender(share) {
  const client = new TammaMetrics({ baseUrl, token, batchSize: scenario.batch_size, fetch: countingFetch });
  const calls = KINDS.map(async (kind) => {
    const items = share.filter((s) => s.kind === kind && !isLate(s)).map((s) => s.item);
    return { kind, items, results: await client[METHODS[kind]](items) };
  });
  const held = share.filter(isLate).map((s) => s.item);
  calls.push(firstNotFound.then(async () => ({ kind: "issues", items: held, results: await client.issues(held) })));
  return Promise.all(calls);
}

const started = Date.now();
const shares = Array.from({ length: scenario.senders }, (_, n) => sends.filter((_, i) => i % scenario.senders === n));
const answers = (await Promise.all(shares.map(sender))).flat();
clearTimeout(fallback);

const summary = { sent: {}, final: {}, seen, http, requests, lost, misplaced: 0, elapsed_ms: Date.now() - started };
for (const kind of KINDS) {
  summary.sent[kind] = 0;
  summary.final[kind] = {};
}
for (const { kind, items, results } of answers) {
  summary.sent[kind] += items.length;
  for (const [i, result] of results.entries()) {
    // Each answer must be the one of the item at the same place in the call.
    const key = Object.entries(result.key ?? {});
    const same = key.length > 0 && key.every(([field, value]) => String(items[i][field]) === String(value));
    if (result.index !== i || results.length !== items.length || !same) summary.misplaced++;
    summary.final[kind][result.status] = (summary.final[kind][result.status] ?? 0) + 1;
    if (!["created", "updated", "unchanged", "stale"].includes(result.status)) {
      (summary.failures ??= []).push({ kind, item: items[i], result });
    }
  }
}
console.log(JSON.stringify(summary));
