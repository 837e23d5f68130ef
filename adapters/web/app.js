// Stepwise's web view: what every page shares. The token (kept in localStorage), API
// calls, the live WebSocket that reconnects by itself and resumes where it stopped, the
// progress model (logged events applied exactly as the server's state machine applies
// them), the seed's symbols and wording, desktop notifications, and the switch for web
// push (the service worker /sw.js and a PushManager subscription the server keeps).
//
// Plain modern JavaScript, served as is: no build step, no framework.

const TOKEN_KEY = "stepwise.token";
const NOTIFY_KEY = "stepwise.notifications";
/// The id the server gave this browser's push subscription, while push is on.
const PUSH_KEY = "stepwise.push";

/// What tests and curious people can look at: `window.stepwise`.
export const debug = (window.stepwise = window.stepwise || {
  notifications: [],
  connections: [],
  errors: [],
});
window.addEventListener("error", (e) => debug.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => debug.errors.push(String(e.reason)));

// ---------------------------------------------------------------- the token

export function token() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(value) {
  localStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
}

/// Sends a visitor without a (working) token to sign in, and back here afterwards.
export function toLogin(reason) {
  const next = location.pathname + location.search;
  const query = new URLSearchParams({ next });
  if (reason) query.set("reason", reason);
  location.replace("/login?" + query);
}

/// The token, or off to /login.
export function requireToken() {
  const value = token();
  if (!value) {
    toLogin();
    throw new Error("not signed in");
  }
  return value;
}

/// The header's sign-out button.
export function wireSignOut() {
  const button = document.getElementById("sign-out");
  if (!button) return;
  button.addEventListener("click", () => {
    forgetToken();
    location.assign("/login?reason=signed-out");
  });
}

// ---------------------------------------------------------------- the API

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/// Calls the API with the token; answers the JSON body or throws an ApiError. A 401 sends
/// the visitor to sign in again.
export async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + (token() || ""), Accept: "application/json" };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "network", "The server cannot be reached; check your connection.");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = (data && data.error && data.error.code) || "http_" + response.status;
    const message = (data && data.error && data.error.message) || response.statusText || "request failed";
    if (response.status === 401) {
      forgetToken();
      toLogin("expired");
    }
    throw new ApiError(response.status, code, message);
  }
  return data;
}

// ---------------------------------------------------------------- the seed's words

/// The seed's symbol for each step status (and ⤼ for skipped).
export const STEP_SYMBOLS = {
  completed: "✓",
  running: "◐",
  pending: "○",
  approval: "⚠",
  failed: "✗",
  paused: "⏸",
  skipped: "⤼",
};

/// Each step status as words, for everyone who does not read symbols.
export const STEP_WORDS = {
  completed: "completed",
  running: "in progress",
  pending: "pending",
  approval: "needs your approval",
  failed: "failed",
  paused: "paused",
  skipped: "skipped",
};

export const TASK_SYMBOLS = {
  pending: "○",
  running: "◐",
  paused: "⏸",
  approval: "⚠",
  completed: "✓",
  failed: "✗",
  cancelled: "⊘",
};

export const TASK_WORDS = {
  pending: "not started",
  running: "running",
  paused: "paused",
  approval: "waiting for your approval",
  completed: "completed",
  failed: "failed",
  cancelled: "cancelled",
};

