// The overview shown while no session is open: totals and charts of GET /api/sessions/stats for a chosen
// range, drawn by uPlot (vendored). Sessions (and their tool calls) count by when they started, events by
// when they occurred, model API requests (the usage ledger: cost and tokens) by when they were made; days
// are UTC days.
"use strict";

(function () {
  const { el, money, plural, tokens, duration } = window.hookdbUtil;
  const DAY_S = 86400;
  const RANGES = [7, 30, 90]; // days
  const HEIGHT = 170;
  const count = (v) => (Number.isInteger(v) ? String(v) : ""); // no ticks between whole numbers
  const tokenTicks = (v) => (Number.isInteger(v) ? tokens(v) : "");
  const TOP_PROJECTS = 8;
  // Stacked series take these in turn (status colours for statuses, the rest for models).
  const PALETTE = ["--accent", "--completed", "#bf8700", "#8250df", "--failed", "#1b7c83", "--ended", "#d4569b"];
  const STATUS_COLOR = { running: "--running", completed: "--completed", failed: "--failed", ended: "--ended" };

  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function paint(name) {
    return name.startsWith("--") ? color(name) : name;
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
    const statuses = Object.keys(stats.by_status);
    const byStatus = statuses.map((name) => ({
      label: name,
      fill: paint(STATUS_COLOR[name] || PALETTE[statuses.indexOf(name) % PALETTE.length]),
      values: xs.map((t) => (byDay.has(t) ? byDay.get(t).by_status[name] || 0 : 0)),
    }));
    // Cost and tokens per day, one stack layer per model (the models costing most at the bottom).
    const models = stats.usage_by_model.map((m) => m.key);
    const index = new Map(xs.map((t, i) => [t, i]));
    const layer = (field) =>
      models.map((model, i) => {
        const values = xs.map(() => 0);
        for (const u of stats.usage_by_day_model) {
          const at = index.get(Date.parse(`${u.day}T00:00:00Z`) / 1000);
          if (u.model === model && at !== undefined) values[at] += Number(u[field]);
        }
        return { label: model || "unknown", fill: paint(PALETTE[i % PALETTE.length]), values };
      });
    return { xs, sessions: pick("sessions"), events: pick("events"), byStatus, cost: layer("cost_usd"),
      tokens: layer("tokens") };
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

  // Bars over UTC days stacked from `layers` ({label, fill, values}), the first at the bottom. uPlot draws
  // each layer as a bar up to its cumulative sum, the top layer first, so each lower one paints over it;
  // the legend shows each layer's own value.
  function stackedPerDay(target, width, xs, layers, format) {
    const sums = [];
    let running = xs.map(() => 0);
    for (const l of layers) {
      running = running.map((v, i) => v + l.values[i]);
      sums.push(running);
    }
    const order = layers.map((_, i) => layers.length - 1 - i);
    const series = order.map((i) => {
      const s = barSeries(layers[i].label, layers[i].fill, format);
      s.value = (u, v, si, idx) => (idx === null || idx === undefined ? "–" : format(layers[i].values[idx]));
      return s;
    });
    return new window.uPlot(
      {
        width,
        height: HEIGHT,
        tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: { x: { time: true, range: (u, min, max) => [min - DAY_S / 2, max + DAY_S / 2] }, y: Y_SCALE },
        series: [{ label: "Day (UTC)", value: "{YYYY}-{MM}-{DD}" }, ...series],
        axes: axes(null, format),
      },
      [xs, ...order.map((i) => sums[i])],
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

  function toolsTable(tools) {
    const table = el("table", "models tools");
    const head = el("tr");
    for (const h of ["Tool", "Calls", "Failed", "Failure rate", "p50", "p95"]) head.append(el("th", null, h));
    const thead = el("thead");
    thead.append(head);
    const body = el("tbody");
    const ms = (v) => (v === null ? "–" : duration(v));
    for (const t of tools) {
      const tr = el("tr");
      tr.append(
        el("td", null, t.tool || "unknown"),
        el("td", "num", t.calls),
        el("td", "num", t.failures),
        el("td", `num${t.failures ? " failing" : ""}`, `${(t.failure_rate * 100).toFixed(1)}%`),
        el("td", "num", ms(t.p50_ms)),
        el("td", "num", ms(t.p95_ms)),
      );
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
        tile("Tokens", tokens(stats.usage.tokens), "total-tokens"),
        tile("API requests", stats.usage.requests, "total-requests"),
        tile("QA score", qa.count ? `${Number(qa.mean).toFixed(1)} (${qa.count})` : "–", "total-qa"),
      );
      const d = days(stats);
      const sum = (xs) => xs.reduce((a, b) => a + b, 0);
      const statuses = Object.keys(stats.by_status);
      const models = stats.models;
      const usage = stats.usage;
      const unpriced = usage.unpriced ? `, ${plural(usage.unpriced, "request")} of unknown cost` : "";
      const projects = stats.usage_by_project.slice(0, TOP_PROJECTS);
      const tools = stats.tools;
      const calls = sum(tools.map((t) => t.calls));
      const failures = sum(tools.map((t) => t.failures));
      const specs = [
        ["Cost per day by model", `${money(usage.cost_usd)} in all${unpriced}`, "cost-per-day",
          (p, w) => stackedPerDay(p, w, d.xs, d.cost, money)],
        ["Tokens per day by model", `${tokens(usage.tokens)} tokens in ${plural(usage.requests, "request")}`,
          "tokens-per-day", (p, w) => stackedPerDay(p, w, d.xs, d.tokens, tokenTicks)],
        ["Sessions per day by status", plural(sum(d.sessions), "session"), "sessions-per-day",
          (p, w) => stackedPerDay(p, w, d.xs, d.byStatus, count)],
        ["Events per day", plural(sum(d.events), "event"), "events-per-day",
          (p, w) => perDay(p, w, "Events", d.xs, d.events, color("--completed"), count)],
        ["Sessions by status", statuses.map((s) => `${s} ${stats.by_status[s]}`).join(", ") || "no sessions",
          "by-status",
          (p, w) => perCategory(p, w, ["Status", "Sessions"], statuses, statuses.map((s) => stats.by_status[s]),
            color("--running"), count)],
        ["Cost by model", `${money(stats.cost_usd)} in all`, "cost-by-model",
          (p, w) => perCategory(p, w, ["Model", "Cost"], models.map((m) => m.model || "unknown"),
            models.map((m) => Number(m.cost_usd)), color("--accent"), money)],
        ["Top projects by cost", projects.map((p) => `${p.key || "unknown"} ${money(p.cost_usd)}`).join(", ")
          || "no API requests", "top-projects",
          (p, w) => perCategory(p, w, ["Project", "Cost"], projects.map((g) => g.key || "unknown"),
            projects.map((g) => Number(g.cost_usd)), paint("#8250df"), money)],
        ["Tool calls by tool", `${plural(calls, "call")}, ${plural(failures, "failure")}`, "tool-calls",
          (p, w) => perCategory(p, w, ["Tool", "Calls"], tools.map((t) => t.tool || "unknown"),
            tools.map((t) => t.calls), color("--running"), count)],
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
      const toolSection = el("section", "models-section tools-section");
      toolSection.append(el("h3", "chart-title", "Tool calls"),
        tools.length ? toolsTable(tools) : el("p", "empty", "No tool calls."));
      body.replaceChildren(totals, grid, table, toolSection);
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
