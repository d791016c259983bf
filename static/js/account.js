// Account page: profile, plan limits, usage, API keys (created once, listed, revoked).
import { api, el, t } from "./api.js";

const root = document.getElementById("account");

function fmt(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString();
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toLocaleString(undefined, { maximumFractionDigits: 1 }) : value} ${units[unit]}`;
}

// "used / limit", with ∞ for a limit of 0 (unlimited).
function against(used, limit, format = fmt) {
  return `${format(used)} / ${limit ? format(limit) : "∞"}`;
}

// The rate limits the caller is under, one row per layer (rows named as in the 429's
// `details.layer`): the plan's requests/min, each endpoint group, then any other layer.
function limitsTable(me) {
  const usage = me.usage && typeof me.usage === "object" ? me.usage : {};
  const labels = {
    plan: t("allRequests", "All requests"),
    "endpoint:conversations": t("groupConversations", "Conversations"),
    "endpoint:messages": t("groupMessages", "Sending messages"),
    "endpoint:polling": t("groupPolling", "Reading replies and tasks (polling)"),
    "endpoint:knowledge": t("groupKnowledge", "Knowledge"),
    global: t("groupGlobal", "Whole service (everyone together)"),
  };
  const limits = { plan: me.plan.requests_per_minute };
  for (const [group, limit] of Object.entries(me.plan.endpoint_limits || {})) limits[`endpoint:${group}`] = limit;
  for (const [layer, info] of Object.entries(usage)) {
    if (!(layer in limits) && info && typeof info === "object" && "limit" in info) limits[layer] = info.limit;
  }
  return el("table", { class: "keys", "data-testid": "rate-limits" },
    el("caption", {}, t("limits", "Rate limits")),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, t("appliesTo", "Applies to")),
      el("th", { scope: "col" }, t("rpm", "Requests per minute")),
      el("th", { scope: "col" }, t("usage", "Used this minute")))),
    el("tbody", {}, Object.entries(limits).map(([layer, limit]) => {
      const info = usage[layer];
      return el("tr", { "data-layer": layer },
        el("th", { scope: "row" }, labels[layer] || layer),
        el("td", {}, fmt(limit)),
        el("td", {}, info ? fmt(info.used ?? info.limit - info.remaining) : "—"));
    })),
  );
}

async function renderProfile() {
  const box = document.getElementById("profile");
  try {
    const me = await api("me/");
    const rows = [
      [t("plan", "Plan"), me.plan.name],
      [t("tokens", "Tokens this month"), against(me.tokens.used_this_month, me.tokens.quota)
        + (me.tokens.reserved ? ` (+${fmt(me.tokens.reserved)} ${t("reserved", "held for replies in progress")})` : "")],
    ];
    const knowledge = me.knowledge || {};
    for (const [key, label, format] of [
      ["storage_bytes", t("storage", "Document storage"), bytes],
      ["documents", t("documents", "Documents"), fmt],
      ["knowledge_bases", t("bases", "Knowledge bases"), fmt],
    ]) {
      if (knowledge[key]) rows.push([label, against(knowledge[key].used, knowledge[key].limit, format)]);
    }
    box.replaceChildren(
      el("h2", {}, me.username),
      el("dl", { class: "plan", "data-testid": "plan", "data-plan-tier": me.plan.tier },
        rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      limitsTable(me),
    );
  } catch (err) {
    box.replaceChildren(el("p", { class: "form-error", role: "alert" }, err.message));
  }
}

async function renderKeys() {
  const list = document.getElementById("key-list");
  try {
    const page = await api("api-keys/?page_size=100");
    if (!page.results.length) {
      list.replaceChildren(el("p", { class: "muted" }, t("noKeys", "No API keys yet.")));
      return;
    }
    list.replaceChildren(
      el("table", { class: "keys" },
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, t("name", "Name")),
          el("th", { scope: "col" }, t("prefix", "Key")),
          el("th", { scope: "col" }, t("created", "Created")),
          el("th", { scope: "col" }, t("expires", "Expires")),
          el("th", { scope: "col" }, t("status", "Status")),
          el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, t("actions", "Actions"))))),
        el("tbody", {}, page.results.map((key) => el("tr", { "data-key-id": key.id },
          el("td", {}, key.name),
          el("td", {}, el("code", {}, `${key.prefix}…`)),
          el("td", {}, new Date(key.created_at).toLocaleString()),
          el("td", {}, key.expires_at ? new Date(key.expires_at).toLocaleString() : "—"),
          el("td", {}, key.is_active ? t("active", "Active") : t("revoked", "Revoked")),
          el("td", {}, key.is_active
            ? el("button", { type: "button", class: "danger", onclick: () => revoke(key) }, t("revoke", "Revoke"))
            : ""),
        ))),
      ),
    );
  } catch (err) {
    list.replaceChildren(el("p", { class: "form-error", role: "alert" }, err.message));
  }
}

async function revoke(key) {
  if (!window.confirm(t("confirmRevoke", "Revoke this key? Programs using it stop working."))) return;
  await api(`api-keys/${key.id}/`, { method: "DELETE" });
  await renderKeys();
}

function bindCreate() {
  const form = document.getElementById("key-form");
  const out = document.getElementById("new-key");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    const error = form.querySelector(".form-error");
    error.textContent = "";
    if (!name) {
      error.textContent = t("nameRequired", "Please give the key a name.");
      return;
    }
    const expires = form.elements.expires_at.value;
    try {
      const created = await api("api-keys/", {
        method: "POST",
        body: { name, expires_at: expires ? new Date(expires).toISOString() : null },
      });
      const input = el("input", { id: "new-key-value", readonly: true, value: created.key, "aria-label": t("newKey", "Your new API key") });
      const copy = el("button", { type: "button", onclick: async () => {
        input.select();
        try { await navigator.clipboard.writeText(created.key); } catch { document.execCommand("copy"); }
        copy.textContent = t("copied", "Copied");
      } }, t("copy", "Copy"));
      out.replaceChildren(
        el("p", { role: "status" }, t("shownOnce", "Copy your key now — it will not be shown again.")),
        el("div", { class: "row" }, input, copy),
      );
      form.reset();
      await renderKeys();
    } catch (err) {
      error.textContent = err.message;
    }
  });
}

if (root) {
  bindCreate();
  renderProfile();
  renderKeys();
}
