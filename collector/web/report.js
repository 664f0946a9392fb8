// Agent-written reports are untrusted markdown. They are rendered by markdown-it (GFM: tables,
// strikethrough, task lists by the rule below, fenced code with its language shown), with raw HTML off and
// links only to http(s) and mailto URLs, then sanitized by DOMPurify to the few tags markdown-it makes.
// Nothing gets a style attribute (the page's CSP forbids them): table alignment becomes a class.
"use strict";

(function () {
  const SAFE_URL = /^\s*(?:https?:|mailto:)/i;
  const PURIFY = {
    RETURN_DOM_FRAGMENT: true,
    ALLOWED_TAGS: [
      "p", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "s", "code", "pre", "blockquote", "ul",
      "ol", "li", "a", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "div", "span", "input",
    ],
    ALLOWED_ATTR: ["href", "class", "type", "checked", "disabled", "start", "title", "aria-label"],
    // Applies to every attribute value not known to be safe: any with a colon must be an http(s) or
    // mailto URL (hrefs are that already, by validateLink below).
    ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^:]*$)/i,
  };
  const TASK = /^\[([ xX])\][ \t]+/;
  const ALIGN = /^text-align:(left|right|center)$/;

  const md = window.markdownit({ html: false, linkify: true });
  md.validateLink = (url) => SAFE_URL.test(url);

  // The page's own headings sit above a report: "# Title" goes env.headingOffset levels down. A list item
  // that starts with "[ ]" or "[x]" gets a disabled checkbox. Alignment styles become classes.
  md.core.ruler.push("hookdb_report", (state) => {
    const offset = state.env.headingOffset || 0;
    const tokens = state.tokens;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (t.type === "heading_open" || t.type === "heading_close") {
        t.tag = "h" + Math.min(6, Number(t.tag.slice(1)) + offset);
      } else if (t.type === "th_open" || t.type === "td_open") {
        const m = ALIGN.exec(t.attrGet("style") || "");
        t.attrs = m ? [["class", `align-${m[1]}`]] : null;
      } else if (
        t.type === "inline" &&
        i >= 2 &&
        tokens[i - 1].type === "paragraph_open" &&
        tokens[i - 2].type === "list_item_open" &&
        t.children.length &&
        t.children[0].type === "text" &&
        TASK.test(t.children[0].content)
      ) {
        const first = t.children[0];
        const done = TASK.exec(first.content)[1] !== " ";
        first.content = first.content.replace(TASK, "");
        const box = new state.Token("task_checkbox", "input", 0);
        box.attrs = [["type", "checkbox"], ["disabled", ""], ["aria-label", done ? "done" : "to do"]];
        if (done) box.attrs.push(["checked", ""]);
        t.children.unshift(box);
        tokens[i - 2].attrJoin("class", "task-list-item");
      }
    }
  });

  const fence = md.renderer.rules.fence;
  md.renderer.rules.fence = (tokens, idx, options, env, self) => {
    const lang = tokens[idx].info.trim().split(/\s+/)[0];
    const code = fence(tokens, idx, options, env, self);
    if (!lang) return code;
    return `<div class="code-block"><span class="code-lang">${md.utils.escapeHtml(lang)}</span>${code}</div>`;
  };

  // An image is linked, never loaded (the CSP allows images from this page only).
  md.renderer.rules.image = (tokens, idx, options, env, self) => {
    const t = tokens[idx];
    const label = self.renderInlineAsText(t.children, options, env) || t.attrGet("src");
    return `<a href="${md.utils.escapeHtml(t.attrGet("src"))}">${md.utils.escapeHtml(label)}</a>`;
  };

  // Markdown text to a DocumentFragment. options.headingOffset shifts headings down that many levels.
  function render(text, options) {
    const html = md.render(String(text), { headingOffset: (options && options.headingOffset) || 0 });
    const fragment = window.DOMPurify.sanitize(html, PURIFY);
    for (const a of fragment.querySelectorAll("a")) {
      a.rel = "noopener noreferrer";
      a.target = "_blank";
    }
    return fragment;
  }

  window.hookdbMarkdown = { render };
})();
