import { esc } from "../format.js";
import { t } from "../i18n.js";

export function loading() { return `<p class="muted">${esc(t("common.loading"))}</p>`; }
export function errorBox(err) {
  const scope = err.status === 403 ? ` (${esc(t("common.needScope"))})` : "";
  return `<p class="error" data-status="${esc(err.status || "")}">${esc(t("common.error"))}${scope}: ${esc(err.message)}</p>`;
}
/** An ECharts chart in el (resized with the window). */
export function chart(el, option) {
  const instance = window.echarts.init(el, null, { renderer: "canvas" });
  instance.setOption(option);
  window.addEventListener("resize", () => instance.resize(), { once: true });
  return instance;
}
