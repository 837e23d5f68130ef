//! `POST /api/chat`: the bot. The pure [`crate::chat`] core decides what a message asks for;
//! this handler keeps one conversation per user in the database (so the next message may
//! reach any server of a cluster; forgotten after [`IDLE_MS`] of silence, so an old
//! "Cancel X?" cannot be answered by a much later "yes"), fetches what the answer needs and
//! does what the user confirmed (through the server running the task, wherever it is).
//! Every message and reply is kept in the user's transcript ([`crate::transcript`]), with
//! the notifications their chat preferences route there; `GET /api/chat` reads it.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use runtime::{task_percent, Control, StepStatus, StoredTask};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::{blocking_query, ApiError};
use super::forward;
use super::{body, ApiState};
use crate::chat::intent::StepRef;
use crate::chat::reply::{self, StepView, SubstepView, TaskView};
use crate::chat::resolve::{step_order, TaskSummary};
use crate::chat::{Action, Conversation, Decision, View};
use crate::transcript::{self, Sender};

/// How long a conversation is remembered without a message.
pub const IDLE_MS: i64 = 10 * 60 * 1000;

/// Tasks the bot considers: the user's newest.
const CANDIDATES: usize = 100;

/// Log lines a reply shows: the newest.
const LOG_LINES: usize = 20;

/// Characters in a message.
const MAX_MESSAGE_CHARS: usize = 2000;

/// Runs `f` on `user`'s stored conversation (a fresh one if it was idle too long, or is
/// unreadable after an upgrade) and stores what `f` left of it, heard at `now`.
async fn with_conversation<T>(
    state: &ApiState,
    user: &str,
    now: i64,
    f: impl FnOnce(&mut Conversation) -> T,
) -> Result<T, ApiError> {
    let (db, who) = (Arc::clone(state.runtime.db()), user.to_owned());
    let stored = blocking_query(db, move |conn| db::load_conversation(conn, &who)).await?;
    let mut conversation = match stored {
        Some((json, heard)) if now - heard < IDLE_MS => serde_json::from_str(&json).unwrap_or_else(|error| {
            tracing::warn!(%error, user, "a stored chat conversation does not read; starting afresh");
            Conversation::default()
        }),
        _ => Conversation::default(),
    };
    let answer = f(&mut conversation);
    let json = serde_json::to_string(&conversation).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (db, who) = (Arc::clone(state.runtime.db()), user.to_owned());
    blocking_query(db, move |conn| db::save_conversation(conn, &who, &json, now)).await?;
    Ok(answer)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    message: String,
}

