// edged console: refreshes the live parts of the server-rendered pages from the REST API.
// No build step, no framework; the CSP allows only this file (no inline script).
"use strict";

const SHOWN_VALUES = 4;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number" && !Number.isInteger(v)) return String(parseFloat(v.toPrecision(6)));
  return String(v);
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

function stateBadge(state) {
  return el("span", { class: "state state-" + state }, state);
}

function valuesText(values, limit) {
  const items = Object.entries(values || {});
  const shown = limit ? items.slice(0, limit) : items;
  let text = shown.map(([k, v]) => (k + " " + fmt(v.value) + " " + (v.unit || "")).trim()).join(", ");
  if (limit && items.length > limit) text += ", … (+" + (items.length - limit) + ")";
  return text;
}

function deviceRow(d) {
  const values = d.values || {};
  const ages = Object.values(values).map((v) => v.age);
  const text = valuesText(values, SHOWN_VALUES);
  return el("tr", { "data-device": d.id },
    el("td", {}, el("a", { href: "/devices/" + encodeURIComponent(d.id) }, d.id)),
    el("td", {}, d.driver),
    el("td", {}, stateBadge(d.state)),
    el("td", { class: "values" }, text || el("span", { class: "muted" }, "no values yet")),
    el("td", { class: "num" }, fmt(ages.length ? Math.min(...ages) : null)),
    el("td", {}, d.last_error || ""));
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

async function refreshDeviceTable() {
  const doc = await getJSON("/api/devices");
  const body = document.querySelector("#devices tbody");
  if (body) body.replaceChildren(...doc.devices.map(deviceRow));
  return doc.devices;
}

async function refreshCards() {
  const s = await getJSON("/api/status");
  const lic = s.licence || {}, tier = s.tier || {}, outbox = s.outbox || {}, uplink = s.uplink || {};
  const states = {};
  for (const d of s.devices) states[d.state] = (states[d.state] || 0) + 1;
  setText("card-gateway", s.gateway || "-");
  setText("card-uplink", uplink.connected ? "connected" : "disconnected");
  setText("card-outbox", fmt(outbox.depth));
  setText("card-outbox-age", fmt(outbox.oldest_age));
  setText("card-tier", (tier.account_tier || "-") + " (" + (tier.interval ?? "-") + " s)");
  setText("card-licence", (lic.used ?? "-") + " / " + (lic.total ?? "-"));
  setText("card-states", Object.keys(states).sort().map((k) => states[k] + " " + k).join(", ") || "none");
}

function every(ms, fn) {
  const tick = async () => {
    try { await fn(); } catch (err) { console.warn(err); }
    setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
}

// -- device page: values and a chart of the last hour ------------------------------------

const chart = { history: {}, quantity: null };

function drawChart() {
  const box = document.getElementById("chart");
  const select = document.getElementById("chart-quantity");
  if (!box || !select) return;
  const names = Object.keys(chart.history).sort();
  if (select.options.length !== names.length) {
    const keep = select.value;
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(keep)) select.value = keep;
  }
  const points = (chart.history[select.value] || []).filter((p) => p[1] !== null);
  const w = 600, h = 160;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  if (points.length > 1) {
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const vs = points.map((p) => p[1]);
    const lo = Math.min(...vs), hi = Math.max(...vs);
    const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * (w - 10) + 5 : 5);
    const y = (v) => (hi > lo ? h - 15 - ((v - lo) / (hi - lo)) * (h - 30) : h / 2);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "));
    svg.append(line);
    for (const [text, yy] of [[fmt(hi), 12], [fmt(lo), h - 3]]) {
      const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
      label.setAttribute("x", 5);
      label.setAttribute("y", yy);
      label.setAttribute("font-size", "11");
      label.textContent = text;
      svg.append(label);
    }
  }
  box.replaceChildren(svg);
}

async function refreshDevice(id) {
  const d = await getJSON("/api/devices/" + encodeURIComponent(id));
  const state = document.getElementById("device-state");
  if (state) state.replaceChildren(stateBadge(d.state));
  setText("device-error", d.last_error || "-");
  const body = document.querySelector("#values tbody");
  if (body) {
    body.replaceChildren(...Object.entries(d.values || {}).map(([k, v]) => el("tr", { "data-quantity": k },
      el("td", {}, k), el("td", { class: "num" }, fmt(v.value)), el("td", {}, v.unit || ""),
      el("td", { class: "num" }, fmt(v.age)))));
  }
  // The server keeps a point a minute; while the page is open, add what the polls saw.
  for (const [k, v] of Object.entries(d.values || {})) {
    const series = (chart.history[k] = chart.history[k] || []);
    const t = Date.parse(v.ts) / 1000;
    if (!series.length || series[series.length - 1][0] < t) series.push([t, v.value]);
    while (series.length && series[0][0] < t - 3600) series.shift();
  }
  drawChart();
}

async function loadHistory(id) {
  const doc = await getJSON("/api/devices/" + encodeURIComponent(id) + "/history");
  for (const [k, points] of Object.entries(doc.quantities)) {
    const live = (chart.history[k] || []).filter((p) => !points.length || p[0] > points[points.length - 1][0]);
    chart.history[k] = points.concat(live);
  }
  drawChart();
}

