// Knowledge bases page: the bases a user may read, create one, and for a base: drag-and-drop
// upload with a progress bar per file (upload, then processing), status and readable errors,
// retry, delete, and the retrieval test.
import { api, ApiError, el, icon, t } from "./api.js";

const $ = (selector) => document.querySelector(selector);
const ACTIVE = new Set(["pending", "processing"]);
const state = { bases: [], current: null, documents: [], uploads: new Map(), pollTimer: null };

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function statusLabel(status) {
  return t(`status_${status}`, status);
}

// --- bases ------------------------------------------------------------------------------

async function loadBases() {
  try {
    const page = await api("knowledge/bases/?page_size=200");
    state.bases = page.results;
  } catch (err) {
    showError(err.message);
  }
  renderBases();
}

function renderBases() {
  const list = $("#kb-list");
  if (!state.bases.length) {
    list.replaceChildren(el("li", { class: "muted" }, t("noBases", "No knowledge bases yet. Create one to upload documents.")));
    return;
  }
  list.replaceChildren(
    ...state.bases.map((base) =>
      el("li", { "data-kb-id": base.id },
        el("a", {
          href: `?kb=${base.id}`,
          class: "conv-link",
          "aria-current": state.current && state.current.id === base.id ? "page" : undefined,
          onclick: (event) => {
            event.preventDefault();
            openBase(base.id);
          },
        }, base.name, el("span", { class: "muted small" }, ` · ${base.document_count}`)),
      ),
    ),
  );
}

function bindCreate() {
  $("#kb-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const error = form.querySelector(".form-error");
    error.textContent = "";
    try {
      const base = await api("knowledge/bases/", {
        method: "POST",
        body: { name: form.elements.name.value.trim(), description: form.elements.description.value.trim(), visibility: form.elements.visibility.value },
      });
      form.reset();
      state.bases.unshift(base);
      openBase(base.id);
    } catch (err) {
      error.textContent = err.message;
    }
  });
}

async function openBase(id) {
  history.replaceState(null, "", `?kb=${id}`);
  try {
    state.current = await api(`knowledge/bases/${id}/`);
  } catch (err) {
    state.current = null;
    showError(err instanceof ApiError && err.status === 404 ? t("noBase", "This knowledge base does not exist or is not yours.") : err.message);
    renderBases();
    renderBase();
    return;
  }
  renderBases();
  renderBase();
  await loadDocuments();
}

function renderBase() {
  const panel = $("#kb-detail");
  panel.hidden = !state.current;
  $("#kb-empty").hidden = !!state.current;
  if (!state.current) return;
  const base = state.current;
  $("#kb-name").textContent = base.name;
  $("#kb-meta").textContent = `${t(`vis_${base.visibility}`, base.visibility)} · ${t("owner", "Owner")}: ${base.owner} · ${t("chunking", "Chunks")}: ${base.chunk_size}/${base.chunk_overlap}`;
  $("#kb-description").textContent = base.description || "";
  $("#dropzone").hidden = !base.is_owner;
  $("#kb-delete").hidden = !base.is_owner;
}

// --- documents ---------------------------------------------------------------------------

async function loadDocuments() {
  if (!state.current) return;
  clearTimeout(state.pollTimer);
  try {
    const page = await api(`knowledge/bases/${state.current.id}/documents/?page_size=200`);
    state.documents = page.results;
  } catch (err) {
    showError(err.message);
  }
  renderDocuments();
  const listed = state.bases.find((b) => b.id === state.current.id);
  if (listed && listed.document_count !== state.documents.length) {
    listed.document_count = state.documents.length;
    renderBases();
  }
  // Poll while anything is still being processed: the worker updates status and progress.
  if (state.documents.some((d) => ACTIVE.has(d.status))) state.pollTimer = setTimeout(loadDocuments, 1000);
}

function renderDocuments() {
  const body = $("#doc-rows");
  const uploads = [...state.uploads.values()];
  const rows = [
    ...uploads.map((u) => docRow({ id: null, title: u.name, size: u.size, status: u.error ? "failed" : "uploading", progress: u.progress, error: u.error, chunk_count: 0, file_type: u.name.split(".").pop() }, u.key)),
    ...state.documents.map((d) => docRow(d)),
  ];
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted" }, t("noDocs", "No documents yet."))));
  body.replaceChildren(...rows);
}

