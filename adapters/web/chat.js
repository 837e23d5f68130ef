// The bot's chat box, on every page that has one. It shows the user's transcript
// (`GET /api/chat`): their messages, the bot's replies and the notifications their chat
// preferences send there. A message goes out with `POST /api/chat`; then the box reads what
// the transcript gained since the last line it shows, so a notice that arrived meanwhile
// lands in its place. Text is always shown as text (its line breaks kept by the style sheet),
// never read as HTML. What the bot does shows up on the page by itself, over the page's live
// WebSocket; the events that make notices also make the box look for them.

import { api } from "./api.js";
import { debug } from "./debug.js";
import { h } from "./dom.js";

/// How the transcript names each sender, and what the box shows.
const WHO = { you: "You", bot: "Stepwise", notice: "Update", error: "Error" };
const FROM = { user: "you", bot: "bot", notice: "notice" };

/// Lines read when the page opens.
const FIRST_PAGE = 50;

/// A notice is written by the server just after the event the page hears, so the box looks
/// a moment later; and every so often anyway, for notices about tasks this page does not
/// watch.
const AFTER_EVENT_MS = 1500;
const POLL_MS = 30000;

function wireChat() {
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const log = document.getElementById("chat-log");
  if (!form || !input || !log) return;
  const send = form.querySelector("button[type=submit]");
  let lastId = null;
  let syncing = null;

  const add = (from, text) => {
    const item = h(
      "div",
      { class: "chat-message", "data-from": from },
      h("span", { class: "chat-who" }, WHO[from] + ": "),
      h("p", { class: "chat-text" }, text),
    );
    // Scrollable once it has something, so reachable by keyboard.
    log.tabIndex = 0;
    log.append(item);
    log.scrollTop = log.scrollHeight;
    return item;
  };

  // Reads the lines written after the last one shown; one read at a time, so none shows twice.
  const sync = () => {
    syncing = (syncing || Promise.resolve()).then(async () => {
      const query = lastId ? `after=${encodeURIComponent(lastId)}&limit=200` : `limit=${FIRST_PAGE}`;
      const { messages } = await api("GET", `/api/chat?${query}`);
      for (const line of messages) {
        add(FROM[line.from] || "bot", line.text);
        lastId = line.id;
      }
      return messages.length;
    });
    const done = syncing;
    syncing = done.catch(() => 0);
    return done;
  };

  // The newest message stays in view when the page changes size (a phone turned round).
  window.addEventListener("resize", () => (log.scrollTop = log.scrollHeight));

  let pending = null;
  window.addEventListener("stepwise:notice", () => {
    clearTimeout(pending);
    pending = setTimeout(() => sync().catch(() => {}), AFTER_EVENT_MS);
  });
  setInterval(() => {
    if (document.visibilityState === "visible") sync().catch(() => {});
  }, POLL_MS);
  sync().catch((error) => debug.errors.push("chat transcript: " + error.message));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = input.value.trim();
    if (!message || send.disabled) return;
    // Shown at once; replaced by the transcript's own line when the reply is in.
    const shown = add("you", message);
    input.value = "";
    send.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const answer = await api("POST", "/api/chat", { message });
      shown.remove();
      try {
        await sync();
      } catch {
        // The reply is in hand even when the transcript cannot be read.
        add("you", message);
        add("bot", (answer && answer.reply) || "");
      }
    } catch (error) {
      add("error", error.message || String(error));
    } finally {
      send.disabled = false;
      form.removeAttribute("aria-busy");
      input.focus();
    }
  });
}

wireChat();
