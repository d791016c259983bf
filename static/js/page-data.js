// Values a page's template hands its scripts, as JSON in <script type="application/json">
// blocks (Django's json_script): read here, since the Content-Security-Policy allows no
// inline script to put them on `window`.
export function pageData(id, fallback = {}) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : fallback;
}