/// "42 s", "3 min", "1 h 5 min" — as the terminal view says them.
export function humanDuration(seconds) {
  const s = Math.round(Math.max(0, seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor((s + 30) / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function isFinal(status) {
  return status === "completed" || status === "failed" || status === "cancelled";
}

export function isDone(status) {
  return status === "completed" || status === "skipped";
}

/// The step the task is at: the first not yet done, else the last.
export function currentStep(doc) {
  return doc.steps.find((s) => !isDone(s.status)) || doc.steps[doc.steps.length - 1] || null;
}

/// "Step 2 of 4: Generate application UI", with what holds it up, if anything.
export function stepLine(doc) {
  const step = currentStep(doc);
  if (!step) return "No steps";
  const held = {
    paused: " (paused)",
    approval: " (waiting for your approval)",
    failed: " (failed)",
    pending: doc.status === "pending" ? " (not started)" : "",
  };
  return `Step ${step.order} of ${doc.total_steps}: ${step.name}${held[step.status] || ""}`;
}

/// Seconds of work remaining now: the last estimate, counted down while the task runs.
export function etaNow(doc) {
  return countDown(doc, doc.eta_seconds, doc.status === "running");
}

/// Seconds of work a step not done yet still needs now: its last estimate, the running
/// step's counted down while the task runs; null without one, and once the step failed
/// or the task ended.
export function stepExpectedNow(doc, step) {
  if (isDone(step.status) || step.status === "failed" || isFinal(doc.status)) return null;
  return countDown(doc, step.expected_seconds, doc.status === "running" && step.status === "running");
}

/// Folds the countdown so far into the figures and starts it again. Called before every
/// change of state, so that time spent paused or waiting for approval is never counted
/// and a step that starts counts from its own start.
function settleCountdown(doc) {
  const running = doc.status === "running";
  const step = doc.steps.find((s) => s.status === "running");
  const eta = etaNow(doc);
  const range = Array.isArray(doc.eta_range) ? doc.eta_range.map((s) => countDown(doc, s, running)) : doc.eta_range;
  const rest = step ? stepExpectedNow(doc, step) : null;
  if (eta != null) doc.eta_seconds = eta;
  doc.eta_range = range;
  if (rest != null) step.expected_seconds = rest;
  doc._eta_at = Date.now();
}

function countDown(doc, seconds, running) {
  if (seconds == null) return null;
  const received = doc._eta_at || Date.now();
  const elapsed = running ? (Date.now() - received) / 1000 : 0;
  return Math.max(0, seconds - elapsed);
}

/// "about 2 min left" for the running step, "about 2 min" for one still to come, or ""
/// when the step has no estimate.
export function stepExpectedText(doc, step) {
  const seconds = stepExpectedNow(doc, step);
  if (seconds == null) return "";
  if (step.status !== "running" && step.status !== "paused") {
    return seconds < 1 ? "under a second" : `about ${humanDuration(seconds)}`;
  }
  return seconds < 1 ? "any moment now" : `about ${humanDuration(seconds)} left`;
}

/// Takes the estimate of `source` (an `eta` message or a progress document) into `doc`;
/// `expected` maps a step's order to the seconds it still needs.
export function adoptEta(doc, source, expected) {
  doc.eta_seconds = source.eta_seconds;
  doc.eta_range = source.eta_range;
  doc.eta_confidence = source.eta_confidence;
  doc._eta_at = Date.now();
  for (const step of doc.steps) step.expected_seconds = expected.get(step.order) ?? null;
}

/// The ETA line and its range for the hover text, or the status line of a task that is
/// not running, as the terminal view words them.
export function statusLine(doc) {
  switch (doc.status) {
    case "completed": {
      const start = Date.parse(doc.started_at);
      const end = Date.parse(doc.finished_at);
      return { text: Number.isFinite(start) && Number.isFinite(end) ? `✓ Completed in ${humanDuration((end - start) / 1000)}` : "✓ Completed" };
    }
    case "failed":
      return { text: `✗ Failed: ${doc.error || "unknown error"}` };
    case "cancelled":
      return { text: "Cancelled" };
    case "paused":
      return { text: "⏸ Paused" };
    case "approval":
      return { text: "⚠ Waiting for your approval" };
    case "pending":
      return { text: "Not started" };
    default:
      return { text: "" };
  }
}

/// "ETA: 3 min remaining" and "likely 2 min to 4 min", or null when there is none to show.
export function etaText(doc) {
  if (doc.status !== "running") return null;
  const seconds = etaNow(doc);
  if (seconds == null) return { text: "ETA: estimating…", range: "" };
  let range = "";
  if (Array.isArray(doc.eta_range)) {
    const [low, high] = doc.eta_range.map((s) => countDown(doc, s, doc.status === "running"));
    range = `likely ${humanDuration(low)} to ${humanDuration(high)}`;
    if (doc.eta_confidence) range += ` (${doc.eta_confidence} confidence)`;
  }
  const text = seconds < 1 ? "ETA: any moment now" : `ETA: ${humanDuration(seconds)} remaining`;
  return { text, range };
}

export function startedText(doc) {
  if (!doc.started_at) return "Not started yet";
  const started = Date.parse(doc.started_at);
  return `Started: ${humanDuration((Date.now() - started) / 1000)} ago`;
}

// ---------------------------------------------------------------- the model

function substepPercent(step) {
  if (!step.substeps.length) return 0;
  return Math.floor((step.substeps.filter((s) => s.done).length * 100) / step.substeps.length);
}

/// What follows from the steps: the task's percent (done steps count 100, others their
/// percent), the current step and what the task waits on.
export function recompute(doc) {
  const steps = doc.steps;
  doc.total_steps = steps.length;
  doc.progress = steps.length
    ? Math.floor(steps.reduce((sum, s) => sum + (isDone(s.status) ? 100 : s.progress), 0) / steps.length)
    : 0;
  const step = currentStep(doc);
  doc.current_step = step ? step.order : null;
  const kind = { approval: "approval", paused: "resume", failed: "retry" }[doc.status];
  doc.waiting_on = kind && step ? { kind, step: step.order } : null;
}

/// Adopts a progress document read from the API (a snapshot or a control's answer):
/// remembers when its ETA was read.
export function fresh(doc) {
  doc._eta_at = Date.now();
  return doc;
}

/// Whether a WebSocket message is an event of the task's persisted log (with its own
/// gap-free seq), rather than a transient `progress`, `log` or `eta` message.
export function isLogged(message) {
  return !["snapshot", "progress", "log", "eta", "error", "pong"].includes(message.type);
}

/// Applies a logged event to a progress document, as the server's state machine did.
/// Answers whether it changed anything.
export function applyEvent(doc, m) {
  const step = m.step != null ? doc.steps.find((s) => s.order === m.step) : null;
  settleCountdown(doc);
  switch (m.type) {
    case "task_created":
      break;
    case "task_started":
      doc.status = "running";
      doc.started_at = doc.started_at || m.at;
      break;
    case "task_recovered":
      break;
    case "step_started":
      if (step) {
        step.status = "running";
        step.attempts = m.attempt != null ? m.attempt : step.attempts + 1;
        step.error = null;
        step.duration_ms = 0;
        step.progress = substepPercent(step);
      }
      doc.status = "running";
      doc.error = null;
      doc.finished_at = null;
      break;
    case "substep_done":
      if (step) {
        const sub = step.substeps[m.index] || step.substeps.find((s) => s.name === m.name);
        if (sub) sub.done = true;
        step.progress = Math.max(step.progress, substepPercent(step));
      }
      break;
    case "step_complete":
      if (step) {
        step.status = "completed";
        step.progress = 100;
        step.substeps.forEach((s) => (s.done = true));
        if (m.duration_ms != null) step.duration_ms = m.duration_ms;
      }
      break;
    case "step_failed":
      if (step) {
        step.status = "failed";
        step.error = m.error;
      }
      break;
    case "step_skipped":
      if (step) step.status = "skipped";
      break;
    case "approval_needed":
      if (step) step.status = "approval";
      doc.status = "approval";
      break;
    case "approval_given":
      if (step && step.status === "approval") step.status = "pending";
      doc.status = "running";
      break;
    case "task_paused":
      doc.status = "paused";
      doc.steps.filter((s) => s.status === "running").forEach((s) => (s.status = "paused"));
      break;
    case "task_resumed":
      doc.status = "running";
      doc.steps.filter((s) => s.status === "paused").forEach((s) => (s.status = "running"));
      break;
    case "task_complete":
      doc.status = "completed";
      doc.finished_at = m.at;
      doc.eta_seconds = 0;
      doc.eta_range = null;
      break;
    case "task_failed":
      doc.status = "failed";
      doc.error = `step ${m.step} failed: ${m.error}`;
      doc.finished_at = m.at;
      break;
    case "task_cancelled":
      for (const s of doc.steps) {
        if (s.status === "running" || s.status === "paused") {
          s.status = "failed";
          s.error = "cancelled";
        } else if (s.status === "approval") {
          s.status = "pending";
        }
      }
      doc.status = "cancelled";
      doc.error = "cancelled";
      doc.finished_at = m.at;
      break;
    default:
      return false;
  }
  doc.seq = m.seq;
  if (m.at) doc.updated_at = m.at;
  recompute(doc);
  return true;
}

/// Applies a transient message (`progress`, `eta`); answers whether it changed anything.
export function applyTransient(doc, m) {
  if (m.type === "progress") {
    const step = doc.steps.find((s) => s.order === m.step);
    if (!step || isDone(step.status)) return false;
    step.progress = Math.max(step.progress, m.step_percent);
    recompute(doc);
    return true;
  }
  if (m.type === "eta") {
    adoptEta(doc, m, new Map((m.steps || []).map((s) => [s.step, s.expected_seconds])));
    return true;
  }
  return false;
}

/// Takes a newer progress document from the API in place of `old`, keeping the higher
/// percent of a step still on the same attempt (percents never go down within one).
export function merge(old, doc) {
  if (!old || doc.seq > old.seq) return fresh(doc);
  if (doc.seq < old.seq) return old;
  for (const step of doc.steps) {
    const before = old.steps.find((s) => s.order === step.order);
    if (before && before.attempts === step.attempts && !isDone(step.status)) {
      step.progress = Math.max(step.progress, before.progress);
    }
  }
  recompute(doc);
  return fresh(doc);
}

// ---------------------------------------------------------------- notifications

/// The seed's five notifications, for a logged event of the task `doc` (after applying
/// it), or null.
export function notificationFor(doc, m) {
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

function notificationsSupported() {
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

// ---------------------------------------------------------------- web push

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
  await navigator.serviceWorker.register("/sw.js", { scope: "/" });
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
  const registration = await navigator.serviceWorker.getRegistration("/");
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

/// The header's push switch: messages reach this browser even with no page open (and an
/// approval's can be answered from the notification). Permission is asked only when the
/// visitor presses it; what came of it is said beside it.
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
    const shown = new Notification(note.title, { body: note.body, tag: `${doc.task_id}:${m.seq}`, icon: "/assets/icon.svg" });
    shown.addEventListener("click", () => {
      window.focus();
      if (location.pathname !== `/tasks/${doc.task_id}`) location.assign(`/tasks/${encodeURIComponent(doc.task_id)}`);
    });
  } catch (error) {
    debug.errors.push("notification: " + error);
  }
}

export function announce(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A fresh node, so the same words twice are read twice.
  setTimeout(() => (region.textContent = text), 50);
}

// ---------------------------------------------------------------- the live socket

const SUBPROTOCOL = "stepwise.v1";
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;

/// A WebSocket to the API that reconnects by itself with backoff (and at once when the
/// browser comes back online or the page becomes visible). `url()` gives the path for the
/// next attempt, so a task page resumes with `?after_seq=` the newest seq it has.
export class LiveSocket {
  constructor({ url, onMessage, onState, onGiveUp }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.onGiveUp = onGiveUp || (() => {});
    this.socket = null;
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
    // Tests set `window.stepwise.offline = true` to hold reconnection, as if the network
    // were down; `reconnectNow()` lifts it.
    debug.offline = false;
    debug.reconnectNow = () => {
      debug.offline = false;
      this.connectSoon(0);
    };
    Object.defineProperty(debug, "socket", { get: () => this.socket, configurable: true });
    window.addEventListener("online", () => this.connectSoon(0));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.connectSoon(0);
    });
    setInterval(() => this.ping(), PING_EVERY_MS);
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "done");
  }

  connected() {
    return this.socket && this.socket.readyState === WebSocket.OPEN;
  }

  connectSoon(delay) {
    if (this.stopped || (this.socket && this.socket.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  connect() {
    if (this.stopped) return;
    if (debug.offline) {
      this.onState("offline");
      return;
    }
    const path = this.url();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}${path}`, [SUBPROTOCOL, "bearer." + (token() || "")]);
    } catch (error) {
      // A token that cannot travel as a subprotocol is no token of ours.
      debug.errors.push("websocket: " + error);
      forgetToken();
      toLogin("expired");
      return;
    }
    debug.connections.push(path);
    this.socket = socket;
    this.lastHeard = Date.now();
    this.onState(this.failures ? "reconnecting" : "connecting");
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      this.failures = 0;
      this.onState("live");
    });
    socket.addEventListener("message", (event) => {
      this.lastHeard = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type !== "pong") this.onMessage(message, this);
    });
    socket.addEventListener("close", async (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      this.failures += 1;
      if (!opened) {
        // A refused handshake says nothing to scripts: ask the API why (a 401 leads to
        // sign-in, a 404 means the task is gone).
        const reason = await this.onGiveUp();
        if (reason === "stop") return;
      }
      const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.min(this.failures - 1, 6));
      const wait = event.code === 1000 ? delay : delay * (0.5 + Math.random() / 2);
      this.onState(debug.offline ? "offline" : "reconnecting", wait);
      this.connectSoon(wait);
    });
  }

  /// An application-level ping: a connection that stays silent too long (a laptop that
  /// slept, a proxy that dropped it) is closed and reopened.
  ping() {
    if (!this.connected()) return;
    if (Date.now() - this.lastHeard > PING_EVERY_MS + PONG_WITHIN_MS) {
      this.socket.close(4000, "silent");
      return;
    }
    try {
      this.socket.send(JSON.stringify({ type: "ping" }));
    } catch {
      // closing already
    }
  }

  send(message) {
    if (this.connected()) this.socket.send(JSON.stringify(message));
  }
}

/// Shows the connection's state in the page's status line.
export function showConnection(state, waitMs) {
  const line = document.getElementById("connection");
  if (!line) return;
  line.dataset.state = state;
  const words = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: waitMs ? `Connection lost; reconnecting in ${Math.max(1, Math.round(waitMs / 1000))} s…` : "Reconnecting…",
    offline: "Offline; waiting for the network…",
  };
  line.textContent = words[state] || state;
}

// ---------------------------------------------------------------- DOM helpers

/// `h("p", {class: "x"}, "text", child)`: an element with attributes and children.
export function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === false || value == null) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/// Sets text only when it changed (keeps selections and screen readers calm).
export function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

/// Points a progress bar (role=progressbar) at a percent.
export function setBar(bar, percent) {
  const value = String(percent);
  if (bar.getAttribute("aria-valuenow") !== value) {
    bar.setAttribute("aria-valuenow", value);
    bar.setAttribute("aria-valuetext", `${percent}%`);
  }
  const fill = bar.querySelector(".bar-fill");
  if (fill) fill.style.width = `${percent}%`;
}

export function showError(text) {
  const line = document.getElementById("error");
  if (!line) return;
  line.hidden = !text;
  setText(line, text || "");
}
