// CoE Router dashboard: vanilla JS over the admin API (/admin/v1). Every value reaches the page as
// text (textContent), never as HTML. The admin key lives in sessionStorage for this tab only.
"use strict";

const KEY_STORE = "coe-admin-key";
const POLL_MS = 2000;
const HISTORY = 90; // chart points kept (3 minutes at 2 s)
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  signedIn: false,
  tab: "experts",
  status: null,
  experts: [],
  history: [],
  decisions: [],
  lastSeq: 0,
  timer: null,
  lastText: "",
};

const $ = (sel, root = document) => root.querySelector(sel);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v !== false && v !== null && v !== undefined) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(url, method = "GET", body) {
  const headers = {};
  if (state.key) headers.Authorization = "Bearer " + state.key;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, (data.error && data.error.message) || r.statusText);
  return { data, headers: r.headers };
}

const api = async (method, path, body) => (await request("/admin/v1" + path, method, body)).data;

function showError(err) {
  const box = $("#error");
  if (!err) {
    box.hidden = true;
    return;
  }
  box.textContent = err.status ? `${err.status}: ${err.message}` : String(err.message || err);
  box.hidden = false;
  if (err.status === 401 || err.status === 403) setSignedIn(false);
}

async function guarded(fn) {
  try {
    showError(null);
    await fn();
  } catch (err) {
    showError(err);
  }
}

// ----- sign-in -------------------------------------------------------------------------------------

