// Customer search and the 360° view. The view polls every 2 s and re-renders when its version moves.
import { get, hasScope } from "../api.js";
import { esc, money, riskLevel, score, table, tags, time, yesNo } from "../format.js";
import { label, t } from "../i18n.js";
import { chart, errorBox, loadECharts, loading } from "./common.js";

const POLL_MS = 2000;

export function renderCustomers(main, [customerId]) {
  main.innerHTML = `<h1>${esc(t("customers.title"))}</h1>
    <form class="inline" id="search"><input type="text" id="search-id" placeholder="${esc(t("customers.id"))}" value="${esc(customerId || "")}">
    <button class="primary" id="open">${esc(t("customers.open"))}</button></form><div id="body"></div>`;
  main.querySelector("#search").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = main.querySelector("#search-id").value.trim();
    location.hash = id ? `#/customers/${encodeURIComponent(id)}` : "#/customers";
  });
  const body = main.querySelector("#body");
  if (customerId) loadECharts().catch(() => {}); // (the activity chart's library loads meanwhile)
  return customerId ? showView(body, customerId) : listCustomers(body, "");
}

function listCustomers(body, pageToken) {
  body.innerHTML = loading();
  get("/v1/customers", { pageSize: 20, pageToken }).then((page) => {
    const rows = page.customers.map((c) => [
      `<a href="#/customers/${encodeURIComponent(c.customerId)}">${esc(c.customerId)}</a>`, esc(c.fullName), esc(label(c.status)),
      esc(riskLevel(c.riskTolerance)),
    ]);
    body.innerHTML = `<div class="card"><h2>${esc(t("customers.list"))}</h2>${table(["customers.id", "customers.name", "customers.status", "view.risk"], rows, 'id="customer-list"')}
      ${page.nextPageToken ? `<button id="more">${esc(t("customers.next"))}</button>` : ""}</div>`;
    body.querySelector("#more")?.addEventListener("click", () => listCustomers(body, page.nextPageToken));
  }, (err) => { body.innerHTML = errorBox(err); });
}

