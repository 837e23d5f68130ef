// A task's page, as the seed draws it: the title, the bar with its percent, "Step 2 of 4:
// …", the steps as a tree with their substeps, symbols and status words, when it started
// and how long remains, and the controls. It loads the progress document, then follows
// the task over `/ws/tasks/{id}`: a snapshot first, then the events; after a dropped
// connection it resumes with `?after_seq=` the newest seq it has, so no step is missed.

import { api, at, fromRoot, requireToken, wireSignOut } from "./api.js";
import { debug } from "./debug.js";
import { h, setBar, setText, showError } from "./dom.js";
import { LiveSocket, showConnection } from "./live.js";
import { QUEUE_POLL_MS, TrackedTask, isFinal, isLogged, isQueued } from "./model.js";
import { notify, wireNotifications } from "./notify.js";
import { wirePush } from "./push.js";
import {
  STEP_SYMBOLS,
  STEP_WORDS,
  etaText,
  humanDuration,
  startedText,
  statusLine,
  stepExpectedText,
  stepLine,
  timerText,
} from "./words.js";

const LOG_PAGE = 500;

const taskId = decodeURIComponent(fromRoot(location.pathname).replace(/^\/tasks\//, "").replace(/\/$/, ""));
const $ = (id) => document.getElementById(id);

const progressPath = `/api/tasks/${encodeURIComponent(taskId)}/progress`;

/// The task as the server last described it (`task.doc`).
const task = new TrackedTask({ read: () => api("GET", progressPath), changed: render, announce: notify });
/// Per step order: its row's elements and its log panel's state.
const rows = new Map();
/// A control request in flight (its buttons stay disabled meanwhile).
let busy = false;
/// What the confirmation box would do if confirmed.
let pendingConfirm = null;

debug.task = () => task.doc;
debug.events = [];

function init() {
  requireToken();
  wireSignOut();
  wireNotifications();
  wirePush();
  $("pause").addEventListener("click", () => control("pause"));
  $("resume").addEventListener("click", () => control("resume"));
  $("cancel").addEventListener("click", () =>
    confirmFirst("Cancel this task? Its running step stops and the task ends.", "Yes, cancel the task", () => control("cancel")),
  );
  $("restart").addEventListener("click", () => {
    const question = isFinal(task.doc.status)
      ? "Start this task over as a new run, from the first step?"
      : "Cancel this task and start it over as a new run, from the first step?";
    confirmFirst(question, "Yes, start over", restart);
  });
  // The decision names the step the page shows, so it can never land on a later approval.
  const decision = () => {
    const waiting = task.doc.steps.find((s) => s.status === "approval");
    return { step: waiting ? waiting.order : null, comment: comment() };
  };
  $("approve").addEventListener("click", () => control("approve", decision()));
  $("reject").addEventListener("click", () => control("reject", decision()));
  $("confirm-yes").addEventListener("click", () => {
    const action = pendingConfirm;
    closeConfirm();
    if (action) action();
  });
  $("confirm-no").addEventListener("click", closeConfirm);
  load();
}

function comment() {
  const text = $("approval-comment").value.trim();
  return text || undefined;
}

async function load() {
  try {
    task.snapshot(await api("GET", progressPath));
  } catch (error) {
    if (error.status === 404) return notFound();
    showError(error.message);
    showConnection("offline");
    return;
  }
  socket.start();
  setInterval(renderTimes, 1000);
  setInterval(() => isQueued(task.doc) && task.refresh(), QUEUE_POLL_MS);
}

function notFound() {
  socket.stop();
  showConnection("stopped");
  setText($("connection"), "");
  $("task").hidden = true;
  showError(`There is no task ${taskId}, or it is not yours.`);
  document.title = "No such task · Stepwise";
}

// ---------------------------------------------------------------- live

let connectedBefore = false;

const socket = new LiveSocket({
  // The first connection gets a snapshot; later ones resume after the newest seq heard.
  url: () =>
    connectedBefore && task.doc
      ? `/ws/tasks/${encodeURIComponent(taskId)}?after_seq=${task.heard}`
      : `/ws/tasks/${encodeURIComponent(taskId)}`,
  onMessage: received,
  onState: (state, wait) => {
    showConnection(state, wait);
    if (state === "live") {
      // The replay brings every logged event missed, but not percents and estimates.
      if (connectedBefore) task.refresh();
      connectedBefore = true;
    }
  },
  onGiveUp: async () => {
    try {
      await api("GET", progressPath);
      return "retry";
    } catch (error) {
      if (error.status === 404) {
        notFound();
        return "stop";
      }
      return error.status === 401 ? "stop" : "retry";
    }
  },
});

function received(m, live) {
  if (m.type === "error") {
    showError(m.error && m.error.message);
    return;
  }
  if (m.type === "snapshot") {
    task.snapshot(m.task);
    return;
  }
  if (!task.doc) return;
  if (m.type === "log") {
    appendLive(m);
    return;
  }
  if (!isLogged(m)) {
    task.transient(m);
    return;
  }
  if (m.seq > task.heard + 1) {
    // A gap the server should never leave: reconnect and replay from what we have.
    debug.errors.push(`gap: have ${task.heard}, got ${m.seq}`);
    live.socket.close(4000, "gap");
    return;
  }
  if (task.event(m)) debug.events.push({ seq: m.seq, type: m.type, step: m.step });
}

// ---------------------------------------------------------------- controls

async function control(action, body) {
  if (busy) return;
  busy = true;
  const pressed = document.activeElement;
  render();
  showError("");
  try {
    task.adopt(await api("POST", `/api/tasks/${encodeURIComponent(taskId)}/${action}`, body));
    if (action === "approve" || action === "reject") $("approval-comment").value = "";
  } catch (error) {
    showError(`Could not ${action}: ${error.message}`);
  } finally {
    busy = false;
    render();
    keepFocus(pressed);
  }
}

async function stepControl(action, order) {
  if (busy) return;
  busy = true;
  render();
  showError("");
  try {
    task.adopt(await api("POST", `/api/tasks/${encodeURIComponent(taskId)}/steps/${order}/${action}`));
  } catch (error) {
    showError(`Could not ${action} step ${order}: ${error.message}`);
  } finally {
    busy = false;
    render();
    keepFocus(null);
  }
}

async function restart() {
  if (busy) return;
  busy = true;
  render();
  try {
    const created = await api("POST", `/api/tasks/${encodeURIComponent(taskId)}/restart`);
    location.assign(at(`/tasks/${encodeURIComponent(created.task_id)}`));
  } catch (error) {
    showError(`Could not start over: ${error.message}`);
    busy = false;
    render();
  }
}

/// A pressed button that disappeared (Pause becomes Resume) hands focus to the first
/// control still shown, so keyboard users stay in place.
function keepFocus(pressed) {
  if (pressed && pressed.offsetParent !== null && !pressed.disabled) {
    pressed.focus();
    return;
  }
  const next = [...document.querySelectorAll(".actions button, .approval button")].find(
    (b) => !b.hidden && b.offsetParent !== null && !b.disabled,
  );
  (next || $("status-line")).focus();
}

function confirmFirst(question, yes, action) {
  pendingConfirm = action;
  setText($("confirm-question"), question);
  setText($("confirm-yes"), yes);
  $("confirm-no").textContent = isFinal(task.doc.status) ? "Never mind" : "Keep it running";
  $("confirm").hidden = false;
  $("confirm-no").focus();
}

function closeConfirm() {
  pendingConfirm = null;
  $("confirm").hidden = true;
}

// ---------------------------------------------------------------- drawing

function render() {
  const doc = task.doc;
  if (!doc) return;
  $("task").hidden = false;
  $("task").dataset.status = doc.status;
  setText($("task-title"), doc.title);
  $("restarted").hidden = !doc.restarted_from;
  if (doc.restarted_from) $("restarted-link").href = at(`/tasks/${encodeURIComponent(doc.restarted_from)}`);
  document.title = `${doc.progress}% · ${doc.title} · Stepwise`;
  setBar($("bar"), doc.progress);
  setText($("percent"), `${doc.progress}%`);
  setText($("step-line"), stepLine(doc));
  renderSteps(doc);
  renderTimes();
  const status = statusLine(doc);
  setText($("status-line"), status.text);
  $("status-line").hidden = !status.text;
  $("status-line").setAttribute("tabindex", "-1");

  const running = doc.status === "running";
  const final = isFinal(doc.status);
  $("pause").hidden = !running;
  $("resume").hidden = doc.status !== "paused";
  $("cancel").hidden = final;
  setText($("restart"), final ? "Start over" : "Cancel and start over");
  const waiting = doc.status === "approval" ? doc.steps.find((s) => s.status === "approval") : null;
  $("approval").hidden = !waiting;
  if (waiting) setText($("approval-question"), `⚠ Approve step ${waiting.order}: ${waiting.name}?`);
  for (const button of document.querySelectorAll("#task button")) {
    if (!button.closest(".logs") && !button.classList.contains("logs-toggle")) button.disabled = busy;
  }
  if (final && !$("confirm").hidden && $("confirm-yes").textContent.startsWith("Yes, cancel")) closeConfirm();
}

function renderTimes() {
  const doc = task.doc;
  if (!doc) return;
  setText($("started"), startedText(doc));
  for (const step of doc.steps) {
    const row = rows.get(step.order);
    if (!row) continue;
    setText(row.expected, stepExpectedText(doc, step));
    // A timer's words count down with the page's clock.
    if (step.due_at) setText(row.status, stepStatusText(doc, step));
  }
  const eta = etaText(doc);
  const line = $("eta");
  line.hidden = !eta;
  const key = eta ? `${eta.text}|${eta.range}` : "";
  if (!eta || line.dataset.key === key) return;
  line.dataset.key = key;
  line.replaceChildren(eta.text);
  if (eta.range) {
    // The range on hover (and for screen readers and keyboard focus, in words).
    line.title = eta.range;
    line.append(h("span", { class: "sr-only" }, ` (${eta.range})`));
    line.setAttribute("tabindex", "0");
  } else {
    line.removeAttribute("title");
    line.removeAttribute("tabindex");
  }
}

function stepStatusText(doc, step) {
  const words = STEP_WORDS[step.status] || step.status;
  const timer = timerText(doc, step, Date.now());
  if (timer) return `${words}, ${timer}`;
  if (step.status === "completed" && step.duration_ms > 0) return `${words} in ${humanDuration(step.duration_ms / 1000)}`;
  if ((step.status === "running" || step.status === "paused") && step.progress > 0) return `${words}, ${step.progress}%`;
  if (step.status === "running" && step.attempts > 1) {
    return `${words}, attempt ${step.attempts}${step.max_attempts ? ` of ${step.max_attempts}` : ""}`;
  }
  return words;
}

function renderSteps(doc) {
  const list = $("steps");
  const shape = doc.steps.map((s) => `${s.order}:${s.name}:${s.substeps.map((x) => x.name).join("|")}`).join("\n");
  if (list.dataset.shape !== shape) {
    list.replaceChildren(...doc.steps.map(buildStep));
    list.dataset.shape = shape;
  }
  const failedTask = doc.status === "failed";
  for (const step of doc.steps) {
    const row = rows.get(step.order);
    // A step running when the task was cancelled ends "failed" (the seed's states have no
    // "stopped"); the page says what happened instead.
    const stopped = doc.status === "cancelled" && step.status === "failed";
    row.li.dataset.status = step.status;
    setText(row.symbol, stopped ? "⊘" : STEP_SYMBOLS[step.status] || "?");
    setText(row.status, stopped ? "stopped when the task was cancelled" : stepStatusText(doc, step));
    row.error.hidden = !step.error || stopped;
    setText(row.error, step.error ? `✗ ${step.error}` : "");
    row.actions.hidden = !(failedTask && step.status === "failed");
    const open = step.substeps.findIndex((s) => !s.done);
    step.substeps.forEach((substep, i) => {
      const [mark, note] = substep.done
        ? ["✓", "done"]
        : i === open && step.status === "running"
          ? ["◐", "in progress"]
          : i === open && step.status === "paused"
            ? ["⏸", "paused"]
            : ["○", "pending"];
      const sub = row.substeps[i];
      sub.li.dataset.status = substep.done ? "completed" : note.replace(" ", "-");
      setText(sub.symbol, mark);
      setText(sub.note, substep.done ? "(done)" : `(${note})`);
    });
  }
}

function buildStep(step) {
  const symbol = h("span", { class: "symbol", "aria-hidden": "true" });
  const status = h("span", { class: "step-status" });
  const expected = h("span", { class: "step-expected" });
  const toggle = h(
    "button",
    {
      type: "button",
      class: "logs-toggle quiet",
      "aria-expanded": "false",
      "aria-controls": `logs-${step.order}`,
      "aria-label": `Logs of step ${step.order}: ${step.name}`,
    },
    "Logs",
  );
  const retry = h(
    "button",
    { type: "button", class: "retry primary", "aria-label": `Retry step ${step.order}: ${step.name}` },
    "Retry",
  );
  const skip = h("button", { type: "button", class: "skip", "aria-label": `Skip step ${step.order}: ${step.name}` }, "Skip");
  retry.addEventListener("click", () => stepControl("retry", step.order));
  skip.addEventListener("click", () => stepControl("skip", step.order));
  const actions = h("span", { class: "step-actions buttons" }, retry, skip);
  const error = h("p", { class: "step-error" });
  const substeps = step.substeps.map((substep, i) => {
    const last = i === step.substeps.length - 1;
    const sub = {
      symbol: h("span", { class: "symbol", "aria-hidden": "true" }),
      note: h("span", { class: "substep-status" }),
    };
    sub.li = h(
      "li",
      { class: "substep" },
      h("span", { class: "branch", "aria-hidden": "true" }, last ? "└─" : "├─"),
      " ",
      h("span", { class: "substep-name" }, substep.name),
      " ",
      sub.symbol,
      " ",
      sub.note,
    );
    return sub;
  });
  const logs = { open: false, loaded: false, lines: [], buffered: [], expect: [], after: 0, more: false };
  const pre = h("pre", { class: "log-lines", tabindex: "0", "aria-label": `Log lines of step ${step.order}` });
  const more = h("button", { type: "button", class: "quiet more", hidden: true }, "Load more");
  const panel = h("div", { class: "logs", id: `logs-${step.order}`, hidden: true }, pre, more);
  const li = h(
    "li",
    { class: "step", "data-order": step.order },
    h(
      "div",
      { class: "step-row" },
      symbol,
      h("span", { class: "step-label" }, h("span", { class: "step-name" }, `${step.order}. ${step.name}`), " ", status, " ", expected),
      toggle,
      actions,
    ),
    substeps.length ? h("ul", { class: "substeps", "aria-label": `Substeps of step ${step.order}` }, substeps.map((s) => s.li)) : null,
    error,
    panel,
  );
  const row = { li, symbol, status, expected, error, actions, substeps, toggle, panel, pre, more, logs };
  toggle.addEventListener("click", () => toggleLogs(step.order));
  more.addEventListener("click", () => loadLogs(step.order));
  rows.set(step.order, row);
  return li;
}

// ---------------------------------------------------------------- logs

function toggleLogs(order) {
  const row = rows.get(order);
  row.logs.open = !row.logs.open;
  row.toggle.setAttribute("aria-expanded", String(row.logs.open));
  row.panel.hidden = !row.logs.open;
  if (!row.logs.open) return;
  if (row.logs.loaded) drawLogs(row);
  else if (!row.logs.loading) loadLogs(order);
}

async function loadLogs(order) {
  const row = rows.get(order);
  const logs = row.logs;
  logs.loading = true;
  if (!logs.lines.length) setText(row.pre, "Loading…");
  try {
    const page = await api(
      "GET",
      `/api/tasks/${encodeURIComponent(taskId)}/logs?step=${order}&after=${logs.after}&limit=${LOG_PAGE}`,
    );
    const fetched = page.lines.map((l) => (l.stream === "stderr" ? `[stderr] ${l.line}` : l.line));
    logs.lines.push(...fetched);
    logs.after = page.next_after;
    logs.more = page.lines.length === LOG_PAGE;
    if (!logs.more) {
      const { fresh, expect } = reconcile(fetched, logs.buffered);
      logs.lines.push(...fresh);
      logs.expect = expect;
      logs.buffered = [];
      logs.loaded = true;
    }
  } catch (error) {
    showError(`Could not read the logs of step ${order}: ${error.message}`);
  } finally {
    logs.loading = false;
    drawLogs(row);
  }
}

/// Lines reach the database a moment after they are sent live, so a read of a step's logs
/// and the live lines received meanwhile (`buffered`) overlap: the read may end inside
/// them, or go past them into lines still on their way. Answers the buffered lines the
/// read lacks, and the read's lines that will still arrive live (to be dropped then).
function reconcile(fetched, buffered) {
  if (!buffered.length) return { fresh: [], expect: [] };
  const oldest = Math.max(0, fetched.length - buffered.length - LOG_PAGE);
  for (let j = oldest; j < fetched.length; j++) {
    const overlap = Math.min(buffered.length, fetched.length - j);
    if (fetched.slice(j, j + overlap).every((line, i) => line === buffered[i])) {
      return { fresh: buffered.slice(overlap), expect: fetched.slice(j + buffered.length) };
    }
  }
  return { fresh: buffered, expect: [] };
}

/// A live log line. Lines reach the database a moment after they are sent, so until a
/// step's logs have been read whole its live lines are kept (the newest LOG_PAGE) and
/// added to what the read brings.
function appendLive(m) {
  const row = rows.get(m.step);
  if (!row) return;
  const line = m.stream === "stderr" ? `[stderr] ${m.line}` : m.line;
  if (!row.logs.loaded) {
    row.logs.buffered.push(line);
    if (row.logs.buffered.length > LOG_PAGE) row.logs.buffered.shift();
    return;
  }
  if (row.logs.expect.length && row.logs.expect[0] === line) {
    row.logs.expect.shift();
    return;
  }
  row.logs.expect = [];
  row.logs.lines.push(line);
  if (row.logs.open) drawLogs(row);
}

function drawLogs(row) {
  const logs = row.logs;
  const atEnd = row.pre.scrollTop + row.pre.clientHeight >= row.pre.scrollHeight - 4;
  setText(row.pre, logs.lines.length ? logs.lines.join("\n") : "No log lines yet.");
  row.more.hidden = !logs.more;
  if (atEnd) row.pre.scrollTop = row.pre.scrollHeight;
}

init();
