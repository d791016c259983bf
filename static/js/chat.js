// The chat page: conversation list, message pane, streaming over /ws/chat/ (protocol in
// docs/chat.md), REST for history and actions. State lives on the server: a reload or a lost
// network joins the conversation again and resumes every running reply from its last seq.
import { api, ApiError, el, icon, t } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { pageData } from "./page-data.js";

const $ = (selector) => document.querySelector(selector);
const FINISHED = new Set(["completed", "failed", "stopped"]);

const state = {
  conversations: [],
  renamingId: null, // a title being edited: the list is not redrawn under it
  currentId: null,
  messages: new Map(), // id -> message (REST shape)
  order: [], // message ids in display order
  pendingSends: new Map(), // client_id -> {content, node}
  knowledgeBases: [],
  selectedKbs: new Set(),
  assistants: [], // the assistants the user may chat with
  pickedAssistant: null, // the assistant id a new conversation starts with (null: default)
  // `/?assistant=<id>` (the assistants page's "Start chat"), read before the URL is rewritten.
  assistantFromUrl: Number(new URLSearchParams(location.search).get("assistant")) || null,
  ws: null,
  wsOpen: false,
  backoff: 500,
  reconnectTimer: null,
  llm: pageData("os-llm", { offline: false }),
};

// ---------------------------------------------------------------------------------------
// Conversation list

async function loadConversations() {
  try {
    const page = await api("conversations/?page_size=200");
    state.conversations = page.results;
  } catch (err) {
    showBanner("error", err.message);
  }
  renderConversationList();
}

function renderConversationList() {
  // Redrawing would drop the input and the edit (a title or reply event can arrive at any
  // moment); the list is redrawn when the edit ends.
  if (state.renamingId !== null) return;
  const list = $("#conv-list");
  const query = $("#conv-search").value.trim().toLowerCase();
  const items = state.conversations.filter((c) => !query || (c.title || "").toLowerCase().includes(query));
  if (!items.length) {
    list.replaceChildren(el("li", { class: "muted empty" }, query ? t("noMatches", "No matching conversations.") : t("noConversations", "No conversations yet.")));
    return;
  }
  list.replaceChildren(
    ...items.map((c) =>
      el("li", { class: "conv-item", "data-conversation-id": c.id },
        el("a", {
          href: `?c=${c.id}`,
          class: "conv-link",
          "aria-current": c.id === state.currentId ? "page" : undefined,
          onclick: (event) => {
            event.preventDefault();
            openConversation(c.id);
          },
        }, c.title || t("untitled", "New conversation")),
        el("button", { type: "button", class: "icon rename", title: t("rename", "Rename"), "aria-label": `${t("rename", "Rename")}: ${c.title || ""}`, onclick: () => startRename(c) }, icon("edit")),
        el("button", { type: "button", class: "icon delete", title: t("delete", "Delete"), "aria-label": `${t("delete", "Delete")}: ${c.title || ""}`, onclick: () => deleteConversation(c) }, icon("trash")),
      ),
    ),
  );
}

function startRename(conversation) {
  const item = document.querySelector(`li[data-conversation-id="${conversation.id}"]`);
  const input = el("input", { class: "rename-input", value: conversation.title || "", maxlength: "200", "aria-label": t("newTitle", "New title") });
  let finished = false;
  const finish = async (save) => {
    if (finished) return; // Enter, then the blur of the removed input
    finished = true;
    const current = state.conversations.find((c) => c.id === conversation.id) || conversation;
    if (save && input.value.trim() && input.value.trim() !== current.title) {
      try {
        const updated = await api(`conversations/${conversation.id}/`, { method: "PATCH", body: { title: input.value.trim() } });
        upsertConversation(updated);
      } catch (err) {
        showBanner("error", err.message);
      }
    }
    state.renamingId = null;
    renderConversationList();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true), { once: true });
  item.replaceChildren(input);
  state.renamingId = conversation.id;
  input.focus();
  input.select();
}

