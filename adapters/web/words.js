// The seed's symbols and wording, as the terminal view says them: each status as a symbol
// and in words, durations, "Step 2 of 4: …", the ETA and status lines.

import { currentStep, etaNow, etaRangeNow, stepExpectedNow } from "./model.js";

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

/// "1st", "2nd", "3rd", "11th", "22nd".
export function ordinal(n) {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
  return `${n}${suffix}`;
}

/// "42 s", "3 min", "1 h 5 min" — as the terminal view says them.
export function humanDuration(seconds) {
  const s = Math.round(Math.max(0, seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor((s + 30) / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/// "Step 2 of 4: Generate application UI", with what holds it up, if anything.
export function stepLine(doc) {
  const step = currentStep(doc);
  if (!step) return "No steps";
  const held = {
    paused: " (paused)",
    approval: " (waiting for your approval)",
    failed: " (failed)",
    pending: doc.status !== "pending" ? "" : doc.queue_place ? " (queued)" : " (not started)",
  };
  return `Step ${step.order} of ${doc.total_steps}: ${step.name}${held[step.status] || ""}`;
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

/// The status line of a task that is not running, as the terminal view words it.
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
      return { text: doc.queue_place ? `Queued for a server with room: ${ordinal(doc.queue_place)} in line` : "Not started" };
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
  const likely = etaRangeNow(doc);
  if (likely) {
    range = `likely ${humanDuration(likely[0])} to ${humanDuration(likely[1])}`;
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

/// What a step's timer means now, or null without one: a failed attempt waiting out its
/// backoff ("attempt 2 of 3, next try in 40 s"), or an approval's deadline ("lapses in
/// 5 min"). `now` is the page's clock, ms.
export function timerText(doc, step, now) {
  if (!step.due_at) return null;
  const left = Math.max(0, (Date.parse(step.due_at) - now) / 1000);
  if (step.status === "approval") return left > 0 ? `lapses in ${humanDuration(left)}` : "lapses now";
  if (step.status !== "pending") return null;
  const attempt = step.max_attempts ? `attempt ${step.attempts + 1} of ${step.max_attempts}` : `attempt ${step.attempts + 1}`;
  if (doc.status === "paused") return `${attempt} when the task resumes`;
  return left > 0 ? `${attempt}, next try in ${humanDuration(left)}` : `${attempt}, trying now`;
}