function takeKeyFromUrl() {
  const params = new URLSearchParams(location.search);
  if (!params.has("key")) return;
  state.key = params.get("key");
  sessionStorage.setItem(KEY_STORE, state.key);
  params.delete("key");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

function setSignedIn(yes) {
  state.signedIn = yes;
  $("#sign-out").hidden = !yes;
  $("#sign-in").hidden = yes;
  $("#key-input").hidden = yes;
  $("#signed-in-as").textContent = yes
    ? state.key
      ? "signed in with key " + (state.key.split("_")[1] || "…")
      : "open: no API key exists (loopback only)"
    : "";
  document.body.classList.toggle("signed-out", !yes);
  if (!yes && state.timer) {
    clearInterval(state.timer);
    state.timer = null;
  }
}

async function signIn(key) {
  state.key = key;
  await api("GET", "/status");
  if (key) sessionStorage.setItem(KEY_STORE, key);
  setSignedIn(true);
  await refreshAll();
  if (!state.timer) state.timer = setInterval(() => guarded(poll), POLL_MS);
}

function signOut() {
  sessionStorage.removeItem(KEY_STORE);
  state.key = "";
  setSignedIn(false);
}

// ----- data ----------------------------------------------------------------------------------------

async function refreshAll() {
  await Promise.all([loadStatus(), loadExperts()]);
  await renderTab();
}

async function poll() {
  await loadStatus();
  if (state.tab === "experts") renderExperts();
  if (state.tab === "charts") renderCharts();
  if (state.tab === "decisions") await loadDecisions();
}

async function loadStatus() {
  const s = await api("GET", "/status");
  state.status = s;
  const point = { t: s.time, experts: {}, cache: s.cache };
  for (const e of s.experts) point.experts[e.name] = e;
  state.history.push(point);
  if (state.history.length > HISTORY) state.history.shift();
  const r = s.router || {};
  $("#summary").textContent =
    `router ${r.router_version || "?"}${r.ready ? "" : " (not ready)"} · registry revision ` +
    `${s.registry.revision ?? "?"} · ${s.experts.filter((e) => e.healthy).length}/${s.experts.length} healthy`;
}

async function loadExperts() {
  state.experts = (await api("GET", "/experts")).data;
}

async function renderTab() {
  if (!state.signedIn) return;
  if (state.tab === "experts") renderExperts();
  else if (state.tab === "categories") await renderCategories();
  else if (state.tab === "keys") await renderKeys();
  else if (state.tab === "decisions") await loadDecisions();
  else if (state.tab === "charts") renderCharts();
  else if (state.tab === "playground") renderPolicyChoices();
}

// ----- experts -------------------------------------------------------------------------------------

const fmt = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

function renderExperts() {
  const live = {};
  for (const e of (state.status && state.status.experts) || []) live[e.name] = e;
  const rows = state.experts.map((e) => {
    const s = live[e.name] || {};
    const health = !e.enabled ? "off" : s.healthy ? "healthy" : "unhealthy";
    return h(
      "tr",
      { dataset: { expert: e.name }, class: e.enabled ? "" : "disabled" },
      h("td", { class: "name" }, e.name, e.tags.length ? h("span", { class: "tags" }, e.tags.join(", ")) : null),
      h("td", { class: "enabled" }, e.enabled ? "enabled" : "disabled"),
      h("td", { class: "health" }, h("span", { class: "dot " + health }), health),
      h("td", {}, s.breaker ?? "–"),
      h("td", { class: "num" }, s.in_flight ?? "–"),
      h("td", { class: "num" }, fmt(s.latency_ms)),
      h("td", { class: "num" }, s.error_rate === null || s.error_rate === undefined ? "–" : (100 * s.error_rate).toFixed(0) + "%"),
      h("td", { class: "num" }, s.calls ?? 0),
      h("td", { class: "num" }, `${s.prompt_tokens ?? 0}/${s.completion_tokens ?? 0}`),
      h("td", { class: "num" }, fmt(s.cost_usd, 6)),
      h("td", { class: "model" }, e.model),
      h(
        "td",
        {},
        h(
          "button",
          {
            class: "toggle",
            onclick: () =>
              guarded(async () => {
                await api("POST", `/experts/${encodeURIComponent(e.name)}/${e.enabled ? "disable" : "enable"}`);
                await loadExperts();
                await loadStatus();
                renderExperts();
              }),
          },
          e.enabled ? "Disable" : "Enable",
        ),
      ),
    );
  });
  $("#experts-table tbody").replaceChildren(...rows);
}

// ----- categories ----------------------------------------------------------------------------------

async function renderCategories() {
  const cats = (await api("GET", "/categories")).data;
  const names = state.experts.map((e) => e.name);
  const enabled = Object.fromEntries(state.experts.map((e) => [e.name, e.enabled]));
  const cards = cats.map((c) => {
    const path = `/categories/${encodeURIComponent(c.name)}/experts/`;
    const rows = c.experts.map((m) =>
      h(
        "tr",
        { dataset: { expert: m.expert } },
        h("td", { class: "name" }, m.expert, enabled[m.expert] === false ? h("span", { class: "tags" }, "disabled") : null),
        h(
          "td",
          {},
          h("input", {
            type: "number",
            min: "1",
            value: m.rank,
            class: "rank",
            "aria-label": `rank of ${m.expert} in ${c.name}`,
            onchange: (ev) =>
              guarded(async () => {
                await api("PUT", path + encodeURIComponent(m.expert), { rank: Number(ev.target.value) });
                await renderCategories();
              }),
          }),
        ),
        h(
          "td",
          {},
          h(
            "button",
            {
              onclick: () =>
                guarded(async () => {
                  await api("POST", `/experts/${encodeURIComponent(m.expert)}/${enabled[m.expert] ? "disable" : "enable"}`);
                  await loadExperts();
                  await renderCategories();
                }),
            },
            enabled[m.expert] ? "Disable" : "Enable",
          ),
          h(
            "button",
            {
              class: "danger",
              onclick: () =>
                guarded(async () => {
                  await api("DELETE", path + encodeURIComponent(m.expert));
                  await renderCategories();
                }),
            },
            "Unmap",
          ),
        ),
      ),
    );
    const pick = h("select", { "aria-label": `expert to map to ${c.name}` }, names.map((n) => h("option", { value: n }, n)));
    const rank = h("input", { type: "number", min: "1", value: c.experts.length + 1, class: "rank" });
    return h(
      "div",
      { class: "card", dataset: { category: c.name } },
      h("h3", {}, c.name, c.description ? h("small", { class: "muted" }, " " + c.description) : null),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "expert"), h("th", {}, "rank"), h("th", {}, ""))), h("tbody", {}, rows)),
      h(
        "div",
        { class: "inline" },
        pick,
        rank,
        h(
          "button",
          {
            onclick: () =>
              guarded(async () => {
                await api("PUT", path + encodeURIComponent(pick.value), { rank: Number(rank.value) });
                await renderCategories();
              }),
          },
          "Map",
        ),
      ),
    );
  });
  $("#categories").replaceChildren(...(cards.length ? cards : [h("p", { class: "muted" }, "No categories yet.")]));
}

