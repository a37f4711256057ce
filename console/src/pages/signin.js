// Signing in: paste a bearer token, or (dev only, where the gateway offers it) mint a dev token.
import { claims, setToken, token } from "../api.js";
import { render } from "../app.js";
import { esc } from "../format.js";
import { t } from "../i18n.js";
import { consoleConfig, startSignIn } from "../oidc.js";
import { errorBox } from "./common.js";

const SCOPES = ["customers:read", "pii:read", "products:read", "subscriptions:read", "subscriptions:write", "views:read",
  "segments:admin", "ops:admin"];
const DEFAULT = new Set(["customers:read", "products:read", "subscriptions:read", "views:read"]);

export function renderSignin(main) {
  const who = claims();
  main.innerHTML = `<h1>${esc(t("signin.title"))}</h1><div class="grid">
    <div class="card wide" id="oidc" hidden><h2>${esc(t("signin.oidcTitle"))}</h2>
      <p><button class="primary" id="oidc-start">${esc(t("signin.oidcStart"))}</button></p><p class="muted">${esc(t("signin.oidc"))}</p></div>
    <div class="card" id="dev"><h2>${esc(t("signin.dev"))}</h2><p>${esc(t("signin.scopes"))}:</p>
      <div id="scopes">${SCOPES.map((s) => `<label class="tag"><input type="checkbox" value="${s}" ${DEFAULT.has(s) ? "checked" : ""}> ${s}</label>`).join(" ")}</div>
      <p><button class="primary" id="mint">${esc(t("signin.mint"))}</button></p><div id="mint-error"></div></div>
    <div class="card"><h2>${esc(t("signin.paste"))}</h2><textarea id="token-input">${esc(token())}</textarea>
      <p><button id="use-token">${esc(t("signin.use"))}</button> <button id="sign-out">${esc(t("signin.out"))}</button></p>
      <p class="muted">${esc(t("signin.oidc"))}</p></div>
    <div class="card wide"><h2>${esc(t("signin.current"))}</h2><p id="current">${who ? esc(`${who.client_id || who.sub}: ${who.scope}`) : esc(t("signin.none"))}</p></div></div>`;
  consoleConfig().then(({ oidc, devTokens }) => {
    main.querySelector("#oidc").hidden = !oidc;
    main.querySelector("#dev").hidden = !devTokens;
  });
  main.querySelector("#oidc-start").addEventListener("click", () => startSignIn());
  main.querySelector("#mint").addEventListener("click", async () => {
    const chosen = [...main.querySelectorAll("#scopes input:checked")].map((i) => i.value).join(" ");
    const response = await fetch(`/console/dev-token?scope=${encodeURIComponent(chosen)}`);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) { main.querySelector("#mint-error").innerHTML = errorBox({ status: response.status, message: body.message }); return; }
    signIn(body.access_token);
  });
  main.querySelector("#use-token").addEventListener("click", () => signIn(main.querySelector("#token-input").value));
  main.querySelector("#sign-out").addEventListener("click", () => { setToken(""); render(); });
}

function signIn(value) {
  setToken(value);
  location.hash = "#/customers";
  render();
}
