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

  window.hookdbUtil = { el, plural, known, money, duration, clock, prettyJson };
})();
