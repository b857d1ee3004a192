// A small client of the phone-facing API, type-checked against types generated from the server's OpenAPI spec.
// If a route stops declaring its response (or the capabilities enum is lost), this file no longer compiles:
// the @ts-expect-error lines below then become unused, which tsc reports as an error too.
import type { components, paths } from "./generated/api";

type Json<P extends keyof paths, M extends keyof paths[P], S extends number> = paths[P][M] extends {
  responses: { [K in S]: { content: { "application/json": infer T } } };
}
  ? T
  : never;

type Capability = components["schemas"]["Capability"];
type Recommendation = Json<"/api/ai/models/recommend", "get", 200>;
type Registered = Json<"/api/devices", "post", 201>;
type SyncOut = Json<"/api/sync", "post", 200>;
type Changes = Json<"/api/sync", "get", 200>;
type ApiError = Json<"/api/sync", "post", 400>;
type Manifest = Json<"/api/ai/models/{model_id}/manifest", "get", 200>;

// Creating POSTs declare the Idempotency-Key header the SDK sends on every retry.
type SyncHeaders = NonNullable<paths["/api/sync"]["post"]["parameters"]["header"]>;
export const retryHeaders: SyncHeaders = { "Idempotency-Key": "batch-1" };

const capabilities: Capability[] = ["local-llm", "npu", "neural-engine"];
// @ts-expect-error: not a declared capability
const unknownCapability: Capability = "telepathy";

export function runOnDevice(r: Recommendation): boolean {
  const hardware: "flagship" | "mid-range" | "low-end" = r.tier;
  return hardware !== "low-end" && r.onDevice && r.runtimeReported === true && r.modelId !== null;
}

export function deviceKey(r: Registered): string {
  const caps: Capability[] = r.device.capabilities;
  return caps.length >= 0 ? r.apiKey : "";
}

export function delivered(s: SyncOut): string[] {
  return s.results.filter((i) => i.status === "accepted" || i.status === "duplicate").map((i) => i.clientId);
}

export function retryLater(s: SyncOut): string[] {
  // @ts-expect-error: "pending" is not an item status
  const pending = s.results.filter((i) => i.status === "pending");
  return [...pending, ...s.results.filter((i) => i.retryable)].map((i) => i.clientId);
}

export function nextCursor(c: Changes): string {
  const offered: string | undefined = c.modelUpdate?.artifactUrl;
  return offered === undefined ? c.cursor : `${c.cursor}`;
}

export function errorCode(e: ApiError): string {
  return e.error.code;
}

export function verifiedSize(m: Manifest): number {
  return m.size;
}

export const declared = { capabilities, unknownCapability };

// Beyond the phone's routes: the answers of the app's everyday routes are typed too.
type Entry = Json<"/api/journal/entries", "post", 201>;
type RouteAdvice = Json<"/api/ai/hybrid/route", "post", 200>;
type PrivacySettings = Json<"/api/privacy/settings", "get", 200>;
type ModelList = Json<"/v1/models", "get", 200>;
type Health = Json<"/healthz", "get", 200>;
type GrantList = Json<"/api/privacy/grants", "get", 200>;

export function insightPending(e: Entry): boolean {
  const compound: number | null = e.sentiment.compound;
  return e.insightStatus === "pending" && compound !== null;
}

export function answerOnDevice(r: RouteAdvice): boolean {
  return r.runOnDevice && r.deviceReasons.length >= 0 && r.estimates.localFirstTokenMs >= 0;
}

export function staysLocal(s: PrivacySettings): boolean {
  const mode: "local_only" | "hybrid" | "cloud_allowed" = s.processingMode;
  return mode === "local_only" || s.doNotShare;
}

// @ts-expect-error: not a processing mode
export const unknownMode: PrivacySettings["processingMode"] = "cloud_only";

export function modelOwners(m: ModelList): string[] {
  return m.data.map((model) => `${model.owned_by}:${model.id}`);
}

export function healthy(h: Health): boolean {
  return h.status === "ok";
}

export function coachesWithAccess(g: GrantList): string[] {
  return g.data.filter((grant) => grant.active).map((grant) => grant.coachId);
}