async function deleteConversation(conversation) {
  if (!window.confirm(t("confirmDelete", "Delete this conversation and its messages?"))) return;
  try {
    await api(`conversations/${conversation.id}/`, { method: "DELETE" });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) {
      showBanner("error", err.message);
      return;
    }
  }
  state.conversations = state.conversations.filter((c) => c.id !== conversation.id);
  if (state.currentId === conversation.id) newConversation();
  renderConversationList();
}

function upsertConversation(conversation) {
  const index = state.conversations.findIndex((c) => c.id === conversation.id);
  if (index >= 0) state.conversations[index] = conversation;
  else state.conversations.unshift(conversation);
  if (conversation.id === state.currentId) {
    $("#conv-title").textContent = conversation.title || t("untitled", "New conversation");
    document.title = `${conversation.title || "OpenSpark"} · OpenSpark`;
    renderAssistantChrome();
  }
  renderConversationList();
}

// ---------------------------------------------------------------------------------------
// Messages

function newConversation() {
  state.currentId = null;
  closeExportMenu();
  state.messages.clear();
  state.order = [];
  history.replaceState(null, "", location.pathname);
  $("#conv-title").textContent = t("untitled", "New conversation");
  renderMessages();
  renderConversationList();
  renderKbPicker();
  renderAssistantChrome();
  $("#prompt").focus();
}

