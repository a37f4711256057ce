// The console shell: hash routes, language switch, who is signed in. Pages render into <main>.
import { claims } from "./api.js";
import { currentLang, setLang, t, translate } from "./i18n.js";
import { finishSignIn } from "./oidc.js";
import { renderChurn } from "./pages/churn.js";
import { renderCustomers } from "./pages/customers.js";
import { renderOps } from "./pages/ops.js";
import { renderSegments } from "./pages/segments.js";
import { renderSignin } from "./pages/signin.js";

const pages = { customers: renderCustomers, segments: renderSegments, churn: renderChurn, ops: renderOps, signin: renderSignin };
let stop = null; // the current page's cleanup (timers)

function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { name: pages[name] ? name : claims() ? "customers" : "signin", args: rest.map(decodeURIComponent) };
}

export function render() {
  if (stop) stop();
  stop = null;
  const { name, args } = route();
  translate();
  document.getElementById("lang").textContent = t("lang.switch");
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === name);
  const who = claims();
  document.getElementById("who").textContent = who ? `${who.client_id || who.sub} · ${who.scope || ""}` : t("signin.none");
  const main = document.getElementById("page");
  main.dataset.page = name;
  stop = pages[name](main, args) || null;
}

export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 3000);
}

document.getElementById("lang").addEventListener("click", () => {
  setLang(currentLang() === "zh-CN" ? "en" : "zh-CN");
  render();
});
window.addEventListener("hashchange", render);
setLang(currentLang());
// Back from the OIDC provider (?code&state): trade the code for the token before the first render.
const back = await finishSignIn();
if (back?.ok && !location.hash.replace(/^#\/?/, "")) location.hash = "#/customers";
render();
if (back?.error) toast(`${t("signin.failed")}: ${back.error}`);