function showView(body, customerId) {
  let version = null;
  let timer = null;
  let stopped = false;
  const feed = () => get(`/v1/customers/${encodeURIComponent(customerId)}/events`, { pageSize: 15 });
  let events = feed(); // the first time asked together with the view (one round trip, not two)
  events.catch(() => {});
  const tick = async () => {
    try {
      const view = await get(`/v1/customers/${encodeURIComponent(customerId)}/view`);
      if (view.version !== version) {
        version = view.version;
        await drawView(body, view, events ?? feed());
      }
      events = null;
    } catch (err) {
      if (version === null) body.innerHTML = errorBox(err);
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  body.innerHTML = loading();
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

async function drawView(body, v, events) {
  const a = v.activity || {};
  body.innerHTML = `<div class="grid">
    <div class="card" id="identity"><h2>${esc(t("view.identity"))}</h2><dl>
      <dt>${esc(t("customers.id"))}</dt><dd>${esc(v.customerId)}</dd>
      <dt>${esc(t("view.name"))}</dt><dd data-field="name">${esc(v.fullNameMasked)}</dd>
      <dt>${esc(t("view.nationalId"))}</dt><dd data-field="nationalId">${esc(v.nationalIdMasked)}</dd>
      <dt>${esc(t("view.mobile"))}</dt><dd data-field="mobile">${esc(v.mobileMasked)}</dd>
      <dt>${esc(t("view.email"))}</dt><dd data-field="email">${esc(v.emailMasked)}</dd></dl>
      ${hasScope("pii:read") ? `<p><button id="reveal">${esc(t("view.reveal"))}</button></p>` : ""}</div>
    <div class="card" id="status"><h2>${esc(t("view.status"))}</h2><dl>
      <dt>${esc(t("view.status"))}</dt><dd>${esc(label(v.status))}</dd>
      <dt>${esc(t("view.kyc"))}</dt><dd>${esc(yesNo(v.kycVerified))}</dd>
      <dt>${esc(t("view.risk"))}</dt><dd>${esc(riskLevel(v.riskTolerance))}</dd>
      <dt>${esc(t("view.riskExpire"))}</dt><dd>${esc(time(v.riskToleranceExpireTime))}</dd>
      <dt>${esc(t("view.segment"))}</dt><dd id="segment">${esc(label(v.segment))}</dd>
      <dt>${esc(t("view.stage"))}</dt><dd id="stage">${esc(label(v.lifecycleStage))}</dd>
      <dt>${esc(t("view.rfm"))}</dt><dd>R ${v.rfm?.recency ?? 0} · F ${v.rfm?.frequency ?? 0} · M ${v.rfm?.monetary ?? 0} ${esc(v.rfm?.code || "")}</dd>
      <dt>${esc(t("view.version"))}</dt><dd id="view-version">${esc(v.version)}</dd>
      <dt>${esc(t("view.updated"))}</dt><dd>${esc(time(v.updateTime))} <span class="muted">(${esc(t("view.live"))})</span></dd></dl></div>
    <div class="card" id="churn"><h2>${esc(t("view.churn"))}</h2>
      <p class="risk" id="churn-score">${esc(t("view.score"))} ${score(v.churnRisk?.score)}</p><p>${tags(v.churnRisk?.reasons)}</p></div>
    <div class="card wide" id="holdings"><h2>${esc(t("view.holdings"))}</h2>${table(["view.product", "view.type", "view.balance", "view.state"],
      (v.holdings || []).map((h) => [esc(h.productId), esc(label(h.productType)), esc(money(h.balance)), esc(label(h.state))]), 'id="holdings-table"')}
      <p><strong>${esc(t("view.position"))}:</strong> <span id="position">${(v.position || []).map((m) => esc(money(m))).join(" · ") || "—"}</span></p></div>
    <div class="card" id="activity"><h2>${esc(t("view.activity"))}</h2>
      <div class="chart" id="activity-chart"></div>
      <p>${esc(t("view.count"))}: <span id="txn-30">${a.txnCount30d ?? 0}</span> / <span id="txn-90">${a.txnCount90d ?? 0}</span> / <span id="txn-365">${a.txnCount365d ?? 0}</span>
      · ${esc(t("view.lastTxn"))}: ${esc(time(a.lastTxnTime))}</p></div>
    <div class="card" id="offers"><h2>${esc(t("view.offers"))}</h2>${table(["view.product", "view.score", "view.reasons"],
      (v.offers || []).map((o) => [esc(o.displayName || o.productId), score(o.score), tags(o.reasons)]))}</div>
    <div class="card wide" id="events"><h2>${esc(t("view.events"))}</h2><div id="events-body">${loading()}</div></div>
    <div class="card wide" id="transactions"><h2>${esc(t("view.transactions"))}</h2><div id="transactions-body">${loading()}</div></div></div>`;
  chart(body.querySelector("#activity-chart"), {
    tooltip: {}, grid: { left: 40, right: 10, top: 20, bottom: 30 },
    xAxis: { type: "category", data: [t("view.d30"), t("view.d90"), t("view.d365")] },
    yAxis: { type: "value", minInterval: 1 },
    series: [{ type: "bar", name: t("view.count"), data: [a.txnCount30d || 0, a.txnCount90d || 0, a.txnCount365d || 0] }],
  });
  body.querySelector("#reveal")?.addEventListener("click", () => reveal(body, v.customerId));
  await Promise.all([recentEvents(body.querySelector("#events-body"), events), recentTransactions(body.querySelector("#transactions-body"), v)]);
}

async function reveal(body, customerId) {
  try {
    const c = await get(`/v1/customers/${encodeURIComponent(customerId)}`);
    const set = (field, value) => { body.querySelector(`[data-field=${field}]`).textContent = value || "—"; };
    set("name", c.fullName); set("nationalId", c.nationalId); set("mobile", c.mobile); set("email", c.email);
  } catch (err) { body.querySelector("#identity").insertAdjacentHTML("beforeend", errorBox(err)); }
}

/** Every event about the customer as the hub received it (onboarding, KYC, updates, subscriptions, postings). */
async function recentEvents(el, events) {
  try {
    const page = await events;
    el.innerHTML = table(["view.time", "view.event", "view.aggregate", "view.aggregateVersion"], page.events.map((e) => [
      esc(time(e.eventTime)), `<span data-type="${esc(e.eventType)}">${esc(label(e.eventType.split(".").pop()))}</span>`,
      `${esc(label(e.aggregateType))} <span class="muted">${esc(e.aggregateId)}</span>`, esc(e.aggregateVersion)]), 'id="events-table"');
  } catch (err) { el.innerHTML = errorBox(err); }
}

async function recentTransactions(el, v) {
  if (!hasScope("subscriptions:read")) { el.innerHTML = `<p class="muted">${esc(t("common.needScope"))} subscriptions:read</p>`; return; }
  try {
    const pages = await Promise.all((v.holdings || []).map((h) =>
      get(`/v1/customers/${encodeURIComponent(v.customerId)}/subscriptions/${encodeURIComponent(h.subscriptionId)}/transactions`, { pageSize: 50 })));
    const txns = pages.flatMap((p) => p.transactions).sort((x, y) => String(y.postTime).localeCompare(String(x.postTime))).slice(0, 10);
    el.innerHTML = table(["view.time", "view.direction", "view.amount", "view.balance"],
      txns.map((x) => [esc(time(x.postTime)), esc(label(x.direction)), esc(money(x.amount)), esc(money(x.balanceAfter))]), 'id="transactions-table"');
  } catch (err) { el.innerHTML = errorBox(err); }
}
