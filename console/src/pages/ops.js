// Operations: the pipeline's status and the dead-letter browser (ops:admin), refreshed every 5 s.
import { get, post } from "../api.js";
import { toast } from "../app.js";
import { esc, table, time } from "../format.js";
import { label, t } from "../i18n.js";
import { errorBox } from "./common.js";

const POLL_MS = 5000;

export function renderOps(main) {
  main.innerHTML = `<h1>${esc(t("ops.title"))}</h1><div class="grid"><div class="card wide" id="status"></div>
    <div class="card wide"><h2>${esc(t("ops.outboxes"))}</h2><div id="outboxes"></div></div>
    <div class="card wide"><h2>${esc(t("ops.deadLetters"))}</h2><div id="dead-letters"></div></div></div>`;
  let timer = null;
  let stopped = false;
  const tick = async () => {
    await refresh(main);
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/** Every capability's transactional outbox (GetOutboxStatus), one row each; a failing one says why. */
const OUTBOXES = { customer: () => get("/v1/outboxes/customer"), product: () => get("/v1/outboxes/product"),
  data_hub: () => get("/v1/outboxes/data_hub") };
const CAPABILITIES = Object.keys(OUTBOXES);

async function outboxes(box) {
  const answers = await Promise.allSettled(CAPABILITIES.map((c) => OUTBOXES[c]()));
  const rows = answers.map((a, i) => a.status === "fulfilled"
    ? [esc(t(`ops.cap.${CAPABILITIES[i]}`)), `<span id="outbox-${CAPABILITIES[i]}">${esc(a.value.backlog)}</span>`, esc(time(a.value.oldestPendingTime)), esc(time(a.value.lastPublishTime))]
    : [esc(t(`ops.cap.${CAPABILITIES[i]}`)), `<span class="error" id="outbox-${CAPABILITIES[i]}">${esc(a.reason.message)}</span>`, "", ""]);
  box.innerHTML = table(["ops.capability", "ops.outboxBacklog", "ops.oldestPending", "ops.lastPublish"], rows, 'id="outbox-table"');
}

async function refresh(main) {
  const status = main.querySelector("#status");
  const outboxesDrawn = outboxes(main.querySelector("#outboxes"));
  const deadLetters = get("/v1/deadLetters", { pageSize: 50 }); // all three asked at once
  deadLetters.catch(() => {});
  try {
    const s = await get("/v1/pipelineStatus");
    const item = (key, value, id) => `<dt>${esc(t(key))}</dt><dd id="${id}">${esc(value)}</dd>`;
    status.innerHTML = `<dl>${item("ops.group", s.consumerGroup, "ops-group")}${item("ops.consuming", s.consuming ? `✔ ${s.stateReason}` : `✘ ${s.stateReason}`, "ops-consuming")}
      ${item("ops.lag", s.consumerLag, "ops-lag")}${item("ops.backlog", s.viewPublishBacklog, "ops-backlog")}${item("ops.applied", s.eventsApplied, "ops-applied")}
      ${item("ops.customers", s.customers, "ops-customers")}${item("ops.dead", s.deadLettersDead, "ops-dead")}
      ${item("ops.replayed", s.deadLettersReplayed, "ops-replayed")}${item("ops.quarantined", s.deadLettersQuarantined, "ops-quarantined")}</dl>`;
  } catch (err) { status.innerHTML = errorBox(err); await outboxesDrawn; return; }
  const box = main.querySelector("#dead-letters");
  if (box.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return; // typing a reason
  try {
    const page = await deadLetters;
    box.innerHTML = table(["ops.event", "ops.source", "ops.error", "view.state", "ops.outcome"], page.deadLetters.map(row), 'id="dead-letter-table"');
    for (const button of box.querySelectorAll("button[data-act]")) button.addEventListener("click", () => act(main, button));
  } catch (err) { box.innerHTML = errorBox(err); }
  await outboxesDrawn;
}

function row(d) {
  const headers = Object.entries(d.headers || {}).sort().map(([k, v]) => `${k}: ${v}`).join("\n");
  const actions = d.state === "STATE_DEAD"
    ? `<div class="row"><button data-act="replay" data-id="${esc(d.deadLetterId)}">${esc(t("ops.replay"))}</button>
       <input type="text" id="reason-${esc(d.deadLetterId)}" placeholder="${esc(t("ops.reason"))}">
       <button data-act="quarantine" data-id="${esc(d.deadLetterId)}">${esc(t("ops.quarantine"))}</button></div>` : "";
  return [
    `<strong>${esc(d.deadLetterId)}</strong><br>${esc(d.eventType)}<br><span class="muted">${esc(d.subject)}</span>`,
    `${esc(d.topic)} [${esc(d.partition)}] @${esc(d.offset)}<br><span class="muted">${esc(time(d.deadTime))}</span>`,
    `<span class="error">${esc(d.error)}</span><details><summary>${esc(t("ops.headers"))}</summary><pre class="headers">${esc(headers)}</pre></details>`,
    `<span data-state="${esc(d.state)}">${esc(label(d.state))}</span>${d.resolvedBy ? `<br><span class="muted">${esc(t("ops.resolvedBy"))}: ${esc(d.resolvedBy)}</span>` : ""}`,
    `${esc(d.replayOutcome || d.quarantineReason || "")}${actions}`,
  ];
}

async function act(main, button) {
  const id = button.dataset.id;
  button.disabled = true;
  try {
    if (button.dataset.act === "replay") {
      const d = await post(`/v1/deadLetters/${encodeURIComponent(id)}:replay`);
      toast(`${id}: ${label(d.state)} ${d.replayOutcome}`);
    } else {
      const reason = main.querySelector(`#reason-${CSS.escape(id)}`).value.trim();
      const d = await post(`/v1/deadLetters/${encodeURIComponent(id)}:quarantine`, { reason });
      toast(`${id}: ${label(d.state)}`);
    }
  } catch (err) {
    toast(`${id}: ${err.message}`);
    button.disabled = false;
  }
  document.activeElement?.blur();
  await refresh(main);
}
