// The monitor's dashboard: polls the monitor's JSON APIs and draws uPlot charts (vendored, offline).
"use strict";

const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh_s") || 5) * 1000;
const METRICS_WINDOW_S = 300;
const SERIES_WINDOW_S = 900;
const SERIES_STEP_S = 30;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
                "#7f7f7f", "#bcbd22", "#393b79", "#637939"];

// What the page shows, for people and for the browser test: chart id -> labels, points, last values.
const state = { refreshes: 0, charts: {} };
window.mlfleetDashboard = state;
const plots = {};

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function fmt(value, digits = 2, suffix = "") {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : `${value.toFixed(digits)}${suffix}`;
}

function pct(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
}

function modelSection(model) {
  let section = document.getElementById(`model-${model}`);
  if (section) return section;
  section = el("section", { id: `model-${model}`, class: "model", "data-model": model });
  section.append(el("h2", {}, `model ${model}`), el("div", { class: "traffic" }, "traffic: …"));
  const table = el("table", { class: "versions" });
  table.innerHTML = "<thead><tr><th>version</th><th>variant</th><th>requests (5 min)</th><th>req/s</th>" +
    "<th>error rate</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>accuracy</th><th>ROC AUC</th>" +
    "<th>labelled</th><th>drift</th></tr></thead><tbody></tbody>";
  section.append(table, el("div", { class: "charts" }));
  document.getElementById("models").append(section);
  return section;
}

// The x range from the data itself: uPlot widens a lone point to 86,400,000 s (a day in ms);
// a short series gets at least a minute either side instead.
function timeRange(u) {
  const xs = u.data[0];
  if (!xs.length) return [0, 1];
  const [lo, hi] = [xs[0], xs[xs.length - 1]];
  return hi - lo < 120 ? [lo - 60, hi + 60] : [lo, hi];
}

function chart(section, id, title, xs, series, yLabel) {
  const labels = series.map((s) => s.label);
  const data = [xs, ...series.map((s) => s.values)];
  state.charts[id] = {
    title, labels, points: xs.length,
    last: Object.fromEntries(series.map((s) => [s.label, [...s.values].reverse().find((v) => v !== null) ?? null])),
    max: Object.fromEntries(series.map((s) => [s.label, Math.max(...s.values.filter((v) => v !== null), 0)])),
  };
  const existing = plots[id];
  if (existing && existing.labels.join() === labels.join()) {
    existing.plot.setData(data);
    return;
  }
  let box = document.getElementById(id);
  if (!box) {
    box = el("div", { id, class: "chart", "data-chart": id });
    box.append(el("h3", {}, title));
    section.querySelector(".charts").append(box);
  }
  if (existing) existing.plot.destroy();
  const opts = {
    width: 420, height: 200,
    series: [{}, ...series.map((s, i) => ({
      label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
      points: { show: true, size: 5, fill: COLORS[i % COLORS.length] },
    }))],
    axes: [{}, { label: yLabel, size: 60 }],
    scales: { x: { time: true, range: timeRange } },
  };
  plots[id] = { labels, plot: new uPlot(opts, data, box) };
}

function renderTraffic(section, traffic) {
  const node = section.querySelector(".traffic");
  if (!traffic) {
    node.textContent = "traffic: registry unavailable";
    return;
  }
  const parts = [`stable v${traffic.stable ?? "–"}`];
  if (traffic.canary) parts.push(`canary v${traffic.canary} (${traffic.canary_percent} %)`);
  if (traffic.shadow) parts.push(`shadow v${traffic.shadow}`);
  node.textContent = `traffic: ${parts.join(" · ")}`;
  node.dataset.stable = traffic.stable ?? "";
  node.dataset.canaryPercent = traffic.canary_percent ?? 0;
}

function variantOf(version, traffic) {
  if (!traffic) return "";
  if (version === traffic.stable) return `stable ${100 - (traffic.canary ? traffic.canary_percent : 0)} %`;
  if (version === traffic.canary) return `canary ${traffic.canary_percent} %`;
  if (version === traffic.shadow) return "shadow";
  return "";
}

