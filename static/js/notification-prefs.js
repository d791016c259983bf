// Account page: which notification kinds the user wants by e-mail
// (GET/PATCH /api/v1/notifications/preferences/; labels come translated from the API).
import { api, el } from "./api.js";

const form = document.getElementById("notify-prefs");

async function render() {
  const prefs = await api("notifications/preferences/");
  document.getElementById("notify-no-address").hidden = prefs.has_email_address;
  document.getElementById("notify-kinds").replaceChildren(
    ...Object.entries(prefs.email).map(([kind, wanted]) =>
      el("label", {},
        el("input", { type: "checkbox", name: kind, checked: wanted, "data-kind": kind }),
        prefs.labels[kind] || kind)),
  );
}

if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = form.querySelector(".form-error");
    const status = document.getElementById("notify-status");
    error.textContent = status.textContent = "";
    const email = {};
    for (const box of form.querySelectorAll("input[data-kind]")) email[box.dataset.kind] = box.checked;
    try {
      await api("notifications/preferences/", { method: "PATCH", body: { email } });
      status.textContent = form.dataset.saved;
    } catch (err) {
      error.textContent = err.message;
    }
  });
  render().catch((err) => {
    form.querySelector(".form-error").textContent = err.message;
  });
}
