// Sign-in with the bank's OIDC provider: authorization code + PKCE, the console a public client
// (no client secret in the browser; docs/console.md). state and code_verifier wait in
// sessionStorage across the redirect; the access token is kept in memory only.
import { setToken } from "./api.js";
import { challengeS256, randomString } from "./pkce.js";

const PENDING = "zt.oidc"; // sessionStorage: {state, verifier} of the sign-in under way
let config = null;

/** The gateway's console configuration ({oidc, devTokens}); fetched once. */
export async function consoleConfig() {
  if (!config) {
    const response = await fetch("config.json", { headers: { accept: "application/json" } });
    config = response.ok ? await response.json() : { oidc: null, devTokens: false };
  }
  return config;
}

function redirectUri() { return location.origin + location.pathname; }

/** Go to the provider's authorization endpoint (the page is left). */
export async function startSignIn() {
  const { oidc } = await consoleConfig();
  const state = randomString(16);
  const verifier = randomString(32);
  sessionStorage.setItem(PENDING, JSON.stringify({ state, verifier }));
  const url = new URL(oidc.authorizationEndpoint);
  const params = { response_type: "code", client_id: oidc.clientId, redirect_uri: redirectUri(), scope: oidc.scope,
    state, code_challenge: await challengeS256(verifier), code_challenge_method: "S256" };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  location.assign(url.toString());
}

/** Back from the provider (?code&state or ?error): check state, trade the code for the token.
 *  Returns null when this load is not a redirect back, else {ok} or {error}. */
export async function finishSignIn() {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", redirectUri() + location.hash); // the code is single-use: off the address bar
  if (query.has("error")) return { error: `${query.get("error")}: ${query.get("error_description") || ""}` };
  if (!pending || pending.state !== query.get("state")) return { error: "state mismatch: sign-in not started here" };
  const { oidc } = await consoleConfig();
  const body = new URLSearchParams({ grant_type: "authorization_code", code: query.get("code"),
    redirect_uri: redirectUri(), client_id: oidc.clientId, code_verifier: pending.verifier });
  try {
    const response = await fetch(oidc.tokenEndpoint, { method: "POST", body,
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" } });
    const tokens = await response.json().catch(() => ({}));
    if (!response.ok || !tokens.access_token) return { error: tokens.error_description || tokens.error || `HTTP ${response.status}` };
    setToken(tokens.access_token, { persist: false });
    return { ok: true };
  } catch (err) {
    return { error: String(err) };
  }
}