async function openConversation(id) {
  if (state.currentId && state.currentId !== id) send({ type: "conversation.leave", conversation_id: state.currentId });
  state.currentId = id;
  closeExportMenu();
  state.messages.clear();
  state.order = [];
  history.replaceState(null, "", `?c=${id}`);
  closeSidebar();
  try {
    const conversation = await api(`conversations/${id}/`);
    upsertConversation(conversation);
    state.selectedKbs = new Set(conversation.knowledge_base_ids || []);
    renderKbPicker();
    let page = await api(`conversations/${id}/messages/?page_size=200`);
    const all = [...page.results];
    while (page.next) {
      page = await api(page.next.replace(/^.*\/api\/v1\//, ""));
      all.push(...page.results);
    }
    for (const message of all) addMessage(message);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      showBanner("error", t("notFound", "This conversation does not exist or is not yours."));
      newConversation();
      return;
    }
    showBanner("error", err.message);
  }
  renderMessages();
  joinCurrent();
}

function addMessage(message) {
  const known = state.messages.get(message.id);
  if (known && known._text !== undefined && !FINISHED.has(message.status)) {
    // A running reply we are already streaming: keep the streamed text, refresh the rest.
    Object.assign(known, { ...message, content: known.content, last_seq: known.last_seq });
  } else {
    state.messages.set(message.id, { ...message });
  }
  if (!state.order.includes(message.id)) state.order.push(message.id);
}

function runningReplies() {
  return state.order.map((id) => state.messages.get(id)).filter((m) => m && m.role === "assistant" && !FINISHED.has(m.status));
}

function renderMessages() {
  const pane = $("#messages");
  const nodes = state.order.map((id) => messageNode(state.messages.get(id)));
  pane.replaceChildren(...nodes, ...[...state.pendingSends.values()].map((p) => p.node));
  if (!nodes.length && !state.pendingSends.size) pane.append(welcomeNode());
  updateComposer();
  scrollToBottom();
}

function messageNode(message) {
  const node = el("article", {
    class: `msg msg-${message.role}`,
    id: `m-${message.id}`,
    "data-message-id": message.id,
    "data-status": message.status,
    "aria-label": message.role === "user" ? t("you", "You") : t("assistant", "Assistant"),
  });
  fillMessage(node, message);
  return node;
}

function fillMessage(node, message) {
  node.dataset.status = message.status;
  const body = el("div", { class: message.role === "assistant" ? "msg-body markdown" : "msg-body plain" });
  if (message.role === "assistant") {
    renderMarkdown(body, message.content, { citations: message.citations || [], onCite: openCitation });
    if (!FINISHED.has(message.status)) {
      if (!message.content) body.append(el("span", { class: "muted thinking" }, t("thinking", "Thinking…")));
      // The cursor sits at the end of the text, inside the last paragraph or list item.
      let tail = body;
      while (tail.lastElementChild && /^(P|UL|OL|LI|BLOCKQUOTE)$/.test(tail.lastElementChild.tagName)) tail = tail.lastElementChild;
      tail.append(el("span", { class: "cursor", "aria-hidden": "true" }));
    }
  } else {
    body.textContent = message.content;
  }
  const children = [body];
  if (message.role === "assistant" && message.citations && message.citations.length && FINISHED.has(message.status)) {
    children.push(
      el("ol", { class: "citations", "aria-label": t("sources", "Sources") },
        message.citations.map((c) => el("li", {},
          el("button", { type: "button", class: "cite-source", onclick: () => openCitation(c) }, `[${c.index}] ${c.document_title}`)))),
    );
  }
  if (message.status === "failed") {
    children.push(el("div", { class: "msg-error", role: "alert" },
      el("span", {}, message.error || t("failed", "The reply failed.")),
      el("button", { type: "button", class: "retry", onclick: () => regenerate(message) }, t("retry", "Retry"))));
  }
  if (message.status === "stopped") children.push(el("div", { class: "muted small" }, t("stopped", "Stopped.")));
  if (message.role === "assistant" && FINISHED.has(message.status)) children.push(actionsNode(message));
  node.replaceChildren(...children);
}

function actionsNode(message) {
  const rating = message.feedback ? message.feedback.rating : 0;
  const actions = el("div", { class: "msg-actions" },
    el("button", { type: "button", class: "icon copy", title: t("copy", "Copy"), "aria-label": t("copy", "Copy"), onclick: (event) => copyText(message.content, event.currentTarget) }, icon("copy")),
    el("button", { type: "button", class: "icon regenerate", title: t("regenerate", "Regenerate"), "aria-label": t("regenerate", "Regenerate"), onclick: () => regenerate(message) }, icon("regenerate")),
    el("button", { type: "button", class: "icon thumb-up", title: t("good", "Good answer"), "aria-label": t("good", "Good answer"), "aria-pressed": rating === 1 ? "true" : "false", onclick: () => feedback(message, 1) }, icon("up")),
    el("button", { type: "button", class: "icon thumb-down", title: t("bad", "Bad answer"), "aria-label": t("bad", "Bad answer"), "aria-pressed": rating === -1 ? "true" : "false", onclick: () => feedback(message, -1) }, icon("down")),
  );
  if (message.provider === "offline") {
    actions.append(el("span", { class: "muted small badge" }, t("offlineBadge", "offline")));
  }
  return actions;
}

function refreshMessage(id) {
  const message = state.messages.get(id);
  const node = document.getElementById(`m-${id}`);
  if (!message) return;
  if (node) fillMessage(node, message);
  else renderMessages();
  updateComposer();
}

let renderQueued = new Set();
function scheduleRefresh(id) {
  if (renderQueued.has(id)) return;
  renderQueued.add(id);
  requestAnimationFrame(() => {
    renderQueued.delete(id);
    refreshMessage(id);
    scrollToBottom();
  });
}

function scrollToBottom() {
  const pane = $("#messages");
  if (pane.scrollHeight - pane.scrollTop - pane.clientHeight < 200) pane.scrollTop = pane.scrollHeight;
}

function openCitation(citation) {
  const dialog = $("#citation-dialog");
  $("#citation-title").textContent = `[${citation.index}] ${citation.document_title}`;
  $("#citation-snippet").textContent = citation.snippet;
  $("#citation-context").replaceChildren();
  $("#citation-score").textContent = `${t("score", "Relevance")}: ${Number(citation.score).toFixed(3)}`;
  dialog.showModal();
  if (citation.chunk_id) showPassage(citation.chunk_id);
}

// The whole passage with its neighbours; the snippet stays when it cannot be read (a base
// lent by an assistant, a document deleted since).
async function showPassage(chunkId) {
  let passage;
  try {
    passage = await api(`knowledge/chunks/${chunkId}/`);
  } catch {
    return;
  }
  const part = (p, cited) => el("p", { class: cited ? "passage cited" : "passage" }, p.text);
  $("#citation-snippet").textContent = "";
  $("#citation-context").replaceChildren(
    ...passage.before.map((p) => part(p, false)),
    part(passage, true),
    ...passage.after.map((p) => part(p, false)),
  );
  const where = [passage.page ? `${t("page", "Page")} ${passage.page}` : "", passage.section]
    .filter(Boolean).join(" · ");
  if (where) $("#citation-score").textContent += ` · ${where}`;
  $("#citation-context .cited").scrollIntoView({ block: "center" });
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = el("textarea", { "aria-hidden": "true", class: "visually-hidden" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.replaceChildren(icon("check"));
  button.dataset.copied = "true";
  setTimeout(() => {
    button.replaceChildren(icon("copy"));
    delete button.dataset.copied;
  }, 1500);
}

async function regenerate(message) {
  try {
    const sent = await api(`messages/${message.id}/regenerate`, { method: "POST" });
    addMessage(sent.reply);
    renderMessages();
    joinCurrent();
  } catch (err) {
    showBanner("error", err.message);
  }
}

async function feedback(message, rating) {
  let comment = "";
  if (rating === -1) {
    comment = (await askComment()) ?? "";
  }
  try {
    const updated = await api(`messages/${message.id}/feedback`, { method: "POST", body: { rating, comment } });
    state.messages.set(updated.id, { ...state.messages.get(updated.id), ...updated });
    refreshMessage(updated.id);
  } catch (err) {
    showBanner("error", err.message);
  }
}

function askComment() {
  const dialog = $("#feedback-dialog");
  const form = dialog.querySelector("form");
  form.reset();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "send" ? form.elements.comment.value.trim() : ""), { once: true });
    dialog.showModal();
  });
}

