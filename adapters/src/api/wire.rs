//! The JSON the API speaks: the seed's progress document (its fields exactly, plus fields
//! clients need, never renamed) and the WebSocket messages made from runtime events.

use runtime::{
    confidence_name, current_step, task_percent, Eta, EventKind, Member, StepPolicy, StepRecord, StepStatus,
    StoredTask, TaskEvent, TaskStatus,
};
use serde::Serialize;
use serde_json::{json, Value};

/// One server in `GET /api/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerDocument<'a> {
    /// Its instance id, the one its task leases carry.
    pub id: &'a str,
    /// The URL it serves HTTP on (`server.advertise_url`), or null for a runtime embedded
    /// without a server.
    pub address: Option<&'a str>,
    /// `live`, `stopped` (shut down cleanly) or `gone` (its heartbeat stopped: its tasks are
    /// taken over when their leases lapse).
    pub state: &'static str,
    /// Whether it is the server that answered.
    pub this_server: bool,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// Its last heartbeat, RFC 3339.
    pub heartbeat_at: String,
    /// Seconds since its last heartbeat, by the answering server's clock.
    pub heartbeat_age_s: f64,
    /// The tasks it ran at its last heartbeat (paused ones and those waiting for approval
    /// not counted).
    pub running_tasks: u32,
    /// How many it may run at once (`runtime.max_running_tasks`).
    pub max_tasks: u32,
    /// When it shut down cleanly, RFC 3339, or null.
    pub stopped_at: Option<String>,
}

impl<'a> ServerDocument<'a> {
    /// The document of `member` at `now`.
    pub fn new(member: &'a Member, now: i64) -> ServerDocument<'a> {
        let server = &member.server;
        ServerDocument {
            id: &server.id,
            address: server.address.as_deref(),
            state: member.state.as_str(),
            this_server: member.is_self,
            started_at: rfc3339(server.started_at),
            heartbeat_at: rfc3339(server.heartbeat_at),
            heartbeat_age_s: (now - server.heartbeat_at).max(0) as f64 / 1000.0,
            running_tasks: server.running_tasks,
            max_tasks: server.max_tasks,
            stopped_at: server.stopped_at.map(rfc3339),
        }
    }
}

/// `GET /api/tasks/{task_id}/progress`: the seed's document and more.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressDocument<'a> {
    /// The task's id.
    pub task_id: &'a str,
    /// Its title.
    pub title: &'a str,
    /// `pending`, `running`, `paused`, `approval`, `completed`, `failed` or `cancelled`.
    pub status: &'static str,
    /// The task's percent, 0–100.
    pub progress: u8,
    /// The order of the step the task is at (the first not yet done, else the last).
    pub current_step: Option<u32>,
    /// How many steps there are.
    pub total_steps: usize,
    /// When it first started, RFC 3339, or null.
    pub started_at: Option<String>,
    /// Seconds of work most likely remaining (the median), or null when there is no
    /// estimate (the task is not live); 0 once completed.
    pub eta_seconds: Option<u64>,
    /// The steps in order.
    pub steps: Vec<StepDocument<'a>>,
    /// The 80% range of `eta_seconds`: [p10, p90], or null.
    pub eta_range: Option<[u64; 2]>,
    /// `low`, `medium` or `high`, or null.
    pub eta_confidence: Option<&'static str>,
    /// What the task waits on, if anything: `{"kind": "approval" | "resume" | "retry", "step"}`.
    pub waiting_on: Option<Value>,
    /// Why the task failed or was cancelled.
    pub error: Option<&'a str>,
    /// Units of work.
    pub complexity: u32,
    /// The task this one restarted, if any.
    pub restarted_from: Option<&'a str>,
    /// When it was created, RFC 3339.
    pub created_at: String,
    /// When it last changed, RFC 3339.
    pub updated_at: String,
    /// When it ended, RFC 3339, or null.
    pub finished_at: Option<String>,
    /// The seq of the newest event in the task's log: resume a WebSocket after it.
    pub seq: i64,
    /// Its place in the queue of tasks waiting for a server with room (1 = next to start),
    /// or null when it does not wait there.
    pub queue_place: Option<u32>,
}

