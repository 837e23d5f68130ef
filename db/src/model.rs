//! The persistent model: task and step records and their statuses, as the runtime reads
//! and writes them. Rows are converted here so the rest of the workspace never sees the
//! storage encoding (text statuses, 0/1 flags).

use std::fmt;
use std::str::FromStr;

use crate::DbError;

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(#[doc = concat!("`", $text, "`")] $variant),+
        }

        impl $name {
            /// Every status, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lower-case name stored in the database and shown to people.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = DbError;
            fn from_str(text: &str) -> Result<Self, DbError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(DbError::Corrupt(format!(
                        "unknown {} {other:?}", stringify!($name)
                    ))),
                }
            }
        }
    };
}

status_enum!(
    /// Where a task is in its life.
    TaskStatus {
        Pending => "pending",
        Running => "running",
        Paused => "paused",
        Approval => "approval",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

status_enum!(
    /// Where a step is: exactly the seed's seven states.
    StepStatus {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Skipped => "skipped",
        Paused => "paused",
        Approval => "approval",
    }
);

impl TaskStatus {
    /// Running, paused or waiting for approval: a server holds the task and resumes it
    /// after a restart.
    pub fn is_live(self) -> bool {
        matches!(self, TaskStatus::Running | TaskStatus::Paused | TaskStatus::Approval)
    }

    /// Completed or cancelled: nothing more happens to the task (a failed task can still
    /// be retried or skipped past).
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Cancelled)
    }
}

impl StepStatus {
    /// Completed or skipped: the step never runs again.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Skipped)
    }
}

/// The stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// A program's standard output (lines outside the progress protocol).
    Stdout,
    /// A program's standard error.
    Stderr,
    /// The runtime or a step handler.
    Runtime,
}

impl LogStream {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Runtime => "runtime",
        }
    }
}

impl FromStr for LogStream {
    type Err = DbError;
    fn from_str(text: &str) -> Result<Self, DbError> {
        match text {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            "runtime" => Ok(LogStream::Runtime),
            other => Err(DbError::Corrupt(format!("unknown log stream {other:?}"))),
        }
    }
}

/// A task as stored, without its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Unique id, e.g. `5f2c0a9e41d3b7a8`.
    pub id: String,
    /// The user the task belongs to.
    pub owner: String,
    /// What people call the task, e.g. "Cellphone Store CRM".
    pub title: String,
    /// Units of work (the tables of a generated app); tiers simple 1–2, medium 3–5, complex 6+.
    pub complexity: u32,
    /// Current status.
    pub status: TaskStatus,
    /// The task this one is a fresh run of ("cancel and start over").
    pub restarted_from: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// When the task first started running.
    pub started_at: Option<i64>,
    /// When the task completed, failed or was cancelled.
    pub finished_at: Option<i64>,
    /// Last change to any of the task's rows.
    pub updated_at: i64,
    /// Why the task failed or was cancelled.
    pub error: Option<String>,
    /// Sequence number of the newest event in the task's event log.
    pub last_seq: i64,
    /// The fencing token of the current lease.
    pub lease_token: i64,
}

/// A substep: a named part of a step that is ticked off when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstepRecord {
    /// Its name, e.g. "Sales form".
    pub name: String,
    /// Whether it is done (a checkpoint: done substeps are not redone after a restart).
    pub done: bool,
}

/// A step as stored, with its substeps.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// 1-based position in the task.
    pub order: u32,
    /// What people call the step, e.g. "Generate application UI".
    pub name: String,
    /// The handler that runs it: `exec`, `external`, `wait` or an application's own.
    pub kind: String,
    /// The handler's parameters, as JSON text.
    pub params: String,
    /// The step waits for a person's approval before it runs.
    pub requires_approval: bool,
    /// A rejected approval skips the step instead of failing the task.
    pub skippable: bool,
    /// Approval was given; a retry after the step failed does not ask again (a rejection
    /// leaves it unset, so a retry after one does).
    pub approved: bool,
    /// Current status.
    pub status: StepStatus,
    /// 0–100; never moves backwards within one attempt.
    pub progress: u8,
    /// How many times the step has started.
    pub attempts: u32,
    /// When the current attempt started.
    pub started_at: Option<i64>,
    /// When the step completed, failed or was skipped.
    pub finished_at: Option<i64>,
    /// Work time of the current attempt, ms: time paused or waiting for approval excluded.
    pub work_ms: i64,
    /// Why the step failed.
    pub error: Option<String>,
    /// What the step produced, if its handler reports anything.
    pub output: Option<String>,
    /// The work time its plan expects, ms (a timer's length, an author's estimate), if it says.
    pub estimate_ms: Option<i64>,
    /// Its rules for retries and for an approval's deadline, as JSON the runtime wrote.
    pub policy: Option<String>,
    /// When its timer fires next (its approval lapses, its next attempt starts), ms.
    pub due_at: Option<i64>,
    /// When the reminder of its pending approval goes out, ms; unset once sent.
    pub remind_at: Option<i64>,
    /// Its substeps, in order.
    pub substeps: Vec<SubstepRecord>,
}

/// A task with its steps in order.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    /// The task row.
    pub task: TaskRecord,
    /// The steps, ordered by `order`.
    pub steps: Vec<StepRecord>,
}

/// An entry of a task's append-only event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The task.
    pub task_id: String,
    /// Per-task sequence number, gap-free from 1.
    pub seq: i64,
    /// What happened, e.g. `step_completed`.
    pub kind: String,
    /// The step it concerns, if any.
    pub step: Option<u32>,
    /// Details, as JSON text.
    pub detail: Option<String>,
    /// When, ms since the epoch.
    pub created_at: i64,
}

/// A row of the seed's `task_progress` history: a step's percent and status at a point in
/// time, written by a transition or by a coalesced progress flush.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressRecord {
    /// The task.
    pub task_id: String,
    /// The row's position in the task's progress history, increasing in the order rows
    /// were written; consecutive for rows written since ids exist (older rows took the seq
    /// of the event that recorded them).
    pub id: i64,
    /// The seq of the newest event in the task's event log when the row was written: the
    /// transition's own event for a row a transition wrote, else the last one before the
    /// flush. Several rows may share it.
    pub seq: i64,
    /// The step's order.
    pub step: u32,
    /// The step's percent.
    pub percent: u8,
    /// The step's status.
    pub status: StepStatus,
    /// When, ms since the epoch.
    pub updated_at: i64,
}

/// A log line of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Per-task sequence number of the line.
    pub seq: i64,
    /// The step's order.
    pub step: u32,
    /// Where it came from.
    pub stream: LogStream,
    /// The text, without its line break.
    pub line: String,
    /// When, ms since the epoch.
    pub created_at: i64,
}

/// A completed step run: what the estimator learns from.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRunRecord {
    /// The task.
    pub task_id: String,
    /// The step's order.
    pub step: u32,
    /// Which attempt of the step.
    pub attempt: u32,
    /// The estimator's key for the step, e.g. `exec:Create database tables`.
    pub step_key: String,
    /// The task's complexity.
    pub complexity: u32,
    /// Work time, ms.
    pub duration_ms: i64,
    /// When it finished, ms since the epoch.
    pub finished_at: i64,
    /// The progress it reported on the way, oldest first.
    pub progress: Vec<ProgressMark>,
}

/// A percent a step reported after some work time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressMark {
    /// Work time of the attempt when it was reported, ms.
    pub elapsed_ms: i64,
    /// The step's percent then, 0–100, with its decimals (a step of many items moves in
    /// hundredths).
    pub percent: f64,
}