// ---------------------------------------------------------------------------------------
// Sending, stopping

function newClientId() {
  return `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

async function sendMessage() {
  const input = $("#prompt");
  const content = input.value.trim();
  if (!content) return;
  if (runningReplies().length) {
    // One reply at a time per conversation (the server answers 409 otherwise).
    showBanner("warning", t("busy", "A reply is still being written — wait for it or stop it (Esc)."));
    return;
  }
  const clientId = newClientId();
  const frame = { type: "message.send", content, client_id: clientId };
  if (state.currentId) frame.conversation_id = state.currentId;
  else {
    if (state.selectedKbs.size) frame.knowledge_base_ids = [...state.selectedKbs];
    if (state.pickedAssistant) frame.assistant_id = state.pickedAssistant;
  }
  const node = el("article", { class: "msg msg-user sending", "data-client-id": clientId, "aria-label": t("you", "You") },
    el("div", { class: "msg-body plain" }, content));
  state.pendingSends.set(clientId, { content, node });
  input.value = "";
  autoGrow();
  renderMessages();
  if (state.wsOpen) {
    send(frame);
    return;
  }
  // The socket is down: the REST endpoint does the same, and the socket resumes the reply.
  try {
    const body = { content, client_id: clientId };
    if (frame.conversation_id) body.conversation_id = frame.conversation_id;
    if (frame.knowledge_base_ids) body.knowledge_base_ids = frame.knowledge_base_ids;
    if (frame.assistant_id) body.assistant_id = frame.assistant_id;
    const sent = await api("messages/", { method: "POST", body });
    onMessageCreated({ conversation_id: sent.message.conversation_id, message: sent.message, reply: sent.reply, client_id: clientId });
  } catch (err) {
    failPendingSend(clientId, err.message, err.details && err.details.retry_after);
  }
}

function failPendingSend(clientId, message) {
  const pending = state.pendingSends.get(clientId);
  if (!pending) {
    showBanner("error", message);
    return;
  }
  state.pendingSends.delete(clientId);
  const input = $("#prompt");
  if (!input.value) input.value = pending.content; // nothing typed is lost
  renderMessages();
  showBanner("error", message);
}

async function stopReplies() {
  const running = runningReplies();
  for (const reply of running) {
    if (state.wsOpen) send({ type: "message.stop", message_id: reply.id });
    else {
      try {
        const stopped = await api(`messages/${reply.id}/stop`, { method: "POST" });
        addMessage(stopped);
        refreshMessage(stopped.id);
      } catch (err) {
        showBanner("error", err.message);
      }
    }
  }
}

function updateComposer() {
  const running = runningReplies().length > 0;
  $("#stop").hidden = !running;
  $("#send").hidden = running;
}

// ---------------------------------------------------------------------------------------
// Websocket

function connect() {
  clearTimeout(state.reconnectTimer);
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/chat/`);
  state.ws = ws;
  ws.addEventListener("open", () => {
    state.wsOpen = true;
    state.backoff = 500;
    setConnection("online");
    joinCurrent();
  });
  ws.addEventListener("close", (event) => {
    state.wsOpen = false;
    if (event.code === 4401) {
      location.href = `/accounts/login/?next=${encodeURIComponent(location.pathname + location.search)}`;
      return;
    }
    setConnection("reconnecting");
    state.reconnectTimer = setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 8000);
  });
  ws.addEventListener("message", (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    const handler = handlers[data.type];
    if (handler) handler(data);
  });
}