/// A step in the [`ProgressDocument`].
#[derive(Debug, Clone, Serialize)]
pub struct StepDocument<'a> {
    /// 1-based position.
    pub order: u32,
    /// Its name.
    pub name: &'a str,
    /// One of the seed's seven states.
    pub status: &'static str,
    /// The step's percent, 0–100.
    pub progress: u8,
    /// Work time of the current attempt so far, ms (pauses and approval waits excluded).
    pub duration_ms: i64,
    /// Its substeps.
    pub substeps: Vec<SubstepDocument<'a>>,
    /// The step's kind.
    pub kind: &'a str,
    /// How many times it has started.
    pub attempts: u32,
    /// Whether it waits for approval before running.
    pub requires_approval: bool,
    /// Why it failed (`stopped: the task was cancelled` for a step its task's cancel stopped).
    pub error: Option<&'a str>,
    /// Work seconds the step is expected to need still (the mean; for the running step its
    /// rest), or null when it is done or the task has no estimate.
    pub expected_seconds: Option<u64>,
    /// The most attempts its retry policy allows, the first included; null without one.
    pub max_attempts: Option<u32>,
    /// When its timer fires: for a pending step, when its next attempt starts (it failed and
    /// waits out its backoff); for a step waiting for approval, when the approval lapses.
    /// RFC 3339, or null.
    pub due_at: Option<String>,
}

/// A substep in a [`StepDocument`].
#[derive(Debug, Clone, Serialize)]
pub struct SubstepDocument<'a> {
    /// Its name.
    pub name: &'a str,
    /// Whether it is done.
    pub done: bool,
}

