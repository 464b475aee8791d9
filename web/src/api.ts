// A thin client for the voxgate HTTP API: bearer auth, JSON bodies, typed errors.

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly path: string | undefined;

  constructor(status: number, code: string, message: string, path?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.path = path;
  }

  describe(): string {
    const where = this.path && this.path !== "$" ? ` (at ${this.path})` : "";
    return `${this.message}${where} [${this.status} ${this.code}]`;
  }
}

export function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.describe();
  if (error instanceof Error) return error.message;
  return String(error);
}

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

/** The ApiError of a failed response, from its ``{"error": {...}}`` body when it has one. */
async function errorOf(response: Response): Promise<ApiError> {
  let code = "http_error";
  let message = response.statusText || `HTTP ${response.status}`;
  let where: string | undefined;
  try {
    const parsed = (await response.json()) as {
      error?: { code?: string; message?: string; path?: string };
    };
    if (parsed.error) {
      code = parsed.error.code ?? code;
      message = parsed.error.message ?? message;
      where = parsed.error.path;
    }
  } catch {
    // Not a JSON error body; keep the status text.
  }
  return new ApiError(response.status, code, message, where);
}

export interface SigninGranted {
  tenant_id: string;
  token: string;
}

/** Exchange a one-time sign-in code (from a ``#signin=`` link) for a tenant API key. */
export async function redeemSigninCode(code: string): Promise<SigninGranted> {
  const response = await fetch("/console/signin", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code }),
    cache: "no-store",
  });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as SigninGranted;
}

export class Api {
  private readonly token: string;

  constructor(token: string) {
    this.token = token;
  }

  private async send(method: Method, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    let payload: string | undefined;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers, body: payload, cache: "no-store" });
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async json<T>(method: Method, path: string, body?: unknown): Promise<T> {
    const response = await this.send(method, path, body);
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  get<T>(path: string): Promise<T> {
    return this.json<T>("GET", path);
  }

  async blob(path: string): Promise<Blob> {
    return (await this.send("GET", path)).blob();
  }

  /** A WebSocket URL for a route that accepts the token as ``access_token``. */
  socketUrl(path: string, query: Record<string, string> = {}): string {
    const url = new URL(path, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    url.searchParams.set("access_token", this.token);
    return url.toString();
  }
}

// ---- shapes of the API (see /openapi.json) ----

export interface Quotas {
  max_concurrent_calls: number;
  max_cps: number;
  max_workers: number;
  calls_per_worker: number;
  cpu_percent: number;
  memory_mb: number;
  max_agents: number;
  max_knowledge_mb: number;
}

export interface Tenant {
  id: string;
  name: string;
  status: "active" | "suspended";
  quotas: Quotas;
  created_at: number;
  updated_at: number;
}

export interface FlowNode {
  id: string;
  type: string;
  label?: string;
  text?: string;
  [field: string]: unknown;
}

export interface FlowEdge {
  id: string;
  source: string;
  port: string;
  target: string;
}

export interface FlowDoc {
  schema: string;
  id: string;
  nodes: FlowNode[];
  edges: FlowEdge[];
  layout?: Record<string, unknown>;
  [field: string]: unknown;
}

export interface Agent {
  id: string;
  name: string;
  kind: "echo" | "flow" | "prompt";
  template: string | null;
  version: number;
  flow: FlowDoc | null;
  warnings: string[];
  created_at: number;
  updated_at: number;
}

export interface AgentVersion {
  version: number;
  created_at: number;
  flow_hash: string;
}

export interface Template {
  name: string;
  kind: string;
  description: string;
}

export interface PhoneNumber {
  id: string;
  number: string;
  provider: "sip" | "twilio";
  agent_id: string;
  created_at: number;
}

export interface SecretInfo {
  name: string;
  updated_at: number;
}

export interface CallRecord {
  id: string;
  tenant_id: string;
  agent_id: string;
  provider: string;
  from_number: string;
  to_number: string;
  status: string;
  direction: string;
  created_at: number;
  started_at: number | null;
  ended_at: number | null;
  duration: number | null;
  end_reason: string | null;
  recording: boolean;
}

export interface CallDetail {
  call: CallRecord;
  events: { at: number; kind: string; detail?: string }[];
  turns: Record<string, unknown>[];
}

export interface RegistrationStatus {
  state: string;
  host: string | null;
  expires_in: number | null;
  retry_in: number | null;
  last_error: string | null;
  failures: number;
  registrations: number;
}

export interface Trunk {
  id: string;
  name: string;
  preset: string;
  hosts: string[];
  username: string;
  has_password: boolean;
  register: boolean;
  transport: string;
  caller_id: string | null;
  enabled: boolean;
}

export interface TrunkView {
  trunk: Trunk;
  registration: RegistrationStatus | null;
}

export interface DialPolicyView {
  home_country_code: string | null;
  effective_home_country_code: string;
  allowed_prefixes: string[];
  allow_premium: boolean;
}

export interface SystemStatus {
  tenants: {
    id: string;
    name: string;
    status: string;
    quotas: Quotas;
    live: { calls?: number; workers?: number; calls_per_second?: number };
  }[];
  workers: { pid: number; tenant_id: string | null; calls: number; cpu_percent: number; rss_mb: number }[];
  calls: { id: string; tenant_id: string; agent_id: string; provider: string; started_at: number }[];
  limits: Record<string, unknown>;
  draining?: boolean;
  trunk_registrations?: (RegistrationStatus & { tenant_id: string; trunk_id: string })[];
}

export function tenantBase(tenantId: string): string {
  return `/tenants/${encodeURIComponent(tenantId)}/api`;
}

export function when(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return "—";
  return new Date(seconds * 1000).toLocaleString();
}
