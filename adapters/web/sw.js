// Stepwise's service worker: shows web push messages as notifications, even with no page
// open. Served from sw.js at Stepwise's root (`/sw.js`, or e.g. `/stepwise/sw.js` in an
// application that mounts it there) so that its scope is all of Stepwise's pages. An
// approval's message carries Approve and Reject links (signed, single-use, expiring):
// pressing one posts the link, which is all the credential it needs, and tells how that
// went; a plain click brings up the task's page.
//
// The push payload is the server's (adapters/src/notify/push.rs): {title, body, event,
// task_id, url, actions: [{action, title, url}]}.

const ROOT = self.location.pathname.replace(/\/sw\.js$/, "");
const ICON = ROOT + "/assets/icon.svg";
const HOME = ROOT + "/";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch {
    // Not ours, or garbled: still show something, as a push must (userVisibleOnly).
    message = { body: event.data ? event.data.text() : "" };
  }
  event.waitUntil(show(message));
});

function show(message) {
  const actions = Array.isArray(message.actions) ? message.actions.filter((a) => a && a.action && a.url) : [];
  const links = Object.fromEntries(actions.map((a) => [a.action, a.url]));
  return self.registration.showNotification(message.title || "Stepwise", {
    body: message.body || "",
    icon: ICON,
    // One notification per task: a newer message about it replaces the older.
    tag: message.task_id ? `task:${message.task_id}` : "stepwise",
    renotify: true,
    // A question stays until answered.
    requireInteraction: actions.length > 0,
    actions: actions.map((a) => ({ action: a.action, title: a.title || a.action })),
    data: { url: message.url || HOME, task_id: message.task_id || null, links },
  });
}

self.addEventListener("notificationclick", (event) => {
  const notification = event.notification;
  const data = notification.data || {};
  notification.close();
  const link = event.action && data.links ? data.links[event.action] : null;
  event.waitUntil(link ? decide(link, event.action, notification) : openPage(data.url || HOME));
});

/// Posts an Approve or Reject link and says how it went, in place of the question.
async function decide(link, action, notification) {
  const data = notification.data || {};
  const verb = action === "approve" ? "approve" : "reject";
  let title;
  let body;
  try {
    const response = await fetch(link, { method: "POST", credentials: "omit", cache: "no-store" });
    if (response.ok) {
      title = action === "approve" ? "✓ Approved" : "✗ Rejected";
      body = notification.body;
    } else {
      let reason = response.statusText;
      try {
        const answer = await response.json();
        reason = (answer && answer.error && answer.error.message) || reason;
      } catch {
        // keep the status text
      }
      title = `Could not ${verb}`;
      body = reason;
    }
  } catch {
    title = `Could not ${verb}`;
    body = "The server cannot be reached; open the task's page to decide there.";
  }
  return self.registration.showNotification(title, {
    body,
    icon: ICON,
    tag: notification.tag,
    data: { url: data.url || HOME, task_id: data.task_id || null, links: {} },
  });
}

/// Focuses a tab already showing `url`, or opens one.
async function openPage(url) {
  const target = new URL(url, self.location.origin).href;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((client) => client.url.split("#")[0] === target);
  if (open) return open.focus();
  return self.clients.openWindow(target);
}
