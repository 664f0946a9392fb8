// A session's timeline: one row per event, except that a tool call's start (PreToolUse) and end
// (PostToolUse / PostToolUseFailure, paired by the API through tool_use_id; a PermissionDenied of the call
// here) share one row. Each row says what matters inline (the command, the file, the prompt, the error in
// red, an Edit's diff) and draws its span on a time axis common to the rows loaded so far; the stored
// payloads are one click away. The session's model API requests (the usage ledger) are rows too, in time
// order among the events, with their model, agent, tokens and cost.
//
// Subagents are spans: Claude Code marks what a subagent fires with its agent_id (SubagentStart and
// SubagentStop included), and the ledger marks its requests with it. Each subagent's events and requests
// go in its own collapsible span, with its duration, type, tokens and cost, right under the Agent (or Task)
// tool call that started it, in the list of the agent that made that call: nested subagents nest again.
// The call that started a subagent is the one whose result names it (tool_response.agentId); while that
// result is not there (the subagent still runs), the earliest call of the subagent's type that was open
// when it started.
"use strict";

(function () {
  const { el, known, duration, clock, prettyJson, money, tokens, tokenTotal, tokenKinds, plural } =
    window.hookdbUtil;
  const START = "PreToolUse";
  const FAILURE = "PostToolUseFailure";
  const DENIED = "PermissionDenied";
  const MAIN = "main"; // the ledger's name for the session's own agent
  const AGENT_TOOLS = new Set(["Agent", "Task"]); // the tool that starts a subagent (older versions: Task)
  const MAX_DIFF_LINES = 400;
  const FILE_TOOLS = new Set(["Read", "Write", "Edit", "MultiEdit", "NotebookEdit"]);
  // The input field that says what a tool call was about, by tool; other tools show their first string.
  const TOOL_SUBJECT = { Bash: "command", Grep: "pattern", Glob: "pattern", WebFetch: "url", WebSearch: "query",
    Task: "description", Agent: "description" };
  // The payload field that says what an event was about, by event type.
  const EVENT_SUBJECT = { UserPromptSubmit: "prompt", Stop: "last_assistant_message",
    SubagentStop: "last_assistant_message", SessionStart: "source", SessionEnd: "reason",
    Notification: "message", SubagentStart: "agent_type", PreCompact: "trigger",
    StopFailure: "last_assistant_message" };
  // Events that are failures in themselves, with the payload fields that say why.
  const EVENT_ERROR = { [FAILURE]: ["error"], StopFailure: ["error", "error_details"], [DENIED]: ["reason"] };
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

  // The diff of an Edit (or MultiEdit): its result's structuredPatch hunks, else old_string → new_string
  // (of each of a MultiEdit's edits).
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
    const edits = (Array.isArray(input.edits) ? input.edits : [input]).map(object)
      .filter((x) => typeof x.old_string === "string" && typeof x.new_string === "string");
    if (!edits.length) return null;
    const side = (s, mark) => (s === "" ? [] : s.replace(/\n$/, "").split("\n").map((l) => mark + l));
    return edits.flatMap((x) => [...side(x.old_string, "-"), ...side(x.new_string, "+")]);
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

  // The agent that fired an event: a subagent's id, or MAIN.
  function agentOf(e) {
    const id = object(e.payload).agent_id;
    return typeof id === "string" && id ? id : MAIN;
  }

  function errorText(e, fields) {
    const payload = object(e.payload);
    return fields.map((f) => text(payload[f])).filter(Boolean).join("\n") || "failed";
  }

  function track() {
    const bar = el("span", "span-bar");
    const box = el("span", "span-track");
    box.setAttribute("aria-hidden", "true");
    box.append(bar);
    return [box, bar];
  }

  // Place a bar for [from, to] on the axis [t0, t1] (ms); the CSSOM is not an inline style attribute: the
  // CSP allows it.
  function placeBar(bar, [from, to], t0, t1) {
    const width = t1 > t0 ? t1 - t0 : 1;
    bar.style.left = `${((from - t0) / width) * 100}%`;
    bar.style.width = `${((to - from) / width) * 100}%`;
    bar.classList.toggle("instant", to === from);
  }

  // One row: a tool call (start and end, either may be missing) or another event.
  class Row {
    constructor(e, seq) {
      this.li = el("li", "timeline-event");
      this.li.dataset.eventId = e.event_id;
      this.seq = seq;
      this.start = null;
      this.end = null;
      this.denied = null;
      this.other = null;
      this.add(e);
    }

    add(e) {
      if (e.event_type === DENIED && (this.start || this.end)) this.denied = e;
      else if (!e.tool_use_id) this.other = e;
      else if (e.event_type === START) this.start = e;
      else this.end = e;
      this.fill();
    }

    get first() {
      return this.start || this.other || this.end;
    }

    get agent() {
      return agentOf(this.first);
    }

    get at() {
      return Date.parse(this.first.occurred_at);
    }

    // [from, to] in ms since the epoch: a tool call spans its duration, another event is an instant.
    get span() {
      const e = this.first;
      const at = Date.parse(e.occurred_at);
      const ms = this.start || this.end ? e.duration_ms : null;
      return known(ms) ? (e === this.end ? [at - ms, at] : [at, at + ms]) : [at, at];
    }

    get isCall() {
      return !!(this.start || this.end);
    }

    get failed() {
      if (this.end) return this.end.event_type === FAILURE;
      return !!(this.denied || (this.other && EVENT_ERROR[this.other.event_type]));
    }

    // An Agent (or Task) call: the subagent type it asked for, its task, and the subagent its result names.
    get call() {
      if (!this.isCall || !AGENT_TOOLS.has(this.first.tool_name)) return null;
      const input = object(object(this.first.payload).tool_input);
      const spawned = this.end && object(object(this.end.payload).tool_response).agentId;
      return {
        type: typeof input.subagent_type === "string" ? input.subagent_type : null,
        description: text(input.description),
        prompt: typeof input.prompt === "string" ? input.prompt : null, // null too when stored apart
        spawned: typeof spawned === "string" && spawned ? spawned : null,
      };
    }

    fill() {
      const e = this.first;
      const failed = this.failed;
      const kind = this.isCall ? "tool" : KIND[e.event_type] || "event";
      this.li.className = `timeline-event kind-${kind}${failed ? " failed" : ""}`;
      const row = el("div", "event-row");
      const at = el("time", "event-time", clock(e.occurred_at));
      at.dateTime = e.occurred_at;
      row.append(at);
      if (this.isCall) {
        row.append(el("span", "tool-name", e.tool_name || "tool"));
        const ends = [this.start && START, this.end && this.end.event_type, this.denied && DENIED];
        row.append(el("span", "event-type", ends.filter(Boolean).join(" → ")));
        const ms = e.duration_ms;
        const none = this.denied ? "denied" : this.end ? "" : "no result";
        row.append(el("span", "duration", known(ms) ? duration(ms) : none));
      } else {
        row.append(el("span", "event-type", e.event_type));
        if (e.tool_name) row.append(el("span", "tool-name", e.tool_name));
      }
      const [box, bar] = track();
      this.bar = bar;
      row.append(box);
      const parts = [row];
      const what = subject(e);
      if (what) parts.push(el("div", `event-subject${e.tool_name === "Bash" ? " command" : ""}`, what));
      for (const one of [this.end, this.denied, this.other]) {
        const fields = one && EVENT_ERROR[one.event_type];
        if (fields) parts.push(el("pre", "event-error", errorText(one, fields)));
      }
      if ((this.start || this.end) && /^(Multi)?Edit$/.test(e.tool_name || "")) {
        const lines = diffLines(this.start, this.end);
        if (lines && lines.length) parts.push(renderDiff(lines));
      }
      const payload = el("details", "payload");
      payload.append(el("summary", null, "payload"));
      const all = [this.start, this.other, this.end, this.denied].filter(Boolean);
      for (const one of all) {
        if (all.length > 1) payload.append(el("p", "payload-type", one.event_type));
        payload.append(el("pre", "json", prettyJson(one.payload)));
      }
      parts.push(payload);
      this.li.replaceChildren(...parts);
    }

    place(t0, t1) {
      placeBar(this.bar, this.span, t0, t1);
    }
  }

  // One model API request of the ledger: an instant on the axis.
  class RequestRow {
    constructor(r, seq) {
      this.li = el("li", "timeline-event kind-request");
      this.li.dataset.requestId = r.request_id;
      this.seq = seq;
      this.agent = r.agent;
      this.at = Date.parse(r.at);
      this.span = [this.at, this.at];
      const row = el("div", "event-row");
      const time = el("time", "event-time", clock(r.at));
      time.dateTime = r.at;
      const who = [r.model || "unknown model", r.agent === MAIN ? null : r.agent_type || r.agent];
      row.append(time, el("span", "event-type", "API request"), el("span", "request-model", who.filter(Boolean).join(" · ")));
      row.append(el("span", "request-cost", known(r.cost_usd) ? money(r.cost_usd) : "–"));
      const [box, bar] = track();
      this.bar = bar;
      row.append(box);
      const cost = known(r.cost_usd) ? `${money(r.cost_usd)} ${r.cost_source}` : "cost unknown";
      const usage = el("div", "request-usage", `${tokens(tokenTotal(r))} tokens: ${tokenKinds(r)} · ${cost}`);
      usage.title = `request ${r.request_id}, seen in ${r.sources.join(", ")}`;
      this.li.replaceChildren(row, usage);
    }

    place(t0, t1) {
      placeBar(this.bar, this.span, t0, t1);
    }
  }

  // A subagent: a head (type, what it was asked, duration bar, its own usage) and a collapsible list of
  // its events and requests. `call` is the Row of the tool call that started it, `usage` its AgentUsage.
  class Span {
    constructor(agent, seq) {
      this.agent = agent;
      this.seq = seq;
      this.started = null; // its SubagentStart and SubagentStop events
      this.stopped = null;
      this.type = null;
      this.call = null;
      this.usage = null;
      this.items = []; // its rows and requests, as laid out last
      this.inner = []; // the spans its tool calls started
      this.li = el("li", "subagent");
      this.li.dataset.agentId = agent;
      this.toggle = el("button", "span-toggle");
      this.toggle.type = "button";
      this.toggle.setAttribute("aria-expanded", "true");
      this.toggle.addEventListener("click", () => this.collapse(this.toggle.getAttribute("aria-expanded") === "true"));
      this.what = el("span", "span-what");
      this.time = el("time", "event-time");
      this.length = el("span", "duration");
      this.failures = el("div", "span-failures");
      const [box, bar] = track();
      this.bar = bar;
      const head = el("div", "event-row span-head");
      head.append(this.time, this.toggle, this.what, this.length, box);
      this.usageLine = el("div", "span-usage");
      this.list = el("ol", "events span-events");
      this.li.append(head, this.failures, this.usageLine, this.list);
    }

    collapse(collapsed) {
      this.toggle.setAttribute("aria-expanded", String(!collapsed));
      this.list.hidden = collapsed;
      this.li.classList.toggle("collapsed", collapsed);
    }

    // Learn from one of its events: its type, and its start and end.
    note(e) {
      const type = object(e.payload).agent_type;
      if (!this.type && typeof type === "string" && type) this.type = type;
      if (e.event_type === "SubagentStart" && !this.started) this.started = e;
      if (e.event_type === "SubagentStop") this.stopped = e;
    }

    get at() {
      if (this.started) return Date.parse(this.started.occurred_at);
      if (this.call) return this.call.span[0];
      return this.items.reduce((t, i) => Math.min(t, i.span[0]), Infinity);
    }

    get running() {
      return !this.stopped && !(this.call && (this.call.end || this.call.denied));
    }

    get span() {
      const from = this.at;
      let to = this.stopped ? Date.parse(this.stopped.occurred_at) : null;
      if (to === null && this.call && !this.running) to = this.call.span[1];
      if (to === null) to = this.items.reduce((t, i) => Math.max(t, i.span[1]), from);
      return [from, Math.max(from, to)];
    }

    // The spans started inside it, at any depth.
    get descendants() {
      return this.inner.flatMap((s) => [s, ...s.descendants]);
    }

    fill() {
      const call = this.call && this.call.call;
      const type = this.type || (call && call.type) || "subagent";
      this.li.classList.toggle("span-failed", !!(this.call && this.call.failed));
      this.toggle.textContent = type;
      // What it was asked: the task's prompt (the call's row above says its description).
      this.what.textContent = (call && (call.prompt || call.description)) || this.agent;
      this.what.title = this.what.textContent;
      const [from, to] = this.span;
      this.time.textContent = clock(new Date(from).toISOString());
      this.time.dateTime = new Date(from).toISOString();
      this.length.textContent = this.running ? "running" : duration(to - from);
      const parts = [this.agent];
      const u = this.usage;
      if (u) {
        const unpriced = u.unpriced ? ` + ${plural(u.unpriced, "request")} of unknown cost` : "";
        parts.push(plural(u.requests, "request"), `${tokens(u.tokens)} tokens: ${tokenKinds(u)}`,
          money(u.cost_usd) + unpriced);
      } else parts.push("no API requests recorded");
      const inner = this.descendants.filter((s) => s.usage);
      if (inner.length) {
        const all = [u, ...inner.map((s) => s.usage)].filter(Boolean);
        const sum = (k) => all.reduce((n, x) => n + Number(x[k]), 0);
        parts.push(`with ${plural(inner.length, "nested subagent")}: ${tokens(sum("tokens"))} tokens, ` +
          money(sum("cost_usd")));
      }
      this.usageLine.textContent = parts.join(" · ");
      // What failed in it (or in the spans it started): seen on its head even while it is collapsed.
      const failed = [this, ...this.descendants].reduce((n, s) => n + s.items.filter((i) => i.failed).length, 0);
      this.failures.textContent = failed ? `${plural(failed, "failure")} inside` : "";
      this.failures.hidden = !failed;
    }

    place(t0, t1) {
      placeBar(this.bar, this.span, t0, t1);
    }
  }

  // Items of one list in time order: events in the order they were received, a request before the events
  // of its instant (it is timed by its answer, which the events of that instant follow: the tool calls it
  // asked for, the Stop after its reply); a span sits right after the tool call that started it.
  function ordered(items, startedBy) {
    const sorted = [...items].sort((a, b) => a.at - b.at || (b instanceof RequestRow) - (a instanceof RequestRow) ||
      a.seq - b.seq);
    return sorted.flatMap((i) => [i, ...(startedBy.get(i) || [])]);
  }

  // Put the items' nodes in `ol` in this order, moving only those out of place (a node that belongs to
  // another list now is moved there when that list is arranged).
  function arrange(ol, items) {
    let next = ol.firstChild;
    for (const { li } of items) {
      if (li === next) next = next.nextSibling;
      else ol.insertBefore(li, next);
    }
  }

  // A timeline: `node` to put in the page, `add(events)` for each page of events, in order, and
  // `addRequests(requests, agents)` for the session's API requests (each put among the events by its time)
  // and its usage by agent.
  function create() {
    const node = el("div", "timeline-body");
    const axis = el("div", "time-axis");
    const list = el("ol", "events");
    node.append(axis, list);
    const rows = new Map(); // event_id → its row (both events of a tool call name the same row)
    const calls = new Map(); // tool_use_id → the row of that tool call
    const order = []; // rows as they came
    const requests = [];
    const spans = new Map(); // agent id → its Span
    const usage = new Map(); // agent id → AgentUsage
    let seq = 0;

    function spanOf(agent) {
      let s = spans.get(agent);
      if (!s) spans.set(agent, (s = new Span(agent, seq++)));
      return s;
    }

    // Whether `agent` is `s` or runs inside it (following the links made so far).
    function within(agent, s) {
      for (let a = agent; a !== MAIN; ) {
        if (a === s.agent) return true;
        const up = spans.get(a);
        a = up && up.call ? up.call.agent : MAIN;
      }
      return false;
    }

    // Each span's starting call: the one whose result names it; for the others, in the order they
    // started, the earliest call of their type not yet taken that was open when they started.
    function link() {
      const agentCalls = order.filter((r) => r.call);
      for (const s of spans.values()) s.call = null;
      const taken = new Set();
      for (const r of agentCalls) {
        const s = spans.get(r.call.spawned);
        if (s && !s.call && !within(r.agent, s)) {
          s.call = r;
          taken.add(r);
        }
      }
      const waiting = [...spans.values()].filter((s) => !s.call).sort((a, b) => a.at - b.at || a.seq - b.seq);
      for (const s of waiting) {
        const at = s.at;
        const r = agentCalls.find((c) => !taken.has(c) && !c.call.spawned &&
          (!c.call.type || !s.type || c.call.type === s.type) && c.span[0] <= at &&
          (!(c.end || c.denied) || c.span[1] >= at) && !within(c.agent, s));
        if (r) {
          s.call = r;
          taken.add(r);
        }
      }
    }

    function layout() {
      const lists = new Map([[MAIN, []]]);
      for (const s of spans.values()) lists.set(s.agent, []);
      for (const item of [...order, ...requests]) lists.get(item.agent).push(item);
      for (const s of spans.values()) s.items = lists.get(s.agent);
      link();
      const startedBy = new Map(); // call row → the spans it started
      for (const s of spans.values()) {
        s.inner = [];
        if (s.call) startedBy.set(s.call, [...(startedBy.get(s.call) || []), s]);
        else lists.get(MAIN).push(s); // started by a call not seen: at the top, at its time
      }
      for (const s of spans.values()) {
        for (const i of s.items) s.inner.push(...(startedBy.get(i) || []));
        s.usage = usage.get(s.agent) || null;
        arrange(s.list, ordered(s.items, startedBy));
      }
      arrange(list, ordered(lists.get(MAIN), startedBy));
      for (const s of spans.values()) s.fill();
      relayout();
    }

    function relayout() {
      let t0 = Infinity;
      let t1 = -Infinity;
      const all = [...order, ...requests, ...spans.values()];
      for (const row of all) {
        const [from, to] = row.span;
        t0 = Math.min(t0, from);
        t1 = Math.max(t1, to);
      }
      for (const row of all) row.place(t0, t1);
      axis.replaceChildren();
      if (all.length) {
        axis.append(el("span", "axis-start", clock(new Date(t0).toISOString())));
        axis.append(el("span", "axis-length", `${duration(t1 - t0)} shown`));
        axis.append(el("span", "axis-end", clock(new Date(t1).toISOString())));
      }
    }

    function add(events) {
      for (const e of events) {
        const id = object(e.payload).tool_use_id;
        let row = (e.paired_event_id && rows.get(e.paired_event_id)) ||
          (e.event_type === DENIED && typeof id === "string" && calls.get(id));
        if (row && !(row.denied && e.event_type === DENIED)) row.add(e);
        else {
          row = new Row(e, seq++);
          order.push(row);
          if (e.tool_use_id) calls.set(e.tool_use_id, row);
        }
        rows.set(e.event_id, row);
        const agent = agentOf(e);
        if (agent !== MAIN) spanOf(agent).note(e);
      }
      layout();
    }

    function addRequests(more, agents) {
      for (const a of agents) usage.set(a.agent, a);
      for (const r of more) {
        requests.push(new RequestRow(r, seq++));
        if (r.agent !== MAIN) {
          const s = spanOf(r.agent);
          if (!s.type && r.agent_type) s.type = r.agent_type;
        }
      }
      layout();
    }

    return { node, add, addRequests };
  }

  window.hookdbTimeline = { create };
})();
