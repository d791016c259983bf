// Markdown for untrusted text (model output, document snippets): raw HTML in the source is
// shown as text, the result is sanitised by DOMPurify, code is highlighted by highlight.js.
const { marked, DOMPurify, hljs } = window;

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

marked.use({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML blocks and inline tags from the model are displayed, never interpreted.
    html(token) {
      return escapeHtml(typeof token === "string" ? token : token.text || token.raw || "");
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!/^(https?:|mailto:|#|\/)/i.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed", "img", "svg", "math"],
  FORBID_ATTR: ["style", "id", "name"],
};

export function renderMarkdown(target, text, { citations = [], onCite } = {}) {
  target.innerHTML = DOMPurify.sanitize(marked.parse(text || ""), PURIFY);
  for (const code of target.querySelectorAll("pre code")) {
    try {
      hljs.highlightElement(code);
    } catch {
      /* unknown language: leave it plain */
    }
  }
  if (citations.length) linkCitations(target, citations, onCite);
}

// Turns "[n]" in text (not in code) into buttons that open the cited snippet.
function linkCitations(root, citations, onCite) {
  const byIndex = new Map(citations.map((c) => [String(c.index), c]));
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => (node.parentElement.closest("code, pre, a, button") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const parts = node.textContent.split(/(\[\d{1,3}\])/);
    if (parts.length === 1) continue;
    const fragment = document.createDocumentFragment();
    for (const part of parts) {
      const match = part.match(/^\[(\d{1,3})\]$/);
      const citation = match && byIndex.get(match[1]);
      if (citation) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "cite";
        button.textContent = `[${citation.index}]`;
        button.setAttribute("aria-label", `${citation.index}: ${citation.document_title}`);
        button.addEventListener("click", () => onCite && onCite(citation));
        fragment.append(button);
      } else if (part) {
        fragment.append(document.createTextNode(part));
      }
    }
    node.replaceWith(fragment);
  }
}
