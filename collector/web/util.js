// Small helpers the page's scripts share: DOM nodes from text (never HTML) and how values are written.
"use strict";

(function () {
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function known(value) {
    return value !== null && value !== undefined;
  }

  function money(value) {
    const n = Number(value);
    return n > 0 && n < 0.01 ? "< $0.01" : `$${n.toFixed(2)}`;
  }

  // A token count, short: 950, 12.3k, 4.56M.
  function tokens(value) {
    const n = Number(value);
    if (n < 1000) return String(n);
    if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 2 : 1).replace(/\.?0+$/, "")}k`;
    return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1).replace(/\.?0+$/, "")}M`;
  }

  // The tokens of a card, a ledger request or a usage total, all kinds together (null when not known).
  const TOKEN_KINDS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_5m_tokens",
    "cache_creation_1h_tokens"];
  function tokenTotal(x) {
    if (!TOKEN_KINDS.some((k) => known(x[k]))) return null;
    return TOKEN_KINDS.reduce((sum, k) => sum + Number(x[k] || 0), 0);
  }

  // Tokens by kind on one line: "1.2k in · 300 out · 10k cache read · 2k cache write".
  function tokenKinds(x) {
    const write = Number(x.cache_creation_5m_tokens || 0) + Number(x.cache_creation_1h_tokens || 0);
    return [
      `${tokens(x.input_tokens || 0)} in`,
      `${tokens(x.output_tokens || 0)} out`,
      x.cache_read_tokens ? `${tokens(x.cache_read_tokens)} cache read` : null,
      write ? `${tokens(write)} cache write` : null,
    ].filter(Boolean).join(" · ");
  }

  function duration(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    const seconds = Math.round(ms / 1000);
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  function clock(iso) {
    const d = new Date(iso);
    const options = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    const hms = d.toLocaleTimeString([], options);
    return `${hms}.${String(d.getMilliseconds()).padStart(3, "0")}`;
  }

  function prettyJson(text) {
    try {
      return JSON.stringify(typeof text === "string" ? JSON.parse(text) : text, null, 2);
    } catch (_) {
      // Nested too deep for the browser to write out (its String() would recurse as deep and throw too).
      return "(this payload is nested too deep to show here: the JSON export holds it whole)";
    }
  }

  // An answer's JSON. A number a double cannot hold as written (an integer beyond 2^53, 1e400, a nonzero
  // one that rounds to 0: a payload an older writer stored) keeps its digits inside payloads, which are
  // only shown; outside them it is a number, as the page computes with it. The reviver that sees the
  // digits is slower, so it runs only when the text may hold such a number; it recurses, so on JSON nested
  // too deep for it such numbers stay doubles.
  const LONG_NUMBER = /\d{16}|[eE][+-]?\d{3}/;

  function parseJson(text) {
    if (!JSON.rawJSON || !LONG_NUMBER.test(text)) return JSON.parse(text);
    try {
      return exactNumbers(JSON.parse(text, keepDigits));
    } catch (_) {
      return JSON.parse(text);
    }
  }

  function keepDigits(_key, value, context) {
    if (typeof value !== "number" || !context) return value;
    const held = Number.isFinite(value) && (Number.isSafeInteger(value) || !Number.isInteger(value));
    return held && (value !== 0 || !/[1-9]/.test(context.source)) ? value : JSON.rawJSON(context.source);
  }

  function exactNumbers(value) {
    if (JSON.isRawJSON(value)) return Number(value.rawJSON);
    if (value && typeof value === "object") {
      for (const key of Object.keys(value)) if (key !== "payload") value[key] = exactNumbers(value[key]);
    }
    return value;
  }

  window.hookdbUtil = {
    el, plural, known, money, tokens, tokenTotal, tokenKinds, duration, clock, prettyJson, parseJson,
  };
})();
