/**
 * A small client for the tamma-metrics state API (docs/state.md) and events API
 * (docs/ingest.md). No dependencies: Node 18's fetch, AbortSignal and setTimeout.
 *
 * Each method splits its items into batches ({"items": [...]}), POSTs them one after
 * another and returns one answer per item, in input order. Field names are snake_case,
 * as on the wire; times may be Dates or ISO 8601 strings with a time zone.
 */

export type Timestamp = Date | string;
// Known values for autocompletion; other strings are accepted and folded by the server.
type Open<T extends string> = T | (string & {});

export type Platform = "github" | "gitlab" | "gitea" | "bitbucket" | "azure_devops";
export type Priority = "low" | "medium" | "high" | "critical";
export type IssueStatus =
  | "queued" | "in_progress" | "awaiting_approval"
  | "succeeded" | "failed" | "timed_out" | "cancelled";

interface Observed {
  /** When Tamma saw this state: the newest observation of a row wins. */
  observed_at: Timestamp;
}

export interface IssueItem extends Observed {
  platform: Platform;
  repository: string;
  external_id: string;
  issue_type: Open<"feature" | "bug" | "refactor" | "documentation" | "test" | "chore">;
  provider: Open<"anthropic" | "openai" | "google" | "azure_openai" | "aws_bedrock" | "mistral" | "local">;
  status: IssueStatus;
  complexity?: Open<"low" | "medium" | "high">;
  priority?: Priority;
  title?: string;
  created_at?: Timestamp;
  started_at?: Timestamp;
  completed_at?: Timestamp;
  /** What the AI providers charged for the work on this issue so far, in USD. */
  cost_usd?: number;
}

export interface PullRequestItem extends Observed {
  platform: Platform;
  repository: string;
  number: number;
  issue_external_id: string;
  status: "open" | "merged" | "closed";
  actor?: Open<"system" | "user">;
  /** Left out: unknown (never guessed). */
  merge_strategy?: Open<"merge" | "squash" | "rebase" | "unknown">;
  created_at?: Timestamp;
  merged_at?: Timestamp;
  /** The timeline: stage durations are counted from it when the pull request merges. */
  first_commit_at?: Timestamp;
  /** Out of draft; left out: ready when opened. */
  ready_at?: Timestamp;
  first_review_at?: Timestamp;
  approved_at?: Timestamp;
  closed_at?: Timestamp;
  review_rounds?: number;
  changes_requested?: number;
  additions?: number;
  deletions?: number;
  files_changed?: number;
  is_revert?: boolean;
}

export interface DeploymentItem extends Observed {
  platform: Platform;
  repository: string;
  external_id: string;
  status: "pending" | "in_progress" | "succeeded" | "failed" | "rolled_back";
  /** Default production; the team's own names are free-form. */
  environment?: Open<"production" | "staging">;
  /** The environment's tier; left out: production when the name is in PRODUCTION_ENVIRONMENTS. */
  tier?: "production" | "staging" | "testing" | "development" | "other";
  commit_sha?: string;
  started_at?: Timestamp;
  finished_at?: Timestamp;
  /** Numbers of the pull requests it shipped (same repository; they only grow). */
  pull_requests?: number[];
}

export interface IncidentItem extends Observed {
  platform: Platform;
  repository: string;
  external_id: string;
  severity: Open<"low" | "medium" | "high" | "critical">;
  status: "open" | "resolved";
  opened_at?: Timestamp;
  resolved_at?: Timestamp;
  /** The deployment that caused it; left out: the last production one before it opened. */
  deployment_external_id?: string;
}

export interface ApprovalItem extends Observed {
  platform: Platform;
  repository: string;
  issue_external_id: string;
  external_id: string;
  approval_type: Open<"plan" | "code_review" | "merge" | "deployment">;
  status: "pending" | "approved" | "rejected" | "expired";
  priority?: Priority;
  requested_at?: Timestamp;
  decided_at?: Timestamp;
}