// ----- keys ----------------------------------------------------------------------------------------

async function renderKeys() {
  const keys = (await api("GET", "/keys")).data;
  const extra = keys.length ? Object.keys(keys[0]).filter((k) => !["id", "name", "scopes", "created_at", "revoked_at"].includes(k)) : [];
  const head = $("#keys-table thead tr");
  head.replaceChildren(...["id", "name", "scopes", ...extra, "created", "revoked", ""].map((t) => h("th", {}, t)));
  const rows = keys.map((k) =>
    h(
      "tr",
      { dataset: { key: k.id }, class: k.revoked_at ? "disabled" : "" },
      h("td", { class: "name" }, k.id),
      h("td", {}, k.name),
      h("td", {}, k.scopes.join(", ")),
      extra.map((f) => h("td", {}, k[f] === null || k[f] === undefined ? "–" : String(k[f]))),
      h("td", {}, (k.created_at || "").slice(0, 19).replace("T", " ")),
      h("td", {}, (k.revoked_at || "").slice(0, 19).replace("T", " ")),
      h(
        "td",
        {},
        k.revoked_at
          ? null
          : h(
              "button",
              {
                class: "danger",
                onclick: () =>
                  guarded(async () => {
                    await api("DELETE", `/keys/${encodeURIComponent(k.id)}`);
                    await renderKeys();
                  }),
              },
              "Revoke",
            ),
      ),
    ),
  );
  $("#keys-table tbody").replaceChildren(...rows);
}

async function createKey(ev) {
  ev.preventDefault();
  await guarded(async () => {
    const scopes = ["query", "admin"].filter((s) => $("#key-" + s).checked);
    const k = await api("POST", "/keys", { name: $("#key-name").value.trim(), scopes });
    const box = $("#new-key");
    box.replaceChildren(h("strong", {}, `Key ${k.id} created. Copy it now, it is shown only once: `), h("code", { id: "new-key-value" }, k.key));
    box.hidden = false;
    await renderKeys();
  });
}

// ----- decisions -----------------------------------------------------------------------------------

async function loadDecisions() {
  const fresh = (await api("GET", `/decisions/recent?limit=100&after=${state.lastSeq}`)).data;
  if (fresh.length) {
    state.lastSeq = fresh[fresh.length - 1].seq;
    state.decisions = [...fresh.reverse(), ...state.decisions].slice(0, 100);
  }
  const rows = state.decisions.map((d) => {
    const top = d.categories[0];
    const ms = Object.values(d.timings_ms || {}).reduce((a, b) => a + b, 0);
    return h(
      "tr",
      {},
      h("td", {}, new Date(d.time * 1000).toLocaleTimeString()),
      h("td", { class: "query", title: d.text }, d.text),
      h("td", {}, d.policy),
      h("td", {}, top ? `${top.category} (${top.probability.toFixed(2)})` : "–"),
      h("td", { class: "name" }, d.experts.map((e) => e.name).join(", ")),
      h("td", {}, d.fallback ? "yes" : ""),
      h("td", { class: "num" }, ms.toFixed(1)),
    );
  });
  $("#decisions-table tbody").replaceChildren(
    ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No decisions yet: send a query."))]),
  );
}

