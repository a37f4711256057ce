import { currentLang, label, t } from "./i18n.js";

/** Escapes text for HTML (every value from the API goes through this). */
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
export function money(m) {
  if (!m || !m.currencyCode) return "—";
  const value = Number(m.units || 0) + Number(m.nanos || 0) / 1e9;
  return `${m.currencyCode} ${value.toLocaleString(currentLang(), { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}
export function time(ts) { return ts ? new Date(ts).toLocaleString(currentLang()) : "—"; }
export function yesNo(v) { return v ? t("view.yes") : t("view.no"); }
export function tags(codes) { return (codes || []).map((c) => `<span class="tag">${esc(label(c))}</span>`).join("") || "—"; }
export function score(v) { return (Number(v) || 0).toFixed(2); }
export function riskLevel(v) { return v ? String(v).replace("RISK_TOLERANCE_", "") : "—"; }
/** A table: headers are i18n keys, rows are arrays of HTML cells. */
export function table(heads, rows, attrs = "") {
  if (!rows.length) return `<p class="muted">${esc(t("common.empty"))}</p>`;
  return `<table ${attrs}><thead><tr>${heads.map((h) => `<th>${esc(t(h))}</th>`).join("")}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}
