// Behaviour every page shares, kept out of the HTML: the Content-Security-Policy allows no
// inline script or event handler attribute.
for (const select of document.querySelectorAll("select[data-submit-on-change]")) {
  select.addEventListener("change", () => select.form.submit());
}
