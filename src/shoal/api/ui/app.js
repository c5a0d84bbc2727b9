// Shoal's live page: this node's view of the mesh, from /shoal/v1/status/stream.
// No library and nothing from the internet: the graph is SVG drawn here.
"use strict";

const TOKEN_KEY = "shoal.token";
const STREAM = "/shoal/v1/status/stream";
const SVG_NS = "http://www.w3.org/2000/svg";
const LINK_COLOURS = { up: "#2e8b57", cut: "#d32f2f", unknown: "#b0b7c0", gone: "#6d4c41" };
const NODE_COLOURS = { alive: "#2e8b57", suspect: "#ef6c00", dead: "#d32f2f", left: "#6d4c41" };

let controller = null;
let lastReport = null;

function $(id) { return document.getElementById(id); }

function tokenFromFragment() {
  // #token=... lets a script or a test open the page logged in; it is then removed from
  // the address bar so it is not left in the history.
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname);
  }
}

function showLogin(message) {
  $("login").hidden = false;
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login-error").textContent = message || "";
}

function setConn(text, cls) {
  const el = $("conn");
  el.textContent = text;
  el.className = "badge " + (cls || "");
}

async function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { showLogin(""); return; }
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  if (controller) controller.abort();
  controller = new AbortController();
  setConn("connecting", "");
  let response;
  try {
    response = await fetch(STREAM, {
      headers: { "Authorization": "Bearer " + token, "Accept": "text/event-stream" },
      signal: controller.signal, cache: "no-store",
    });
  } catch (e) {
    setConn("cannot reach this node", "lost");
    setTimeout(connect, 2000);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    const body = await response.json().catch(() => ({}));
    showLogin(response.status === 401 ? "That token was not accepted."
      : (body.message || "That token may not read /shoal/v1/status."));
    setConn("not connected", "");
    return;
  }
  if (!response.ok || !response.body) {
    setConn("error " + response.status, "lost");
    setTimeout(connect, 2000);
    return;
  }
  setConn("live", "live");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = frame.split("\n").filter(l => l.startsWith("data: "))
          .map(l => l.slice(6)).join("\n");
        if (data) render(JSON.parse(data));
      }
    }
  } catch (e) {
    if (e.name === "AbortError") return;
  }
  setConn("reconnecting", "lost");
  setTimeout(connect, 1000);
}

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function podsOn(report, node) {
  const byPhase = (report.pods || {})[node] || {};
  return Object.values(byPhase).reduce((a, b) => a + b, 0);
}

function drawGraph(report) {
  const svg = $("graph");
  svg.replaceChildren();
  const members = report.members || [];
  const n = members.length;
  const cx = 300, cy = 165, r = n > 1 ? 120 : 0;
  const at = {};
  members.forEach((m, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    at[m.name] = [cx + r * Math.cos(angle), cy + r * Math.sin(angle)];
  });
  for (const link of report.links || []) {
    const a = at[link.a], b = at[link.b];
    if (!a || !b) continue;
    const line = el("svg:line", {
      x1: a[0], y1: a[1], x2: b[0], y2: b[1],
      stroke: LINK_COLOURS[link.state] || LINK_COLOURS.unknown,
      "data-link": link.a + "|" + link.b, "data-state": link.state,
    });
    if (link.state === "cut") line.setAttribute("stroke-dasharray", "10 6");
    const seen = Object.entries(link.seen_by || {}).map(([k, v]) => k + " sees " + v).join(", ");
    line.appendChild(el("svg:title", {}, link.a + " - " + link.b + ": " + link.state
      + (seen ? " (" + seen + ")" : "")));
    svg.appendChild(line);
  }
  for (const m of members) {
    const [x, y] = at[m.name];
    const g = el("svg:g", { "data-member": m.name, "data-state": m.state });
    g.appendChild(el("svg:circle", {
      cx: x, cy: y, r: 30, fill: "#fff", "stroke-width": m.self ? 5 : 3,
      stroke: NODE_COLOURS[m.state] || "#888",
    }));
    g.appendChild(el("svg:text", { x: x, y: y - 2, "font-weight": m.self ? "bold" : "normal" },
      m.name));
    const pods = podsOn(report, m.name);
    g.appendChild(el("svg:text", { x: x, y: y + 14, fill: "#7a8594", class: "pods" },
      pods + (pods === 1 ? " pod" : " pods")));
    g.appendChild(el("svg:text", { x: x, y: y + 48, fill: NODE_COLOURS[m.state] || "#888" },
      m.state + (m.site ? " · " + m.site : "") + (m.role && m.role !== "full" ? " · " + m.role : "")));
    svg.appendChild(g);
  }
}

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) {
      const td = el("td", c.cls ? { class: c.cls } : {}, c.text === undefined ? c : c.text);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function when(t) { return new Date(t * 1000).toLocaleTimeString(); }

function render(report) {
  lastReport = report;
  $("node").textContent = "· " + report.node + "'s view";
  drawGraph(report);
  const nodes = report.nodes || {};
  fillTable("members", (report.members || []).map(m => [
    m.name + (m.self ? " (this node)" : ""), { text: m.state, cls: m.state }, m.address,
    m.role || "full", m.site || "", String(podsOn(report, m.name)),
    (nodes[m.name] || {}).ready || "",
  ]));
  fillTable("replication", Object.entries(report.replication || {}).map(([peer, r]) => [
    peer, r.cursor === null ? "" : String(r.cursor),
    r.behind === null || r.behind === undefined ? "?" : String(r.behind),
    bytes(r.bytes_sent), bytes(r.bytes_received),
  ]));
  const items = [];
  for (const e of report.membership_events || []) {
    items.push({ time: e.time, kind: e.kind,
      text: e.member + " " + (e.previous ? e.previous + " → " : "") + e.state
        + " (" + e.kind + ", as " + report.node + " sees it)" });
  }
  for (const e of report.timeline || []) items.push({ time: e.time, kind: e.kind, text: e.message });
  items.sort((a, b) => b.time - a.time);
  const list = $("timeline");
  list.replaceChildren(...items.slice(0, 150).map(i =>
    el("li", { class: i.kind, "data-kind": i.kind }, when(i.time) + "  " + i.text)));
  $("updated").textContent = "updated " + when(report.time) + " · revision " + report.revision;
}

document.addEventListener("DOMContentLoaded", () => {
  tokenFromFragment();
  $("login-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (token) { sessionStorage.setItem(TOKEN_KEY, token); connect(); }
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (controller) controller.abort();
    showLogin("");
  });
  connect();
});