function send(frame) {
  if (state.ws && state.wsOpen) state.ws.send(JSON.stringify(frame));
}

function joinCurrent() {
  if (!state.currentId || !state.wsOpen) return;
  const lastSeq = {};
  for (const reply of runningReplies()) lastSeq[reply.id] = reply.last_seq || 0;
  send({ type: "conversation.join", conversation_id: state.currentId, last_seq: lastSeq });
}

function setConnection(status) {
  const box = $("#connection");
  box.dataset.state = status;
  box.hidden = status === "online";
  box.textContent = status === "online" ? "" : t("reconnecting", "Connection lost — reconnecting…");
}

function onMessageCreated(event) {
  const pending = state.pendingSends.get(event.client_id);
  if (pending) state.pendingSends.delete(event.client_id);
  if (state.currentId === null && pending) {
    state.currentId = event.conversation_id;
    history.replaceState(null, "", `?c=${event.conversation_id}`);
    loadConversations();
    api(`conversations/${event.conversation_id}/`).then(upsertConversation).catch(() => {});
  }
  if (event.conversation_id !== state.currentId) return;
  addMessage(event.message);
  addMessage(event.reply);
  renderMessages();
  if (!pending) return;
  if (!state.wsOpen) return;
  // A REST-sent message: make sure this socket follows the conversation.
  joinCurrent();
}

