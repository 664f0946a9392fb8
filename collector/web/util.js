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
      return String(text);
    }
  }

  window.hookdbUtil = { el, plural, known, money, tokens, tokenTotal, tokenKinds, duration, clock, prettyJson };
})();
