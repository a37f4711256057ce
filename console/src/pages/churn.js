// The churn watch-list: customers most at risk, with reasons, ranked and paged.
import { get } from "../api.js";
import { esc, score, table, tags } from "../format.js";
import { label, t } from "../i18n.js";
import { errorBox, loading } from "./common.js";

export function renderChurn(main) {
  main.innerHTML = `<h1>${esc(t("churn.title"))}</h1><div class="card">
    <form class="inline" id="filter"><label>${esc(t("churn.minScore"))} <input type="text" id="min-score" value="0" size="5"></label>
    <button>${esc(t("churn.apply"))}</button></form><div id="list"></div></div>`;
  const list = main.querySelector("#list");
  main.querySelector("#filter").addEventListener("submit", (e) => { e.preventDefault(); page(list, main.querySelector("#min-score").value, "", 0); });
  page(list, "0", "", 0);
}

async function page(el, minScore, pageToken, offset) {
  el.innerHTML = loading();
  try {
    const res = await get("/v1/churnRisks", { pageSize: 20, pageToken, minScore });
    const rows = res.customerViews.map((v, i) => [String(offset + i + 1),
      `<a href="#/customers/${encodeURIComponent(v.customerId)}">${esc(v.customerId)}</a>`, esc(v.fullNameMasked),
      `<span class="risk">${score(v.churnRisk?.score)}</span>`, tags(v.churnRisk?.reasons), esc(label(v.segment)), esc(label(v.lifecycleStage))]);
    el.innerHTML = `<p class="muted" id="watch-total">${esc(res.totalSize)}</p>
      ${table(["churn.rank", "customers.id", "view.name", "view.score", "view.reasons", "view.segment", "view.stage"], rows, 'id="watch-table"')}
      <div class="row">${res.nextPageToken ? `<button id="next">${esc(t("common.next"))}</button>` : ""}</div>`;
    el.querySelector("#next")?.addEventListener("click", () => page(el, minScore, res.nextPageToken, offset + rows.length));
  } catch (err) { el.innerHTML = errorBox(err); }
}
