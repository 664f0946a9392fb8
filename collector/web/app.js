// hookdb web page: the sessions list (filters, infinite scroll, live updates over the SSE stream) and a
// session's detail (reports, agent states, timeline). Talks only to the read API of the same origin.
// Everything the API returns is shown through textContent or DOM nodes: never parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "hookdb.token";
  const PAGE_SIZE = 50;
  const EVENTS_PAGE = 100;
  const RETRY_CAP_MS = 5000; // however long the API says to wait, the page tries again within 5 s
  const STALL_MS = 45000; // the stream pings every ~15 s: no byte for this long means it is dead
  const SEARCH_DELAY_MS = 250; // results as you type: a search once typing pauses this long

  const $ = (id) => document.getElementById(id);
  const ui = {
    signin: $("signin"),
    tokenForm: $("token-form"),
    tokenInput: $("token-input"),
    tokenError: $("token-error"),
    app: $("app"),
    live: $("live-state"),
    signOut: $("sign-out"),
    tabs: [$("tab-sessions"), $("tab-filters")],
    filterForm: $("filter-form"),
    searchForm: $("search-form"),
    searchInput: $("search-input"),
    notice: $("unavailable"),
    list: $("session-list"),
    listEnd: $("list-end"),
    detail: $("detail"),
  };

  const state = {
    token: localStorage.getItem(TOKEN_KEY) || "",
    search: "", // the search box's words (q), combined with the filters
    searchTimer: 0,
    filters: {
      status: [],
      model: "",
      agent_type: "",
      project: "",
      cost_min: "",
      cost_max: "",
      started_after: "",
      started_before: "",
    },
    cards: new Map(), // session_id → {li, session}
    cursor: null, // next_cursor of the list
    searchPending: 0, // search_pending of the searched list: events not searchable yet
    listGen: 0, // bumped by every reload: answers to older requests are dropped
    loading: false,
    loaded: false,
    replay: null, // stream events received while a reload is in flight, applied again after it
    retryTimer: 0,
    selected: null, // the session shown in #detail
    detailGen: 0,
    detailHeader: null,
    detailFailed: false,
    dashboard: null, // the overview, while no session is open
    streamGen: 0,
    streamAbort: null,
    streamWake: null,
  };

  // -- Small helpers --------------------------------------------------------------------------------

  const { el, plural, known, money, tokens, tokenTotal, tokenKinds, duration, prettyJson, parseJson } =
    window.hookdbUtil;
  const TEXT_FILTERS = ["model", "agent_type", "project", "cost_min", "cost_max", "started_after", "started_before"];

  function relative(iso) {
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (!Number.isFinite(seconds)) return "";
    if (seconds < 45) return "just now";
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `${minutes} min ago`;
    const hours = Math.round(minutes / 60);
    if (hours < 24) return `${hours} h ago`;
    const days = Math.round(hours / 24);
    if (days < 30) return plural(days, "day") + " ago";
    return new Date(iso).toLocaleDateString();
  }

  function timeEl(iso, className) {
    const t = el("time", className);
    t.dateTime = iso;
    t.title = new Date(iso).toLocaleString();
    t.textContent = className === "rel" ? relative(iso) : new Date(iso).toLocaleString();
    return t;
  }

  function score(value) {
    const n = Number(value);
    return Number.isInteger(n) ? String(n) : n.toFixed(1);
  }

  function badge(status) {
    const safe = /^[a-z_]+$/.test(status) ? status : "other";
    return el("span", `status-badge status-${safe}`, status);
  }

  // Ordering of the list, as the API's: started_at DESC, session_id DESC.
  function before(a, b) {
    const ta = Date.parse(a.started_at);
    const tb = Date.parse(b.started_at);
    return ta !== tb ? ta > tb : a.session_id > b.session_id;
  }

  function version(s) {
    return Math.max(Date.parse(s.updated_at) || 0, Date.parse(s.status_at) || 0);
  }

  // -- API ------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, retryAfter) {
      super(detail || `HTTP ${status}`);
      this.status = status; // 0: the network failed
      this.retryAfter = retryAfter;
    }
  }

  function retryDelay(err) {
    const seconds = Number(err && err.retryAfter);
    return Math.min(RETRY_CAP_MS, Math.max(250, seconds > 0 ? seconds * 1000 : 1000));
  }

  function headers(accept) {
    return { Authorization: `Bearer ${state.token}`, Accept: accept };
  }

  async function failure(res) {
    let body = {};
    try {
      body = await res.json();
    } catch (_) {
      // not JSON: the status says enough
    }
    return new ApiError(res.status, body.detail, res.headers.get("Retry-After"));
  }

  async function api(path, params) {
    const url = new URL(path, location.origin);
    for (const [key, value] of params || []) url.searchParams.append(key, value);
    let res;
    try {
      res = await fetch(url, { headers: headers("application/json"), cache: "no-store" });
    } catch (_) {
      throw new ApiError(0, "The network failed.");
    }
    if (!res.ok) throw await failure(res);
    return parseJson(await res.text());
  }

  // 401 → the token form; 503 or no network → the notice, and a retry; anything else → `show` it.
  function handleError(err, show) {
    if (err.status === 401) askToken("The token was not accepted.");
    else if (err.status === 503 || err.status === 0) setUnavailable(err);
    else show(err.status === 404 ? "Not found." : `Error: ${err.message}`);
  }

  function setUnavailable(err) {
    ui.notice.hidden = false;
    if (!state.retryTimer) {
      state.retryTimer = setTimeout(() => {
        state.retryTimer = 0;
        reloadList();
      }, retryDelay(err));
    }
  }

  function setAvailable() {
    ui.notice.hidden = true;
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
    if (state.streamWake) state.streamWake(); // a stream waiting to reconnect: now
    if (state.detailFailed && state.selected) openSession(state.selected);
    if (state.dashboard && state.dashboard.failed && !state.selected) state.dashboard.reload();
  }

  // -- The list -------------------------------------------------------------------------------------

  function listParams(cursor) {
    const f = state.filters;
    const params = [["limit", PAGE_SIZE]];
    if (state.search) params.push(["q", state.search]);
    for (const s of f.status) params.push(["status", s]);
    for (const key of TEXT_FILTERS) {
      if (f[key]) params.push([key, f[key]]);
    }
    if (cursor) params.push(["cursor", cursor]);
    return params;
  }

  function matchesFilters(s) {
    const f = state.filters;
    const started = Date.parse(s.started_at);
    return (
      (!f.status.length || f.status.includes(s.status)) &&
      (!f.model || s.model === f.model) &&
      (!f.agent_type || s.agent_type === f.agent_type) &&
      (!f.project || s.project === f.project) &&
      (!f.cost_min || (known(s.cost_usd) && Number(s.cost_usd) >= Number(f.cost_min))) &&
      (!f.cost_max || (known(s.cost_usd) && Number(s.cost_usd) <= Number(f.cost_max))) &&
      (!f.started_after || started >= Date.parse(f.started_after)) &&
      (!f.started_before || started < Date.parse(f.started_before))
    );
  }

  // Where a session ran: the project (cwd's last part) and its git branch, when known.
  function place(s) {
    return [s.project, s.git_branch && `⎇ ${s.git_branch}`].filter(Boolean).join(" ");
  }

  // A cost with where it came from: reported by the agent, computed from prices, or unknown.
  function costEl(x) {
    const node = el("span", "cost", known(x.cost_usd) ? money(x.cost_usd) : "cost unknown");
    if (x.cost_source) {
      node.append(" ", el("span", `cost-source source-${x.cost_source}`, x.cost_source));
      node.title = { reported: "as the agent reported it", computed: "computed from the price table",
        unknown: "some requests are of a model without a price" }[x.cost_source] || "";
    }
    return node;
  }

  function fillCard(li, s) {
    const open = el("button", "card-open");
    open.type = "button";
    const top = el("span", "card-top");
    const title = el("span", s.title ? "card-title" : "card-title card-id", s.title || s.session_id);
    title.title = s.session_id;
    top.append(title, badge(s.status));
    const where = el("span", "card-where");
    if (place(s)) where.append(el("span", "card-project", place(s)));
    if (s.title) where.append(el("span", "card-id", s.session_id));
    const used = s.models && s.models.length ? s.models.join(", ") : s.model || "unknown model";
    const what = [used, s.agent_type].filter(Boolean).join(" · ");
    const facts = el("span", "card-facts");
    if (known(s.duration_ms)) facts.append(el("span", "duration", duration(s.duration_ms)));
    const total = tokenTotal(s);
    if (known(total)) {
      const t = el("span", "tokens", `${tokens(total)} tokens`);
      t.title = tokenKinds(s);
      facts.append(t);
    }
    if (known(s.cost_usd) || s.cost_source === "unknown") facts.append(costEl(s));
    if (known(s.qa_score)) facts.append(el("span", "qa", `QA ${score(s.qa_score)}`));
    facts.append(
      el("span", "reports", plural(s.report_count, "report")),
      el("span", "subagents", plural(s.subagent_count, "subagent")),
      timeEl(s.started_at, "rel"),
    );
    open.append(top, where, el("span", "card-model", what), facts);
    if (s.snippet) open.append(snippetEl(s.snippet));
    const focused = li.contains(document.activeElement);
    li.replaceChildren(open);
    if (focused) open.focus();
    if (s.session_id === state.selected) open.setAttribute("aria-current", "true");
  }

  // What a search matched: plain text parts, the matched words in <mark> (text nodes only, never HTML).
  const SNIPPET_KINDS = { prompt: "prompt", reply: "reply", tool_input: "tool input", tool_output: "tool output",
    report: "report" };
  function snippetEl(snippet) {
    const node = el("span", "card-snippet");
    node.append(el("span", "snippet-kind", SNIPPET_KINDS[snippet.kind] || snippet.kind));
    for (const part of snippet.parts) {
      node.append(part.match ? el("mark", null, part.text) : document.createTextNode(part.text));
    }
    return node;
  }

  function addCard(s, where) {
    const li = el("li", "card");
    li.dataset.sessionId = s.session_id;
    fillCard(li, s);
    state.cards.set(s.session_id, { li, session: s });
    if (where) ui.list.insertBefore(li, where);
    else ui.list.append(li);
  }

  function removeCard(id) {
    const shown = state.cards.get(id);
    if (shown) shown.li.remove();
    state.cards.delete(id);
  }

  // A session from the stream: update its card, add it where it belongs, or drop it if the filters
  // no longer match. A session older than the loaded pages is left to the next page.
  function applySession(s) {
    const shown = state.cards.get(s.session_id);
    if (shown && version(s) < version(shown.session)) return; // an older state than the one shown
    // While searching, only the sessions the search found are shown (the page cannot tell whether
    // another one matches); they keep the snippet of what matched.
    if (state.search && !shown) return;
    if (state.search) s = { ...s, snippet: shown.session.snippet };
    if (!matchesFilters(s)) {
      removeCard(s.session_id);
    } else if (shown) {
      shown.session = s;
      fillCard(shown.li, s);
    } else if (state.loaded) {
      let next = null;
      for (const { li, session } of state.cards.values()) {
        if (before(s, session) && (!next || before(session, next.session))) next = { li, session };
      }
      if (next || !state.cursor) addCard(s, next && next.li);
    }
    if (s.session_id === state.selected && state.detailHeader) fillDetailHeader(s);
    updateListEnd();
  }

  function updateListEnd() {
    let text = "";
    if (state.loading) text = "Loading…";
    else if (state.loaded && !state.cursor) {
      if (state.cards.size) text = "No more sessions.";
      else text = state.search ? "No session matches the search." : "No sessions match.";
    }
    // Events stored during a burst are searchable a little later (their documents are made when idle).
    if (!state.loading && state.search && state.searchPending) {
      const events = state.searchPending === 1 ? "1 recent event is" : `${state.searchPending} recent events are`;
      text = `${text} ${events} not searchable yet: indexing follows a burst.`.trim();
    }
    ui.listEnd.textContent = text;
  }

  function showListMessage(message) {
    ui.listEnd.textContent = message;
  }

  async function reloadList() {
    if (!state.token) return;
    const gen = ++state.listGen;
    state.loading = true;
    state.replay = [];
    updateListEnd();
    try {
      const page = await api("/api/sessions", listParams(null));
      if (gen !== state.listGen) return;
      ui.list.replaceChildren();
      state.cards.clear();
      for (const s of page.sessions) addCard(s, null);
      state.cursor = page.next_cursor;
      state.searchPending = page.search_pending || 0;
      state.loaded = true;
      state.loading = false;
      for (const s of state.replay) applySession(s);
      state.replay = null;
      updateListEnd();
      setAvailable();
    } catch (err) {
      if (gen !== state.listGen) return;
      state.loading = false;
      state.replay = null;
      updateListEnd();
      handleError(err, showListMessage);
    } finally {
      if (gen === state.listGen) watchEnd();
    }
  }

  async function loadMore() {
    if (state.loading || !state.cursor || !state.token) return;
    const gen = state.listGen;
    state.loading = true;
    updateListEnd();
    try {
      const page = await api("/api/sessions", listParams(state.cursor));
      if (gen !== state.listGen) return;
      for (const s of page.sessions) if (!state.cards.has(s.session_id)) addCard(s, null);
      state.cursor = page.next_cursor;
      state.loading = false;
      updateListEnd();
    } catch (err) {
      if (gen !== state.listGen) return;
      state.loading = false;
      updateListEnd();
      handleError(err, showListMessage);
    } finally {
      if (gen === state.listGen) watchEnd();
    }
  }

  // Infinite scroll: the next page loads when the end of the list scrolls into view. Observing again
  // after each page makes the observer report at once if the end is still in view.
  const endObserver = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  });

  function watchEnd() {
    endObserver.unobserve(ui.listEnd);
    endObserver.observe(ui.listEnd);
  }

  ui.list.addEventListener("click", (event) => {
    const card = event.target.closest(".card");
    if (!card) return;
    const hash = "#session=" + encodeURIComponent(card.dataset.sessionId);
    if (location.hash === hash) openSession(card.dataset.sessionId);
    else location.hash = hash;
  });

  setInterval(() => {
    for (const t of document.querySelectorAll("time.rel")) t.textContent = relative(t.dateTime);
  }, 30000);

  // -- The live stream ------------------------------------------------------------------------------

  // Server-sent events from a fetch() body (EventSource cannot send the Authorization header).
  async function readEvents(body, onEvent, onBytes) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let type = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onBytes();
      buffer += value;
      for (;;) {
        const at = buffer.search(/[\r\n]/);
        if (at < 0 || (buffer[at] === "\r" && at === buffer.length - 1)) break; // wait for the \n
        const line = buffer.slice(0, at);
        buffer = buffer.slice(buffer.startsWith("\r\n", at) ? at + 2 : at + 1);
        if (line === "") {
          if (data.length) onEvent(type || "message", data.join("\n"));
          type = "";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? "" : line.slice(colon + (line[colon + 1] === " " ? 2 : 1));
          if (field === "event") type = val;
          else if (field === "data") data.push(val);
        }
      }
    }
  }

  function onStreamEvent(type, data) {
    if (type === "session") {
      let message;
      try {
        message = JSON.parse(data);
      } catch (_) {
        return;
      }
      if (!message.session || !message.session.session_id) return;
      if (state.replay) state.replay.push(message.session);
      applySession(message.session);
    } else if (type === "unavailable") {
      setUnavailable(null);
    } else if (type === "available") {
      reloadList();
    }
  }

  function setLive(live) {
    ui.live.textContent = live ? "Live" : "Offline";
    ui.live.classList.toggle("on", live);
  }

  function stopStream() {
    state.streamGen++;
    if (state.streamAbort) state.streamAbort.abort();
    if (state.streamWake) state.streamWake();
    setLive(false);
  }

  // Keep one stream open while there is a token; each (re)connection reloads the list, so nothing that
  // happened while it was closed is missed.
  async function runStream() {
    stopStream();
    ui.live.textContent = "Connecting…";
    const gen = state.streamGen;
    let failures = 0;
    while (gen === state.streamGen && state.token) {
      const abort = new AbortController();
      state.streamAbort = abort;
      let stall = 0;
      const fed = () => {
        clearTimeout(stall);
        stall = setTimeout(() => abort.abort(), STALL_MS);
      };
      let retryAfter = 0;
      try {
        let res;
        try {
          res = await fetch("/api/sessions/stream", {
            headers: headers("text/event-stream"),
            cache: "no-store",
            signal: abort.signal,
          });
        } catch (err) {
          throw abort.signal.aborted ? err : new ApiError(0, "The network failed.");
        }
        if (res.status === 401) {
          if (gen === state.streamGen) askToken("The token was not accepted.");
          return;
        }
        if (!res.ok) throw await failure(res);
        fed();
        let first = true;
        await readEvents(res.body, onStreamEvent, () => {
          fed();
          if (first) {
            // The server subscribes before it sends its first bytes: from here on nothing is missed.
            first = false;
            failures = 0;
            setLive(true);
            reloadList();
          }
        });
      } catch (err) {
        if (gen !== state.streamGen) return;
        if (err.status === 503 || err.status === 0) {
          setUnavailable(err);
          retryAfter = retryDelay(err);
        }
      } finally {
        clearTimeout(stall);
      }
      if (gen !== state.streamGen) return;
      setLive(false);
      const delay = Math.min(RETRY_CAP_MS, Math.max(retryAfter, 250 * 2 ** failures++));
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        state.streamWake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      state.streamWake = null;
    }
  }

  // -- The detail -----------------------------------------------------------------------------------

  function section(title, className) {
    const s = el("section", `detail-section ${className}`);
    s.append(el("h3", null, title));
    return s;
  }

  function fillDetailHeader(s) {
    const head = state.detailHeader;
    const title = el("h2", "detail-title");
    title.append(el("span", "detail-id", s.title || s.session_id), badge(s.status));
    const facts = el("dl", "facts");
    const add = (label, value) => {
      if (!known(value) || value === "") return;
      const row = el("div");
      row.append(el("dt", null, label), el("dd", null, value));
      facts.append(row);
    };
    if (s.title) add("Session", s.session_id);
    add("Project", s.project);
    add("Branch", s.git_branch);
    add("Model", s.model);
    if (s.models && s.models.length > 1) add("Models", s.models.join(", "));
    add("Agent type", s.agent_type);
    add("Duration", known(s.duration_ms) ? duration(s.duration_ms) : null);
    add("Cost", known(s.cost_usd) ? `${money(s.cost_usd)}${s.cost_source ? ` (${s.cost_source})` : ""}` : null);
    const total = tokenTotal(s);
    add("Tokens", known(total) ? `${tokens(total)} (${tokenKinds(s)})` : null);
    add("QA score", known(s.qa_score) ? score(s.qa_score) : null);
    add("Events", s.event_count);
    add("Subagents", s.subagent_count);
    add("Reports", s.report_count);
    add("Words", s.word_count);
    add("Started", new Date(s.started_at).toLocaleString());
    add("Ended", s.ended_at && new Date(s.ended_at).toLocaleString());
    add("End reason", s.end_reason);
    add("Directory", s.cwd);
    add("Source", s.source);
    head.replaceChildren(title, facts, exportButtons(s.session_id));
  }

  // -- Export ---------------------------------------------------------------------------------------

  function exportButtons(id) {
    const bar = el("div", "export");
    const status = el("span", "export-status");
    status.setAttribute("role", "status");
    for (const [format, label] of [["json", "Export JSON"], ["md", "Export Markdown"]]) {
      const button = el("button", "quiet export-button", label);
      button.type = "button";
      button.dataset.format = format;
      button.addEventListener("click", () => download(id, format, button, status));
      bar.append(button);
    }
    bar.append(status);
    return bar;
  }

  function attachmentName(res, fallback) {
    const m = /filename="([A-Za-z0-9._-]+)"/.exec(res.headers.get("Content-Disposition") || "");
    return m ? m[1] : fallback;
  }

  // The API needs the bearer token, which a plain link cannot send: the file is fetched, then saved
  // from an object URL through a link with a download name.
  async function download(id, format, button, status) {
    button.disabled = true;
    status.textContent = "Preparing…";
    try {
      const url = new URL(`/api/sessions/${encodeURIComponent(id)}/export`, location.origin);
      url.searchParams.set("format", format);
      let res;
      try {
        res = await fetch(url, { headers: headers("*/*"), cache: "no-store" });
      } catch (_) {
        throw new ApiError(0, "The network failed.");
      }
      if (!res.ok) throw await failure(res);
      const blob = await res.blob();
      const link = el("a");
      link.href = URL.createObjectURL(blob);
      link.download = attachmentName(res, `hookdb-session.${format}`);
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
      status.textContent = "";
    } catch (err) {
      status.textContent = "";
      handleError(err, (message) => (status.textContent = `Export failed: ${message}`));
    } finally {
      button.disabled = false;
    }
  }

  function renderReport(report) {
    const article = el("article", "report-card");
    const head = el("header", "report-head");
    head.append(
      el("span", "report-path", report.path),
      el("span", "report-type", report.report_type),
      el("span", "report-words", plural(report.word_count, "word")),
      timeEl(report.written_at, "abs"),
    );
    const body = el("div", "report");
    body.append(window.hookdbMarkdown.render(report.content, { headingOffset: 3 })); // "# " under the h3
    article.append(head, body);
    return article;
  }

  function renderState(agent) {
    const article = el("article", "agent-state");
    const head = el("header", "report-head");
    head.append(
      el("span", "report-path", agent.path),
      el("span", "report-type", [agent.agent_id, agent.agent_type].filter(Boolean).join(" · ")),
      timeEl(agent.updated_at, "abs"),
    );
    article.append(head, el("pre", "json", prettyJson(agent.content)));
    return article;
  }

  function appendEvents(timeline, more, page, id) {
    timeline.add(page.events);
    more.hidden = !page.next_cursor;
    more.onclick = async () => {
      more.disabled = true;
      try {
        const next = await api(`/api/sessions/${encodeURIComponent(id)}/events`, [
          ["limit", EVENTS_PAGE],
          ["cursor", page.next_cursor],
        ]);
        more.textContent = "Load more events";
        if (state.selected === id) appendEvents(timeline, more, next, id);
      } catch (err) {
        handleError(err, (message) => (more.textContent = `Load more events (${message})`));
      } finally {
        more.disabled = false;
      }
    };
  }

  // The session's usage by agent: the main one and each subagent, with requests, tokens and cost.
  function renderAgents(agents) {
    const s = section("Usage by agent", "agents");
    if (!agents.length) {
      s.append(el("p", "empty", "No model API requests recorded."));
      return s;
    }
    const table = el("table", "models agent-usage");
    const head = el("tr");
    for (const h of ["Agent", "Requests", "Tokens", "By kind", "Cost"]) head.append(el("th", null, h));
    const thead = el("thead");
    thead.append(head);
    const body = el("tbody");
    for (const a of agents) {
      const tr = el("tr", a.agent === "main" ? "agent-main" : "agent-sub");
      const name = a.agent === "main" ? "main" : [a.agent_type || "subagent", a.agent].join(" · ");
      const cost = money(a.cost_usd) + (a.unpriced ? ` + ${plural(a.unpriced, "request")} of unknown cost` : "");
      tr.append(el("td", "agent-name", name), el("td", "num", a.requests), el("td", "num", tokens(a.tokens)),
        el("td", "kinds", tokenKinds(a)), el("td", "num", cost));
      body.append(tr);
    }
    table.append(thead, body);
    s.append(table);
    return s;
  }

  function renderDetail(d) {
    const s = d.session;
    state.detailHeader = el("header", "detail-header");
    fillDetailHeader(s);

    const reports = section("Reports", "reports");
    if (!d.reports.length) reports.append(el("p", "empty", "No reports."));
    for (const r of d.reports) reports.append(renderReport(r));

    const states = section("Agent states", "agent-states");
    if (!d.agent_states.length) states.append(el("p", "empty", "No agent state files."));
    for (const a of d.agent_states) states.append(renderState(a));

    const timeline = section("Timeline", "timeline");
    const events = window.hookdbTimeline.create();
    const more = el("button", "load-more", "Load more events");
    more.type = "button";
    if (!d.events.events.length && !d.requests.length) timeline.append(el("p", "empty", "No events."));
    else timeline.append(events.node);
    timeline.append(more);
    appendEvents(events, more, d.events, s.session_id);
    events.addRequests(d.requests, d.agents);

    ui.detail.replaceChildren(state.detailHeader, renderAgents(d.agents), reports, states, timeline);
    ui.detail.scrollTop = 0;
    if (window.matchMedia("(max-width: 45rem)").matches) ui.detail.scrollIntoView(); // below the list
  }

  async function openSession(id) {
    state.selected = id;
    state.dashboard = null;
    state.detailFailed = false;
    for (const [sid, { li }] of state.cards) {
      const button = li.querySelector("button");
      if (sid === id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    const gen = ++state.detailGen;
    state.detailHeader = null;
    ui.detail.replaceChildren(el("p", "placeholder", "Loading the session…"));
    try {
      const d = await api(`/api/sessions/${encodeURIComponent(id)}`, [["events_limit", EVENTS_PAGE]]);
      if (gen === state.detailGen) renderDetail(d);
    } catch (err) {
      if (gen !== state.detailGen) return;
      state.detailFailed = err.status === 503 || err.status === 0;
      if (state.detailFailed) {
        ui.detail.replaceChildren(el("p", "placeholder", "Could not load the session; retrying…"));
      }
      handleError(err, (message) => ui.detail.replaceChildren(el("p", "error", message)));
    }
  }

  // No session open: the overview of the tenant's sessions in its place.
  function showDashboard() {
    state.selected = null;
    state.detailGen++;
    state.detailHeader = null;
    for (const { li } of state.cards.values()) li.querySelector("button").removeAttribute("aria-current");
    if (!state.token) {
      ui.detail.replaceChildren();
      return;
    }
    state.dashboard = window.hookdbDashboard.create(
      (params) => api("/api/sessions/stats", params),
      handleError,
    );
    const hint = el("p", "placeholder", "Select a session to see its reports and timeline.");
    ui.detail.replaceChildren(hint, state.dashboard.node);
    state.dashboard.reload();
  }

  function showHashSession() {
    const m = /^#session=(.+)$/.exec(location.hash);
    if (!m || !state.token) {
      showDashboard();
      return;
    }
    let id;
    try {
      id = decodeURIComponent(m[1]);
    } catch (_) {
      return;
    }
    openSession(id);
  }

  window.addEventListener("hashchange", showHashSession);

  // -- Tabs and filters -----------------------------------------------------------------------------

  function selectTab(tab) {
    for (const t of ui.tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
  }

  for (const tab of ui.tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
      const other = ui.tabs[(ui.tabs.indexOf(tab) + 1) % ui.tabs.length];
      selectTab(other);
      other.focus();
    });
  }

  function isoOf(local) {
    const t = Date.parse(local); // a datetime-local value is in local time
    return Number.isFinite(t) ? new Date(t).toISOString() : "";
  }

  function readFilters() {
    const form = new FormData(ui.filterForm);
    state.filters = {
      status: form.getAll("status"),
      model: String(form.get("model") || "").trim(),
      agent_type: String(form.get("agent_type") || "").trim(),
      project: String(form.get("project") || "").trim(),
      cost_min: String(form.get("cost_min") || "").trim(),
      cost_max: String(form.get("cost_max") || "").trim(),
      started_after: isoOf(form.get("started_after")),
      started_before: isoOf(form.get("started_before")),
    };
    const f = state.filters;
    const count = (f.status.length ? 1 : 0) + TEXT_FILTERS.filter((key) => f[key]).length;
    ui.tabs[1].textContent = count ? `Filters (${count})` : "Filters";
  }

  ui.filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    readFilters();
    selectTab(ui.tabs[0]);
    $("panel-sessions").scrollTop = 0;
    reloadList();
  });

  // The search box: results as you type (once typing pauses), at once on Enter. Each search reloads the
  // list, and an answer to an older one is dropped (listGen).
  function searchNow() {
    clearTimeout(state.searchTimer);
    state.searchTimer = 0;
    const q = ui.searchInput.value.trim();
    if (q === state.search) return;
    state.search = q;
    $("panel-sessions").scrollTop = 0;
    reloadList();
  }

  ui.searchInput.addEventListener("input", () => {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(searchNow, SEARCH_DELAY_MS);
  });

  ui.searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    searchNow();
  });

  ui.filterForm.addEventListener("reset", () => {
    setTimeout(() => {
      readFilters();
      reloadList();
    });
  });

  // -- The token ------------------------------------------------------------------------------------

  function clearData() {
    state.listGen++;
    clearTimeout(state.searchTimer);
    state.search = "";
    ui.searchInput.value = "";
    state.detailGen++;
    state.cards.clear();
    state.cursor = null;
    state.loaded = false;
    state.loading = false;
    state.selected = null;
    state.detailHeader = null;
    state.dashboard = null;
    ui.list.replaceChildren();
    ui.listEnd.textContent = "";
    ui.detail.replaceChildren();
    ui.notice.hidden = true;
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
  }

  function askToken(message) {
    stopStream();
    clearData();
    state.token = "";
    localStorage.removeItem(TOKEN_KEY);
    ui.tokenError.textContent = message || "";
    ui.app.hidden = true;
    ui.signOut.hidden = true;
    ui.live.hidden = true;
    ui.signin.hidden = false;
    ui.tokenInput.value = "";
    ui.tokenInput.focus();
  }

  function start() {
    ui.signin.hidden = true;
    ui.app.hidden = false;
    ui.signOut.hidden = false;
    ui.live.hidden = false;
    reloadList();
    runStream();
    showHashSession();
  }

  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.tokenInput.value.trim();
    if (!token) return;
    state.token = token;
    localStorage.setItem(TOKEN_KEY, token);
    ui.tokenError.textContent = "";
    start();
  });

  ui.signOut.addEventListener("click", () => askToken(""));

  readFilters();
  if (state.token) start();
  else askToken("");
})();
