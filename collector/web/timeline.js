// A session's timeline: one row per event, except that a tool call's start (PreToolUse) and end
// (PostToolUse / PostToolUseFailure, paired by the API through tool_use_id) share one row. Each row says
// what matters inline (the command, the file, the prompt, the error in red, an Edit's diff) and draws its
// span on a time axis common to the rows loaded so far; the stored payloads are one click away. The
// session's model API requests (the usage ledger) are rows too, in time order among the events, with
// their model, agent, tokens and cost.
"use strict";

(function () {
  const { el, known, duration, clock, prettyJson, money, tokens, tokenTotal, tokenKinds } = window.hookdbUtil;
  const START = "PreToolUse";
  const FAILURE = "PostToolUseFailure";
  const MAX_DIFF_LINES = 400;
  const FILE_TOOLS = new Set(["Read", "Write", "Edit", "MultiEdit", "NotebookEdit"]);
  // The input field that says what a tool call was about, by tool; other tools show their first string.
  const TOOL_SUBJECT = { Bash: "command", Grep: "pattern", Glob: "pattern", WebFetch: "url", WebSearch: "query",
    Task: "description", Agent: "description" };
  // The payload field that says what an event was about, by event type.
  const EVENT_SUBJECT = { UserPromptSubmit: "prompt", Stop: "last_assistant_message",
    SubagentStop: "last_assistant_message", SessionStart: "source", SessionEnd: "reason",
    Notification: "message", SubagentStart: "agent_type", PreCompact: "trigger" };
  const KIND = { UserPromptSubmit: "prompt", Stop: "reply", SubagentStop: "reply" };

  // Large payload strings are stored apart: the payload holds {"$hookdb.blob": sha256} in their place.
  function text(value) {
    if (typeof value === "string") return value;
    if (value && typeof value === "object" && "$hookdb.blob" in value) return "(large text, stored apart)";
    return known(value) && typeof value !== "object" ? String(value) : "";
  }

  function object(value) {
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  }

  function subject(e) {
    const payload = object(e.payload);
    if (e.tool_name) {
      const input = object(payload.tool_input);
      if (FILE_TOOLS.has(e.tool_name)) return text(input.file_path || input.notebook_path);
      const field = TOOL_SUBJECT[e.tool_name];
      if (field) return text(input[field]);
      const first = Object.values(input).find((v) => typeof v === "string");
      return first || "";
    }
    const field = EVENT_SUBJECT[e.event_type];
    return field ? text(payload[field]) : "";
  }

  // The diff of an Edit (or MultiEdit): its result's structuredPatch hunks, else old_string → new_string.
  function diffLines(start, end) {
    const response = object(end && object(end.payload).tool_response);
    if (Array.isArray(response.structuredPatch) && response.structuredPatch.length) {
      const lines = [];
      for (const h of response.structuredPatch) {
        lines.push(`@@ -${h.oldStart},${h.oldLines} +${h.newStart},${h.newLines} @@`);
        for (const line of Array.isArray(h.lines) ? h.lines : []) lines.push(text(line));
      }
      return lines;
    }
    const input = object(object((start || end).payload).tool_input);
    if (typeof input.old_string !== "string" || typeof input.new_string !== "string") return null;
    const side = (s, mark) => (s === "" ? [] : s.replace(/\n$/, "").split("\n").map((l) => mark + l));
    return [...side(input.old_string, "-"), ...side(input.new_string, "+")];
  }

  function renderDiff(lines) {
    const pre = el("pre", "diff");
    pre.setAttribute("aria-label", "diff");
    for (const line of lines.slice(0, MAX_DIFF_LINES)) {
      const kind = line.startsWith("@@") ? "hunk" : line[0] === "+" ? "add" : line[0] === "-" ? "del" : "ctx";
      pre.append(el("span", `diff-${kind}`, line + "\n"));
    }
    if (lines.length > MAX_DIFF_LINES) {
      pre.append(el("span", "diff-hunk", `… ${lines.length - MAX_DIFF_LINES} more lines in the payload`));
    }
    return pre;
  }

  // One row: a tool call (start and end, either may be missing) or another event.
  class Row {
    constructor(e) {
      this.li = el("li", "timeline-event");
      this.li.dataset.eventId = e.event_id;
      this.start = null;
      this.end = null;
      this.other = null;
      this.add(e);
    }

    add(e) {
      if (!e.tool_use_id) this.other = e;
      else if (e.event_type === START) this.start = e;
      else this.end = e;
      this.fill();
    }

    get first() {
      return this.start || this.other || this.end;
    }

    // [from, to] in ms since the epoch: a tool call spans its duration, another event is an instant.
    get span() {
      const e = this.first;
      const at = Date.parse(e.occurred_at);
      const ms = this.start || this.end ? e.duration_ms : null;
      return known(ms) ? (e === this.end ? [at - ms, at] : [at, at + ms]) : [at, at];
    }

    fill() {
      const e = this.first;
      const failed = !!(this.end && this.end.event_type === FAILURE);
      const kind = e.tool_use_id ? "tool" : KIND[e.event_type] || "event";
      this.li.className = `timeline-event kind-${kind}${failed ? " failed" : ""}`;
      const row = el("div", "event-row");
      const at = el("time", "event-time", clock(e.occurred_at));
      at.dateTime = e.occurred_at;
      row.append(at);
      if (e.tool_use_id) {
        row.append(el("span", "tool-name", e.tool_name || "tool"));
        const types = [this.start && START, this.end && this.end.event_type].filter(Boolean).join(" → ");
        row.append(el("span", "event-type", types));
      } else {
        row.append(el("span", "event-type", e.event_type));
        if (e.tool_name) row.append(el("span", "tool-name", e.tool_name));
      }
      if (e.tool_use_id) {
        const ms = e.duration_ms;
        row.append(el("span", "duration", known(ms) ? duration(ms) : this.end ? "" : "no result"));
      }
      this.bar = el("span", "span-bar");
      const track = el("span", "span-track");
      track.setAttribute("aria-hidden", "true");
      track.append(this.bar);
      row.append(track);
      const parts = [row];
      const what = subject(e);
      if (what) parts.push(el("div", `event-subject${e.tool_name === "Bash" ? " command" : ""}`, what));
      if (failed) parts.push(el("pre", "event-error", text(object(this.end.payload).error) || "failed"));
      if ((this.start || this.end) && /^(Multi)?Edit$/.test(e.tool_name || "")) {
        const lines = diffLines(this.start, this.end);
        if (lines && lines.length) parts.push(renderDiff(lines));
      }
      const payload = el("details", "payload");
      payload.append(el("summary", null, "payload"));
      for (const one of [this.start, this.other, this.end].filter(Boolean)) {
        if (this.start && this.end) payload.append(el("p", "payload-type", one.event_type));
        payload.append(el("pre", "json", prettyJson(one.payload)));
      }
      parts.push(payload);
      this.li.replaceChildren(...parts);
    }

    // Place the bar on the axis [t0, t1] (ms); the CSSOM is not an inline style attribute: the CSP allows it.
    place(t0, t1) {
      const [from, to] = this.span;
      const width = t1 > t0 ? t1 - t0 : 1;
      this.bar.style.left = `${((from - t0) / width) * 100}%`;
      this.bar.style.width = `${((to - from) / width) * 100}%`;
      this.bar.classList.toggle("instant", to === from);
    }
  }

  // One model API request of the ledger: an instant on the axis.
  class RequestRow {
    constructor(r) {
      this.li = el("li", "timeline-event kind-request");
      this.li.dataset.requestId = r.request_id;
      const at = Date.parse(r.at);
      this.span = [at, at];
      const row = el("div", "event-row");
      const time = el("time", "event-time", clock(r.at));
      time.dateTime = r.at;
      const who = [r.model || "unknown model", r.agent === "main" ? null : r.agent_type || r.agent];
      row.append(time, el("span", "event-type", "API request"), el("span", "request-model", who.filter(Boolean).join(" · ")));
      row.append(el("span", "request-cost", known(r.cost_usd) ? money(r.cost_usd) : "–"));
      this.bar = el("span", "span-bar");
      const track = el("span", "span-track");
      track.setAttribute("aria-hidden", "true");
      track.append(this.bar);
      row.append(track);
      const cost = known(r.cost_usd) ? `${money(r.cost_usd)} ${r.cost_source}` : "cost unknown";
      const usage = el("div", "request-usage", `${tokens(tokenTotal(r))} tokens: ${tokenKinds(r)} · ${cost}`);
      usage.title = `request ${r.request_id}, seen in ${r.sources.join(", ")}`;
      this.li.replaceChildren(row, usage);
    }

    place(t0, t1) {
      Row.prototype.place.call(this, t0, t1);
    }
  }

  // A timeline: `node` to put in the page, `add(events)` for each page of events, in order, and
  // `addRequests(requests)` for the session's API requests, each put among the events by its time.
  function create() {
    const node = el("div", "timeline-body");
    const axis = el("div", "time-axis");
    const list = el("ol", "events");
    node.append(axis, list);
    const rows = new Map(); // event_id → its row (both events of a tool call name the same row)
    const requests = [];

    // Put a row in time order: an event after every event before it (they arrive in order) and before
    // the requests of its instant or later; a request after every row of its instant or earlier.
    function insert(row, at) {
      const isEvent = !!row.li.dataset.eventId;
      let next = null;
      for (let i = list.children.length - 1; i >= 0; i--) {
        const child = list.children[i];
        const childAt = Number(child.dataset.at);
        if (isEvent ? !!child.dataset.eventId || childAt < at : childAt <= at) break;
        next = child;
      }
      row.li.dataset.at = String(at);
      list.insertBefore(row.li, next);
    }

    function relayout() {
      let t0 = Infinity;
      let t1 = -Infinity;
      const all = new Set([...rows.values(), ...requests]);
      for (const row of all) {
        const [from, to] = row.span;
        t0 = Math.min(t0, from);
        t1 = Math.max(t1, to);
      }
      for (const row of all) row.place(t0, t1);
      axis.replaceChildren();
      if (all.size) {
        axis.append(el("span", "axis-start", clock(new Date(t0).toISOString())));
        axis.append(el("span", "axis-length", `${duration(t1 - t0)} shown`));
        axis.append(el("span", "axis-end", clock(new Date(t1).toISOString())));
      }
    }

    function add(events) {
      for (const e of events) {
        let row = e.paired_event_id && rows.get(e.paired_event_id);
        if (row) row.add(e);
        else {
          row = new Row(e);
          insert(row, Date.parse(e.occurred_at));
        }
        rows.set(e.event_id, row);
      }
      relayout();
    }

    function addRequests(more) {
      for (const r of more) {
        const row = new RequestRow(r);
        requests.push(row);
        insert(row, row.span[0]);
      }
      relayout();
    }

    return { node, add, addRequests };
  }

  window.hookdbTimeline = { create };
})();
