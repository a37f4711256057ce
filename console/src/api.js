// The gateway's public API, called with the signed-in user's bearer token (no private back door).
const KEY = "zt.token";
let inMemory = ""; // a token from the OIDC provider: never written to storage

export function token() { return inMemory || sessionStorage.getItem(KEY) || ""; }
/** Sign in with a token (a pasted or dev one stays in sessionStorage until the tab closes;
 *  persist: false keeps it in memory only); an empty value signs out. */
export function setToken(value, { persist = true } = {}) {
  inMemory = persist ? "" : (value || "").trim();
  persist && value ? sessionStorage.setItem(KEY, value.trim()) : sessionStorage.removeItem(KEY);
}

/** The token's claims (for showing who is signed in and hiding buttons; the server decides). */
export function claims() {
  const parts = token().split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(decodeURIComponent(Array.from(json, (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join("")));
  } catch { return null; }
}
export function scopes() { return new Set(((claims() || {}).scope || "").split(" ").filter(Boolean)); }
export function hasScope(scope) { return scopes().has(scope); }

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.reason = body?.details?.find((d) => d.reason)?.reason || "";
  }
}

/** JSON request to the gateway; throws ApiError with the google.rpc.Status message. */
export async function call(method, path, { query, body, idempotent } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== "") url.searchParams.set(k, v);
  const headers = { accept: "application/json" };
  if (token()) headers.authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  if (idempotent) headers["idempotency-key"] = crypto.randomUUID();
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, query) => call("GET", path, { query });
export const post = (path, body) => call("POST", path, { body: body || {}, idempotent: true });
