// The Tidings admin dashboard: everything through the admin API, with the
// token the operator types once (kept in sessionStorage for this tab only).
// Every value from the server is put into the page as text, never as HTML.
"use strict";

const API = "api";
const KEY = "tidings-admin-token";
const HISTORY = 150; // samples of 2 s: 5 minutes
const COLORS = ["#2e6bd8", "#c4320a", "#067647", "#b54708", "#6941c6", "#0e9384", "#c11574", "#475467"];

let token = sessionStorage.getItem(KEY);
let filter = {};
let after = null;
let history = []; // [{t, totals: {handler: handled}}]
let tailing = null;

const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const res = await fetch(`${API}${path}`, {
    ...options,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(options.headers || {}) },
  });
  if (res.status === 401) {
    sessionStorage.removeItem(KEY);
    token = null;
    show(false, "The admin token was refused.");
    throw new Error("unauthorized");
  }
  const body = await res.json();
  if (!res.ok) throw new Error(body.message || res.statusText);
  return body;
}

function show(open, error = "") {
  $("login").hidden = open;
  $("app").hidden = !open;
  $("logout").hidden = !open;
  $("login-error").textContent = error;
  $("state").textContent = open ? "connected" : "not connected";
  $("state").className = open ? "pill ok" : "pill";
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

const ms = (ns) => (ns ? (ns / 1e6).toFixed(2) : "–");

async function refresh() {
  const [overview, handlers] = await Promise.all([api("/overview"), api("/handlers")]);
  $("pending").textContent = overview.pending;
  $("capacity").textContent = overview.capacity;
  $("dead").textContent = overview.dead_letters;
  $("enabled").textContent = overview.enabled ? "enabled" : "disabled";
  const store = overview.store;
  $("store").textContent = store
    ? `${overview.store_kind}: ${store.connected ? "connected" : "DISCONNECTED"}, ${store.reconnects} reconnects`
    : overview.store_kind;
  const body = $("handlers").tBodies[0];
  body.replaceChildren();
  const totals = {};
  for (const h of handlers.handlers) {
    const row = body.insertRow();
    row.dataset.handler = h.name;
    cell(row, h.name);
    cell(row, h.event_type);
    cell(row, h.succeeded);
    cell(row, h.failed);
    cell(row, h.retried);
    cell(row, h.dead_lettered);
    cell(row, h.in_flight);
    cell(row, h.queued);
    cell(row, ms(h.latency.p50_ns));
    cell(row, ms(h.latency.p99_ns));
    cell(row, ms(h.latency.p999_ns));
    totals[h.name] = h.succeeded + h.failed;
  }
  const keysBody = $("keys").tBodies[0];
  const backlogs = await Promise.all(handlers.handlers.filter((h) => h.queued > 0)
    .map((h) => api(`/handlers/${encodeURIComponent(h.name)}/keys`).catch(() => ({ handler: h.name, keys: [] }))));
  keysBody.replaceChildren();
  for (const b of backlogs) {
    for (const k of b.keys.slice(0, 10)) {
      const row = keysBody.insertRow();
      cell(row, b.handler);
      cell(row, k.key);
      cell(row, k.pending);
    }
  }
  history.push({ t: Date.now(), totals });
  if (history.length > HISTORY + 1) history.shift();
  draw();
}

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const names = Object.keys(history.at(-1)?.totals || {});
  const series = names.map((name) =>
    history.slice(1).map((s, i) => {
      const prev = history[i];
      const dt = (s.t - prev.t) / 1000 || 1;
      return Math.max(0, ((s.totals[name] || 0) - (prev.totals[name] || 0)) / dt);
    }));
  const top = Math.max(1, ...series.flat());
  const w = canvas.width, h = canvas.height, pad = 24;
  ctx.fillStyle = "#667085";
  ctx.font = "11px system-ui";
  ctx.fillText(`${top.toFixed(0)}/s`, 4, 12);
  series.forEach((points, k) => {
    ctx.strokeStyle = COLORS[k % COLORS.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((v, i) => {
      const x = pad + ((HISTORY - points.length + i) / (HISTORY - 1)) * (w - 2 * pad); // newest at the right
      const y = h - pad - (v / top) * (h - 2 * pad);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  });
  const legend = $("legend");
  legend.replaceChildren();
  names.forEach((name, k) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLORS[k % COLORS.length];
    span.append(swatch, document.createTextNode(name));
    legend.append(span);
  });
}

function query(extra = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...filter, ...extra })) if (v) q.set(k, v);
  return q.toString();
}

