// A small markdown renderer for agent-written reports, which are untrusted: it builds DOM nodes with
// createElement and text nodes only (never innerHTML), so raw HTML in a report shows as text, and links
// are made only to http(s) URLs. Supported: ATX headings, paragraphs, **bold**, *italic*, ~~strike~~,
// `code`, fenced code blocks, nested lists, blockquotes, rules, [links](https://...) and bare URLs.
"use strict";

(function () {
  const MAX_DEPTH = 16; // nesting of blockquotes and lists; deeper text is shown as it is
  const FENCE = /^ {0,3}(`{3,}(?=[^`]*$)|~{3,})[ \t]*(\S*)/; // no backtick after a backtick fence
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}> ?(.*)$/;
  const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
  const BLANK = /^[ \t]*$/;
  const PUNCT = /[!-/:-@[-`{-~]/;
  const BARE_URL = /https?:\/\/[^\s<>]*[^\s<>.,;:!?'")\]*_~]/y;
  const ANGLE_URL = /<(https?:\/\/[^\s<>]+)>/y;
  let headingOffset = 0;

  function el(tag, text) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The URL if it is an absolute http(s) URL, else null (javascript:, data:, relative, malformed).
  function safeUrl(raw) {
    try {
      const url = new URL(raw);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function link(url, label, depth) {
    const a = el("a");
    a.href = url;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    if (typeof label === "string") inline(label, a, depth + 1, true);
    else a.textContent = url;
    return a;
  }

  function indentOf(line) {
    return /^ */.exec(line)[0].length;
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  }

  // -- Blocks ---------------------------------------------------------------------------------------

  function blocks(lines, parent, depth) {
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (BLANK.test(line)) {
        i++;
      } else if ((m = FENCE.exec(line))) {
        const fence = m[1];
        const close = new RegExp("^ {0,3}" + fence[0] + "{" + fence.length + ",}[ \\t]*$");
        const body = [];
        for (i++; i < lines.length && !close.test(lines[i]); i++) body.push(lines[i]);
        i++; // the closing fence (an unclosed block runs to the end)
        const code = el("code", body.join("\n"));
        if (m[2]) code.className = "language-" + m[2].replace(/[^\w-]/g, "");
        const pre = el("pre");
        pre.append(code);
        parent.append(pre);
      } else if ((m = HEADING.exec(line))) {
        const h = el("h" + Math.min(6, m[1].length + headingOffset));
        inline(m[2] || "", h, 0, false);
        parent.append(h);
        i++;
      } else if (RULE.test(line)) {
        parent.append(el("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const body = [];
        for (; i < lines.length && (m = QUOTE.exec(lines[i])); i++) body.push(m[1]);
        const quote = el("blockquote");
        nested(body, quote, depth);
        parent.append(quote);
      } else if (ITEM.test(line)) {
        i = list(lines, i, parent, depth);
      } else {
        const text = [line.trim()];
        for (i++; i < lines.length && !BLANK.test(lines[i]) && !startsBlock(lines[i]); i++) {
          text.push(lines[i].trim());
        }
        const p = el("p");
        inline(text.join("\n"), p, 0, false);
        parent.append(p);
      }
    }
  }

  function nested(lines, parent, depth) {
    if (depth < MAX_DEPTH) blocks(lines, parent, depth + 1);
    else parent.append(el("pre", lines.join("\n")));
  }

  // One list from lines[start] on; returns the index of the first line after it.
  function list(lines, start, parent, depth) {
    const first = ITEM.exec(lines[start]);
    const ordered = /\d/.test(first[2]);
    const kind = (m) => m && /\d/.test(m[2]) === ordered && m[2].slice(-1) === first[2].slice(-1);
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    const items = [];
    let loose = false;
    let i = start;
    for (;;) {
      const m = ITEM.exec(lines[i]);
      const indent = m[1].length;
      const gap = m[3] ? m[3].length : 1;
      const column = indent + m[2].length + (gap > 4 ? 1 : gap); // where the item's text starts
      const body = [m[4] || ""];
      for (i++; i < lines.length; i++) {
        const line = lines[i];
        if (BLANK.test(line)) {
          let j = i;
          while (j < lines.length && BLANK.test(lines[j])) j++;
          if (j < lines.length && indentOf(lines[j]) >= column) {
            for (; i < j; i++) body.push("");
            loose = true;
            i--;
            continue;
          }
          break;
        }
        const at = indentOf(line);
        if (at >= column || (at > indent && ITEM.test(line))) body.push(line.slice(Math.min(at, column)));
        else if (body[body.length - 1] !== "" && !startsBlock(line)) body.push(line.trim()); // lazy line
        else break;
      }
      items.push(body);
      let j = i;
      while (j < lines.length && BLANK.test(lines[j])) j++;
      const next = j < lines.length ? ITEM.exec(lines[j]) : null;
      if (!kind(next) || next[1].length >= column) break;
      if (j > i) loose = true;
      i = j;
    }
    for (const body of items) {
      const li = el("li");
      nested(body, li, depth);
      if (!loose) {
        for (const p of Array.from(li.children)) if (p.tagName === "P") p.replaceWith(...p.childNodes);
      }
      node.append(li);
    }
    parent.append(node);
    return i;
  }

  // -- Inline ---------------------------------------------------------------------------------------

  // The index of the delimiter `delim` closing an emphasis whose text starts at `from`, or -1.
  function closer(text, from, delim) {
    const single = delim.length === 1;
    for (let j = from; j <= text.length - delim.length; j++) {
      if (text[j] === "\\") {
        j++;
        continue;
      }
      if (single && text[j] === delim && text[j + 1] === delim) {
        j++;
        continue;
      }
      if (text.startsWith(delim, j) && !/\s/.test(text[j - 1])) {
        if (delim[0] === "_" && /\w/.test(text[j + delim.length] || "")) continue; // snake_case
        if (single && text[j - 1] === delim) continue;
        return j;
      }
    }
    return -1;
  }

  // [label](url "title") at text[i]: {label, url, end} or null.
  function parseLink(text, i) {
    let depth = 0;
    let j = i;
    const limit = Math.min(text.length, i + 2000); // a longer label is not a link
    for (; j < limit; j++) {
      if (text[j] === "\\") j++;
      else if (text[j] === "[") depth++;
      else if (text[j] === "]" && --depth === 0) break;
    }
    if (j >= limit || text[j + 1] !== "(") return null;
    const dest = /\(\s*(?:<([^<>\n]*)>|((?:[^\s()]|\([^\s()]*\))*))(?:\s+("[^"]*"|'[^']*'))?\s*\)/y;
    dest.lastIndex = j + 1;
    const m = dest.exec(text);
    if (!m) return null;
    return { label: text.slice(i + 1, j), url: m[1] !== undefined ? m[1] : m[2], end: dest.lastIndex };
  }

  function inline(text, parent, depth, inLink) {
    if (depth > MAX_DEPTH) {
      parent.append(text);
      return;
    }
    let buf = "";
    const flush = () => {
      if (buf) parent.append(buf); // a string argument becomes a text node
      buf = "";
    };
    const missing = new Set(); // delimiters with no closer left: don't search for them again
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === "\\" && PUNCT.test(text[i + 1] || "")) {
        buf += text[i + 1];
        i += 2;
        continue;
      }
      if (c === "\n") {
        if (/ {2,}$/.test(buf)) {
          buf = buf.replace(/ +$/, "");
          flush();
          parent.append(el("br"));
        } else {
          buf += "\n";
        }
        i++;
        continue;
      }
      if (c === "`") {
        const run = /`+/y;
        run.lastIndex = i;
        const ticks = run.exec(text)[0];
        let end = -1;
        if (!missing.has(ticks)) {
          const again = new RegExp("(?<!`)" + ticks + "(?!`)", "g");
          again.lastIndex = i + ticks.length;
          const found = again.exec(text);
          if (found) end = found.index;
          else missing.add(ticks);
        }
        if (end < 0) {
          buf += ticks;
          i += ticks.length;
          continue;
        }
        let code = text.slice(i + ticks.length, end).replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
        flush();
        parent.append(el("code", code));
        i = end + ticks.length;
        continue;
      }
      if (c === "[" && !inLink && !missing.has("]")) {
        const found = parseLink(text, i);
        if (!found && text.indexOf("]", i) < 0) missing.add("]");
        if (found) {
          const url = safeUrl(found.url);
          if (url) {
            if (buf.endsWith("!")) buf = buf.slice(0, -1); // an image: linked, never loaded
            flush();
            parent.append(link(url, found.label, depth));
          } else {
            buf += text.slice(i, found.end); // not an http(s) link: shown as written
          }
          i = found.end;
          continue;
        }
      }
      if ((c === "<" || c === "h") && !inLink) {
        const re = c === "<" ? ANGLE_URL : BARE_URL;
        re.lastIndex = i;
        const m = (c === "<" || i === 0 || /[\s(*_~]/.test(text[i - 1])) && re.exec(text);
        const url = m && safeUrl(m[1] || m[0]);
        if (url) {
          flush();
          parent.append(link(url, null, depth));
          i = re.lastIndex;
          continue;
        }
      }
      if (c === "*" || c === "_" || c === "~") {
        let delim = text[i + 1] === c ? c + c : c;
        if (c !== "~" && text.startsWith(c.repeat(3), i)) delim = c.repeat(3);
        const opens =
          (c !== "~" || delim === "~~") &&
          /\S/.test(text[i + delim.length] || "") &&
          !(c === "_" && /\w/.test(text[i - 1] || "")); // no emphasis inside snake_case words
        let end = -1;
        if (opens && !missing.has(delim)) {
          end = closer(text, i + delim.length, delim);
          if (end < 0) missing.add(delim);
        }
        if (end > i + delim.length) {
          const outer = el(c === "~" ? "del" : delim.length === 2 ? "strong" : "em");
          let inner = outer;
          if (delim.length === 3) outer.append((inner = el("strong")));
          inline(text.slice(i + delim.length, end), inner, depth + 1, inLink);
          flush();
          parent.append(outer);
          i = end + delim.length;
          continue;
        }
        buf += delim;
        i += delim.length;
        continue;
      }
      buf += c;
      i++;
    }
    flush();
  }

  // Render markdown text to a DocumentFragment. options.headingOffset shifts headings down that many
  // levels (a report's "# Title" sits below the page's own headings).
  function render(text, options) {
    headingOffset = (options && options.headingOffset) || 0;
    const lines = String(text)
      .replace(/\r\n?/g, "\n")
      .split("\n")
      .map((line) => line.replace(/^\t+/, (tabs) => "    ".repeat(tabs.length)));
    const fragment = document.createDocumentFragment();
    blocks(lines, fragment, 0);
    return fragment;
  }

  window.hookdbMarkdown = { render, safeUrl };
})();