// ----- charts --------------------------------------------------------------------------------------

// Series per expert from consecutive status samples: counters become per-second rates.
function series(kind) {
  const pts = state.history;
  const names = state.experts.map((e) => e.name);
  const out = {};
  for (const n of names) out[n] = [];
  for (let i = 1; i < pts.length; i++) {
    const a = pts[i - 1];
    const b = pts[i];
    const dt = Math.max(b.t - a.t, 1e-3);
    for (const n of names) {
      const x = b.experts[n];
      const y = a.experts[n];
      if (!x || !y) continue;
      let v;
      if (kind === "traffic") v = (x.calls - y.calls) / dt;
      else if (kind === "latency") v = x.latency_ms ?? 0;
      else if (kind === "cost") v = ((x.cost_usd - y.cost_usd) / dt) * 3600;
      else if (kind === "tokens") v = (x.prompt_tokens + x.completion_tokens - y.prompt_tokens - y.completion_tokens) / dt;
      out[n].push([b.t, Math.max(0, v)]);
    }
  }
  return out;
}

function cacheSeries() {
  const pts = state.history;
  const out = { hit: [], miss: [] };
  for (let i = 1; i < pts.length; i++) {
    const a = pts[i - 1].cache;
    const b = pts[i].cache;
    if (!a || !b) continue;
    const dt = Math.max(pts[i].t - pts[i - 1].t, 1e-3);
    out.hit.push([pts[i].t, (b.hit - a.hit) / dt]);
    out.miss.push([pts[i].t, (b.miss - a.miss) / dt]);
  }
  return out;
}

