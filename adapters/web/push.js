// The header's web push switch: messages reach this browser even with no page open. It
// registers the service worker (sw.js at Stepwise's root), subscribes through PushManager with the server's
// VAPID key and registers the subscription with the server, which keeps it.

import { api, at } from "./api.js";
import { setText } from "./dom.js";
import { notificationsSupported } from "./notify.js";

/// The id the server gave this browser's push subscription, while push is on.
const PUSH_KEY = "stepwise.push";

function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && notificationsSupported();
}

/// A base64url text (the server's VAPID key) as the bytes `applicationServerKey` takes.
function base64urlBytes(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/// Subscribes this browser and registers the subscription with the server.
async function pushOn() {
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    throw new Error(
      permission === "denied"
        ? "Push is blocked: this site may not show notifications (change it in the browser's site settings)."
        : "Push needs permission to show notifications; it was not given.",
    );
  }
  await navigator.serviceWorker.register(at("/sw.js"), { scope: at("/") });
  const registration = await navigator.serviceWorker.ready;
  const { public_key } = await api("GET", "/api/push/vapid-public-key");
  let subscription;
  try {
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: base64urlBytes(public_key),
    });
  } catch (error) {
    throw new Error(`Push could not be turned on: the browser's push service failed (${error.message || error.name}).`);
  }
  try {
    const saved = await api("POST", "/api/push/subscriptions", subscription.toJSON());
    localStorage.setItem(PUSH_KEY, saved.id);
  } catch (error) {
    // The server did not keep it: leave the browser unsubscribed too, as before.
    await subscription.unsubscribe().catch(() => false);
    throw new Error(`Push could not be turned on: ${error.message}`);
  }
}

/// Unsubscribes this browser and removes the subscription from the server.
async function pushOff() {
  const id = localStorage.getItem(PUSH_KEY);
  const registration = await navigator.serviceWorker.getRegistration(at("/"));
  const subscription = registration ? await registration.pushManager.getSubscription() : null;
  // Gone from the browser already is as good as unsubscribed.
  if (subscription) await subscription.unsubscribe().catch(() => false);
  try {
    await api("DELETE", `/api/push/subscriptions/${encodeURIComponent(id)}`);
  } catch (error) {
    // A 404: the server already dropped it (its push service said it was gone).
    if (error.status !== 404) throw new Error(`Push could not be turned off: ${error.message}`);
  }
  localStorage.removeItem(PUSH_KEY);
}

/// The header's push switch (an approval's message can be answered from the notification).
/// Permission is asked only when the visitor presses it; what came of it is said beside it.
export function wirePush() {
  const button = document.getElementById("push");
  const message = document.getElementById("push-message");
  if (!button) return;
  let busy = false;
  const say = (text) => message && setText(message, text);
  const show = () => {
    button.hidden = false;
    const on = pushSupported() && Boolean(localStorage.getItem(PUSH_KEY));
    button.setAttribute("aria-pressed", String(on));
    if (!pushSupported()) {
      button.disabled = true;
      button.textContent = "Push not supported here";
    } else if (Notification.permission === "denied" && !on) {
      button.disabled = true;
      button.textContent = "Push blocked by the browser";
    } else if (busy) {
      button.disabled = true;
      button.textContent = on ? "Turning push off…" : "Turning push on…";
    } else {
      button.disabled = false;
      button.textContent = on ? "Push on" : "Turn on push";
    }
  };
  button.addEventListener("click", async () => {
    if (busy) return;
    const wasOn = Boolean(localStorage.getItem(PUSH_KEY));
    busy = true;
    say("");
    show();
    try {
      if (wasOn) {
        await pushOff();
        say("Push is off for this browser.");
      } else {
        await pushOn();
        say("Push is on: this browser hears of your tasks even with no page open.");
      }
    } catch (error) {
      say(error.message || String(error));
    } finally {
      busy = false;
      show();
      // Disabled while busy, the button lost the keyboard's focus: give it back.
      if (!button.disabled) button.focus();
    }
  });
  show();
}
