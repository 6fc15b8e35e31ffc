// A small, safe Markdown renderer for the model's answers (no library: the box serves its pages
// offline). Blocks: paragraphs (a single newline is a line break), headings, "-"/"*"/"+" and
// "1." lists, horizontal rules and fenced code blocks (```lang ... ``` or ~~~) as <pre><code>;
// inline: `code` and **bold**. Safe by construction: it builds DOM nodes and puts the model's
// text in with textContent / text nodes only, so nothing the model writes is ever parsed as HTML
// (an answer containing <img src=x onerror=...> shows as that text).
"use strict";

const renderMarkdown = (() => {
  const FENCE = /^(\s*)(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
  const ITEM = /^(\s*)(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/;
  const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
  const INLINE = /(`+)(.+?)\1(?!`)|\*\*(\S(?:.*?\S)?)\*\*/g;

  function el(tag, cls) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    return e;
  }

  // `code` spans and **bold** into ``parent``; everything else as plain text nodes.
  function inline(parent, text) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      const e = el(m[1] ? "code" : "strong");
      e.textContent = m[1] ? m[2].replace(/^ (.*) $/, "$1") : m[3];
      parent.appendChild(e);
      last = m.index + m[0].length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function closes(line, marker) {
    const t = line.trim();
    return t.length >= marker.length && t === marker[0].repeat(t.length);
  }

  return function renderMarkdown(source) {
    const root = document.createDocumentFragment();
    const lines = String(source == null ? "" : source).replace(/\r\n?/g, "\n").split("\n");
    let para = null;
    let list = null;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = FENCE.exec(line);
      if (fence) {
        para = list = null;
        const indent = fence[1].length;
        const body = [];
        for (i++; i < lines.length && !closes(lines[i], fence[2]); i++) {
          body.push(lines[i].slice(Math.min(indent, lines[i].search(/\S|$/))));
        }
        // an unclosed fence (an answer cut off at max_tokens) runs to the end
        const pre = el("pre");
        const code = el("code");
        const lang = /^[\w+#.-]{1,40}$/.test(fence[3]) ? fence[3] : "";  // a name, or none
        if (lang) {
          code.className = "language-" + lang;
          code.dataset.lang = lang;
        }
        code.textContent = body.join("\n");
        pre.appendChild(code);
        root.appendChild(pre);
        continue;
      }
      if (!line.trim()) {
        para = list = null;
        continue;
      }
      if (RULE.test(line)) {
        para = list = null;
        root.appendChild(el("hr"));
        continue;
      }
      const heading = HEADING.exec(line);
      if (heading) {
        para = list = null;
        const h = el("h" + Math.min(6, heading[1].length + 2));  // h3..h6: below the page's own headings
        inline(h, heading[2]);
        root.appendChild(h);
        continue;
      }
      const item = ITEM.exec(line);
      if (item) {
        const tag = item[2] ? "ul" : "ol";
        if (!list || list.tagName.toLowerCase() !== tag) {
          para = null;
          list = el(tag);
          if (tag === "ol" && item[3] !== "1") list.start = Number(item[3]);
          root.appendChild(list);
        }
        const li = el("li");
        inline(li, item[4]);
        list.appendChild(li);
        continue;
      }
      if (list && /^\s/.test(line)) {  // an indented continuation of the last list item
        list.lastChild.appendChild(el("br"));
        inline(list.lastChild, line.trim());
        continue;
      }
      list = null;
      if (para) para.appendChild(el("br"));
      else root.appendChild(para = el("p"));
      inline(para, line.trim());
    }
    return root;
  };
})();