const handlers = {
  ready(event) {
    state.llm = event.llm || state.llm;
    $("#offline-notice").hidden = !state.llm.offline;
  },
  "conversation.joined"(event) {
    if (event.conversation) upsertConversation(event.conversation);
  },
  "message.created": onMessageCreated,
  "reply.delta"(event) {
    const reply = state.messages.get(event.message_id);
    if (!reply) return;
    const seq = reply.last_seq || 0;
    if (event.seq <= seq) return; // already have it (checkpoint or another path)
    reply.content = (reply.content || "") + event.delta;
    reply.last_seq = event.seq;
    reply.status = "streaming";
    reply._text = reply.content;
    scheduleRefresh(reply.id);
  },
  "reply.done"(event) {
    const message = event.message;
    if (!state.messages.has(message.id)) {
      if (message.conversation_id !== state.currentId) return;
    }
    state.messages.set(message.id, { ...message });
    if (!state.order.includes(message.id)) state.order.push(message.id);
    refreshMessage(message.id);
    if (message.conversation_id === state.currentId) {
      api(`conversations/${message.conversation_id}/`).then(upsertConversation).catch(() => {});
    }
  },
  "reply.error"(event) {
    const reply = event.reply || { ...state.messages.get(event.message_id), status: "failed", error: event.message };
    if (!reply || !reply.id) return;
    state.messages.set(reply.id, { ...reply });
    if (!state.order.includes(reply.id) && reply.conversation_id === state.currentId) state.order.push(reply.id);
    refreshMessage(reply.id);
  },
  "conversation.updated"(event) {
    upsertConversation(event.conversation);
  },
  rate_limited(event) {
    const seconds = Math.max(1, Math.ceil(event.retry_after || 1));
    if (event.frame_type === "conversation.join") {
      setTimeout(joinCurrent, seconds * 1000); // the live view needs the join: ask again
      return;
    }
    if (event.frame_type === "conversation.leave") return;
    const clientIds = [...state.pendingSends.keys()];
    const message = t("rateLimited", "You are sending messages too fast. Try again in %s s.").replace("%s", seconds);
    if (clientIds.length) failPendingSend(clientIds[clientIds.length - 1], message);
    else showBanner("warning", message);
  },
  error(event) {
    if (event.client_id && state.pendingSends.has(event.client_id)) failPendingSend(event.client_id, event.message);
    else if (event.frame_type === "message.send" && state.pendingSends.size) failPendingSend([...state.pendingSends.keys()].pop(), event.message);
    else showBanner("error", event.message);
  },
};

// ---------------------------------------------------------------------------------------
// Knowledge-base picker

async function loadKnowledgeBases() {
  try {
    const page = await api("knowledge/bases/?page_size=200");
    state.knowledgeBases = page.results || [];
  } catch {
    state.knowledgeBases = [];
  }
  renderKbPicker();
}

function renderKbPicker() {
  const box = $("#kb-options");
  const count = $("#kb-count");
  count.textContent = state.selectedKbs.size ? `(${state.selectedKbs.size})` : "";
  if (!state.knowledgeBases.length) {
    box.replaceChildren(el("p", { class: "muted small" }, t("noKbs", "No knowledge bases you can read yet.")));
    return;
  }
  box.replaceChildren(
    ...state.knowledgeBases.map((kb) => {
      const id = `kb-${kb.id}`;
      return el("div", { class: "kb-option" },
        el("input", { type: "checkbox", id, value: kb.id, checked: state.selectedKbs.has(kb.id), onchange: (event) => toggleKb(kb.id, event.target.checked) }),
        el("label", { for: id }, kb.name, kb.document_count !== undefined ? el("span", { class: "muted small" }, ` · ${kb.document_count}`) : ""));
    }),
  );
}

async function toggleKb(id, on) {
  if (on) state.selectedKbs.add(id);
  else state.selectedKbs.delete(id);
  $("#kb-count").textContent = state.selectedKbs.size ? `(${state.selectedKbs.size})` : "";
  if (!state.currentId) return;
  try {
    const updated = await api(`conversations/${state.currentId}/`, { method: "PATCH", body: { knowledge_base_ids: [...state.selectedKbs] } });
    upsertConversation(updated);
  } catch (err) {
    showBanner("error", err.message);
  }
}

// ---------------------------------------------------------------------------------------
// Assistants: the picker for a new conversation, the current one's badge, its opening
// message and suggested questions on an empty conversation; exporting a conversation.

async function loadAssistants() {
  try {
    const page = await api("assistants/?page_size=200");
    state.assistants = page.results || [];
  } catch {
    state.assistants = [];
  }
  const wanted = state.assistantFromUrl;
  if (wanted && state.assistants.some((a) => a.id === wanted)) state.pickedAssistant = wanted;
  renderAssistantChrome();
  if (!state.order.length) renderMessages();
}

