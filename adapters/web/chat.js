// The bot's chat box (`POST /api/chat`), on every page that has one: a message goes out,
// the reply comes back into the transcript as text (its line breaks kept by the style
// sheet, never read as HTML). What the bot does shows up on the page by itself, over the
// page's live WebSocket.

import { api, debug, h } from "/assets/app.js";

function wireChat() {
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const log = document.getElementById("chat-log");
  if (!form || !input || !log) return;
  const send = form.querySelector("button[type=submit]");
  debug.chat = [];

  const add = (from, text) => {
    const who = { you: "You", bot: "Stepwise", error: "Error" }[from];
    const item = h(
      "div",
      { class: "chat-message", "data-from": from },
      h("span", { class: "chat-who" }, who + ": "),
      h("p", { class: "chat-text" }, text),
    );
    // Scrollable once it has something, so reachable by keyboard.
    log.tabIndex = 0;
    log.append(item);
    log.scrollTop = log.scrollHeight;
    debug.chat.push({ from, text });
  };

  // The newest message stays in view when the page changes size (a phone turned round).
  window.addEventListener("resize", () => (log.scrollTop = log.scrollHeight));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = input.value.trim();
    if (!message || send.disabled) return;
    add("you", message);
    input.value = "";
    send.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const answer = await api("POST", "/api/chat", { message });
      add("bot", (answer && answer.reply) || "");
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