function renderTable(section, metrics, traffic, drifts) {
  const body = section.querySelector("tbody");
  body.replaceChildren();
  for (const v of metrics.versions) {
    const q = v.quality;
    const drift = drifts[v.version];
    const row = el("tr", { "data-version": String(v.version) });
    const cells = [
      ["version", v.version === null ? "none" : `v${v.version}`], ["variant", variantOf(v.version, traffic)],
      ["requests", String(v.requests)], ["rate", fmt(v.requests / METRICS_WINDOW_S, 2)],
      ["error_rate", pct(v.error_rate)], ["p50", fmt(v.latency_ms?.p50, 1)], ["p95", fmt(v.latency_ms?.p95, 1)],
      ["p99", fmt(v.latency_ms?.p99, 1)], ["accuracy", q ? pct(q.accuracy) : "–"],
      ["roc_auc", q ? fmt(q.roc_auc, 3) : "–"], ["labelled", q ? String(q.labelled) : "0"],
      ["drift", drift ? `${drift.verdict}${drift.drifted_features.length ? ": " + drift.drifted_features.join(", ") : ""}` : "–"],
    ];
    for (const [field, text] of cells) {
      const cell = el("td", { "data-field": field }, text);
      if (field === "drift" && drift) cell.className = `verdict-${drift.verdict}`;
      row.append(cell);
    }
    body.append(row);
  }
}

function renderSeries(section, model, series) {
  const xs = series.versions[0]?.points.map((p) => p.t) ?? [];
  const per = (field, scale = 1) => series.versions.map((v) => ({
    label: v.version === null ? "no version" : `v${v.version}`,
    values: v.points.map((p) => (p[field] === null ? null : p[field] * scale)),
  }));
  chart(section, `${model}-rate`, "Request rate (req/s)", xs, per("request_rate"), "req/s");
  chart(section, `${model}-errors`, "Error rate (%)", xs, per("error_rate", 100), "%");
  const latency = series.versions.flatMap((v) => ["p50_ms", "p99_ms"].map((field) => ({
    label: `v${v.version} ${field.slice(0, 3)}`, values: v.points.map((p) => p[field]),
  })));
  chart(section, `${model}-latency`, "Latency percentiles (ms)", xs, latency, "ms");
  chart(section, `${model}-accuracy`, "Live accuracy (%)", xs, per("accuracy", 100), "%");
}

function renderDrift(section, model, version, report) {
  const history = [...report.history].reverse();
  if (!history.length) return;
  const features = Object.keys(history[history.length - 1].statistics);
  const series = features.map((feature) => ({
    label: feature === "__score__" ? "score" : feature,
    values: history.map((point) => {
      const s = point.statistics[feature];
      return s ? (s.ks ?? s.js ?? null) : null;
    }),
  }));
  chart(section, `${model}-drift-v${version}`, `Drift of v${version}: KS / JS distance per feature`,
        history.map((p) => p.at), series, "distance");
}

function renderAlerts(alerts) {
  const body = document.querySelector("#alerts tbody");
  body.replaceChildren();
  for (const a of alerts.data.slice(0, 10)) {
    const row = el("tr");
    row.append(el("td", {}, new Date(a.fired_at * 1000).toLocaleTimeString()),
               el("td", { class: a.status === "resolved" ? "resolved" : `sev-${a.severity}` },
                  a.status === "resolved" ? `resolved ${new Date(a.resolved_at * 1000).toLocaleTimeString()}` : a.severity),
               el("td", {}, a.rule),
               el("td", {}, `${a.model} v${a.version ?? "–"}`), el("td", {}, a.summary));
    body.append(row);
  }
}

async function refreshModel(model) {
  const section = modelSection(model);
  const [metrics, series, traffic] = await Promise.all([
    getJson(`/v1/models/${model}/metrics?window_s=${METRICS_WINDOW_S}`),
    getJson(`/v1/models/${model}/series?window_s=${SERIES_WINDOW_S}&step_s=${SERIES_STEP_S}`),
    getJson(`/v1/models/${model}/traffic`).catch(() => null),
  ]);
  const versions = metrics.versions.map((v) => v.version).filter((v) => v !== null);
  const reports = await Promise.all(versions.map((v) => getJson(`/v1/models/${model}/drift?version=${v}&history=120`)
    .catch(() => null)));
  const drifts = Object.fromEntries(versions.map((v, i) => [v, reports[i]]));
  renderTraffic(section, traffic);
  renderTable(section, metrics, traffic, drifts);
  renderSeries(section, model, series);
  versions.forEach((v) => drifts[v] && renderDrift(section, model, v, drifts[v]));
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const models = await getJson("/v1/models");
    await Promise.all(models.data.map((m) => refreshModel(m.model)));
    renderAlerts(await getJson("/v1/alerts?limit=10"));
    state.refreshes += 1;
    status.dataset.refreshes = String(state.refreshes);
    status.textContent = `updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
  } catch (error) {
    status.textContent = `refresh failed: ${error.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