/// `POST /api/chat`: `{"message"}` → `{"reply", "task_id"?, "action"?}`.
pub async fn ask(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let message: Message = body::json(&req, payload, state.limits.max_body_bytes).await?;
    let chars = message.message.chars().count();
    if message.message.trim().is_empty() || chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::InvalidRequest(format!("a message is 1 to {MAX_MESSAGE_CHARS} characters, got {chars}")));
    }
    let now = state.runtime.clock().now_ms();
    // Kept before acting: a message that did something is never missing from the transcript.
    transcript::append(state.runtime.db(), &caller.user, Sender::User, &message.message, None, now).await?;
    let tasks = summaries(&state, &caller).await?;
    let decision = with_conversation(&state, &caller.user, now, |c| c.handle(&message.message, &tasks)).await?;
    let answer = match decision {
        Decision::Reply(text) | Decision::Ask(text) => json!({"reply": text}),
        Decision::Show { task_id, view } => {
            let text = show(&state, &caller, &task_id, view).await?;
            json!({"reply": text, "task_id": task_id})
        }
        Decision::Act { task_id, action } => act(&state, &caller, &task_id, action).await?,
    };
    let reply = answer["reply"].as_str().unwrap_or_default();
    let task_id = answer["task_id"].as_str();
    let now = state.runtime.clock().now_ms();
    // The user has the reply either way; a transcript missing it is the lesser harm.
    if let Err(error) = transcript::append(state.runtime.db(), &caller.user, Sender::Bot, reply, task_id, now).await {
        tracing::warn!(%error, user = %caller.user, "cannot keep the bot's reply in the transcript");
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// Transcript lines per page unless `limit` says otherwise, and the most allowed.
const PAGE: usize = 50;
const MAX_PAGE: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TranscriptQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/chat`: the caller's transcript in order, the newest `limit` lines, or with
/// `after` the lines written after that id (what a page that has the rest polls for).
pub async fn transcript(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<TranscriptQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Malformed(format!("invalid query string: {e}")))?
        .into_inner();
    let limit = query.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Malformed(format!("limit must be 1 to {MAX_PAGE}, got {limit}")));
    }
    let (db, user) = (Arc::clone(state.runtime.db()), caller.user.to_string());
    let lines = blocking_query(db, move |conn| db::chat_messages(conn, &user, query.after.as_deref(), limit)).await?;
    let messages: Vec<_> = lines
        .into_iter()
        .map(|line| {
            json!({
                "id": line.id,
                "from": line.sender,
                "text": line.text,
                "task_id": line.task_id,
                "at": super::wire::rfc3339(line.created_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": messages })))
}

async fn summaries(state: &ApiState, caller: &Caller) -> Result<Vec<TaskSummary>, ApiError> {
    let (db, owner) = (Arc::clone(state.runtime.db()), caller.user.to_string());
    let page = blocking_query(db, move |conn| db::list_tasks(conn, &owner, None, None, CANDIDATES)).await?;
    Ok(page
        .tasks
        .into_iter()
        .map(|t| TaskSummary {
            id: t.id,
            title: t.title,
            created_at: t.created_at,
            status: t.status.as_str().to_owned(),
        })
        .collect())
}

async fn show(state: &ApiState, caller: &Caller, task_id: &str, view: View) -> Result<String, ApiError> {
    let (task, eta) = state.runtime.task_view(&caller.user, task_id).await?;
    match view {
        View::Status => Ok(reply::status(&TaskView {
            title: task.task.title.clone(),
            percent: task_percent(&task),
            status: task.task.status.as_str().to_owned(),
            steps: task
                .steps
                .iter()
                .map(|s| StepView {
                    name: s.name.clone(),
                    status: s.status.as_str().to_owned(),
                    error: s.error.clone(),
                    substeps: s.substeps.iter().map(|u| SubstepView { name: u.name.clone(), done: u.done }).collect(),
                })
                .collect(),
            current_step: runtime::current_step(&task).map(|s| s.order),
            eta_seconds: eta.map(|e| e.seconds),
        })),
        View::Logs { step } => {
            let step = match step {
                Some(step) => Some(resolve_step(&task, &step)?),
                None => None,
            };
            let (db, owner, id) = (Arc::clone(state.runtime.db()), caller.user.to_string(), task_id.to_owned());
            let order = step.map(|(order, _)| order);
            // Lines are stored coalesced; a person asking right after a step logged expects
            // to see it, so what this server holds back is written first.
            state.runtime.flush().await;
            let lines = blocking_query(db, move |conn| db::recent_logs(conn, &owner, &id, order, LOG_LINES)).await?;
            let lines: Vec<String> = lines.into_iter().map(|l| l.line).collect();
            Ok(reply::logs(&task.task.title, step, &lines))
        }
    }
}

/// The order and name of the step a message named.
fn resolve_step<'a>(task: &'a StoredTask, step: &StepRef) -> Result<(u32, &'a str), ApiError> {
    let names: Vec<&str> = task.steps.iter().map(|s| s.name.as_str()).collect();
    let order = step_order(step, &names)
        .ok_or_else(|| ApiError::NotFound(format!("{} has no such step: {step:?}", task.task.title)))?;
    Ok((order, names[order as usize - 1]))
}

/// The step a retry or skip means when the message named none: the failed one, or for a
/// skip the current one.
fn default_step(task: &StoredTask, skipping: bool) -> Option<u32> {
    let failed = task.steps.iter().find(|s| s.status == StepStatus::Failed);
    let current = || task.steps.iter().find(|s| !s.status.is_done());
    failed.or_else(|| if skipping { current() } else { None }).map(|s| s.order)
}

async fn act(state: &ApiState, caller: &Caller, task_id: &str, action: Action) -> Result<serde_json::Value, ApiError> {
    let task = state.runtime.task(&caller.user, task_id).await?;
    let title = task.task.title.clone();
    let chosen = |step: &Option<StepRef>, skipping: bool| -> Result<Option<u32>, ApiError> {
        match step {
            Some(step) => Ok(Some(resolve_step(&task, step)?.0)),
            None => Ok(default_step(&task, skipping)),
        }
    };
    // The reply names the step the bot chose.
    let (action, control) = match action {
        Action::Pause => (Action::Pause, Some(Control::Pause)),
        Action::Resume => (Action::Resume, Some(Control::Resume)),
        Action::Cancel => (Action::Cancel, Some(Control::Cancel)),
        Action::Approve => (Action::Approve, Some(Control::Approve { step: None, comment: None })),
        Action::Reject => (Action::Reject, Some(Control::Reject { step: None, comment: None })),
        Action::Restart => (Action::Restart, None),
        Action::Retry { step } => match chosen(&step, false)? {
            Some(n) => (Action::Retry { step: Some(StepRef::Number(n)) }, Some(Control::Retry { step: n })),
            None => {
                return Ok(
                    json!({"reply": reply::refused(&Action::Retry { step }, &title, "no step has failed"), "task_id": task_id}),
                )
            }
        },
        Action::Skip { step } => match chosen(&step, true)? {
            Some(n) => (Action::Skip { step: Some(StepRef::Number(n)) }, Some(Control::Skip { step: n })),
            None => {
                return Ok(
                    json!({"reply": reply::refused(&Action::Skip { step }, &title, "every step is done"), "task_id": task_id}),
                )
            }
        },
    };
    let done = match control {
        Some(control) => forward::command(state, &caller.user, task_id, control).await.map(|()| task_id.to_owned()),
        None => forward::restart(state, &caller.user, task_id).await,
    };
    let now = state.runtime.clock().now_ms();
    match done {
        Ok(acted_on) => {
            with_conversation(state, &caller.user, now, |c| c.discussed(&acted_on)).await?;
            Ok(json!({"reply": reply::acted(&action, &title), "task_id": acted_on, "action": action.verb()}))
        }
        Err(ApiError::Conflict(why)) => Ok(json!({"reply": reply::refused(&action, &title, &why), "task_id": task_id})),
        Err(other) => Err(other),
    }
}
