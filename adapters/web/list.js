// The task list: the visitor's tasks, newest first, each with its status symbol and words,
// bar, percent, step line and ETA, kept live over `/ws/tasks` (a snapshot per task on
// every connection, then every task's events).

import { api, at, requireToken, wireSignOut } from "./api.js";
import { debug } from "./debug.js";
import { h, setBar, setText, showError } from "./dom.js";
import { LiveSocket, showConnection } from "./live.js";
import { QUEUE_POLL_MS, TrackedTask, isLogged, isQueued } from "./model.js";
import { notify, wireNotifications } from "./notify.js";
import { wirePush } from "./push.js";
import { TASK_SYMBOLS, TASK_WORDS, etaText, statusLine, stepLine } from "./words.js";

const $ = (id) => document.getElementById(id);

/// The tasks followed, by task id: every task on the page, and tasks the WebSocket told of
/// whose first document is still being read.
const tasks = new Map();
/// Their list items by task id.
const items = new Map();
/// The server's newest-first order (creation times have whole seconds only): the list's
/// place of each task, smaller first; tasks that turn up later go on top.
const rank = new Map();
let top = 0;

function place(id, at) {
  if (!rank.has(id)) rank.set(id, at !== undefined ? at : --top);
}

debug.tasks = () => shown().map((task) => task.doc);

/// Follows the task `id`, which has a list item once its first document is in.
function follow(id) {
  const task = new TrackedTask({
    read: () => api("GET", `/api/tasks/${encodeURIComponent(id)}/progress`),
    changed: () => {
      place(id);
      render();
    },
    announce: notify,
  });
  tasks.set(id, task);
  return task;
}

function shown() {
  return [...tasks.values()].filter((task) => task.doc);
}

async function init() {
  requireToken();
  wireSignOut();
  wireNotifications();
  wirePush();
  try {
    const page = await api("GET", "/api/tasks?limit=50");
    page.tasks.forEach((doc, i) => {
      place(doc.task_id, i);
      follow(doc.task_id).snapshot(doc);
    });
  } catch (error) {
    showError(error.message);
  }
  render();
  socket.start();
  setInterval(renderTimes, 1000);
  setInterval(() => shown().filter((task) => isQueued(task.doc)).forEach((task) => task.refresh()), QUEUE_POLL_MS);
}

const socket = new LiveSocket({
  url: () => "/ws/tasks",
  onMessage: received,
  onState: showConnection,
  onGiveUp: async () => {
    try {
      await api("GET", "/api/tasks?limit=1");
    } catch (error) {
      if (error.status === 401) return "stop";
    }
    return "retry";
  },
});

function received(m) {
  if (m.type === "error") {
    showError(m.error && m.error.message);
    return;
  }
  const task = tasks.get(m.task_id);
  if (m.type === "snapshot") {
    (task || follow(m.task_id)).snapshot(m.task);
  } else if (isLogged(m)) {
    // A task new to this page (created elsewhere) is read whole; its events are told of
    // once that read is in.
    (task || follow(m.task_id)).event(m);
  } else if (task) {
    task.transient(m);
  }
}

function render() {
  const list = $("tasks");
  const ordered = shown().map((task) => task.doc).sort(
    (a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || rank.get(a.task_id) - rank.get(b.task_id),
  );
  $("empty").hidden = ordered.length > 0;
  const wanted = ordered.map((doc) => item(doc).li);
  if (wanted.length !== list.children.length || wanted.some((li, i) => list.children[i] !== li)) {
    list.replaceChildren(...wanted);
  }
  for (const doc of ordered) draw(doc);
}

function item(doc) {
  let row = items.get(doc.task_id);
  if (row) return row;
  const bar = h(
    "div",
    {
      class: "bar",
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": "0",
      "aria-label": `Progress of ${doc.title}`,
    },
    h("div", { class: "bar-fill" }),
  );
  row = {
    symbol: h("span", { class: "symbol", "aria-hidden": "true" }),
    link: h("a", { class: "task-link", href: at(`/tasks/${encodeURIComponent(doc.task_id)}`) }),
    status: h("span", { class: "task-status" }),
    bar,
    percent: h("span", { class: "percent", "aria-hidden": "true" }),
    step: h("p", { class: "task-step" }),
    eta: h("p", { class: "task-eta" }),
  };
  row.li = h(
    "li",
    { class: "task-card", "data-task-id": doc.task_id },
    h("h2", { class: "task-title" }, row.symbol, " ", row.link),
    h("p", { class: "task-meta" }, row.status),
    h("div", { class: "progress" }, bar, row.percent),
    row.step,
    row.eta,
  );
  items.set(doc.task_id, row);
  return row;
}

function draw(doc) {
  const row = items.get(doc.task_id);
  row.li.dataset.status = doc.status;
  setText(row.symbol, TASK_SYMBOLS[doc.status] || "?");
  setText(row.link, doc.title);
  setText(row.status, TASK_WORDS[doc.status] || doc.status);
  setBar(row.bar, doc.progress);
  setText(row.percent, `${doc.progress}%`);
  setText(row.step, stepLine(doc));
  drawEta(doc, row);
}

function drawEta(doc, row) {
  const eta = etaText(doc);
  const text = eta ? eta.text : statusLine(doc).text;
  setText(row.eta, text);
  if (eta && eta.range) row.eta.title = eta.range;
  else row.eta.removeAttribute("title");
}

function renderTimes() {
  for (const { doc } of shown()) {
    const row = items.get(doc.task_id);
    if (row) drawEta(doc, row);
  }
}

init();
