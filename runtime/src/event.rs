//! The events every subscriber of the hub sees. State transitions are committed to the
//! database before they are published; `Progress` and `Log` are published first and
//! persisted, coalesced, by the progress recorder; `EtaUpdated` is derived and not stored.
//! The [`Eta`] it carries is defined here, beside the events, so that `eta` (which makes
//! estimates from what happened) depends on events and not the other way round.

use std::sync::Arc;

use actix::Message;
use db::LogStream;

use crate::policy::OnTimeout;

pub use estimator::Confidence;

/// Something that happened to a task.
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub struct TaskEvent {
    /// The task.
    pub task_id: Arc<str>,
    /// The owner of the task (subscribers filter by it).
    pub owner: Arc<str>,
    /// For committed events, their seq in the task's event log; for `Progress` and `Log`,
    /// the seq of the newest committed event before them.
    pub seq: i64,
    /// The lease token the event was produced under (the recorder's writes carry it).
    pub lease_token: i64,
    /// When, ms since the epoch.
    pub at: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The task was created (seq 1 of every task's log).
    TaskCreated,
    /// The task began running.
    TaskStarted,
    /// The task was resumed after this server (or another) stopped while it ran.
    TaskRecovered,
    /// A step started an attempt.
    StepStarted {
        /// The step's order.
        step: u32,
        /// Its name.
        name: Arc<str>,
        /// Which attempt.
        attempt: u32,
    },
    /// A running step's percent rose.
    Progress {
        /// The step's order.
        step: u32,
        /// The attempt the percent belongs to.
        attempt: u32,
        /// The step's percent, 0–100.
        percent: u8,
        /// The task's overall percent, 0–100.
        task_percent: u8,
    },
    /// A substep was ticked off (a checkpoint).
    SubstepDone {
        /// The step's order.
        step: u32,
        /// The substep's 0-based position.
        index: u32,
        /// Its name.
        name: Arc<str>,
    },
    /// A line of a step's output.
    Log {
        /// The step's order.
        step: u32,
        /// Where it came from.
        stream: LogStream,
        /// The text.
        line: Arc<str>,
    },
    /// A step completed.
    StepCompleted {
        /// The step's order.
        step: u32,
        /// Its name.
        name: Arc<str>,
        /// Work time of the attempt, ms.
        duration_ms: i64,
    },
    /// A step failed.
    StepFailed {
        /// The step's order.
        step: u32,
        /// Why.
        error: Arc<str>,
    },
    /// A failed step will try again on its own (its retry policy), after a backoff.
    StepRetrying {
        /// The step's order.
        step: u32,
        /// The attempt it will make.
        attempt: u32,
        /// The most attempts it makes, the first included.
        max_attempts: u32,
        /// When the attempt starts, ms since the epoch (unless the task is paused then).
        retry_at: i64,
    },
    /// A step was skipped.
    StepSkipped {
        /// The step's order.
        step: u32,
    },
    /// A step waits for a person's approval.
    ApprovalNeeded {
        /// The step's order.
        step: u32,
        /// Its name.
        name: Arc<str>,
        /// When the approval lapses, ms since the epoch, if it has a deadline.
        due_at: Option<i64>,
    },
    /// An approval's deadline is near and nobody has decided: remind them.
    ApprovalReminder {
        /// The step's order.
        step: u32,
        /// Its name.
        name: Arc<str>,
        /// When the approval lapses, ms since the epoch.
        due_at: i64,
    },
    /// Nobody decided before the approval's deadline; what follows (the step skipped, or
    /// the step and the task failed) comes as its own events.
    ApprovalTimedOut {
        /// The step's order.
        step: u32,
        /// What the deadline does, as the step's policy says.
        on_timeout: OnTimeout,
    },
    /// A person approved or rejected a step.
    ApprovalGiven {
        /// The step's order.
        step: u32,
        /// Approved (true) or rejected.
        approved: bool,
        /// What they said.
        comment: Option<Arc<str>>,
    },
    /// The task was paused.
    TaskPaused,
    /// The task was resumed.
    TaskResumed,
    /// Every step is completed or skipped.
    TaskCompleted,
    /// A step failed, so the task did.
    TaskFailed {
        /// The step that failed.
        step: u32,
        /// Why.
        error: Arc<str>,
    },
    /// The task was cancelled.
    TaskCancelled,
    /// The estimate of the time remaining changed.
    EtaUpdated(Eta),
}

impl EventKind {
    /// The name of the event in the event log and on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::TaskCreated => "task_created",
            EventKind::TaskStarted => "task_started",
            EventKind::TaskRecovered => "task_recovered",
            EventKind::StepStarted { .. } => "step_started",
            EventKind::Progress { .. } => "progress",
            EventKind::SubstepDone { .. } => "substep_done",
            EventKind::Log { .. } => "log",
            EventKind::StepCompleted { .. } => "step_complete",
            EventKind::StepFailed { .. } => "step_failed",
            EventKind::StepRetrying { .. } => "step_retrying",
            EventKind::StepSkipped { .. } => "step_skipped",
            EventKind::ApprovalNeeded { .. } => "approval_needed",
            EventKind::ApprovalReminder { .. } => "approval_reminder",
            EventKind::ApprovalTimedOut { .. } => "approval_timed_out",
            EventKind::ApprovalGiven { .. } => "approval_given",
            EventKind::TaskPaused => "task_paused",
            EventKind::TaskResumed => "task_resumed",
            EventKind::TaskCompleted => "task_complete",
            EventKind::TaskFailed { .. } => "task_failed",
            EventKind::TaskCancelled => "task_cancelled",
            EventKind::EtaUpdated(_) => "eta",
        }
    }

    /// The step the event concerns, if any.
    pub fn step(&self) -> Option<u32> {
        match self {
            EventKind::StepStarted { step, .. }
            | EventKind::Progress { step, .. }
            | EventKind::SubstepDone { step, .. }
            | EventKind::Log { step, .. }
            | EventKind::StepCompleted { step, .. }
            | EventKind::StepFailed { step, .. }
            | EventKind::StepRetrying { step, .. }
            | EventKind::StepSkipped { step }
            | EventKind::ApprovalNeeded { step, .. }
            | EventKind::ApprovalReminder { step, .. }
            | EventKind::ApprovalTimedOut { step, .. }
            | EventKind::ApprovalGiven { step, .. }
            | EventKind::TaskFailed { step, .. } => Some(*step),
            _ => None,
        }
    }

    /// Details for the event log, as JSON text.
    pub fn detail(&self) -> Option<String> {
        let value = match self {
            EventKind::StepStarted { name, attempt, .. } => serde_json::json!({"name": &**name, "attempt": attempt}),
            EventKind::SubstepDone { index, name, .. } => serde_json::json!({"index": index, "name": &**name}),
            EventKind::StepCompleted { name, duration_ms, .. } => {
                serde_json::json!({"name": &**name, "duration_ms": duration_ms})
            }
            EventKind::StepFailed { error, .. } | EventKind::TaskFailed { error, .. } => {
                serde_json::json!({"error": &**error})
            }
            EventKind::StepRetrying { attempt, max_attempts, retry_at, .. } => {
                serde_json::json!({"attempt": attempt, "max_attempts": max_attempts, "retry_at": retry_at})
            }
            EventKind::ApprovalNeeded { name, due_at: None, .. } => serde_json::json!({"name": &**name}),
            EventKind::ApprovalNeeded { name, due_at: Some(due_at), .. }
            | EventKind::ApprovalReminder { name, due_at, .. } => {
                serde_json::json!({"name": &**name, "due_at": due_at})
            }
            EventKind::ApprovalTimedOut { on_timeout, .. } => serde_json::json!({"on_timeout": on_timeout}),
            EventKind::ApprovalGiven { approved, comment, .. } => {
                serde_json::json!({"approved": approved, "comment": comment.as_deref()})
            }
            _ => return None,
        };
        Some(value.to_string())
    }

    /// The logged event a row of the event log stands for (its `kind`, `step` and
    /// `detail`, as [`EventKind::name`], [`EventKind::step`] and [`EventKind::detail`] wrote
    /// them); `None` for a row it cannot read, or one of a transient kind.
    pub fn from_stored(kind: &str, step: Option<u32>, detail: Option<&str>) -> Option<EventKind> {
        let detail: serde_json::Value = match detail {
            Some(text) => serde_json::from_str(text).ok()?,
            None => serde_json::Value::Null,
        };
        let text = |field: &str| detail.get(field).and_then(serde_json::Value::as_str).map(Arc::<str>::from);
        let number = |field: &str| detail.get(field).and_then(serde_json::Value::as_i64);
        Some(match kind {
            "task_created" => EventKind::TaskCreated,
            "task_started" => EventKind::TaskStarted,
            "task_recovered" => EventKind::TaskRecovered,
            "task_paused" => EventKind::TaskPaused,
            "task_resumed" => EventKind::TaskResumed,
            "task_complete" => EventKind::TaskCompleted,
            "task_cancelled" => EventKind::TaskCancelled,
            "step_started" => EventKind::StepStarted {
                step: step?,
                name: text("name")?,
                attempt: u32::try_from(number("attempt")?).ok()?,
            },
            "substep_done" => EventKind::SubstepDone {
                step: step?,
                index: u32::try_from(number("index")?).ok()?,
                name: text("name")?,
            },
            "step_complete" => {
                EventKind::StepCompleted { step: step?, name: text("name")?, duration_ms: number("duration_ms")? }
            }
            "step_failed" => EventKind::StepFailed { step: step?, error: text("error")? },
            "step_retrying" => EventKind::StepRetrying {
                step: step?,
                attempt: u32::try_from(number("attempt")?).ok()?,
                max_attempts: u32::try_from(number("max_attempts")?).ok()?,
                retry_at: number("retry_at")?,
            },
            "step_skipped" => EventKind::StepSkipped { step: step? },
            "approval_needed" => {
                EventKind::ApprovalNeeded { step: step?, name: text("name")?, due_at: number("due_at") }
            }
            "approval_reminder" => {
                EventKind::ApprovalReminder { step: step?, name: text("name")?, due_at: number("due_at")? }
            }
            "approval_timed_out" => EventKind::ApprovalTimedOut {
                step: step?,
                on_timeout: serde_json::from_value(detail.get("on_timeout")?.clone()).ok()?,
            },
            "approval_given" => EventKind::ApprovalGiven {
                step: step?,
                approved: detail.get("approved")?.as_bool()?,
                comment: text("comment"),
            },
            "task_failed" => EventKind::TaskFailed { step: step?, error: text("error")? },
            _ => return None,
        })
    }
}