function chart(title, unit, data) {
  const W = 460;
  const H = 160;
  const P = { l: 44, r: 8, t: 8, b: 20 };
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const all = Object.values(data).flat();
  const t0 = all.length ? Math.min(...all.map((p) => p[0])) : 0;
  const t1 = all.length ? Math.max(...all.map((p) => p[0])) : 1;
  const peak = Math.max(0, ...all.map((p) => p[1]));
  const vmax = peak > 0 ? peak : 1; // a flat zero line sits on the axis under a nominal scale of 1
  svg.dataset.max = String(peak);
  const x = (t) => P.l + ((t - t0) / Math.max(t1 - t0, 1e-3)) * (W - P.l - P.r);
  const y = (v) => H - P.b - (v / vmax) * (H - P.t - P.b);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  add("line", { x1: P.l, y1: H - P.b, x2: W - P.r, y2: H - P.b, class: "axis" });
  add("line", { x1: P.l, y1: P.t, x2: P.l, y2: H - P.b, class: "axis" });
  add("text", { x: P.l - 4, y: P.t + 8, "text-anchor": "end", class: "tick" }, vmax < 0.01 ? vmax.toExponential(1) : String(Number(vmax.toPrecision(3))));
  add("text", { x: P.l - 4, y: H - P.b, "text-anchor": "end", class: "tick" }, "0");
  add("text", { x: W - P.r, y: H - 4, "text-anchor": "end", class: "tick" }, "now");
  const legend = h("div", { class: "legend" });
  Object.entries(data).forEach(([name, pts], i) => {
    const color = COLORS[i % COLORS.length];
    if (pts.length) add("polyline", { points: pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "), stroke: color, class: "line" });
    legend.append(h("span", {}, h("i", { style: `background:${color}` }), name));
  });
  if (!all.length) add("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "tick" }, "collecting samples…");
  return h("figure", { class: "card" }, h("figcaption", {}, title, h("small", { class: "muted" }, " " + unit)), svg, legend);
}

function renderCharts() {
  const charts = [
    chart("Traffic", "calls/s", series("traffic")),
    chart("Latency", "ms, recent mean", series("latency")),
    chart("Tokens", "tokens/s", series("tokens")),
    chart("Cost", "USD/hour", series("cost")),
  ];
  if (state.status && state.status.cache) charts.push(chart("Response cache", "look-ups/s (all experts)", cacheSeries()));
  $("#charts").replaceChildren(...charts);
}

// ----- playground ----------------------------------------------------------------------------------

function renderPolicyChoices(policies) {
  const sel = $("#pg-policy");
  if (policies) sel.replaceChildren(...policies.map((p) => h("option", { value: p }, p)));
}

async function runPlayground(ev) {
  ev.preventDefault();
  await guarded(async () => {
    const text = $("#pg-text").value;
    const r = await api("POST", "/playground", { text });
    state.lastText = text;
    const probs = r.categories.map((c) =>
      h(
        "div",
        { class: "bar" },
        h("span", { class: "label" }, c.category),
        h("span", { class: "track" }, h("span", { class: "fill", style: `width:${(100 * c.probability).toFixed(1)}%` })),
        h("span", { class: "num" }, c.probability.toFixed(3)),
      ),
    );
    const rows = r.policies.map((p) => {
      if (p.error) return h("tr", { dataset: { policy: p.policy } }, h("td", {}, p.policy), h("td", { colspan: "4", class: "error-text" }, p.error.message));
      const d = p.decision;
      return h(
        "tr",
        { dataset: { policy: p.policy } },
        h("td", {}, p.policy, p.policy === r.default_policy ? h("span", { class: "tags" }, "default") : null),
        h("td", { class: "name chosen" }, d.experts.map((e) => `${e.name} (${e.score.toFixed(2)}${e.bias ? ", bias " + e.bias.toFixed(2) : ""})`).join(", ")),
        h("td", { class: "reason" }, d.experts.map((e) => e.reason).filter(Boolean).join("; ") + (d.fallback ? " [fallback]" : "")),
        h("td", {}, d.alternates.join(", ")),
        h("td", {}, d.aggregate || ""),
      );
    });
    $("#pg-result").replaceChildren(
      h("h3", {}, "Category probabilities ", h("small", { class: "muted" }, `router ${r.router_version || "?"}`)),
      h("div", { class: "bars" }, probs),
      h("h3", {}, "Each policy's choice"),
      h(
        "table",
        { id: "pg-table" },
        h("thead", {}, h("tr", {}, ["policy", "experts (score)", "why", "failover order", "aggregate"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows),
      ),
    );
    renderPolicyChoices(r.policies.filter((p) => !p.error).map((p) => p.policy));
    $("#pg-policy").value = r.default_policy;
    $("#pg-send").disabled = false;
  });
}

async function sendPlayground() {
  await guarded(async () => {
    const policy = $("#pg-policy").value;
    const body = { model: "auto", routing: { policy }, max_tokens: 96, messages: [{ role: "user", content: state.lastText }] };
    $("#pg-answer").replaceChildren(h("p", { class: "muted" }, "waiting for the expert…"));
    const { data } = await request("/v1/chat/completions", "POST", body);
    const msg = data.choices && data.choices[0] && data.choices[0].message;
    $("#pg-answer").replaceChildren(
      h("h3", {}, "Answer ", h("small", { class: "muted" }, `from ${data.model}, $${(data.coe.cost_usd || 0).toFixed(6)}`)),
      h("pre", { id: "pg-answer-text" }, (msg && msg.content) || ""),
    );
  });
}

// ----- wiring --------------------------------------------------------------------------------------

function selectTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== "tab-" + name;
  guarded(renderTab);
}

function main() {
  takeKeyFromUrl();
  $("#key-input").value = state.key;
  $("#signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(() => signIn($("#key-input").value.trim()));
  });
  $("#sign-out").addEventListener("click", signOut);
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => selectTab(b.dataset.tab));
  $("#key-form").addEventListener("submit", createKey);
  $("#pg-form").addEventListener("submit", runPlayground);
  $("#pg-send").addEventListener("click", sendPlayground);
  setSignedIn(false);
  // signed in already (a key in this tab's storage, or an open service on loopback): go straight in
  signIn(state.key).catch((err) => {
    if (state.key) showError(err);
  });
}

main();
