// Assistants page: the assistants the user may chat with, a link to start a chat with each,
// and (staff, or a plan that allows it) a form to create and edit their own.
import { api, ApiError, el, icon, t } from "./api.js";

const $ = (selector) => document.querySelector(selector);
const state = { assistants: [], options: null, bases: [], editing: null };

async function load() {
  try {
    const [page, options, bases] = await Promise.all([
      api("assistants/?page_size=200"),
      api("assistants/options/"),
      api("knowledge/bases/?page_size=200").catch(() => ({ results: [] })),
    ]);
    state.assistants = page.results;
    state.options = options;
    state.bases = bases.results || [];
  } catch (err) {
    showError(err.message);
    return;
  }
  $("#assistant-new").hidden = !state.options.can_create;
  $("#assistants-plan").hidden = state.options.can_create;
  render();
}

function render() {
  const list = $("#assistant-list");
  if (!state.assistants.length) {
    list.replaceChildren(el("li", { class: "muted" }, t("noAssistants", "No assistants yet.")));
    return;
  }
  list.replaceChildren(...state.assistants.map(card));
}

function card(assistant) {
  const owner = assistant.is_owner ? t("yours", "Yours") : t("by", "by %s").replace("%s", assistant.owner);
  const actions = [el("a", { class: "button-like start-chat", href: `/?assistant=${assistant.id}` }, t("startChat", "Start chat"))];
  if (assistant.can_edit) {
    actions.push(
      el("button", { type: "button", class: "edit", onclick: () => openEditor(assistant) }, t("edit", "Edit")),
      el("button", { type: "button", class: "danger delete", onclick: () => remove(assistant) }, t("delete", "Delete")),
    );
  }
  return el("li", { class: "card assistant-card", "data-assistant-id": assistant.id },
    el("div", { class: "assistant-title" },
      el("span", { class: "assistant-icon", "data-icon": assistant.icon }, icon(assistant.icon)),
      el("h2", {}, assistant.name)),
    assistant.description ? el("p", {}, assistant.description) : null,
    el("p", { class: "muted small" }, owner, " · ", t(`vis_${assistant.visibility}`, assistant.visibility),
      assistant.sources_only ? ` · ${t("sourcesOnly", "Answers only from its sources")}` : ""),
    el("div", { class: "row" }, actions));
}

async function remove(assistant) {
  if (!window.confirm(t("confirmDelete", "Delete this assistant?"))) return;
  try {
    await api(`assistants/${assistant.id}/`, { method: "DELETE" });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) {
      showError(err.message);
      return;
    }
  }
  state.assistants = state.assistants.filter((a) => a.id !== assistant.id);
  render();
}

// --- the editor --------------------------------------------------------------------------

function modelOptions(current) {
  const fallback = state.options.default_model;
  const options = [el("option", { value: "" }, t("defaultModel", "Default (%s)").replace("%s", fallback.model))];
  for (const m of state.options.models) {
    const value = `${m.provider}:${m.model}`;
    options.push(el("option", { value, selected: value === current }, `${m.model} (${m.provider})`));
  }
  return options;
}

