// The overview shown while no session is open: totals and charts of GET /api/sessions/stats for a chosen
// range, drawn by uPlot (vendored). Sessions count by when they started, events by when they occurred,
// days are UTC days.
"use strict";

(function () {
  const { el, money, plural } = window.hookdbUtil;
  const DAY_S = 86400;
  const RANGES = [7, 30, 90]; // days
  const HEIGHT = 170;
  const count = (v) => (Number.isInteger(v) ? String(v) : ""); // no ticks between whole numbers

  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function dayStart(ms) {
    return Math.floor(ms / 1000 / DAY_S) * DAY_S;
  }

  // Every UTC day of [from, to), with the answer's counts (days without any are absent from it).
  function days(stats) {
    const byDay = new Map(stats.per_day.map((d) => [Date.parse(`${d.day}T00:00:00Z`) / 1000, d]));
    const xs = [];
    for (let t = dayStart(Date.parse(stats.from)); t * 1000 < Date.parse(stats.to); t += DAY_S) xs.push(t);
    const pick = (field) => xs.map((t) => (byDay.has(t) ? byDay.get(t)[field] : 0));
    return { xs, sessions: pick("sessions"), events: pick("events") };
  }

  function axes(values, format) {
    const grid = { stroke: color("--line"), width: 1 };
    const x = { stroke: color("--muted"), grid, ticks: grid };
    if (values) Object.assign(x, values);
    const y = { stroke: color("--muted"), grid, ticks: grid, size: 56, values: (u, ys) => ys.map(format) };
    return [x, y];
  }

  // Bars grow from zero; counts get whole-number ticks.
  const Y_SCALE = { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] };

  function barSeries(label, fill, format) {
    return {
      label,
      fill,
      stroke: fill,
      width: 0,
      points: { show: false },
      paths: window.uPlot.paths.bars({ size: [0.7, 60] }),
      value: (u, v) => (v === null || v === undefined ? "–" : format(v)),
    };
  }

  // A bar chart of one series over UTC days.
  function perDay(target, width, label, xs, ys, fill, format) {
    return new window.uPlot(
      {
        width,
        height: HEIGHT,
        tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: { x: { time: true, range: (u, min, max) => [min - DAY_S / 2, max + DAY_S / 2] }, y: Y_SCALE },
        series: [{ label: "Day (UTC)", value: "{YYYY}-{MM}-{DD}" }, barSeries(label, fill, format)],
        axes: axes(null, format),
      },
      [xs, ys],
      target,
    );
  }

  // A bar chart of one value per category (status, model, score range).
  function perCategory(target, width, [what, label], names, ys, fill, format) {
    const xs = names.map((_, i) => i);
    return new window.uPlot(
      {
        width,
        height: HEIGHT,
        scales: { x: { time: false, range: () => [-0.5, names.length - 0.5] }, y: Y_SCALE },
        series: [{ label: what, value: (u, i) => (i === null ? "–" : names[i]) }, barSeries(label, fill, format)],
        axes: axes({ splits: () => xs, values: (u, splits) => splits.map((i) => names[i] ?? "") }, format),
      },
      [xs, ys],
      target,
    );
  }

  function figure(title, caption) {
    const f = el("figure", "chart");
    f.append(el("h3", "chart-title", title));
    const plot = el("div", "chart-plot");
    f.append(plot, el("figcaption", "chart-caption", caption));
    return [f, plot];
  }

  function tile(label, value, className) {
    const t = el("div", `tile ${className}`);
    t.append(el("span", "tile-label", label), el("span", "tile-value", value));
    return t;
  }

  function modelsTable(models) {
    const table = el("table", "models");
    const head = el("tr");
    for (const h of ["Model", "Sessions", "Cost"]) head.append(el("th", null, h));
    const thead = el("thead");
    thead.append(head);
    const body = el("tbody");
    for (const m of models) {
      const tr = el("tr");
      tr.append(el("td", null, m.model || "unknown"), el("td", "num", m.sessions), el("td", "num", money(m.cost_usd)));
      body.append(tr);
    }
    table.append(thead, body);
    return table;
  }

  // The overview; `load(params)` answers the stats for the query parameters, `fail(err, show)` handles a
  // failure (show(message) puts it in the overview).
  function create(load, fail) {
    const node = el("section", "dashboard");
    node.setAttribute("aria-label", "Overview");
    const head = el("header", "dashboard-head");
    head.append(el("h2", "dashboard-title", "Overview"));
    const range = el("select", "range");
    range.setAttribute("aria-label", "Range");
    for (const n of RANGES) {
      const option = el("option", null, `Last ${n} days`);
      option.value = String(n);
      option.selected = n === 30;
      range.append(option);
    }
    head.append(range);
    const body = el("div", "dashboard-body");
    node.append(head, body);
    const view = { node, failed: false, reload };
    let charts = [];
    let gen = 0;

    const resize = new ResizeObserver(() => {
      for (const [chart, plot] of charts) chart.setSize({ width: plot.clientWidth, height: HEIGHT });
    });

    function draw(stats) {
      for (const [chart] of charts) chart.destroy();
      charts = [];
      const totals = el("div", "tiles");
      const qa = stats.qa_scores;
      totals.append(
        tile("Sessions", stats.sessions, "total-sessions"),
        tile("Events", stats.events, "total-events"),
        tile("Cost", money(stats.cost_usd), "total-cost"),
        tile("QA score", qa.count ? `${Number(qa.mean).toFixed(1)} (${qa.count})` : "–", "total-qa"),
      );
      const d = days(stats);
      const sum = (xs) => xs.reduce((a, b) => a + b, 0);
      const statuses = Object.keys(stats.by_status);
      const models = stats.models;
      const specs = [
        ["Sessions per day", plural(sum(d.sessions), "session"), "sessions-per-day",
          (p, w) => perDay(p, w, "Sessions", d.xs, d.sessions, color("--accent"), count)],
        ["Events per day", plural(sum(d.events), "event"), "events-per-day",
          (p, w) => perDay(p, w, "Events", d.xs, d.events, color("--completed"), count)],
        ["Sessions by status", statuses.map((s) => `${s} ${stats.by_status[s]}`).join(", ") || "no sessions",
          "by-status",
          (p, w) => perCategory(p, w, ["Status", "Sessions"], statuses, statuses.map((s) => stats.by_status[s]),
            color("--running"), count)],
        ["Cost by model", `${money(stats.cost_usd)} in all`, "cost-by-model",
          (p, w) => perCategory(p, w, ["Model", "Cost"], models.map((m) => m.model || "unknown"),
            models.map((m) => Number(m.cost_usd)), color("--accent"), money)],
      ];
      if (qa.count) {
        specs.push(["QA scores", `${plural(qa.count, "scored session")}, mean ${Number(qa.mean).toFixed(1)}`,
          "qa-scores", (p, w) => perCategory(p, w, ["Score", "Sessions"], qa.buckets.map((b) => `${b.min}–${b.max}`),
            qa.buckets.map((b) => b.count), color("--completed"), count)]);
      }
      const grid = el("div", "charts");
      const pending = [];
      for (const [title, caption, name, make] of specs) {
        const [f, plot] = figure(title, caption);
        f.classList.add(name);
        grid.append(f);
        pending.push([plot, make]);
      }
      const table = el("section", "models-section");
      table.append(el("h3", "chart-title", "Models"), models.length ? modelsTable(models) : el("p", "empty", "No sessions."));
      body.replaceChildren(totals, grid, table);
      for (const [plot, make] of pending) {
        charts.push([make(plot, plot.clientWidth), plot]);
        resize.observe(plot);
      }
    }

    async function reload() {
      const mine = ++gen;
      const to = new Date();
      const from = new Date(to.getTime() - Number(range.value) * DAY_S * 1000);
      view.failed = false;
      try {
        const stats = await load([["from", from.toISOString()], ["to", to.toISOString()]]);
        if (mine === gen && node.isConnected) draw(stats);
      } catch (err) {
        if (mine !== gen) return;
        view.failed = true;
        body.replaceChildren(el("p", "placeholder", "Could not load the overview; retrying…"));
        fail(err, (message) => body.replaceChildren(el("p", "error", message)));
      }
    }

    range.addEventListener("change", reload);
    body.append(el("p", "placeholder", "Loading the overview…"));
    return view;
  }

  window.hookdbDashboard = { create };
})();
