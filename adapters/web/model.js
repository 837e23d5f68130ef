// A task as a page follows it. What state the task and its steps are in is always what a
// progress document from the server says (read, sent as a snapshot, or a control's answer),
// never worked out here: after every logged event the page reads the document again.
// Transient messages (`progress`, `eta`) change it in place at once, and the page counts
// the ETA down between estimates.

/// Whether a WebSocket message is an event of the task's persisted log (with its own
/// gap-free seq), rather than a transient `progress`, `log` or `eta` message.
export function isLogged(message) {
  return !["snapshot", "progress", "log", "eta", "error", "pong"].includes(message.type);
}

export function isFinal(status) {
  return status === "completed" || status === "failed" || status === "cancelled";
}

function isDone(status) {
  return status === "completed" || status === "skipped";
}

/// The step the task is at, as the document names it.
export function currentStep(doc) {
  return doc.steps.find((s) => s.order === doc.current_step) || null;
}

/// Seconds of work remaining now: the last estimate, counted down while the task runs.
export function etaNow(doc) {
  return countDown(doc, doc.eta_seconds, doc.status === "running");
}

/// The estimate's 80% range now, counted down like `etaNow`, or null.
export function etaRangeNow(doc) {
  if (!Array.isArray(doc.eta_range)) return null;
  return doc.eta_range.map((s) => countDown(doc, s, doc.status === "running"));
}

/// Seconds of work a step not done yet still needs now: its last estimate, the running
/// step's counted down while the task runs; null without one, and once the step failed
/// or the task ended.
export function stepExpectedNow(doc, step) {
  if (isDone(step.status) || step.status === "failed" || isFinal(doc.status)) return null;
  return countDown(doc, step.expected_seconds, doc.status === "running" && step.status === "running");
}

function countDown(doc, seconds, running) {
  if (seconds == null) return null;
  const elapsed = running ? (Date.now() - doc._eta_at) / 1000 : 0;
  return Math.max(0, seconds - elapsed);
}

/// Takes the estimate of an `eta` message, received at `at`, into `doc`.
function adoptEta(doc, message, at) {
  const expected = new Map((message.steps || []).map((s) => [s.step, s.expected_seconds]));
  doc.eta_seconds = message.eta_seconds;
  doc.eta_range = message.eta_range;
  doc.eta_confidence = message.eta_confidence;
  doc._eta_at = at;
  for (const step of doc.steps) step.expected_seconds = expected.get(step.order) ?? null;
}

/// `run` made safe to call at any time: never two at once, and a call while one is in
/// flight makes one more start after it (however many calls came meanwhile), so what the
/// last one reads is never older than the last call.
function coalesced(run) {
  let running = false;
  let again = false;
  return async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await run();
      } while (again);
    } finally {
      running = false;
    }
  };
}

/// What was heard between two logged events: a transient message carries the seq of the
/// logged event before it and speaks of the state after that event.
function transients(seq) {
  return { seq, steps: new Map(), task: 0, eta: null };
}

/// One task: its newest progress document (`doc`, null until the first is in), the
/// logged events heard over the WebSocket, and the transient messages since the last one.
export class TrackedTask {
  /// `read()` answers the task's current document; `changed()` is called whenever what
  /// the page shows of it may have changed; `announce(doc, event)` tells of a logged event
  /// once a document that includes it is in.
  constructor({ read, changed, announce }) {
    this.doc = null;
    /// The newest seq heard: every logged event up to it is in hand.
    this.heard = 0;
    /// Logged events heard but not yet in a document, oldest first.
    this.unannounced = [];
    this.live = transients(0);
    this.changed = changed;
    this.announce = announce;
    // A failed read changes nothing: the next event or reconnection reads again.
    this.refresh = coalesced(() => read().then((doc) => this.adopt(doc), () => {}));
  }

  /// A document that stands for every event up to its seq: the first read, or a
  /// `snapshot` message (the server sends only later events after it).
  snapshot(doc) {
    this.heard = Math.max(this.heard, doc.seq);
    this.adopt(doc);
  }

  /// Takes a progress document unless the one in hand is newer. Transient messages of the
  /// same seq go on top of it: they may be newer than the moment it was read, and within
  /// one seq percents only rise.
  adopt(doc) {
    if (this.doc && doc.seq < this.doc.seq) return;
    doc._eta_at = Date.now();
    this.doc = doc;
    if (this.live.seq === doc.seq) this.overlay();
    this.tellCovered();
    this.changed();
  }

  /// A logged event from the WebSocket; answers false for one heard before. What it
  /// changed comes with the next document read.
  event(m) {
    if (m.seq <= this.heard) return false;
    this.heard = m.seq;
    this.unannounced.push(m);
    if (this.doc && m.seq <= this.doc.seq) this.tellCovered();
    else this.refresh();
    return true;
  }

  /// A `progress` or `eta` message: shown at once if it speaks of the document in hand,
  /// else kept for the document being read.
  transient(m) {
    if (m.seq < this.live.seq) return;
    if (m.seq > this.live.seq) this.live = transients(m.seq);
    if (m.type === "progress") {
      const before = this.live.steps.get(m.step) || 0;
      this.live.steps.set(m.step, Math.max(before, m.step_percent));
      this.live.task = Math.max(this.live.task, m.percent);
    } else if (m.type === "eta") {
      this.live.eta = { message: m, at: Date.now() };
    }
    if (!this.doc || this.doc.seq !== m.seq) return;
    this.overlay();
    this.changed();
  }

  overlay() {
    const doc = this.doc;
    for (const [order, percent] of this.live.steps) {
      const step = doc.steps.find((s) => s.order === order);
      if (step) step.progress = Math.max(step.progress, percent);
    }
    doc.progress = Math.max(doc.progress, this.live.task);
    if (this.live.eta) adoptEta(doc, this.live.eta.message, this.live.eta.at);
  }

  tellCovered() {
    while (this.unannounced.length && this.unannounced[0].seq <= this.doc.seq) {
      this.announce(this.doc, this.unannounced.shift());
    }
  }
}

/// How often a page reads a queued task's document again: its place moves as the tasks
/// before it start, and no event says so.
export const QUEUE_POLL_MS = 5000;

/// Whether the task waits in the queue for a server with room.
export function isQueued(doc) {
  return !!doc && doc.status === "pending" && !!doc.queue_place;
}