function docRow(doc, uploadKey) {
  const canWrite = state.current && state.current.is_owner;
  const progress = doc.status === "ready" ? 100 : doc.progress || 0;
  const statusCell = el("td", {},
    el("span", { class: `status status-${doc.status}` }, doc.status === "uploading" ? t("uploading", "Uploading") : statusLabel(doc.status)),
    doc.status !== "ready" && doc.status !== "failed"
      ? el("progress", { max: "100", value: String(progress), "aria-label": `${doc.title}: ${progress}%` })
      : "",
    doc.error ? el("div", { class: "form-error small", role: "alert" }, doc.error) : "");
  const actions = el("td", { class: "actions" });
  if (doc.id && canWrite) {
    if (doc.status === "failed" || doc.status === "ready") {
      actions.append(el("button", { type: "button", class: doc.status === "failed" ? "retry" : "reindex", onclick: () => reindex(doc) },
        doc.status === "failed" ? t("retry", "Retry") : t("reindex", "Re-index")));
    }
    actions.append(el("button", { type: "button", class: "icon delete", "aria-label": `${t("delete", "Delete")}: ${doc.title}`, title: t("delete", "Delete"), onclick: () => deleteDocument(doc) }, icon("trash")));
  }
  if (uploadKey && doc.error) {
    actions.append(el("button", { type: "button", class: "icon", "aria-label": t("dismiss", "Dismiss"), onclick: () => { state.uploads.delete(uploadKey); renderDocuments(); } }, icon("close")));
  }
  return el("tr", { "data-document-id": doc.id || "", "data-status": doc.status },
    // The uploaded original, as a download (GET knowledge/documents/{id}/file).
    el("td", {}, doc.id ? el("a", { href: `/api/v1/knowledge/documents/${doc.id}/file`, title: t("download", "Download") }, doc.title) : doc.title,
      el("div", { class: "muted small" }, `${(doc.file_type || "").toUpperCase()} · ${fmtBytes(doc.size || 0)}`)),
    statusCell,
    el("td", {}, String(doc.chunk_count || 0)),
    actions);
}

async function reindex(doc) {
  try {
    await api(`knowledge/documents/${doc.id}/reindex`, { method: "POST" });
  } catch (err) {
    showError(err.message);
  }
  loadDocuments();
}

async function deleteDocument(doc) {
  if (!window.confirm(t("confirmDeleteDoc", "Delete this document? Its passages disappear from answers and search."))) return;
  try {
    await api(`knowledge/documents/${doc.id}/`, { method: "DELETE" });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) showError(err.message);
  }
  loadDocuments();
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

// One request per file, so each file gets its own progress bar and its own error.
function uploadFile(file) {
  const key = `${file.name}-${file.size}-${Math.random()}`;
  const upload = { key, name: file.name, size: file.size, progress: 0, error: "" };
  state.uploads.set(key, upload);
  renderDocuments();
  const form = new FormData();
  form.append("file", file);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/v1/knowledge/bases/${state.current.id}/documents/`);
  xhr.setRequestHeader("X-CSRFToken", csrfToken());
  xhr.setRequestHeader("Accept", "application/json");
  xhr.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) {
      upload.progress = Math.round((event.loaded / event.total) * 100);
      renderDocuments();
    }
  });
  xhr.addEventListener("load", () => {
    if (xhr.status === 202) {
      state.uploads.delete(key);
      loadDocuments();
      return;
    }
    let message = `HTTP ${xhr.status}`;
    try {
      message = JSON.parse(xhr.responseText).error.message || message;
    } catch {
      /* not our error shape: keep the status */
    }
    upload.error = message;
    renderDocuments();
  });
  xhr.addEventListener("error", () => {
    upload.error = t("network", "Network error — check your connection.");
    renderDocuments();
  });
  xhr.send(form);
}

function bindUpload() {
  const zone = $("#dropzone");
  const input = $("#file-input");
  const take = (files) => {
    for (const file of files) uploadFile(file);
  };
  input.addEventListener("change", () => {
    take(input.files);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    take(event.dataTransfer.files);
  });
  $("#kb-delete").addEventListener("click", async () => {
    if (!window.confirm(t("confirmDeleteBase", "Delete this knowledge base and all its documents?"))) return;
    try {
      await api(`knowledge/bases/${state.current.id}/`, { method: "DELETE" });
      state.bases = state.bases.filter((b) => b.id !== state.current.id);
      state.current = null;
      history.replaceState(null, "", location.pathname);
      renderBases();
      renderBase();
    } catch (err) {
      showError(err.message);
    }
  });
}

// --- retrieval test ----------------------------------------------------------------------

function bindSearch() {
  $("#search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = event.currentTarget.elements.query.value.trim();
    const out = $("#search-results");
    if (!query || !state.current) return;
    out.replaceChildren(el("p", { class: "muted" }, t("searching", "Searching…")));
    try {
      const result = await api("knowledge/search", { method: "POST", body: { query, knowledge_base_ids: [state.current.id] } });
      if (!result.results.length) {
        out.replaceChildren(el("p", { class: "muted" }, t("noHits", "No passage matches this query.")));
        return;
      }
      out.replaceChildren(
        el("ol", { class: "hits" },
          result.results.map((hit) => el("li", { class: "hit" },
            el("div", { class: "hit-head" },
              el("strong", {}, hit.document_title),
              el("span", { class: "muted small" }, ` #${hit.ordinal} · ${t("score", "Relevance")} ${Number(hit.score).toFixed(3)}`)),
            el("p", { class: "snippet" }, hit.snippet)))),
      );
    } catch (err) {
      out.replaceChildren(el("p", { class: "form-error", role: "alert" }, err.message));
    }
  });
}

function showError(message) {
  const box = $("#kb-error");
  box.textContent = message;
  box.hidden = !message;
}

async function start() {
  bindCreate();
  bindUpload();
  bindSearch();
  await loadBases();
  const id = Number(new URLSearchParams(location.search).get("kb"));
  if (id) openBase(id);
  else renderBase();
}

start();
