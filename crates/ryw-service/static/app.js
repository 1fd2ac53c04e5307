// ryw dashboard: plain JavaScript, no dependencies, served from the binary.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  user: localStorage.getItem("ryw.user") || crypto.randomUUID(),
  token: localStorage.getItem("ryw.token") || null,
  lastPaidVersion: 0,       // the version our last acknowledged payment produced
  accountKnown: false,      // the account's creation was acknowledged
  lastProfileVersion: 0,
  strategyHeader: true,
};
localStorage.setItem("ryw.user", state.user);

function money(cents) { return "$" + (cents / 100).toFixed(2); }
function now() { return new Date().toLocaleTimeString(); }

async function api(method, path, body, extra = {}) {
  const headers = { "X-Demo-UserId": state.user, ...extra };
  if (state.token) headers["X-Consistency-Token"] = state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const token = resp.headers.get("X-Consistency-Token");
  if (token) { state.token = token; localStorage.setItem("ryw.token", token); }
  let data = null;
  try { data = await resp.json(); } catch (_) { /* empty body */ }
  return {
    status: resp.status, data,
    servedBy: resp.headers.get("X-Served-By"),
    waitedMs: resp.headers.get("X-Waited-Ms") || "0",
  };
}

function strategyHeaders() {
  return state.strategyHeader ? { "X-Read-Strategy": $("#strategy").value } : {};
}

function message(text, bad) {
  const m = $("#message");
  m.textContent = text;
  m.className = "small" + (bad ? " bad" : "");
}

async function ensureAccount() {
  const r = await api("POST", "/api/account");
  if (r.status === 200 || r.status === 201) {
    state.accountKnown = true;
    state.lastPaidVersion = Math.max(state.lastPaidVersion, r.data.version);
    showBalance(r.data.balance_cents, r.data.version);
  } else {
    message("could not create the account: " + (r.data && r.data.detail), true);
  }
}

function showBalance(cents, version) {
  $("#balance").textContent = money(cents);
  $("#version").textContent = version;
}

async function pay() {
  const r = await api("POST", "/api/payments", { amount_cents: 10000, description: "dashboard" },
    { "Idempotency-Key": crypto.randomUUID() });
  if (r.status === 201 || r.status === 200) {
    // Seed 000's strategy 1: show the new balance from the write response at once.
    state.lastPaidVersion = Math.max(state.lastPaidVersion, r.data.version);
    showBalance(r.data.balance_cents, r.data.version);
    message(`paid ${money(r.data.amount_cents)} on the leader; new balance ${money(r.data.balance_cents)} (version ${r.data.version}) shown from the payment response`);
  } else {
    message(`payment refused (${r.status}): ${r.data && r.data.detail}`, true);
  }
  return r;
}

async function refresh() {
  const r = await api("GET", "/api/balance", undefined, strategyHeaders());
  const box = $("#read-result");
  // "No account" from a node that has not replayed the account's creation
  // yet is a stale read too (the account exists: we created it).
  const notFound = r.status === 404 && state.accountKnown
    && r.data && String(r.data.type).endsWith("/no-account");
  if (r.status !== 200 && !notFound) {
    box.className = "result stale";
    box.textContent = `read failed (${r.status}): ${r.data && r.data.detail}`;
    return r;
  }
  const d = notFound
    ? { version: null, served_by: r.servedBy, strategy: $("#strategy").value, waited_ms: r.waitedMs }
    : r.data;
  // Staleness is judged by the account version, not by who served the read.
  const stale = notFound || d.version < state.lastPaidVersion;
  box.className = "result " + (stale ? "stale" : "fresh");
  box.innerHTML = "";
  const mark = document.createElement("span");
  mark.className = "mark " + (stale ? "stale" : "fresh");
  mark.id = "stale-mark";
  mark.textContent = stale ? "STALE" : "fresh";
  const last = `your last payment made version ${state.lastPaidVersion}`;
  let what;
  if (notFound) what = `no account found (${last})`;
  else if (stale) what = `${money(d.balance_cents)} (version ${d.version}, ${last})`;
  else what = `${money(d.balance_cents)} (version ${d.version})`;
  box.append(mark, ` ${what} from `);
  const who = document.createElement("b");
  who.textContent = d.served_by;
  box.append(who, ` via ${d.strategy}, waited ${d.waited_ms} ms`);
  if (!stale) showBalance(d.balance_cents, d.version);
  const row = document.createElement("tr");
  for (const text of [now(), d.strategy, d.served_by, d.waited_ms + " ms", notFound ? "none (404)" : d.version]) {
    const td = document.createElement("td"); td.textContent = text; row.append(td);
  }
  const copy = mark.cloneNode(true); copy.removeAttribute("id"); // ids are unique: #stale-mark is the latest read's
  const td = document.createElement("td"); td.append(copy); row.append(td);
  const body = $("#reads tbody");
  body.prepend(row);
  while (body.children.length > 10) body.lastChild.remove();
  return r;
}

