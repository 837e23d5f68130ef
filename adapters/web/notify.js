// Telling the visitor of a task's events: the seed's five notifications, read out to
// screen readers and, when switched on in the header, shown as desktop notifications.

import { at, fromRoot } from "./api.js";
import { debug } from "./debug.js";
import { stepLine } from "./words.js";

const NOTIFY_KEY = "stepwise.notifications";

/// The seed's five notifications, for a logged event of the task `doc` (a document that
/// includes it), or null.
function notificationFor(doc, m) {
  const step = m.step != null ? doc.steps.find((s) => s.order === m.step) : null;
  const name = (step && step.name) || m.name || "";
  switch (m.type) {
    case "task_started":
      return { title: `Your ${doc.title} task has started`, body: stepLine(doc) };
    case "step_complete":
      return { title: `Step ${m.step} complete: ${name}`, body: doc.title };
    case "approval_needed":
      return { title: `⚠️ Approval required for Step ${m.step}`, body: `${doc.title}: ${name}` };
    case "task_complete":
      return { title: `✓ ${doc.title} is complete`, body: "All steps are done." };
    case "task_failed":
      return { title: `✗ Task failed at Step ${m.step}`, body: `${doc.title}: ${m.error || ""}` };
    default:
      return null;
  }
}

export function notificationsSupported() {
  return "Notification" in window;
}

function notificationsOn() {
  return notificationsSupported() && Notification.permission === "granted" && localStorage.getItem(NOTIFY_KEY) === "on";
}

/// The header's notification switch. Permission is asked only when the visitor presses it.
export function wireNotifications() {
  const button = document.getElementById("notify");
  if (!button) return;
  const show = () => {
    button.hidden = false;
    if (!notificationsSupported()) {
      button.disabled = true;
      button.textContent = "Notifications not supported here";
      return;
    }
    if (Notification.permission === "denied") {
      button.disabled = true;
      button.setAttribute("aria-pressed", "false");
      button.textContent = "Notifications blocked by the browser";
      return;
    }
    const on = notificationsOn();
    button.setAttribute("aria-pressed", String(on));
    button.textContent = on ? "Notifications on" : "Turn on notifications";
  };
  button.addEventListener("click", async () => {
    if (notificationsOn()) {
      localStorage.setItem(NOTIFY_KEY, "off");
      return show();
    }
    const permission = await Notification.requestPermission();
    localStorage.setItem(NOTIFY_KEY, permission === "granted" ? "on" : "off");
    show();
  });
  show();
}

/// Announces an event to screen readers and, when they are on, as a desktop notification.
export function notify(doc, m) {
  const note = notificationFor(doc, m);
  if (!note) return;
  // The chat box shows the same events as notices in the transcript.
  window.dispatchEvent(new CustomEvent("stepwise:notice", { detail: { task_id: doc.task_id } }));
  announce(note.title);
  if (!notificationsOn()) return;
  debug.notifications.push(note.title);
  try {
    const shown = new Notification(note.title, { body: note.body, tag: `${doc.task_id}:${m.seq}`, icon: at("/assets/icon.svg") });
    shown.addEventListener("click", () => {
      window.focus();
      if (fromRoot(location.pathname) !== `/tasks/${doc.task_id}`) location.assign(at(`/tasks/${encodeURIComponent(doc.task_id)}`));
    });
  } catch (error) {
    debug.errors.push("notification: " + error);
  }
}

function announce(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A fresh node, so the same words twice are read twice.
  setTimeout(() => (region.textContent = text), 50);
}