/// How long a task still needs, in work seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Eta {
    /// Most likely seconds remaining (the median).
    pub seconds: f64,
    /// 80% range of the seconds remaining (p10, p90).
    pub range: (f64, f64),
    /// How far to trust it.
    pub confidence: Confidence,
    /// Each step still to finish, the one the task is at first (running, paused or waiting
    /// for approval), with the work it is expected to need. Skipped steps are not in it.
    pub steps: Vec<StepEta>,
}

impl Eta {
    /// This estimate after `work_s` more seconds of work had it learned nothing: the total,
    /// its range and the first step's rest count down, as clients count them. Work only
    /// grows while that step runs.
    pub fn counted_down(&self, work_s: f64) -> Eta {
        let less = |seconds: f64| (seconds - work_s).max(0.0);
        let mut steps = self.steps.clone();
        if let Some(running) = steps.first_mut() {
            running.expected_s = less(running.expected_s);
        }
        Eta {
            seconds: less(self.seconds),
            range: (less(self.range.0), less(self.range.1)),
            confidence: self.confidence,
            steps,
        }
    }

    /// This estimate with `wait_s` seconds of waiting before the work (a retry's backoff)
    /// added to the total and its range; the steps' work is unchanged.
    pub fn after_wait(mut self, wait_s: f64) -> Eta {
        self.seconds += wait_s;
        self.range = (self.range.0 + wait_s, self.range.1 + wait_s);
        self
    }