async function loadDeadLetters(more = false) {
  if (!more) after = null;
  const page = await api(`/dead-letters?${query({ limit: 100, after })}`);
  const body = $("dead-letters").tBodies[0];
  if (!more) body.replaceChildren();
  for (const d of page.dead_letters) {
    const row = body.insertRow();
    row.dataset.id = d.id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = d.id;
    box.setAttribute("aria-label", `select dead letter ${d.id}`);
    box.addEventListener("change", selectionChanged);
    row.insertCell().append(box);
    cell(row, d.id);
    cell(row, d.handler);
    cell(row, d.event_type);
    cell(row, d.key);
    cell(row, d.attempts);
    cell(row, new Date(d.failed_at).toLocaleString());
    cell(row, d.error, "error").title = d.error;
  }
  after = page.next;
  $("more").hidden = page.next === null;
  selectionChanged();
}

function selected() {
  return [...document.querySelectorAll("#dead-letters tbody input:checked")].map((b) => Number(b.value));
}

function selectionChanged() {
  const none = selected().length === 0;
  $("replay-selected").disabled = none;
  $("discard-selected").disabled = none;
}

// Counts first (a dry run), asks, then acts.
async function act(action, target) {
  const dry = await api(`/dead-letters/${action}`, { method: "POST", body: JSON.stringify({ ...target, dry_run: true }) });
  if (dry.matched === 0) {
    $("action-result").textContent = "Nothing matches.";
    return;
  }
  if (!confirm(`${action === "replay" ? "Replay" : "Discard for good"} ${dry.matched} dead letter(s)?`)) return;
  const report = await api(`/dead-letters/${action}`, { method: "POST", body: JSON.stringify(target) });
  $("action-result").textContent = `${report.done} ${action === "replay" ? "replayed" : "discarded"}, ${report.failed} failed`;
  await Promise.all([loadDeadLetters(), refresh()]);
}

async function tail() {
  if (tailing) {
    tailing.abort();
    tailing = null;
    $("tail-toggle").textContent = "Start";
    return;
  }
  tailing = new AbortController();
  $("tail-toggle").textContent = "Stop";
  const list = $("tail");
  try {
    const res = await fetch(`${API}/tail`, { headers: { authorization: `Bearer ${token}` }, signal: tailing.signal });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("");
        if (!data) continue;
        let text = data;
        try {
          const t = JSON.parse(data);
          text = t.kind === "emitted"
            ? `emitted  ${t.event_type} ${t.event_id}${t.key ? ` key=${t.key}` : ""}`
            : `${t.outcome} ${t.event_type} ${t.event_id} ${t.handler} attempt ${t.attempt}`;
        } catch { /* a lag notice: shown as is */ }
        const item = document.createElement("li");
        item.textContent = text;
        list.prepend(item);
        while (list.children.length > 200) list.lastChild.remove();
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") $("action-result").textContent = `tail: ${e.message}`;
  }
}

async function open() {
  try {
    await refresh();
    show(true);
    await loadDeadLetters();
  } catch (e) {
    if (e.message !== "unauthorized") show(false, e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value;
    sessionStorage.setItem(KEY, token);
    open();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    token = null;
    show(false);
  });
  $("filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    filter = Object.fromEntries(new FormData(ev.target));
    loadDeadLetters();
  });
  $("more").addEventListener("click", () => loadDeadLetters(true));
  $("select-all").addEventListener("change", (ev) => {
    document.querySelectorAll("#dead-letters tbody input").forEach((b) => { b.checked = ev.target.checked; });
    selectionChanged();
  });
  const filterOf = () => {
    const f = {};
    for (const [k, v] of Object.entries(filter)) if (v) f[k] = v;
    return { filter: f };
  };
  $("replay-selected").addEventListener("click", () => act("replay", { ids: selected() }));
  $("discard-selected").addEventListener("click", () => act("discard", { ids: selected() }));
  $("replay-all").addEventListener("click", () => act("replay", filterOf()));
  $("discard-all").addEventListener("click", () => act("discard", filterOf()));
  $("tail-toggle").addEventListener("click", tail);
  setInterval(() => { if (token && !$("app").hidden) refresh().catch(() => {}); }, 2000);
  if (token) open(); else show(false);
});
