// Unit test of the console's PKCE helpers (node --test; run by tests/unit/console/test_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { base64url, challengeS256, randomString } from "../src/pkce.js";

test("the S256 challenge of RFC 7636 Appendix B's verifier is the RFC's value", async () => {
  assert.equal(await challengeS256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
});

test("base64url is unpadded and URL-safe (RFC 7636 Appendix B's octets give its verifier)", () => {
  const octets = [116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37, 77,
    105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121];
  assert.equal(base64url(new Uint8Array(octets)), "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
  assert.equal(base64url(new Uint8Array([251, 255])), "-_8");
});

test("a verifier is 43 unreserved characters and never repeats", () => {
  const seen = new Set();
  for (let i = 0; i < 100; i += 1) {
    const v = randomString();
    assert.match(v, /^[A-Za-z0-9_-]{43}$/);
    seen.add(v);
  }
  assert.equal(seen.size, 100);
});
