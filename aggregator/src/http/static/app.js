// meshmon built-in page script.
//
// Role: fills index.html from the aggregator's JSON API (same origin only): metric and dimension
// drop-downs, one inline-SVG chart per statistic (small multiples), auto-refresh, and the
// drill-down table of the raw records behind a clicked point, paged through /api/raw until
// complete. No libraries, no external resources.
//
// Safety rule: every string that came from data (metric names, dimension keys, tag keys and
// values, node names, raw payloads, error messages) is inserted with textContent or attribute
// setters, never parsed as HTML — so markup inside data is shown as text.
//
// State lives in the URL hash (#metric=…&dimension=…&range=…&start=…&end=…) so views can be
// linked; with start (and end) the drill-down of that point opens. Deep links from elsewhere
// (Grafana's data links, dashboards/) use the query string instead:
// /?metric=…&dimension=…&start=<window start, ms>[&end=…][&window=<spec>]; on load they select
// the metric and dimension, widen the range to show the point, open the drill-down of the window
// starting at (or, failing that, containing) start, and are then rewritten into the hash.
"use strict";

(function () {
  const STATS = ["max", "min", "avg", "last", "sum", "count"];
  const REFRESH_MS = 5000;
  const RAW_PAGE_SIZE = 500;
  const MAX_RAW_ROWS = 100000;
  const W = 480;
  const H = 170;
  const M = { left: 58, right: 12, top: 10, bottom: 24 };

  const $ = (id) => document.getElementById(id);
  const ui = {
    metric: $("metric"),
    dimension: $("dimension"),
    range: $("range"),
    auto: $("auto-refresh"),
    refresh: $("refresh"),
    error: $("error"),
    empty: $("empty"),
    windowInfo: $("window-info"),
    watermarkInfo: $("watermark-info"),
    refreshInfo: $("refresh-info"),
    rawPanel: $("raw-panel"),
    rawTitle: $("raw-title"),
    rawSummary: $("raw-summary"),
    rawStatus: $("raw-status"),
    rawBody: document.querySelector("#raw-table tbody"),
    rawClose: $("raw-close"),
  };
  const charts = {};
  for (const svg of document.querySelectorAll("svg.chart")) charts[svg.getAttribute("data-stat")] = svg;
  // The SVG namespace, taken from the markup (the HTML parser put the charts in it).
  const SVG_NS = charts.max.namespaceURI;

  const state = {
    config: null,
    watermark: null,
    points: [],
    selected: null, // { start, end } of the drilled-down point
    drill: 0, // generation of the current drill-down; older fetches are dropped
    busy: false,
  };

  // ------------------------------------------------------------------ helpers

  async function api(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    }
    const qs = q.toString();
    const resp = await fetch(qs ? path + "?" + qs : path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) throw new Error((body && body.error) || resp.status + " " + resp.statusText);
    return body;
  }

  function showError(err) {
    if (err) {
      ui.error.textContent = String(err.message || err);
      ui.error.hidden = false;
    } else {
      ui.error.textContent = "";
      ui.error.hidden = true;
    }
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  const pad = (n, w) => String(n).padStart(w || 2, "0");

  function fmtTime(ms) {
    const d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + fmtClock(ms, true);
  }

  function fmtClock(ms, millis) {
    const d = new Date(ms);
    const s = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    return millis ? s + "." + pad(d.getMilliseconds(), 3) : s;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return "?";
    const units = [[86400000, "d"], [3600000, "h"], [60000, "m"], [1000, "s"]];
    for (const [size, unit] of units) if (ms >= size && ms % size === 0) return ms / size + unit;
    return ms + "ms";
  }

  const numberFormat = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });

  // A statistic as shown: decimals arrive as exact strings and are shown exactly.
  function valueText(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // ------------------------------------------------------------------ URL hash state

  function readHash() {
    return new URLSearchParams(location.hash.replace(/^#/, ""));
  }

  // The state to start from: a deep link's query string (?metric=…&dimension=…&start=…) wins
  // over the hash; writeHash() then drops the query string, so a reload keeps the hash state.
  function readLink() {
    const q = new URLSearchParams(location.search);
    return q.has("metric") || q.has("dimension") || q.has("start") ? q : readHash();
  }

  function writeHash() {
    const h = new URLSearchParams();
    if (ui.metric.value) h.set("metric", ui.metric.value);
    if (ui.dimension.value) h.set("dimension", ui.dimension.value);
    h.set("range", ui.range.value);
    if (state.selected) {
      h.set("start", String(state.selected.start));
      h.set("end", String(state.selected.end));
    }
    history.replaceState(null, "", location.pathname + "#" + h.toString());
  }

  // ------------------------------------------------------------------ drop-downs

  // Human text for a dimension from /api/dimensions (decoded values, not the escaped key).
  function dimensionLabel(d) {
    switch (d.kind) {
      case "cluster":
      case "node":
        return d.kind + " = " + d.value;
      case "tag":
        return "tag " + d.name + " = " + d.value;
      case "set":
        return "set " + (d.pairs || []).map((p) => p[0] + " = " + p[1]).join(", ");
      default:
        return d.key;
    }
  }

  // Dimension key → label, for titles.
  const dimensionLabels = new Map();

  function fillSelect(select, values, wanted, labels) {
    const current = wanted !== undefined && wanted !== null ? wanted : select.value;
    clear(select);
    values.forEach((v, i) => {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = labels ? labels[i] : v;
      select.appendChild(o);
    });
    if (values.includes(current)) select.value = current;
    else if (values.length) select.value = values[0];
  }

  async function loadMetrics(wanted) {
    const body = await api("/api/metrics");
    const metrics = body.metrics || [];
    ui.empty.hidden = metrics.length > 0;
    const before = ui.metric.value;
    fillSelect(ui.metric, metrics, wanted);
    return ui.metric.value !== before;
  }

  async function loadDimensions(wanted) {
    if (!ui.metric.value) {
      fillSelect(ui.dimension, [], null);
      return;
    }
    const body = await api("/api/dimensions", { metric: ui.metric.value });
    const dims = body.dimensions || [];
    dimensionLabels.clear();
    for (const d of dims) dimensionLabels.set(d.key, dimensionLabel(d));
    fillSelect(ui.dimension, dims.map((d) => d.key), wanted, dims.map((d) => dimensionLabels.get(d.key)));
  }

  // ------------------------------------------------------------------ charts

  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    const raw = span / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => span / s <= count) || raw;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
    return ticks;
  }

  function drawChart(stat, points, from, to) {
    const svg = charts[stat];
    clear(svg);
    const plotW = W - M.left - M.right;
    const plotH = H - M.top - M.bottom;
    svg.appendChild(svgEl("rect", { class: "plot-bg", x: M.left, y: M.top, width: plotW, height: plotH }));
    const data = points
      .map((p) => ({ p: p, y: Number(p[stat]) }))
      .filter((d) => Number.isFinite(d.y));
    if (!data.length) {
      const t = svgEl("text", { class: "no-data", x: M.left + plotW / 2, y: M.top + plotH / 2, "text-anchor": "middle" });
      t.textContent = "no data in range";
      svg.appendChild(t);
      return;
    }
    let lo = Math.min(...data.map((d) => d.y));
    let hi = Math.max(...data.map((d) => d.y));
    if (lo === hi) {
      const d = Math.abs(lo) * 0.1 || 1;
      lo -= d;
      hi += d;
    } else {
      const d = (hi - lo) * 0.06;
      lo -= d;
      hi += d;
    }
    const x = (ms) => M.left + ((ms - from) / Math.max(1, to - from)) * plotW;
    const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * plotH;

    for (const t of niceTicks(lo, hi, 4)) {
      svg.appendChild(svgEl("line", { class: "grid", x1: M.left, x2: M.left + plotW, y1: y(t), y2: y(t) }));
      const label = svgEl("text", { class: "axis", x: M.left - 6, y: y(t) + 4, "text-anchor": "end" });
      label.textContent = numberFormat.format(t);
      svg.appendChild(label);
    }
    for (let i = 0; i <= 4; i++) {
      const ms = from + ((to - from) * i) / 4;
      const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
      const label = svgEl("text", { class: "axis", x: x(ms), y: H - 6, "text-anchor": anchor });
      label.textContent = fmtClock(ms, false);
      svg.appendChild(label);
    }

    // The line breaks where windows are missing (a gap longer than 1.5 slides).
    const step = (state.config && (state.config.window_slide_ms || state.config.session_gap_ms)) || 0;
    let d = "";
    let prev = null;
    for (const pt of data) {
      const gap = prev === null || (step > 0 && pt.p.start - prev.p.start > step * 1.5);
      d += (gap ? "M" : "L") + x(pt.p.start).toFixed(1) + " " + y(pt.y).toFixed(1) + " ";
      prev = pt;
    }
    svg.appendChild(svgEl("path", { class: "line", d: d.trim() }));

    for (const pt of data) {
      const p = pt.p;
      const c = svgEl("circle", {
        class: "point",
        cx: x(p.start).toFixed(1),
        cy: y(pt.y).toFixed(1),
        r: 3.5,
        tabindex: 0,
        "data-start": p.start,
        "data-end": p.end,
        "data-stat": stat,
        "data-count": p.count,
      });
      if (state.selected && state.selected.start === p.start) c.classList.add("selected");
      const title = svgEl("title");
      title.textContent =
        stat + " = " + valueText(p[stat]) + "\n" + fmtTime(p.start) + " – " + fmtClock(p.end, true) +
        "\n" + p.count + " records, revision " + p.revision;
      c.appendChild(title);
      c.addEventListener("click", () => openDrill(p));
      c.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          openDrill(p);
        }
      });
      svg.appendChild(c);
    }
  }

  function drawAll(from, to) {
    for (const stat of STATS) drawChart(stat, state.points, from, to);
  }

  function markSelected() {
    for (const c of document.querySelectorAll("svg .point")) {
      const on = state.selected !== null && Number(c.getAttribute("data-start")) === state.selected.start;
      c.classList.toggle("selected", on);
    }
  }

  // ------------------------------------------------------------------ refresh

  async function loadAggregates() {
    if (!ui.metric.value) {
      state.points = [];
      const now = Date.now();
      drawAll(now - Number(ui.range.value), now);
      return;
    }
    const to = (state.watermark !== null ? state.watermark : Date.now()) + 1;
    const from = to - Number(ui.range.value);
    const body = await api("/api/aggregates", {
      metric: ui.metric.value,
      dimension: ui.dimension.value,
      from: from,
      to: to,
    });
    state.points = body.points || [];
    // The time axis spans the points returned (first start to last end), not the whole
    // requested range, so fresh data is not squeezed against the right edge.
    if (state.points.length) {
      const first = state.points.reduce((m, p) => Math.min(m, p.start), Infinity);
      const last = state.points.reduce((m, p) => Math.max(m, p.end), -Infinity);
      drawAll(first, last);
    } else {
      drawAll(from, to);
    }
  }

  async function loadHealth() {
    const h = await api("/healthz");
    state.watermark = typeof h.watermark_ms === "number" ? h.watermark_ms : null;
    ui.watermarkInfo.textContent =
      "watermark " + (state.watermark !== null ? fmtTime(state.watermark) : "none yet") + " · " + h.series + " live series";
  }

  async function refresh(full) {
    if (state.busy) return;
    state.busy = true;
    try {
      await loadHealth();
      if (full || !ui.metric.value) {
        if (await loadMetrics()) await loadDimensions();
        else if (full) await loadDimensions();
      }
      await loadAggregates();
      ui.refreshInfo.textContent = "updated " + fmtClock(Date.now(), false);
      showError(null);
    } catch (err) {
      showError(err);
    } finally {
      state.busy = false;
    }
  }

  // ------------------------------------------------------------------ drill-down

  function rawRow(r) {
    const tr = document.createElement("tr");
    tr.appendChild(el("td", "time", fmtTime(r.time)));
    tr.appendChild(el("td", "num", valueText(r.value)));
    tr.appendChild(el("td", null, r.agent));
    tr.appendChild(el("td", "num", r.sequence));
    tr.appendChild(el("td", "num", r.index));
    tr.appendChild(el("td", null, r.cluster));
    tr.appendChild(el("td", null, r.node));
    const tags = el("td", "tags");
    for (const [k, v] of Object.entries(r.tags || {})) tags.appendChild(el("span", "tag", k + "=" + v));
    tr.appendChild(tags);
    let raw;
    if (r.raw === null || r.raw === undefined) raw = el("td", "raw muted", "—");
    else if (typeof r.raw === "string") raw = el("td", "raw", r.raw);
    else raw = el("td", "raw binary", "base64: " + String(r.raw.base64));
    tr.appendChild(raw);
    return tr;
  }

  function setSummary(n, pointCount, complete) {
    ui.rawSummary.textContent = n + " records (point count: " + (pointCount === null ? "n/a" : pointCount) + ")";
    ui.rawSummary.setAttribute("data-records", String(n));
    ui.rawSummary.setAttribute("data-point-count", pointCount === null ? "" : String(pointCount));
    ui.rawSummary.setAttribute("data-complete", complete ? "true" : "false");
    ui.rawSummary.classList.toggle("mismatch", complete && pointCount !== null && n !== pointCount);
  }

  async function openDrill(p) {
    const gen = ++state.drill;
    state.selected = { start: p.start, end: p.end };
    markSelected();
    writeHash();
    ui.rawPanel.hidden = false;
    ui.rawTitle.textContent =
      ui.metric.value + " {" + (dimensionLabels.get(ui.dimension.value) || ui.dimension.value) + "} · window " + fmtTime(p.start) + " – " + fmtClock(p.end, true);
    clear(ui.rawBody);
    setSummary(0, p.count === undefined ? null : p.count, false);
    ui.rawStatus.textContent = "loading…";
    let token = null;
    let n = 0;
    let pointCount = null;
    try {
      do {
        const page = await api("/api/raw", {
          metric: ui.metric.value,
          dimension: ui.dimension.value,
          start: p.start,
          end: p.end,
          page_size: RAW_PAGE_SIZE,
          page_token: token,
        });
        if (gen !== state.drill) return; // another point was clicked meanwhile
        pointCount = page.count_in_point;
        const frag = document.createDocumentFragment();
        for (const r of page.records || []) frag.appendChild(rawRow(r));
        ui.rawBody.appendChild(frag);
        n += (page.records || []).length;
        token = page.next_page_token;
        setSummary(n, pointCount, !token);
      } while (token && n < MAX_RAW_ROWS);
      if (token) ui.rawStatus.textContent = "stopped after " + n + " records";
      else if (pointCount !== null && n !== pointCount) ui.rawStatus.textContent = "the point changed while loading; click it again";
      else ui.rawStatus.textContent = "";
    } catch (err) {
      if (gen === state.drill) ui.rawStatus.textContent = "error: " + String(err.message || err);
    }
  }

  function closeDrill() {
    state.drill++;
    state.selected = null;
    ui.rawPanel.hidden = true;
    clear(ui.rawBody);
    markSelected();
    writeHash();
  }

  // ------------------------------------------------------------------ wiring

  let timer = null;
  function schedule() {
    if (timer !== null) clearInterval(timer);
    timer = null;
    if (ui.auto.checked) {
      let ticks = 0;
      timer = setInterval(() => {
        // Every sixth refresh also re-reads the metric and dimension lists.
        if (!document.hidden) refresh(++ticks % 6 === 0);
      }, REFRESH_MS);
    }
  }

  ui.metric.addEventListener("change", async () => {
    closeDrill();
    try {
      await loadDimensions();
      writeHash();
      await loadAggregates();
      showError(null);
    } catch (err) {
      showError(err);
    }
  });
  ui.dimension.addEventListener("change", async () => {
    closeDrill();
    writeHash();
    try {
      await loadAggregates();
      showError(null);
    } catch (err) {
      showError(err);
    }
  });
  ui.range.addEventListener("change", () => {
    writeHash();
    refresh(false);
  });
  ui.auto.addEventListener("change", schedule);
  ui.refresh.addEventListener("click", () => refresh(true));
  ui.rawClose.addEventListener("click", closeDrill);
  document.getElementById("controls").addEventListener("submit", (e) => e.preventDefault());

  // The smallest range option that shows a point starting at `start` (the largest if none does).
  function widenRangeFor(start) {
    const end = state.watermark !== null ? state.watermark : Date.now();
    if (Number(ui.range.value) >= end + 1 - start) return;
    const options = [...ui.range.options].map((o) => Number(o.value)).sort((a, b) => a - b);
    const fits = options.find((r) => r >= end + 1 - start);
    ui.range.value = String(fits !== undefined ? fits : options[options.length - 1]);
  }

  async function start() {
    const h = readLink();
    if (h.get("range") && [...ui.range.options].some((o) => o.value === h.get("range"))) ui.range.value = h.get("range");
    const startText = h.get("start");
    const s = startText !== null && startText.trim() !== "" ? Number(startText) : NaN;
    try {
      state.config = await api("/api/config");
      ui.windowInfo.textContent =
        "window " + state.config.window + " · allowed lateness " + fmtDuration(state.config.allowed_lateness_ms);
      await loadHealth();
      if (Number.isFinite(s) && !h.get("range")) widenRangeFor(s);
      await loadMetrics(h.get("metric"));
      await loadDimensions(h.get("dimension"));
      await loadAggregates();
      ui.refreshInfo.textContent = "updated " + fmtClock(Date.now(), false);
      writeHash();
      showError(null);
      const wanted = h.get("window");
      if (wanted && wanted !== state.config.window) {
        showError("this link is for " + wanted + " windows; this aggregator computes " + state.config.window + " windows");
      } else if (h.get("metric") && ui.metric.value !== h.get("metric")) {
        showError("metric " + h.get("metric") + " is not stored here");
      } else if (h.get("dimension") && ui.dimension.value !== h.get("dimension")) {
        showError("dimension " + h.get("dimension") + " of " + ui.metric.value + " is not stored here");
      } else if (Number.isFinite(s)) {
        // The window starting at start; a rolled-up graph point (a time bucket) may start inside one.
        const p = state.points.find((q) => q.start === s) || state.points.find((q) => q.start <= s && s < q.end);
        const e = h.get("end") ? Number(h.get("end")) : NaN;
        openDrill(p || { start: s, end: Number.isFinite(e) ? e : undefined, count: undefined });
      }
    } catch (err) {
      showError(err);
    }
    schedule();
  }

  start();
})();
