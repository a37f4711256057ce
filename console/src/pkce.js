// PKCE (RFC 7636) for the console's OIDC sign-in: a random code_verifier and its S256 challenge.
// Pure functions over the Web Crypto API (browsers, and Node's globalThis.crypto for the unit test).

/** Unpadded base64url of bytes (RFC 7636 Appendix A). */
export function base64url(bytes) {
  let binary = "";
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A random string of unreserved characters: 32 random octets → 43 characters (RFC 7636 §4.1). */
export function randomString(octets = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(octets)));
}

/** code_challenge = BASE64URL(SHA-256(ASCII(code_verifier))) (RFC 7636 §4.2, method S256). */
export async function challengeS256(verifier) {
  return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
}