function openEditor(assistant = null) {
  state.editing = assistant;
  const form = $("#assistant-form");
  form.reset();
  $("#assistant-form-error").textContent = "";
  $("#assistant-form-title").textContent = assistant ? t("editAssistant", "Edit assistant") : t("newAssistant", "New assistant");
  const a = assistant || {};
  const llm = a.provider ? `${a.provider}:${a.model}` : "";
  $("#as-model").replaceChildren(...modelOptions(llm));
  $("#as-icons").replaceChildren(
    ...state.options.icons.map((name, i) => {
      const id = `as-icon-${i}`;
      const checked = a.icon ? a.icon === name : i === 0;
      return el("span", { class: "icon-choice" },
        el("input", { type: "radio", name: "icon", id, value: name, checked }),
        el("label", { for: id, title: name }, icon(name), el("span", { class: "visually-hidden" }, name)));
    }),
  );
  const kbIds = new Set(a.knowledge_base_ids || []);
  $("#as-kbs").replaceChildren(
    ...(state.bases.length
      ? state.bases.map((kb) => {
          const id = `as-kb-${kb.id}`;
          return el("div", { class: "kb-option" },
            el("input", { type: "checkbox", id, name: "kb", value: kb.id, checked: kbIds.has(kb.id) }),
            el("label", { for: id }, kb.name));
        })
      : [el("p", { class: "muted small" }, t("noKbs", "No knowledge bases you can read yet."))]),
  );
  $("#as-name").value = a.name || "";
  $("#as-description").value = a.description || "";
  $("#as-prompt").value = a.system_prompt || "";
  $("#as-temperature").value = a.temperature ?? "";
  $("#as-max-tokens").value = a.max_tokens ?? "";
  $("#as-max-tokens").max = state.options.max_tokens_limit;
  $("#as-sources-only").checked = Boolean(a.sources_only);
  $("#as-threshold").value = a.score_threshold ?? "";
  $("#as-fallback").value = a.fallback_message || "";
  $("#as-opening").value = a.opening_message || "";
  $("#as-questions").value = (a.suggested_questions || []).join("\n");
  $("#as-visibility").value = a.visibility || "private";
  $("#as-shared").value = (a.shared_with || []).join(", ");
  $("#assistant-dialog").showModal();
  $("#as-name").focus();
}

function formBody() {
  const form = $("#assistant-form");
  const number = (value, parse) => (value.trim() === "" ? null : parse(value));
  const [provider, model] = $("#as-model").value ? $("#as-model").value.split(/:(.*)/s) : ["", ""];
  return {
    name: $("#as-name").value,
    icon: (form.querySelector('input[name="icon"]:checked') || {}).value,
    description: $("#as-description").value,
    system_prompt: $("#as-prompt").value,
    provider,
    model,
    temperature: number($("#as-temperature").value, Number),
    max_tokens: number($("#as-max-tokens").value, (v) => Number.parseInt(v, 10)),
    knowledge_base_ids: [...form.querySelectorAll('input[name="kb"]:checked')].map((i) => Number(i.value)),
    sources_only: $("#as-sources-only").checked,
    score_threshold: number($("#as-threshold").value, Number),
    fallback_message: $("#as-fallback").value,
    opening_message: $("#as-opening").value,
    suggested_questions: $("#as-questions").value.split("\n").map((q) => q.trim()).filter(Boolean),
    visibility: $("#as-visibility").value,
    shared_with: $("#as-shared").value.split(",").map((n) => n.trim()).filter(Boolean),
  };
}

async function save(event) {
  event.preventDefault();
  const error = $("#assistant-form-error");
  error.textContent = "";
  const editing = state.editing;
  try {
    const saved = editing
      ? await api(`assistants/${editing.id}/`, { method: "PATCH", body: formBody() })
      : await api("assistants/", { method: "POST", body: formBody() });
    const index = state.assistants.findIndex((a) => a.id === saved.id);
    if (index >= 0) state.assistants[index] = saved;
    else state.assistants.push(saved);
    state.assistants.sort((a, b) => a.name.localeCompare(b.name));
    $("#assistant-dialog").close();
    render();
  } catch (err) {
    const details = Object.entries(err.details || {})
      .filter(([field]) => field !== "refused_ids")
      .map(([field, messages]) => [field, [].concat(messages).filter((m) => m !== err.message)])
      .filter(([, messages]) => messages.length)
      .map(([field, messages]) => `${field}: ${messages.join(" ")}`);
    error.textContent = [err.message, ...details].join(" · ");
  }
}

function showError(message) {
  const box = $("#assistants-error");
  box.textContent = message;
  box.hidden = false;
}

function bind() {
  $("#assistant-new").addEventListener("click", () => openEditor());
  $("#assistant-form").addEventListener("submit", save);
  $("#assistant-cancel").addEventListener("click", () => $("#assistant-dialog").close());
}

bind();
load();
