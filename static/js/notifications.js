// Notifications on every page of a signed-in user: the header bell's unread count, kept live
// by the user's events on /ws/chat/ (`notification.created`, `notification.read`; docs/chat.md),
// and the list on /notifications/ (a click marks one read, then follows its link).
// This module opens its own socket: it is loaded on every page, the chat page included.
import { api, el } from "./api.js";

const bell = document.getElementById("notification-bell");
const badge = document.getElementById("notification-count");
const live = document.getElementById("notification-live");
const list = document.getElementById("notification-list");
const strings = JSON.parse(document.getElementById("notifications-i18n")?.textContent || "{}");
const tr = (key, fallback) => strings[key] || fallback;

function setUnread(count) {
  if (!bell) return;
  badge.textContent = count > 99 ? "99+" : String(count);
  badge.hidden = count <= 0;
  document.getElementById("notification-unread").hidden = count <= 0;
  bell.dataset.count = String(count);
}

// Bumped by every live event: a count read over REST before an event arrived is older than
// the event's, and must not overwrite it.
let liveVersion = 0;

// An API call whose answer carries `unread_count`; the count is applied unless a live event
// came in meanwhile (the event's is newer; a read also comes back as `notification.read`).
async function withCount(path, options) {
  const asked = liveVersion;
  const answer = await api(path, options);
  if (asked === liveVersion) setUnread(answer.unread_count);
  return answer;
}

async function refreshUnread() {
  try {
    await withCount("notifications/?unread=1&page_size=1");
  } catch {
    // The badge keeps its last value; the socket's next event corrects it.
  }
}

// --- the socket ---------------------------------------------------------------------------

let backoff = 1000;

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/chat/`);
  ws.addEventListener("open", () => {
    backoff = 1000;
    refreshUnread(); // whatever happened while the socket was down
  });
  ws.addEventListener("close", (event) => {
    if (event.code === 4401) return; // signed out: the page's next request shows the login
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 30000);
  });
  ws.addEventListener("message", (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (data.type === "notification.created") {
      liveVersion += 1;
      setUnread(data.unread_count);
      if (live) live.textContent = data.notification.title;
      if (list) prepend(data.notification);
    } else if (data.type === "notification.read") {
      liveVersion += 1;
      setUnread(data.unread_count);
    }
  });
}

// --- the notifications page ---------------------------------------------------------------

let nextPage = null;

function item(notification) {
  const when = new Date(notification.created_at).toLocaleString();
  const link = el("a", { class: "notification-item", href: notification.url || "#" },
    el("span", { class: "title" }, notification.title),
    notification.body ? el("p", { class: "body" }, notification.body) : null,
    el("time", { class: "muted small", datetime: notification.created_at }, when),
  );
  const node = el("li", {
    class: `${notification.read ? "read" : "unread"} level-${notification.level}`,
    "data-notification-id": notification.id,
  }, link);
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    if (node.classList.contains("unread")) {
      try {
        await withCount(`notifications/${notification.id}/read`, { method: "POST" });
        node.classList.replace("unread", "read");
      } catch {
        return;
      }
    }
    if (notification.url) location.href = notification.url;
  });
  return node;
}

function prepend(notification) {
  if (list.querySelector(`[data-notification-id="${notification.id}"]`)) return;
  list.querySelector("li.empty")?.remove();
  list.prepend(item(notification));
}

async function loadPage(path, { append = false } = {}) {
  const page = await withCount(path);
  const items = page.results.map(item);
  if (append) list.append(...items);
  else list.replaceChildren(...items);
  if (!list.children.length) list.replaceChildren(el("li", { class: "muted empty" }, tr("empty", "No notifications yet.")));
  nextPage = page.next ? new URL(page.next).search : null;
  document.getElementById("notifications-more").hidden = !nextPage;
}

function bindPage() {
  document.getElementById("notifications-more").addEventListener("click", () => {
    if (nextPage) loadPage(`notifications/${nextPage}`, { append: true });
  });
  document.getElementById("notifications-read-all").addEventListener("click", async () => {
    await withCount("notifications/read-all", { method: "POST" });
    for (const node of list.querySelectorAll("li.unread")) node.classList.replace("unread", "read");
  });
  loadPage("notifications/?page_size=20");
}

if (bell) {
  refreshUnread();
  connect();
  if (list) bindPage();
}