function currentAssistant() {
  const conversation = state.conversations.find((c) => c.id === state.currentId);
  const id = state.currentId ? conversation && conversation.assistant_id : state.pickedAssistant;
  return state.assistants.find((a) => a.id === id) || null;
}

function renderAssistantChrome() {
  const picker = $("#assistant-picker");
  const isNew = state.currentId === null;
  $("#assistant-picker-wrap").hidden = !isNew || !state.assistants.length;
  picker.replaceChildren(
    el("option", { value: "" }, t("defaultAssistant", "Default assistant")),
    ...state.assistants.map((a) => el("option", { value: a.id, selected: a.id === state.pickedAssistant }, a.name)),
  );
  const assistant = currentAssistant();
  const badge = $("#assistant-badge");
  badge.hidden = isNew || !assistant;
  badge.replaceChildren(...(assistant ? [icon(assistant.icon), assistant.name] : []));
  $("#export-menu").hidden = isNew;
  if (!isNew) {
    const base = `/api/v1/conversations/${state.currentId}/export?format=`;
    $("#export-md").href = `${base}md`;
    $("#export-json").href = `${base}json`;
  }
}

function welcomeNode() {
  const assistant = currentAssistant();
  const hint = el("p", { class: "empty-chat muted" }, t("emptyChat", "Ask anything. Attach knowledge bases to get answers with cited sources."));
  if (!assistant) return hint;
  const questions = assistant.suggested_questions || [];
  return el("div", { class: "assistant-welcome", "data-assistant-id": assistant.id },
    el("span", { class: "assistant-icon", "data-icon": assistant.icon }, icon(assistant.icon)),
    el("h2", {}, assistant.name),
    assistant.opening_message ? el("div", { class: "opening" }, assistant.opening_message) : (assistant.description ? el("p", { class: "muted" }, assistant.description) : null),
    questions.length
      ? el("ul", { class: "suggestions", "aria-label": t("suggestions", "Suggested questions") },
          questions.map((q) => el("li", {}, el("button", { type: "button", class: "suggestion", onclick: () => ask(q) }, q))))
      : null);
}

function ask(question) {
  $("#prompt").value = question;
  sendMessage();
}

function closeExportMenu() {
  $("#export-menu").open = false;
}

// ---------------------------------------------------------------------------------------
// Page chrome

function showBanner(kind, message) {
  const box = $("#banner");
  box.dataset.kind = kind;
  box.replaceChildren(el("span", {}, message), el("button", { type: "button", class: "icon", "aria-label": t("dismiss", "Dismiss"), onclick: () => (box.hidden = true) }, icon("close")));
  box.hidden = false;
}

function autoGrow() {
  const input = $("#prompt");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("#sidebar-toggle").setAttribute("aria-expanded", "false");
}

function bind() {
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  $("#prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  $("#prompt").addEventListener("input", autoGrow);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && runningReplies().length && !document.querySelector("dialog[open]")) {
      event.preventDefault();
      stopReplies();
    }
  });
  $("#stop").addEventListener("click", stopReplies);
  $("#new-chat").addEventListener("click", newConversation);
  $("#assistant-picker").addEventListener("change", (event) => {
    state.pickedAssistant = Number(event.target.value) || null;
    if (state.currentId === null) renderMessages();
  });
  for (const link of document.querySelectorAll("#export-menu a")) link.addEventListener("click", closeExportMenu);
  $("#conv-search").addEventListener("input", renderConversationList);
  $("#sidebar-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("sidebar-open");
    $("#sidebar-toggle").setAttribute("aria-expanded", String(open));
  });
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
  }
  window.addEventListener("online", () => {
    if (!state.wsOpen) connect();
  });
}

async function start() {
  bind();
  $("#offline-notice").hidden = !state.llm.offline;
  await loadConversations();
  loadKnowledgeBases();
  loadAssistants();
  const id = Number(new URLSearchParams(location.search).get("c"));
  if (id) await openConversation(id);
  else newConversation();
  connect();
}

start();