interface EscalationFields extends Observed {
  external_id: string;
  escalation_type: Open<"blocked" | "ambiguous_requirements" | "test_failure" | "permission" | "budget" | "safety">;
  severity: Open<"low" | "medium" | "high" | "critical">;
  component: string;
  reason: string;
  created_at?: Timestamp;
  /** When a person answered it and the work went on. */
  resolved_at?: Timestamp;
}
/** The issue an escalation is about: all three fields, or none. */
export type EscalationItem = EscalationFields &
  (
    | { platform: Platform; repository: string; issue_external_id: string }
    | { platform?: never; repository?: never; issue_external_id?: never }
  );

export interface HeartbeatItem extends Observed {
  name: string;
  mode: "orchestrator" | "worker" | "cli";
  environment: "development" | "staging" | "production";
  status: "running" | "paused" | "stopped" | "crashed";
}

/** An event of POST /api/v1/events (ai_request, test_execution, code_generation, code_change). */
export interface Event {
  type: "ai_request" | "test_execution" | "code_generation" | "code_change";
  /** Set by the client when missing, so a retried event is counted once. */
  event_id?: string;
  timestamp?: Timestamp;
  [field: string]: unknown;
}

export interface ItemResult {
  /** The item's index in the array given to the method. */
  index: number;
  status: "created" | "updated" | "unchanged" | "stale" | "rejected" | "not_found" | "conflict";
  key?: Record<string, unknown>;
  errors?: Record<string, string[]>;
  current?: Record<string, unknown>;
  folded?: { label: string; recorded_as: string }[];
}

export interface EventResult {
  index: number;
  status: "counted" | "duplicate" | "rejected";
  event_id?: string;
  errors?: Record<string, unknown>;
  folded?: { family: string; label: string; recorded_as: string }[];
}

export interface Options {
  baseUrl: string;
  token: string;
  /** Items per request (the server takes up to 500 state items, 1000 events). */
  batchSize?: number;
  /** Retries after the first attempt, for each request and for not_found items. */
  retries?: number;
  /** Per attempt, connecting and reading the answer included. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/** An answer that retrying cannot change (400, 401, 403, 413...), or retries used up. */
export class TammaMetricsError extends Error {
  constructor(message: string, readonly status: number, readonly body: unknown, options?: ErrorOptions) {
    super(message, options);
    this.name = "TammaMetricsError";
  }
}

// Transient: the server wrote nothing (429; 503, a locked database) or a proxy lost the
// answer (502, 504). Sending the batch again is safe either way.
const RETRYABLE = new Set([429, 502, 503, 504]);
// Answers that carry per-item results: 200, or 400/404/409 when every item failed so.
const ANSWERED = new Set([200, 201, 400, 404, 409]);
const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30_000;

export class TammaMetrics {
  readonly baseUrl: string;
  readonly batchSize: number;
  readonly retries: number;
  readonly timeoutMs: number;
  readonly #token: string;
  readonly #fetch: typeof fetch;
  // Ids for events sent without one: unique per client, the same on every retry.
  readonly #idPrefix = `tmc-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  #nextId = 0;

  constructor(options: Options) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    this.batchSize = options.batchSize ?? 100;
    this.retries = options.retries ?? 5;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.#fetch = options.fetch ?? globalThis.fetch;
    if (!(Number.isInteger(this.batchSize) && this.batchSize > 0)) throw new RangeError("batchSize: a positive integer");
    if (!(Number.isInteger(this.retries) && this.retries >= 0)) throw new RangeError("retries: a non-negative integer");
  }

  issues(items: readonly IssueItem[]): Promise<ItemResult[]> {
    return this.#state("/api/v1/issues", items);
  }
  pullRequests(items: readonly PullRequestItem[]): Promise<ItemResult[]> {
    return this.#state("/api/v1/pull-requests", items);
  }
  approvals(items: readonly ApprovalItem[]): Promise<ItemResult[]> {
    return this.#state("/api/v1/approvals", items);
  }
  escalations(items: readonly EscalationItem[]): Promise<ItemResult[]> {
    return this.#state("/api/v1/escalations", items);
  }
  heartbeat(items: readonly HeartbeatItem[]): Promise<ItemResult[]> {
    return this.#state("/api/v1/loops/heartbeat", items);
  }
  deployments(items: readonly DeploymentItem[]): Promise<ItemResult[]> {
    return this.#state("/api/v1/deployments", items);
  }
  incidents(items: readonly IncidentItem[]): Promise<ItemResult[]> {
    return this.#state("/api/v1/incidents", items);
  }