// -- circuits page: the markup of edged/web/circuits.py, rebuilt from /api/circuits --------

function amps(v) {
  return v === null || v === undefined ? "-" : String(parseFloat(Number(v).toPrecision(6)));
}

function phaseCells(values) {
  return (values || [null, null, null]).map((v) => el("td", { class: "num" }, amps(v)));
}

function circuitLimit(c) {
  const parts = [];
  if (c.max_current !== null && c.max_current !== undefined) parts.push(amps(c.max_current) + " A per phase");
  if (c.max_power !== null && c.max_power !== undefined) parts.push(amps(c.max_power) + " W");
  return parts.join(" and ") || "-";
}

function chargerRow(ch) {
  return el("tr", { "data-charger": ch.charger },
    el("td", {}, ch.charger), el("td", {}, ch.phases || ""), el("td", {}, stateBadge(ch.state)),
    ...phaseCells(ch.per_phase), el("td", { class: "num" }, amps(ch.limit_sent)),
    el("td", {}, ch.rejected ? "refuses profiles: " + ch.rejected : ""));
}

function circuitSection(c) {
  const mode = c.mode || "-";
  const title = el("h2", {}, c.name);
  if (c.parent) title.append(" ", el("span", { class: "muted" }, "in " + c.parent));
  let meter = c.meter ? "meter " + c.meter : "no meter of its own";
  if (c.measured_age !== null && c.measured_age !== undefined) meter += ", reading " + amps(c.measured_age) + " s old";
  const head = el("tr", {}, el("th", {}, "A"), el("th", {}, "L1"), el("th", {}, "L2"), el("th", {}, "L3"));
  return el("section", { class: "circuit", "data-circuit": c.name }, title,
    el("p", {}, el("span", { class: "mode mode-" + mode }, mode), " ",
      el("span", { class: "reason" }, mode === "fail-safe" ? c.reason || "" : "")),
    el("p", {}, "limit ", el("span", { class: "limit" }, circuitLimit(c)), "; ",
      el("span", { class: "meter muted" }, meter)),
    el("table", { class: "phases" }, el("thead", {}, head), el("tbody", {},
      el("tr", { class: "measured" }, el("td", {}, "measured load"), ...phaseCells(c.measured)),
      el("tr", { class: "available" }, el("td", {}, "left for chargers"), ...phaseCells(c.available)))),
    el("table", { class: "chargers" }, el("thead", {}, el("tr", {},
      ...["charger", "phases", "state", "L1 (A)", "L2 (A)", "L3 (A)", "limit on the charger (A)", "note"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, ...(c.chargers || []).map(chargerRow))));
}

async function refreshCircuits() {
  const doc = await getJSON("/api/circuits");
  const box = document.getElementById("circuits");
  if (box && doc.circuits.length) box.replaceChildren(...doc.circuits.map(circuitSection));
}

// -- scan page ---------------------------------------------------------------------------

function foundRow(f) {
  return el("tr", {}, el("td", {}, f.address), el("td", {}, f.secondary || "-"),
    el("td", {}, f.manufacturer || "-"), el("td", {}, f.medium || "-"), el("td", {}, f.error || ""));
}

function watchScan(job) {
  const tick = async () => {
    let j;
    try { j = await getJSON("/api/scans/" + encodeURIComponent(job)); } catch (err) { console.warn(err); }
    if (j) {
      const bar = document.getElementById("scan-progress");
      if (bar) { bar.max = j.total; bar.value = j.done; }
      setText("scan-state", j.state + " " + j.done + "/" + j.total + (j.error ? ": " + j.error : ""));
      const body = document.querySelector("#found tbody");
      if (body) body.replaceChildren(...j.found.map(foundRow));
      if (j.state !== "running") {
        const stop = document.getElementById("scan-stop");
        if (stop) stop.disabled = true;
        return;
      }
    }
    setTimeout(tick, 500);
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  // Releasing a licence cannot be undone on this gateway: ask first.
  for (const button of document.querySelectorAll("button.release")) {
    button.form.addEventListener("submit", (event) => {
      const id = button.form.elements.licence.value;
      if (!confirm("Release licence " + id + "? It stops counting here; you get a receipt to move it.")) {
        event.preventDefault();
      }
    });
  }
  if (page === "dashboard") {
    every(1000, async () => { await refreshCards(); await refreshDeviceTable(); });
  } else if (page === "devices") {
    every(1000, refreshDeviceTable);
  } else if (page === "device") {
    const id = document.body.dataset.device;
    const select = document.getElementById("chart-quantity");
    if (select) select.addEventListener("change", drawChart);
    loadHistory(id).catch(console.warn);
    every(1000, () => refreshDevice(id));
    every(60000, () => loadHistory(id));
  } else if (page === "circuits") {
    every(1000, refreshCircuits);
  } else if (page === "scan" && document.body.dataset.job) {
    watchScan(document.body.dataset.job);
  }
});
