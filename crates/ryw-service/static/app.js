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
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** A request as `who` (the page's user by default, or a live demo user). */
async function api(method, path, body, extra = {}, who = null) {
  const user = who ? who.user : state.user;
  const token = who ? who.token : state.token;
  const headers = { "X-Demo-UserId": user, ...extra };
  if (token) headers["X-Consistency-Token"] = token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const back = resp.headers.get("X-Consistency-Token");
  if (back && who) who.token = back;
  else if (back) { state.token = back; localStorage.setItem("ryw.token", back); }
  let data = null;
  try { data = await resp.json(); } catch (_) { /* empty body */ }
  return {
    status: resp.status, data,
    servedBy: resp.headers.get("X-Served-By"),
    waitedMs: resp.headers.get("X-Waited-Ms") || "0",
    waitedFor: resp.headers.get("X-Waited-For"),
    // A failover lost an acknowledged write of this session (its position).
    writeLost: resp.headers.get("X-Ryw-Write-Lost"),
  };
}

/** A fresh read's wait in words: whether it waited, for which follower, how long. */
function describeWait(strategy, servedBy, waitedMs, waitedFor) {
  const ms = Number(waitedMs || 0);
  if (ms > 0) {
    const target = waitedFor || (servedBy !== "leader" ? servedBy : "a follower");
    return servedBy === "leader"
      ? `waited ${ms} ms for ${target}, which did not catch up in time: the leader served it (a wasted wait)`
      : `waited ${ms} ms for ${target}, which then served it`;
  }
  if (servedBy === "leader") {
    return strategy === "hybrid"
      ? "did not wait: no follower was about to have the write, so the leader served it at once"
      : "did not wait: the leader served it";
  }
  return strategy === "legacy"
    ? `did not wait: ${servedBy}, picked at random, whatever it had replayed`
    : `did not wait: ${servedBy} already had the write`;
}

/** The default strategy in one sentence, with the server's own settings. */
function explainDefault(c) {
  const what = {
    hybrid: `a fresh read goes to a follower that already has your last write; if none has it yet, it waits (at most ${c.hybrid_wait_ms} ms) only when the router predicts a follower is about to catch up, and otherwise reads the leader at once: never an old balance, and the leader serves only the reads no follower could`,
    causal: `a fresh read goes to a follower that has your last write, waiting up to ${c.causal_wait_ms} ms for one, then the leader`,
    sticky: `after a write you read from the leader for ${duration(c.sticky_window_ms)}, then from a random follower`,
    leader: "every fresh read goes to the leader",
    legacy: "a fresh read goes to a random follower, however far behind: stale reads",
    "per-read-check": "a fresh read asks a random follower whether it has your write, then reads there or on the leader",
  }[c.strategy] || "";
  return `The default, ${c.strategy}: ${what}.`;
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
    // Show the new balance from the write response at once.
    // After a lost write the new leader's version is the truth, even if lower.
    state.lastPaidVersion = r.writeLost ? r.data.version : Math.max(state.lastPaidVersion, r.data.version);
    showBalance(r.data.balance_cents, r.data.version);
    message(`paid ${money(r.data.amount_cents)} on the leader; new balance ${money(r.data.balance_cents)} (version ${r.data.version}) shown from the payment response`);
    if (r.writeLost) message(`a failover lost an earlier payment of yours (acknowledged at ${r.writeLost}); this payment is on the new leader`, true);
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
  // A failover lost a payment the old leader acknowledged: this read, from
  // the new leader, is the surviving history; it is not stale, and what the
  // user paid since counts from here.
  const lost = r.writeLost && !notFound;
  if (lost) state.lastPaidVersion = d.version;
  // Staleness is judged by the account version, not by who served the read.
  const stale = notFound || d.version < state.lastPaidVersion;
  const kind = lost ? "lost" : (stale ? "stale" : "fresh");
  box.className = "result " + kind;
  box.innerHTML = "";
  const mark = document.createElement("span");
  mark.className = "mark " + kind;
  mark.id = "stale-mark";
  mark.textContent = lost ? "WRITE LOST" : (stale ? "STALE" : "fresh");
  const last = `your last payment made version ${state.lastPaidVersion}`;
  let what;
  if (notFound) what = `no account found (${last})`;
  else if (lost) what = `a failover lost your payment acknowledged at ${r.writeLost}; the new leader has ${money(d.balance_cents)} (version ${d.version})`;
  else if (stale) what = `${money(d.balance_cents)} (version ${d.version}, ${last})`;
  else what = `${money(d.balance_cents)} (version ${d.version})`;
  box.append(mark, ` ${what} from `);
  const who = document.createElement("b");
  who.textContent = d.served_by;
  box.append(who, ` via ${d.strategy}, waited ${d.waited_ms} ms`);
  $("#read-wait").textContent = "Last fresh read: " + describeWait(d.strategy, d.served_by, d.waited_ms, r.waitedFor) + ".";
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
  $("#store").textContent = `timeline ${c.timeline} · session store: ${c.session_store.kind}${c.session_store.healthy ? "" : " — DEGRADED, fresh reads go to the leader"}`;
  $("#default-explained").textContent = explainDefault(c);
  $("#lane-default .lane-name").textContent = c.strategy;
  $("#lane-default .lane-what").textContent = "the server's default";
  startLanes(c);
  const body = $("#nodes tbody");
  const focused = document.activeElement && document.activeElement.dataset.follower;
  if (focused) return; // do not redraw under the user's cursor
  body.innerHTML = "";
  for (const n of c.nodes) {
    const tr = document.createElement("tr");
    const lag = n.role === "leader" ? "" : (n.lag_ms === null ? "?" : `${n.lag_ms} ms / ${n.lag_bytes ?? "?"} B`);
    const catchUp = n.role === "leader" || n.catch_up_ms === null ? "" : `${n.catch_up_ms} ms`;
    // After a failover the leader is another node: say which.
    const name = n.node && n.node !== n.name ? `${n.name} (${n.node})` : n.name;
    const cells = [name, n.role, n.lsn ?? "unknown", lag, n.in_rotation ? "in" : ("out" + (n.note ? `: ${n.note}` : "")), catchUp];
    cells.forEach((text, i) => {
      const td = document.createElement("td"); td.textContent = text;
      if (i === 3 && n.role === "follower") td.className = "lag"; // "12 ms / 400 B" stays on one line
      tr.append(td);
    });
    const td = document.createElement("td");
    if (n.role === "follower" && c.lag_control) {
      const input = document.createElement("input");
      input.type = "number"; input.min = 0; input.max = 60000; input.step = 100; input.placeholder = "ms";
      // The follower's current replay delay, as last set.
      if (n.delay_ms !== null && n.delay_ms !== undefined) input.value = n.delay_ms;
      input.title = "replay delay in ms (recovery_min_apply_delay)";
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

// ---------------------------------------------------------------------------
// The live comparison: two demo users of their own, one read through
// `legacy`, one through the server's default, paying and reading at a human
// pace from the moment the page opens.

const lanes = [
  { id: "lane-legacy", strategy: "legacy" },
  { id: "lane-default", strategy: null }, // no header: the server's default
].map((l) => ({ ...l, user: crypto.randomUUID(), token: null, paid: 0, ready: false, reads: 0, stale: 0, running: false }));

function startLanes(c) {
  for (const lane of lanes) {
    if (lane.running) continue;
    if (lane.strategy && !c.strategy_header) {
      document.querySelector(`#${lane.id} .lane-last`).textContent =
        "needs the server's --allow-strategy-header to pick legacy for this user";
      continue;
    }
    lane.running = true;
    runLane(lane);
  }
}

async function runLane(lane) {
  for (;;) {
    try { await laneRound(lane); } catch (_) { /* the server restarted: try again */ }
    await sleep(1200 + Math.random() * 800);
  }
}

/** One payment, a glance, then the balance: stale if older than the payment. */
async function laneRound(lane) {
  if (!lane.ready) {
    const a = await api("POST", "/api/account", undefined, {}, lane);
    if (a.status !== 200 && a.status !== 201) return;
    lane.paid = Math.max(lane.paid, a.data.version);
    lane.ready = true;
  }
  const p = await api("POST", "/api/payments", { amount_cents: 100, description: "live demo" },
    { "Idempotency-Key": crypto.randomUUID() }, lane);
  if (p.status === 422 || p.status === 404) { // out of money (or gone): a new demo user
    Object.assign(lane, { user: crypto.randomUUID(), token: null, paid: 0, ready: false });
    return;
  }
  if (p.status !== 201 && p.status !== 200) return;
  // After a failover that lost a payment, the new leader's version is the truth.
  lane.paid = p.writeLost ? p.data.version : Math.max(lane.paid, p.data.version);
  await sleep(Math.random() * 150); // a glance at the confirmation, then the balance
  const r = await api("GET", "/api/balance", undefined,
    lane.strategy ? { "X-Read-Strategy": lane.strategy } : {}, lane);
  const notFound = r.status === 404 && r.data && String(r.data.type).endsWith("/no-account");
  if (r.status !== 200 && !notFound) return;
  const version = notFound ? null : r.data.version;
  const strategy = notFound ? (lane.strategy || "default") : r.data.strategy;
  const lost = r.writeLost && !notFound;
  if (lost) lane.paid = version; // the surviving history, from the new leader
  const stale = notFound || version < lane.paid;
  lane.reads += 1;
  if (stale) lane.stale += 1;
  const el = document.getElementById(lane.id);
  const count = el.querySelector(".stale-count");
  count.textContent = lane.stale;
  count.classList.toggle("bad", lane.stale > 0);
  el.querySelector(".read-count").textContent = lane.reads;
  const li = document.createElement("li");
  li.className = lost ? "lost" : (stale ? "stale" : "fresh");
  li.textContent = `${lost ? "write lost" : (stale ? "stale" : "fresh")} v${version ?? "–"} ${r.servedBy}`;
  li.title = `paid version ${lane.paid}, read version ${version ?? "none (404)"} from ${r.servedBy}, waited ${r.waitedMs} ms`;
  const list = el.querySelector("ol.recent");
  list.prepend(li);
  while (list.children.length > 8) list.lastChild.remove();
  el.querySelector(".lane-last").textContent = stale
    ? `last read: version ${version ?? "none (404)"} from ${r.servedBy}, after paying version ${lane.paid}: STALE`
    : `last read: version ${version} from ${r.servedBy}, the payment's own`;
  if (!lane.strategy) {
    $("#default-wait").textContent = "Last fresh read: " + describeWait(strategy, r.servedBy, r.waitedMs, r.waitedFor) + ".";
  }
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