/** 5000 → "5 s", 2500 → "2.5 s", 800 → "800 ms". */
function duration(ms) {
  return ms >= 1000 ? `${+(ms / 1000).toFixed(3)} s` : `${ms} ms`;
}

async function loadCluster() {
  let r;
  try { r = await api("GET", "/api/cluster"); } catch (_) { return; }
  if (r.status !== 200) return;
  const c = r.data;
  state.strategyHeader = c.strategy_header;
  // The server's own sticky window (--sticky-window), not a number written here.
  $("#strategy option[value=sticky]").textContent = `sticky — leader for ${duration(c.sticky_window_ms)} after a write`;
  const sel = $("#strategy");
  if (!c.strategy_header) { sel.value = c.strategy; sel.disabled = true; sel.title = "the server runs without --allow-strategy-header"; }
  $("#store").textContent = `session store: ${c.session_store.kind}${c.session_store.healthy ? "" : " — DEGRADED, fresh reads go to the leader"}`;
  const body = $("#nodes tbody");
  const focused = document.activeElement && document.activeElement.dataset.follower;
  if (focused) return; // do not redraw under the user's cursor
  body.innerHTML = "";
  for (const n of c.nodes) {
    const tr = document.createElement("tr");
    const lag = n.role === "leader" ? "" : (n.lag_ms === null ? "?" : `${n.lag_ms} ms / ${n.lag_bytes ?? "?"} B`);
    for (const text of [n.name, n.role, n.lsn ?? "unknown", lag, n.in_rotation ? "in" : ("out" + (n.note ? `: ${n.note}` : ""))]) {
      const td = document.createElement("td"); td.textContent = text; tr.append(td);
    }
    const td = document.createElement("td");
    if (n.role === "follower" && c.lag_control) {
      const input = document.createElement("input");
      input.type = "number"; input.min = 0; input.max = 60000; input.step = 100; input.placeholder = "ms";
      input.dataset.follower = n.name;
      const btn = document.createElement("button");
      btn.textContent = "set"; btn.className = "link";
      btn.onclick = async () => {
        const res = await api("POST", "/api/cluster/lag", { follower: n.name, delay_ms: Number(input.value || 0) });
        message(res.status === 200 ? `${n.name}: replay delay now ${res.data.delay_ms} ms` : `lag change refused: ${res.data && res.data.detail}`, res.status !== 200);
        input.blur();
      };
      td.append(input, " ", btn);
    }
    tr.append(td);
    body.append(tr);
  }
  $("#lag-head").style.display = c.lag_control ? "" : "none";
}

async function saveProfile(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = { email: f.get("email"), name: f.get("name") };
  if (f.get("avatarUrl")) body.avatarUrl = f.get("avatarUrl");
  const w = await api("POST", "/api/me/profile", body);
  const box = $("#profile-result");
  if (w.status !== 200) { box.className = "result stale"; box.textContent = `refused (${w.status}): ${w.data && w.data.detail}`; return; }
  state.lastProfileVersion = w.data.version;
  const r = await api("GET", "/api/me", undefined, strategyHeaders());
  if (r.status === 404 && r.data && String(r.data.type).endsWith("/no-profile")) {
    // The profile we just saved is missing: a node that has not replayed it.
    box.className = "result stale";
    box.textContent = `STALE: no profile found (yours is version ${state.lastProfileVersion}) from ${r.servedBy} via ${$("#strategy").value}`;
    return;
  }
  if (r.status !== 200) { box.className = "result stale"; box.textContent = `GET /api/me: ${r.status} ${r.data && r.data.detail} (served by ${r.servedBy})`; return; }
  const stale = r.data.version < state.lastProfileVersion;
  box.className = "result " + (stale ? "stale" : "fresh");
  box.textContent = `${stale ? "STALE" : "fresh"}: ${r.data.name} <${r.data.email}> version ${r.data.version} from ${r.data.served_by} via ${r.data.strategy}`;
}

async function loadProducts() {
  const r = await api("GET", "/api/products");
  if (r.status !== 200) return;
  const ul = $("#products");
  ul.innerHTML = "";
  for (const p of r.data.products) {
    const li = document.createElement("li");
    li.textContent = `${p.name} — ${money(p.price_cents)}`;
    ul.append(li);
  }
  $("#products-by").textContent = `served by ${r.data.served_by}`;
}

function busy(fn) {
  return async (ev) => {
    const b = ev.currentTarget; b.disabled = true;
    try { await fn(ev); } finally { b.disabled = false; }
  };
}

$("#user-id").textContent = state.user;
$("#pay").onclick = busy(pay);
$("#refresh").onclick = busy(refresh);
$("#pay-refresh").onclick = busy(async () => { const p = await pay(); if (p.status < 300) await refresh(); });
$("#new-user").onclick = () => { localStorage.removeItem("ryw.user"); localStorage.removeItem("ryw.token"); location.reload(); };
$("#profile-form").onsubmit = saveProfile;

(async () => {
  await loadCluster();
  await ensureAccount();
  await loadProducts();
  setInterval(loadCluster, 500);
})();