/// RFC 3339 in UTC to the second, as the seed writes times.
pub fn rfc3339(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

fn whole_seconds(seconds: f64) -> u64 {
    seconds.max(0.0).round() as u64
}

fn waiting_on(task: &StoredTask) -> Option<Value> {
    let step = current_step(task)?.order;
    let kind = match task.task.status {
        TaskStatus::Approval => "approval",
        TaskStatus::Paused => "resume",
        TaskStatus::Failed => "retry",
        _ => return None,
    };
    Some(json!({"kind": kind, "step": step}))
}

impl<'a> ProgressDocument<'a> {
    /// The document of `task` with its ETA, if it has one.
    pub fn new(task: &'a StoredTask, eta: Option<&Eta>) -> ProgressDocument<'a> {
        let record = &task.task;
        let completed = record.status == TaskStatus::Completed;
        let eta = eta.filter(|_| !completed);
        let expected = |order: u32| eta?.steps.iter().find(|s| s.step == order).map(|s| whole_seconds(s.expected_s));
        ProgressDocument {
            task_id: &record.id,
            title: &record.title,
            status: record.status.as_str(),
            progress: task_percent(task),
            current_step: current_step(task).map(|s| s.order),
            total_steps: task.steps.len(),
            started_at: record.started_at.map(rfc3339),
            eta_seconds: if completed { Some(0) } else { eta.map(|e| whole_seconds(e.seconds)) },
            steps: task.steps.iter().map(|s| StepDocument::new(s, expected(s.order))).collect(),
            eta_range: eta.map(|e| [whole_seconds(e.range.0), whole_seconds(e.range.1)]),
            eta_confidence: eta.map(|e| confidence_name(e.confidence)),
            waiting_on: waiting_on(task),
            error: record.error.as_deref(),
            complexity: record.complexity,
            restarted_from: record.restarted_from.as_deref(),
            created_at: rfc3339(record.created_at),
            updated_at: rfc3339(record.updated_at),
            finished_at: record.finished_at.map(rfc3339),
            seq: record.last_seq,
            queue_place: None,
        }
    }
}

impl<'a> StepDocument<'a> {
    fn new(step: &'a StepRecord, expected_seconds: Option<u64>) -> StepDocument<'a> {
        StepDocument {
            order: step.order,
            name: &step.name,
            status: step.status.as_str(),
            progress: if step.status == StepStatus::Completed { 100 } else { step.progress },
            duration_ms: step.work_ms,
            substeps: step.substeps.iter().map(|s| SubstepDocument { name: &s.name, done: s.done }).collect(),
            kind: &step.kind,
            attempts: step.attempts,
            requires_approval: step.requires_approval,
            error: step.error.as_deref(),
            expected_seconds,
            max_attempts: StepPolicy::of(step).retry.map(|retry| retry.max_attempts),
            due_at: step.due_at.map(rfc3339),
        }
    }
}

/// Whether the event is in the task's persisted log (and so carries its own seq), rather
/// than a transient `progress`, `log` or `eta` message between two logged events.
pub fn is_logged(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::Progress { .. } | EventKind::Log { .. } | EventKind::EtaUpdated(_))
}

/// The WebSocket message for a live event.
pub fn event_message(event: &TaskEvent) -> Value {
    let mut message =
        json!({"type": event.kind.name(), "task_id": &*event.task_id, "seq": event.seq, "at": rfc3339(event.at)});
    merge(&mut message, kind_fields(&event.kind));
    message
}

/// The fields of an event's message beside its type, task, seq and time.
fn kind_fields(kind: &EventKind) -> Value {
    match kind {
        EventKind::TaskCreated
        | EventKind::TaskStarted
        | EventKind::TaskRecovered
        | EventKind::TaskPaused
        | EventKind::TaskResumed
        | EventKind::TaskCancelled => json!({}),
        EventKind::StepStarted { step, name, attempt } => json!({"step": step, "name": &**name, "attempt": attempt}),
        EventKind::Progress { step, percent, task_percent, .. } => {
            json!({"step": step, "percent": task_percent, "step_percent": percent})
        }
        EventKind::SubstepDone { step, index, name } => json!({"step": step, "index": index, "name": &**name}),
        EventKind::Log { step, stream, line } => json!({"step": step, "stream": stream.as_str(), "line": &**line}),
        EventKind::StepCompleted { step, name, duration_ms } => {
            json!({"step": step, "name": &**name, "duration_ms": duration_ms})
        }
        EventKind::StepFailed { step, error } => json!({"step": step, "error": &**error}),
        EventKind::StepRetrying { step, attempt, max_attempts, retry_at } => {
            json!({"step": step, "attempt": attempt, "max_attempts": max_attempts, "retry_at": rfc3339(*retry_at)})
        }
        EventKind::StepSkipped { step } => json!({"step": step}),
        EventKind::ApprovalNeeded { step, name, due_at } => approval_fields(*step, name, *due_at),
        EventKind::ApprovalReminder { step, name, due_at } => approval_fields(*step, name, Some(*due_at)),
        EventKind::ApprovalTimedOut { step, on_timeout } => json!({"step": step, "on_timeout": on_timeout}),
        EventKind::ApprovalGiven { step, approved, comment } => {
            json!({"step": step, "approved": approved, "comment": comment.as_deref()})
        }
        EventKind::TaskCompleted => json!({"result": "completed"}),
        EventKind::TaskFailed { step, error } => json!({"step": step, "error": &**error}),
        EventKind::EtaUpdated(eta) => eta_fields(eta),
    }
}

/// What an approval message says: the step, what is asked, and its deadline if it has one.
fn approval_fields(step: u32, name: &str, due_at: Option<i64>) -> Value {
    let question = format!("Approve step {step}: {name}?");
    let mut fields =
        json!({"step": step, "name": name, "approval": {"step": step, "name": name, "question": question}});
    if let Some(due_at) = due_at {
        merge(&mut fields, json!({"due_at": rfc3339(due_at)}));
    }
    fields
}

fn eta_fields(eta: &Eta) -> Value {
    json!({
        "eta_seconds": whole_seconds(eta.seconds),
        "eta_range": [whole_seconds(eta.range.0), whole_seconds(eta.range.1)],
        "eta_confidence": confidence_name(eta.confidence),
        "steps": eta.steps.iter().map(|s| json!({"step": s.step, "expected_seconds": whole_seconds(s.expected_s)})).collect::<Vec<_>>(),
    })
}

/// The WebSocket message for an event read back from the persisted log: the same shape as
/// the live one, from the stored kind and details.
pub fn logged_message(event: &db::EventRecord) -> Value {
    let mut message =
        json!({"type": event.kind, "task_id": event.task_id, "seq": event.seq, "at": rfc3339(event.created_at)});
    if let Some(step) = event.step {
        merge(&mut message, json!({"step": step}));
    }
    match EventKind::from_stored(&event.kind, event.step, event.detail.as_deref()) {
        Some(kind) => merge(&mut message, kind_fields(&kind)),
        // A row this version cannot read (edited by hand): its details as stored.
        None => {
            let detail = event.detail.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null);
            merge(&mut message, detail);
        }
    }
    message
}

/// The `snapshot` message: the progress document of one task, at `queue_place` if queued.
pub fn snapshot_message(task: &StoredTask, eta: Option<&Eta>, queue_place: Option<u32>) -> Value {
    json!({
        "type": "snapshot",
        "task_id": task.task.id,
        "seq": task.task.last_seq,
        "task": ProgressDocument { queue_place, ..ProgressDocument::new(task, eta) },
    })
}

fn merge(into: &mut Value, fields: Value) {
    if let (Value::Object(into), Value::Object(fields)) = (into, fields) {
        into.extend(fields);
    }
}
