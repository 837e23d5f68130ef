// The task list: the visitor's tasks, newest first, each with its status symbol and words,
// bar, percent, step line and ETA, kept live over `/ws/tasks` (a snapshot per task on
// every connection, then every task's events).

import {
  LiveSocket,
  TASK_SYMBOLS,
  TASK_WORDS,
  api,
  applyEvent,
  applyTransient,
  debug,
  etaText,
  fresh,
  h,
  isLogged,
  merge,
  notify,
  requireToken,
  setBar,
  setText,
  showConnection,
  showError,
  statusLine,
  stepLine,
  wireNotifications,
  wirePush,
  wireSignOut,
} from "/assets/app.js";

const $ = (id) => document.getElementById(id);

/// Progress documents by task id.
const tasks = new Map();
/// Their list items by task id.
const items = new Map();
/// Tasks being read because an event named a task not on the page yet.
const fetching = new Set();
/// Their events that came meanwhile.
const early = new Map();
/// The server's newest-first order (creation times have whole seconds only): the list's
/// place of each task, smaller first; tasks that turn up later go on top.
const rank = new Map();
let top = 0;

function place(id, at) {
  if (!rank.has(id)) rank.set(id, at !== undefined ? at : --top);
}

debug.tasks = () => [...tasks.values()];

async function init() {
  requireToken();
  wireSignOut();
  wireNotifications();
  wirePush();
  try {
    const page = await api("GET", "/api/tasks?limit=50");
    page.tasks.forEach((doc, i) => {
      tasks.set(doc.task_id, fresh(doc));
      place(doc.task_id, i);
    });
  } catch (error) {
    showError(error.message);
  }
  render();
  socket.start();
  setInterval(renderTimes, 1000);
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
  if (m.type === "snapshot") {
    place(m.task_id);
    tasks.set(m.task_id, merge(tasks.get(m.task_id), m.task));
    render();
    return;
  }
  const doc = tasks.get(m.task_id);
  if (!doc) {
    // A task that is new to this page (created elsewhere): read it whole, keeping its
    // events until then.
    if (isLogged(m)) fetchTask(m.task_id, m);
    return;
  }
  if (!isLogged(m)) {
    if (applyTransient(doc, m)) render();
    return;
  }
  if (m.seq <= doc.seq) return;
  if (m.seq > doc.seq + 1) {
    fetchTask(m.task_id, m);
    return;
  }
  applyEvent(doc, m);
  notify(doc, m);
  render();
}

/// Reads a task whole. `trigger` is a live event of a task the page did not know: such
/// events are kept until the read is back, then announced (and applied if newer).
async function fetchTask(id, trigger) {
  if (trigger) {
    if (!early.has(id)) early.set(id, []);
    early.get(id).push(trigger);
  }
  if (fetching.has(id)) return;
  fetching.add(id);
  try {
    const read = await api("GET", `/api/tasks/${encodeURIComponent(id)}/progress`);
    place(id);
    const doc = merge(tasks.get(id), read);
    tasks.set(id, doc);
    for (const m of (early.get(id) || []).sort((a, b) => a.seq - b.seq)) {
      if (m.seq === doc.seq + 1) applyEvent(doc, m);
      if (m.seq <= doc.seq) notify(doc, m);
    }
    render();
  } catch {
    // Gone, or not ours: nothing to show.
  } finally {
    early.delete(id);
    fetching.delete(id);
  }
}

function render() {
  const list = $("tasks");
  const ordered = [...tasks.values()].sort(
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
    link: h("a", { class: "task-link", href: `/tasks/${encodeURIComponent(doc.task_id)}` }),
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
  for (const doc of tasks.values()) {
    const row = items.get(doc.task_id);
    if (row) drawEta(doc, row);
  }
}

init();
