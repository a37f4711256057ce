// Segments: customers per segment × lifecycle stage (stacked bars), members with paging, refresh.
import { get, hasScope, post } from "../api.js";
import { toast } from "../app.js";
import { esc, score, table, time } from "../format.js";
import { label, t } from "../i18n.js";
import { chart, errorBox, loadECharts, loading } from "./common.js";

export function renderSegments(main, [segment]) {
  main.innerHTML = `<h1>${esc(t("segments.title"))}</h1><div class="grid">
    <div class="card wide"><h2>${esc(t("segments.chart"))}</h2><div class="row" id="summary"></div>
      <div class="chart big" id="segments-chart"></div><div id="segments-table"></div></div>
    <div class="card wide"><h2>${esc(t("segments.members"))}</h2><div class="row"><select id="segment-pick"></select></div><div id="members"></div></div></div>`;
  loadECharts().catch(() => {}); // (the chart's library loads while the counts are asked for)
  load(main, segment);
}

async function load(main, segment) {
  if (segment) members(main.querySelector("#members"), segment, ""); // known already: no need to wait for the counts
  let counts;
  try { counts = await get("/v1/segments"); } catch (err) { main.querySelector("#summary").innerHTML = errorBox(err); return; }
  const summary = main.querySelector("#summary");
  summary.innerHTML = `<span>${esc(t("segments.total"))}: <strong id="total">${esc(counts.totalCustomers)}</strong></span>
    <span class="muted">${esc(t("segments.lastRefresh"))}: ${esc(time(counts.refreshTime))}</span>
    ${hasScope("segments:admin") ? `<button id="refresh" class="primary">${esc(t("segments.refresh"))}</button>` : ""}`;
  summary.querySelector("#refresh")?.addEventListener("click", async (e) => {
    e.target.disabled = true;
    try { await post("/v1/segments:refresh"); toast(t("segments.refreshed")); load(main, segment); } catch (err) { summary.insertAdjacentHTML("beforeend", errorBox(err)); }
  });
  drawChart(main, counts);
  const pick = main.querySelector("#segment-pick");
  pick.innerHTML = counts.segments.map((s) => `<option value="${esc(s.segment)}">${esc(label(s.segment))} (${esc(s.customerCount)})</option>`).join("");
  const chosen = segment || counts.segments.reduce((a, b) => (Number(b.customerCount) > Number(a.customerCount) ? b : a)).segment;
  pick.value = chosen;
  pick.onchange = () => { location.hash = `#/segments/${pick.value}`; };
  if (!segment) members(main.querySelector("#members"), chosen, "");
}

function drawChart(main, counts) {
  const segments = counts.segments.map((s) => s.segment);
  const stages = counts.lifecycleStages.map((s) => s.lifecycleStage);
  const cell = {};
  for (const c of counts.segmentStages || []) cell[`${c.segment}|${c.lifecycleStage}`] = Number(c.customerCount);
  const series = stages.map((stage) => ({
    type: "bar", stack: "customers", name: label(stage), emphasis: { focus: "series" },
    data: segments.map((s) => cell[`${s}|${stage}`] || 0),
  })).filter((s) => s.data.some(Boolean));
  chart(main.querySelector("#segments-chart"), {
    tooltip: { trigger: "axis" }, legend: { top: 0 }, grid: { left: 50, right: 20, top: 40, bottom: 30 },
    xAxis: { type: "category", data: segments.map(label) }, yAxis: { type: "value", minInterval: 1 }, series,
  });
  const rows = counts.segments.map((s) => [esc(label(s.segment)), `<span data-segment="${esc(s.segment)}">${esc(s.customerCount)}</span>`]);
  main.querySelector("#segments-table").innerHTML = table(["view.segment", "segments.count"], rows, 'id="segment-counts"');
}

async function members(el, segment, pageToken) {
  el.innerHTML = loading();
  try {
    const page = await get(`/v1/segments/${encodeURIComponent(segment)}/customers`, { pageSize: 10, pageToken });
    const rows = page.customerViews.map((v) => [`<a href="#/customers/${encodeURIComponent(v.customerId)}">${esc(v.customerId)}</a>`,
      esc(v.fullNameMasked), esc(label(v.lifecycleStage)), score(v.churnRisk?.score)]);
    el.innerHTML = `<p class="muted">${esc(page.totalSize)}</p>${table(["customers.id", "view.name", "view.stage", "view.churn"], rows, 'id="members-table"')}
      <div class="row">${pageToken ? `<button id="first">${esc(t("common.first"))}</button>` : ""}${page.nextPageToken ? `<button id="next">${esc(t("common.next"))}</button>` : ""}</div>`;
    el.querySelector("#next")?.addEventListener("click", () => members(el, segment, page.nextPageToken));
    el.querySelector("#first")?.addEventListener("click", () => members(el, segment, ""));
  } catch (err) { el.innerHTML = errorBox(err); }
}
