import { esc } from "../format.js";
import { t } from "../i18n.js";

export function loading() { return `<p class="muted">${esc(t("common.loading"))}</p>`; }
export function errorBox(err) {
  const scope = err.status === 403 ? ` (${esc(t("common.needScope"))})` : "";
  return `<p class="error" data-status="${esc(err.status || "")}">${esc(t("common.error"))}${scope}: ${esc(err.message)}</p>`;
}
let echartsLoading = null;
/** ECharts (700 kB of script), loaded once, on demand: pages without a chart never parse it, and a
 *  page with one asks for it first thing, so it loads while the page's API calls are under way. */
export function loadECharts() {
  if (window.echarts) return Promise.resolve(window.echarts);
  echartsLoading ??= new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src: "vendor/echarts.common.min.js", async: true });
    script.onload = () => resolve(window.echarts);
    script.onerror = () => { echartsLoading = null; script.remove(); reject(new Error("ECharts did not load")); };
    document.head.append(script);
  });
  return echartsLoading;
}

/** An ECharts chart in el (resized with the window), once ECharts is there. */
export async function chart(el, option) {
  const echarts = await loadECharts();
  if (!el.isConnected) return null; // the page moved on meanwhile
  const instance = echarts.init(el, null, { renderer: "canvas" });
  instance.setOption(option);
  window.addEventListener("resize", () => instance.resize(), { once: true });
  return instance;
}
