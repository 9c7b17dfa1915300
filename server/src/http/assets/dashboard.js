// breakerd dashboard: live circuit states over Server-Sent Events, counters
// polled from the JSON API, overrides set through it. No framework, no build
// step; everything is built with DOM calls and textContent (never innerHTML),
// so circuit names, reasons and actors cannot inject markup.
"use strict";

(function () {
  const POLL_MS = 2000;          // counters refresh (one sparkline point each)
  const SERIES_LEN = 60;         // sparkline points kept per circuit
  const ACTIVITY_LEN = 100;      // activity entries kept
  const MAX_PAGES = 10;          // at most 10 x 1000 circuits polled
  const TOKEN_KEY = "breakerd.admin_token";
  const OPERATOR_KEY = "breakerd.operator";

  // name -> { snap, receivedAt, series: [rate|null], last: {s, f} | null, counters }
  const circuits = new Map();
  const activity = [];
  let selected = null;
  let renderQueued = false;

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) {
      if (c != null) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  };

  const STATE_LABEL = { closed: "CLOSED", open: "OPEN", half_open: "HALF_OPEN" };
  const KIND_LABEL = { forced_open: "FORCED OPEN", forced_closed: "FORCED CLOSED", disabled: "DISABLED" };

  function fmtDuration(ms) {
    if (ms == null) return "";
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function setMessage(text, kind) {
    const m = $("message");
    m.textContent = text;
    m.className = "message" + (kind ? " message-" + kind : "");
  }

  function addActivity(text, cls) {
    activity.unshift({ at: new Date(), text, cls });
    if (activity.length > ACTIVITY_LEN) activity.length = ACTIVITY_LEN;
    const list = $("activity");
    list.prepend(el("li", { class: cls || "" },
      el("time", {}, activity[0].at.toLocaleTimeString()), " ", text));
    while (list.children.length > ACTIVITY_LEN) list.lastChild.remove();
  }

  function overrideText(o) {
    if (!o) return "";
    let t = (KIND_LABEL[o.kind] || o.kind) + " by " + o.actor + ": " + o.reason;
    if (o.expires_in_ms != null) t += " (expires in " + fmtDuration(o.expires_in_ms) + ")";
    return t;
  }

  // --- live state -----------------------------------------------------------

  function entry(name) {
    let c = circuits.get(name);
    if (!c) {
      c = { snap: null, receivedAt: 0, series: [], last: null, counters: null };
      circuits.set(name, c);
    }
    return c;
  }

  function applySnap(s, announce) {
    if (s.deleted) {
      if (circuits.delete(s.name) && announce) addActivity(s.name + " deleted", "act-deleted");
      return;
    }
    const c = entry(s.name);
    const prev = c.snap;
    if (announce && prev) {
      if (prev.state !== s.state) {
        addActivity(s.name + ": " + STATE_LABEL[prev.state] + " → " + STATE_LABEL[s.state] +
          " (gen " + s.generation + ")", "act-" + s.state);
      }
      const po = prev.override, no = s.override;
      if (no && (!po || po.kind !== no.kind || po.reason !== no.reason || po.actor !== no.actor)) {
        addActivity(s.name + ": override " + overrideText(no), "act-override");
      } else if (po && !no) {
        addActivity(s.name + ": override " + (KIND_LABEL[po.kind] || po.kind) + " lifted", "act-override");
      }
    } else if (announce && !prev) {
      addActivity(s.name + " appeared (" + STATE_LABEL[s.state] + ")", "act-new");
    }
    c.snap = s;
    c.receivedAt = performance.now();
  }

  // A snapshot comes in pages ("part" 0, 1, ...; "more" is false on the
  // last): a circuit in none of them is gone.
  let snapshotSeen = null;

  function onSnapshot(ev) {
    const data = JSON.parse(ev.data);
    if (!data.part || !snapshotSeen) snapshotSeen = new Set();
    for (const s of data.circuits) {
      snapshotSeen.add(s.name);
      applySnap(s, true);
    }
    if (!data.more) {
      for (const name of [...circuits.keys()]) if (!snapshotSeen.has(name)) circuits.delete(name);
      snapshotSeen = null;
    }
    queueRender();
  }

  function onChanged(ev) {
    const data = JSON.parse(ev.data);
    for (const s of data.circuits) applySnap(s, true);
    queueRender();
    if (selected && data.circuits.some((s) => s.name === selected)) loadDetail(selected);
  }

  function connect() {
    const es = new EventSource("/events");
    es.addEventListener("snapshot", onSnapshot);
    es.addEventListener("changed", onChanged);
    es.onopen = () => {
      $("conn").textContent = "live";
      $("conn").className = "conn conn-up";
    };
    es.onerror = () => {
      // EventSource reconnects by itself (the server sends `retry:`).
      $("conn").textContent = "reconnecting…";
      $("conn").className = "conn conn-down";
    };
  }

  // --- counters (sparklines) -----------------------------------------------

  async function poll() {
    try {
      const listed = new Map();
      let token = "";
      let complete = false;
      for (let i = 0; i < MAX_PAGES; i++) {
        const q = "page_size=1000" + (token ? "&page_token=" + encodeURIComponent(token) : "");
        const res = await fetch("/api/circuits?" + q, { cache: "no-store" });
        if (!res.ok) throw new Error("GET /api/circuits: " + res.status);
        const page = await res.json();
        for (const s of page.circuits) listed.set(s.name, s);
        token = page.next_page_token;
        if (!token) { complete = true; break; }
      }
      for (const [name, s] of listed) {
        const c = entry(name);
        if (!c.snap) { c.snap = s; c.receivedAt = performance.now(); }
        const k = s.counters;
        if (!k) continue;
        c.counters = k;
        if (c.last) {
          const ds = Math.max(0, k.total_successes - c.last.s);
          const df = Math.max(0, k.total_failures - c.last.f);
          c.series.push(ds + df > 0 ? df / (ds + df) : null);
          if (c.series.length > SERIES_LEN) c.series.shift();
        }
        c.last = { s: k.total_successes, f: k.total_failures };
      }
      // Evicted circuits are not announced on /events; drop what the list no
      // longer has (only when the whole list was read).
      if (complete) for (const name of [...circuits.keys()]) if (!listed.has(name)) circuits.delete(name);
      queueRender();
    } catch (e) {
      // The event stream shows the connection state; stay quiet here.
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  function sparkline(series) {
    const W = 120, H = 22;
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.setAttribute("class", "spark");
    const base = document.createElementNS(NS, "line");
    base.setAttribute("x1", 0); base.setAttribute("x2", W);
    base.setAttribute("y1", H - 1); base.setAttribute("y2", H - 1);
    base.setAttribute("class", "spark-base");
    svg.append(base);
    // One bar per interval, the newest at the right edge; no bar when the
    // interval had no calls, a flat grey tick when none failed.
    const step = (W - 2) / SERIES_LEN;
    const offset = SERIES_LEN - series.length;
    series.forEach((r, i) => {
      if (r == null) return;
      const h = Math.max(1, r * (H - 2));
      const bar = document.createElementNS(NS, "rect");
      bar.setAttribute("x", (1 + (offset + i) * step).toFixed(1));
      bar.setAttribute("y", (H - 1 - h).toFixed(1));
      bar.setAttribute("width", Math.max(1, step - 0.5).toFixed(1));
      bar.setAttribute("height", h.toFixed(1));
      bar.setAttribute("class", r > 0 ? "spark-bar" : "spark-zero");
      svg.append(bar);
    });
    const last = [...series].reverse().find((r) => r != null);
    const title = document.createElementNS(NS, "title");
    title.textContent = last == null ? "no calls recently" : "last interval: " + Math.round(last * 100) + "% failures";
    svg.append(title);
    return svg;
  }

  // --- rendering -----------------------------------------------------------

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; render(); });
  }

  function visible(name, c) {
    const f = $("filter").value.trim().toLowerCase();
    if (f && !name.toLowerCase().includes(f)) return false;
    const sf = $("state-filter").value;
    if (sf === "override") return !!c.snap.override;
    return !sf || c.snap.state === sf;
  }

  function render() {
    const rows = $("rows");
    const names = [...circuits.keys()].filter((n) => circuits.get(n).snap).sort();
    const counts = { closed: 0, open: 0, half_open: 0 };
    let overrides = 0;
    const frag = document.createDocumentFragment();
    for (const name of names) {
      const c = circuits.get(name);
      const s = c.snap;
      counts[s.state] = (counts[s.state] || 0) + 1;
      if (s.override) overrides++;
      if (!visible(name, c)) continue;
      const stateCell = el("td", {},
        el("span", { class: "state state-" + s.state }, STATE_LABEL[s.state] || s.state));
      if (s.state === "open" && s.open_remaining_ms > 0) {
        const left = s.open_remaining_ms - (performance.now() - c.receivedAt);
        stateCell.append(el("span", { class: "muted" }, " half-open in " + fmtDuration(left)));
      }
      const ov = s.override
        ? el("span", { class: "override override-" + s.override.kind, title: overrideText(s.override) },
            KIND_LABEL[s.override.kind] || s.override.kind)
        : el("span", { class: "muted" }, "—");
      const ovCell = el("td", {}, ov);
      if (s.override) ovCell.append(el("div", { class: "muted small" }, s.override.actor + ": " + s.override.reason));
      const actions = el("td", { class: "actions" },
        el("button", { type: "button", "data-action": "forced_open", title: "Reject every call until cleared" }, "Force open"),
        el("button", { type: "button", "data-action": "forced_closed", title: "Allow every call until cleared" }, "Force closed"),
        el("button", { type: "button", "data-action": "clear", disabled: !s.override, title: "Remove the override" }, "Clear"));
      const nameLink = el("button", { type: "button", class: "name", "data-action": "detail" }, name);
      const tr = el("tr", { "data-circuit": name, "data-state": s.state, class: name === selected ? "selected" : "" },
        el("td", {}, nameLink),
        stateCell,
        el("td", { class: "num" }, s.generation),
        ovCell,
        el("td", {}, sparkline(c.series)),
        actions);
      frag.append(tr);
    }
    rows.replaceChildren(frag);
    $("empty").hidden = names.length > 0;
    $("totals").replaceChildren(
      el("span", { class: "state state-open" }, counts.open + " open"), " ",
      el("span", { class: "state state-half_open" }, counts.half_open + " half-open"), " ",
      el("span", { class: "state state-closed" }, counts.closed + " closed"), " ",
      el("span", { class: "muted" }, overrides + " overridden"));
  }

  // --- detail --------------------------------------------------------------

  async function loadDetail(name) {
    selected = name;
    try {
      const res = await fetch("/api/circuits/" + encodeURIComponent(name), { cache: "no-store" });
      const d = await res.json();
      if (!res.ok) throw new Error(d.error || res.status);
      if (selected !== name) return;
      $("detail").hidden = false;
      $("detail-name").textContent = name;
      const k = d.counters;
      const dl = $("detail-counters");
      dl.replaceChildren();
      for (const [label, v] of [
        ["state", STATE_LABEL[d.state]], ["generation", d.generation],
        ["override", d.override ? overrideText(d.override) : "none"],
        ["consecutive failures", k.consecutive_failures],
        ["window calls / failures", k.window_calls + " / " + k.window_failures],
        ["allowed / rejected", k.total_allowed + " / " + k.total_rejected],
        ["successes / failures", k.total_successes + " / " + k.total_failures],
        ["stale reports", k.total_stale], ["probes in flight", k.probes_in_flight],
        ["consecutive trips", k.consecutive_trips],
      ]) dl.append(el("dt", {}, label), el("dd", {}, v));
      $("detail-history").replaceChildren(...d.history.map((t) => el("tr", {},
        el("td", {}, fmtDuration(t.age_ms) + " ago"),
        el("td", {}, el("span", { class: "state state-" + t.from }, STATE_LABEL[t.from])),
        el("td", {}, el("span", { class: "state state-" + t.to }, STATE_LABEL[t.to])),
        el("td", { class: "num" }, t.generation),
        el("td", {}, t.cause))));
      queueRender();
    } catch (e) {
      setMessage("Cannot load " + name + ": " + e.message, "error");
    }
  }

  // --- actions -------------------------------------------------------------

  async function act(name, action) {
    const token = $("token").value.trim();
    const reason = $("reason").value.trim();
    const operator = $("operator").value.trim();
    if (!token) { setMessage("Enter the admin token first.", "error"); $("token").focus(); return; }
    if (!reason) { setMessage("A reason is required: it goes to the audit log.", "error"); $("reason").focus(); return; }
    const body = { reason };
    if (operator) body.operator = operator;
    let method = "DELETE";
    if (action !== "clear") {
      method = "POST";
      body.kind = action;
      const exp = $("expires").value;
      if (exp) body.expires_in_ms = Number(exp);
    }
    setMessage(name + ": sending…");
    try {
      const res = await fetch("/api/circuits/" + encodeURIComponent(name) + "/override", {
        method,
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token },
        body: JSON.stringify(body),
      });
      const d = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(d.error || ("HTTP " + res.status));
      const what = action === "clear" ? "override cleared" : (KIND_LABEL[action] + " set");
      setMessage(name + ": " + what + "; now " + STATE_LABEL[d.state] + " (gen " + d.generation + ").", "ok");
      applySnap(d, true);
      queueRender();
    } catch (e) {
      setMessage(name + ": " + e.message, "error");
    }
  }

  function init() {
    $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    $("operator").value = sessionStorage.getItem(OPERATOR_KEY) || "";
    $("token").addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, $("token").value));
    $("operator").addEventListener("input", () => sessionStorage.setItem(OPERATOR_KEY, $("operator").value));
    $("filter").addEventListener("input", queueRender);
    $("state-filter").addEventListener("change", queueRender);
    $("rows").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action]");
      const tr = ev.target.closest("tr[data-circuit]");
      if (!b || !tr) return;
      const name = tr.getAttribute("data-circuit");
      if (b.dataset.action === "detail") loadDetail(name);
      else act(name, b.dataset.action);
    });
    connect();
    poll();
    // Countdowns of open circuits.
    setInterval(() => { if ([...circuits.values()].some((c) => c.snap && c.snap.state === "open")) queueRender(); }, 1000);
  }

  document.addEventListener("DOMContentLoaded", init);
})();