    /// Whether a person would see a difference from `old`: another confidence, another set
    /// of steps to go, or a figure (the total, its range, a step) off by a second and by 5%.
    pub fn moved_from(&self, old: &Eta) -> bool {
        let apart = |a: f64, b: f64| (a - b).abs() >= (0.05 * a.max(b)).max(1.0);
        apart(self.seconds, old.seconds)
            || apart(self.range.0, old.range.0)
            || apart(self.range.1, old.range.1)
            || self.confidence != old.confidence
            || self.steps.len() != old.steps.len()
            || self.steps.iter().zip(&old.steps).any(|(a, b)| a.step != b.step || apart(a.expected_s, b.expected_s))
    }
}

/// The name of a confidence in documents, messages and the database.
pub fn confidence_name(confidence: Confidence) -> &'static str {
    match confidence {
        Confidence::Low => "low",
        Confidence::Medium => "medium",
        Confidence::High => "high",
    }
}

/// The confidence a name stands for.
pub fn confidence_named(name: &str) -> Option<Confidence> {
    [Confidence::Low, Confidence::Medium, Confidence::High].into_iter().find(|c| confidence_name(*c) == name)
}

/// How much work one step that is not done yet is expected to need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepEta {
    /// The step's order in its task.
    pub step: u32,
    /// Expected (mean) work seconds still to go: for a running step its rest, for a step
    /// not started its whole duration.
    pub expected_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eta(seconds: f64, confidence: Confidence, steps: &[(u32, f64)]) -> Eta {
        let steps = steps.iter().map(|&(step, expected_s)| StepEta { step, expected_s }).collect();
        Eta { seconds, range: (seconds / 2.0, seconds * 2.0), confidence, steps }
    }

    #[test]
    fn every_logged_kind_reads_back_from_its_row_and_transient_ones_do_not() {
        let name: Arc<str> = "Fetch \"contacts\"".into();
        let logged = [
            EventKind::TaskCreated,
            EventKind::TaskStarted,
            EventKind::TaskRecovered,
            EventKind::StepStarted { step: 2, name: Arc::clone(&name), attempt: 3 },
            EventKind::SubstepDone { step: 2, index: 1, name: Arc::clone(&name) },
            EventKind::StepCompleted { step: 2, name: Arc::clone(&name), duration_ms: 1_234 },
            EventKind::StepFailed { step: 2, error: "exit 1".into() },
            EventKind::StepRetrying { step: 2, attempt: 2, max_attempts: 3, retry_at: 1_700_000_040_000 },
            EventKind::StepSkipped { step: 4 },
            EventKind::ApprovalNeeded { step: 3, name: Arc::clone(&name), due_at: None },
            EventKind::ApprovalNeeded { step: 3, name: Arc::clone(&name), due_at: Some(1_700_000_060_000) },
            EventKind::ApprovalReminder { step: 3, name: Arc::clone(&name), due_at: 1_700_000_060_000 },
            EventKind::ApprovalTimedOut { step: 3, on_timeout: OnTimeout::Skip },
            EventKind::ApprovalGiven { step: 3, approved: false, comment: Some("not now".into()) },
            EventKind::ApprovalGiven { step: 3, approved: true, comment: None },
            EventKind::TaskPaused,
            EventKind::TaskResumed,
            EventKind::TaskCompleted,
            EventKind::TaskFailed { step: 2, error: "exit 1".into() },
            EventKind::TaskCancelled,
        ];
        for kind in logged {
            let read = EventKind::from_stored(kind.name(), kind.step(), kind.detail().as_deref());
            assert_eq!(read.as_ref(), Some(&kind), "{}", kind.name());
        }
        let transient = [
            EventKind::Progress { step: 1, attempt: 1, percent: 5, task_percent: 2 },
            EventKind::Log { step: 1, stream: LogStream::Stdout, line: "x".into() },
        ];
        for kind in transient {
            assert_eq!(EventKind::from_stored(kind.name(), kind.step(), kind.detail().as_deref()), None);
        }
        assert_eq!(EventKind::from_stored("step_started", Some(1), Some("{not json")), None, "an unreadable row");
        assert_eq!(EventKind::from_stored("step_failed", None, Some(r#"{"error":"x"}"#)), None, "a step missing");
    }

    #[test]
    fn an_eta_moved_when_a_person_would_see_it() {
        use Confidence::{High, Low};
        let old = eta(100.0, Low, &[(2, 40.0), (3, 60.0)]);
        let with_range = |low: f64, high: f64| Eta { range: (low, high), ..old.clone() };
        let cases = [
            ("the same", eta(100.0, Low, &[(2, 40.0), (3, 60.0)]), false),
            ("under 5% anywhere", eta(104.0, Low, &[(2, 41.5), (3, 62.5)]), false),
            ("the total alone under 5%", Eta { seconds: 104.0, ..old.clone() }, false),
            ("the total by 5%", Eta { seconds: 106.0, ..old.clone() }, true),
            ("the low end by 5%", with_range(47.0, 200.0), true),
            ("the high end by 5%", with_range(50.0, 211.0), true),
            ("the confidence", eta(100.0, High, &[(2, 40.0), (3, 60.0)]), true),
            ("one step by 5%", eta(100.0, Low, &[(2, 37.9), (3, 60.0)]), true),
            ("a step fewer", eta(100.0, Low, &[(3, 60.0)]), true),
            ("another step", eta(100.0, Low, &[(2, 40.0), (4, 60.0)]), true),
        ];
        for (what, new, moved) in cases {
            assert_eq!(new.moved_from(&old), moved, "{what}");
        }
        // Short figures need a whole second.
        let short = eta(10.0, Low, &[(1, 10.0)]);
        let step_one = |expected_s| vec![StepEta { step: 1, expected_s }];
        assert!(!Eta { seconds: 10.9, steps: step_one(10.9), ..short.clone() }.moved_from(&short));
        assert!(Eta { seconds: 11.0, ..short.clone() }.moved_from(&short));
        assert!(Eta { steps: step_one(9.0), ..short.clone() }.moved_from(&short));
    }

    #[test]
    fn counting_down_takes_work_off_the_total_its_range_and_the_running_step_only() {
        let counted = eta(100.0, Confidence::Medium, &[(2, 30.0), (3, 60.0)]).counted_down(40.0);
        assert_eq!(counted.seconds, 60.0);
        assert_eq!(counted.range, (10.0, 160.0));
        assert_eq!(counted.steps, [StepEta { step: 2, expected_s: 0.0 }, StepEta { step: 3, expected_s: 60.0 }]);
        assert_eq!(counted.confidence, Confidence::Medium);
        assert_eq!(eta(5.0, Confidence::Low, &[]).counted_down(9.0).seconds, 0.0, "never below zero");
    }
}