  /** POST /api/v1/events; an event without event_id gets one, so retries count it once. */
  async events(events: readonly Event[]): Promise<EventResult[]> {
    const sent = events.map((e) => serialise(e.event_id ? e : { ...e, event_id: `${this.#idPrefix}-${this.#nextId++}` }));
    const results: EventResult[] = [];
    for (const batch of chunks([...sent.keys()], this.batchSize)) {
      const answer = await this.#post<EventResult>("/api/v1/events", { events: batch.map((i) => sent[i]) }, batch.length);
      answer.forEach((r, i) => (results[batch[i]!] = { ...r, index: batch[i]! }));
    }
    return results;
  }

  async #state(path: string, items: readonly object[]): Promise<ItemResult[]> {
    const body = items.map(serialise);
    const results: ItemResult[] = [];
    let pending = [...body.keys()];
    for (let round = 0; ; round++) {
      // Every batch goes out before any not_found item is resent: the issue it waits
      // for may be in a later batch of this very call.
      const notFound: number[] = [];
      for (const batch of chunks(pending, this.batchSize)) {
        const answer = await this.#post<ItemResult>(path, { items: batch.map((i) => body[i]) }, batch.length);
        answer.forEach((r, i) => {
          const index = batch[i]!;
          results[index] = { ...r, index };
          if (r.status === "not_found") notFound.push(index);
        });
      }
      if (notFound.length === 0 || round >= this.retries) return results;
      // The issue is not there yet (another sender, a later call): resend only those
      // items, later. Resending is safe: a repeated item is answered "unchanged".
      await sleep(backoff(round));
      pending = notFound;
    }
  }

  /** One batch, retried on transient failures; the answer's per-item results. */
  async #post<R extends { index: number }>(path: string, payload: object, size: number): Promise<R[]> {
    const text = JSON.stringify(payload);
    const headers = { Authorization: `Bearer ${this.#token}`, "Content-Type": "application/json" };
    for (let attempt = 0; ; attempt++) {
      let failure: TammaMetricsError;
      let wait: number | undefined;
      try {
        // The timeout covers reading the body too: the signal aborts the stream.
        const response = await this.#fetch(this.baseUrl + path, {
          method: "POST", headers, body: text, signal: AbortSignal.timeout(this.timeoutMs),
        });
        const answer = parse(await response.text());
        const results = (answer as { results?: unknown } | undefined)?.results;
        if (ANSWERED.has(response.status) && Array.isArray(results)) {
          // One answer per item, in the order sent: anything else is not this request's.
          if (results.length !== size || results.some((r, i) => r?.index !== i)) {
            throw new TammaMetricsError(`POST ${path}: results do not match the ${size} items sent`, response.status, answer);
          }
          return results as R[];
        }
        const message = `POST ${path} answered ${response.status}`;
        // 400 (bad body), 401, 403, 409, 411, 413, 500...: the same request would fail again.
        if (!RETRYABLE.has(response.status)) throw new TammaMetricsError(message, response.status, answer);
        failure = new TammaMetricsError(message, response.status, answer);
        wait = retryAfter(response.headers.get("Retry-After"));
      } catch (error) {
        if (error instanceof TammaMetricsError) throw error;
        // A refused or cut connection, or the timeout: the batch may or may not have
        // been committed; sending it again is safe either way.
        failure = new TammaMetricsError(`POST ${path} failed: ${String(error)}`, 0, undefined, { cause: error });
      }
      if (attempt >= this.retries) throw failure;
      await sleep(wait ?? backoff(attempt));
    }
  }
}

/** A flat item with its Dates as ISO strings (toISOString throws on an invalid Date). */
function serialise(item: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(item).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v]));
}

function chunks<T>(values: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < values.length; i += size) out.push(values.slice(i, i + size));
  return out;
}

function parse(text: string): unknown {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return text; // an HTML error page from a proxy, say: kept for the error's body
  }
}

/** Exponential, with jitter so that senders that failed together do not retry together. */
function backoff(attempt: number): number {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Retry-After in seconds (what the server sends) or as an HTTP date; undefined otherwise. */
function retryAfter(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
