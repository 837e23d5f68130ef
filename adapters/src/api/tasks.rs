//! The REST routes on tasks: create and list, the progress document, history and logs,
//! the controls, and reports from outside workers on `external` steps.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use runtime::{Control, Eta, ExternalReport, ReportOutcome, StoredTask, TaskPlan, TaskStatus};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{blocking_query, ApiError};
use super::wire::{rfc3339, ProgressDocument};
use super::{body, ApiState};
use crate::plans::{PlanDocument, PlanStep};

/// Tasks per page of `GET /api/tasks` unless `limit` says otherwise, and the most allowed.
const PAGE: usize = 50;
const MAX_PAGE: usize = 200;
/// Log lines per page unless `limit` says otherwise, and the most allowed.
const LOG_PAGE: usize = 500;
const MAX_LOG_PAGE: usize = 5000;

/// `POST /api/tasks`: a plan, and whether to start it at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTask {
    title: String,
    #[serde(default = "default_complexity")]
    complexity: u32,
    #[serde(default = "default_start")]
    start: bool,
    steps: Vec<PlanStep>,
}

fn default_complexity() -> u32 {
    1
}

fn default_start() -> bool {
    true
}

/// `{"step"?, "comment"?}` of approve and reject.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    step: Option<u32>,
    comment: Option<String>,
}

/// What an outside worker reports on an `external` step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    progress: Option<f64>,
    substep_done: Option<String>,
    log: Option<String>,
    status: Option<ReportStatus>,
    error: Option<String>,
    output: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ReportStatus {
    Completed,
    Failed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    step: Option<u32>,
    after: Option<i64>,
    limit: Option<usize>,
}

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::Malformed(format!("invalid query string: {e}")))
}

fn step_order(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>()
        .ok()
        .filter(|order| *order > 0)
        .ok_or_else(|| ApiError::Malformed(format!("a step order is a positive integer, got {text:?}")))
}

/// `user`'s task as a progress document.
pub(crate) async fn document(state: &ApiState, user: &str, task_id: &str) -> Result<Value, ApiError> {
    let view = state.runtime.task_view(user, task_id).await?;
    let places = queue_places(state, std::slice::from_ref(&view)).await?;
    let (task, eta) = view;
    let document =
        ProgressDocument { queue_place: places.get(task_id).copied(), ..ProgressDocument::new(&task, eta.as_ref()) };
    serde_json::to_value(document).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The queue places of those of `views` that are pending (one query, none if no task is).
pub(crate) async fn queue_places(
    state: &ApiState,
    views: &[(StoredTask, Option<Eta>)],
) -> Result<HashMap<String, u32>, ApiError> {
    let pending: Vec<String> =
        views.iter().filter(|(t, _)| t.task.status == TaskStatus::Pending).map(|(t, _)| t.task.id.clone()).collect();
    match pending.is_empty() {
        true => Ok(HashMap::new()),
        false => Ok(state.runtime.queue_places(&pending).await?),
    }
}

/// `POST /api/tasks`
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let (request, request_hash): (CreateTask, _) = match key {
        None => (body::json(&req, payload, state.limits.max_body_bytes).await?, None),
        Some(_) => {
            // A retry is told by its body as JSON, whatever its spacing.
            let body = body::json::<Value>(&req, payload, state.limits.max_body_bytes).await?.to_string();
            (body::parse(body.as_bytes())?, Some(hex_sha256(body.as_bytes())))
        }
    };
    let start = request.start;
    let allowed = &state.limits.step_kinds;
    if let Some(step) = request.steps.iter().find(|s| !allowed.contains(&s.kind)) {
        return Err(ApiError::InvalidPlan(format!(
            "invalid plan: step kind {:?} is not allowed over the API (allowed: {}; the server's api.step_kinds setting)",
            step.kind,
            allowed.join(", ")
        )));
    }
    let plan =
        TaskPlan::from(PlanDocument { title: request.title, complexity: request.complexity, steps: request.steps });
    let (task_id, replayed) = match (key, request_hash) {
        (Some(key), Some(hash)) => {
            let created = state.runtime.create_task_once(&caller.user, &plan, start, key, &hash).await?;
            (created.task_id, created.replayed)
        }
        _ => (state.runtime.create_task(&caller.user, &plan, start).await?, false),
    };
    let mut answer = created(&state, &caller, &task_id).await?;
    if replayed {
        answer.headers_mut().insert(IDEMPOTENT_REPLAYED, header::HeaderValue::from_static("true"));
    }
    Ok(answer)
}

/// Sent on the answer to a request whose `Idempotency-Key` an earlier request made the task with.
const IDEMPOTENT_REPLAYED: header::HeaderName = header::HeaderName::from_static("idempotent-replayed");

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(None) };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(key)),
        _ => Err(ApiError::InvalidRequest(
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters (a UUID, say)".to_owned(),
        )),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn created(state: &ApiState, caller: &Caller, task_id: &str) -> Result<HttpResponse, ApiError> {
    let document = document(state, &caller.user, task_id).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, state.mount.join(&format!("/api/tasks/{task_id}/progress"))))
        .json(document))
}

/// `GET /api/tasks`
pub async fn list(state: web::Data<ApiState>, caller: Caller, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query: ListQuery = query(&req)?;
    let status = match &query.status {
        None => None,
        Some(text) => Some(TaskStatus::ALL.iter().copied().find(|s| s.as_str() == text).ok_or_else(|| {
            let known: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::Malformed(format!("unknown status {text:?}; expected one of {}", known.join(", ")))
        })?),
    };
    let limit = query.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Malformed(format!("limit must be 1 to {MAX_PAGE}, got {limit}")));
    }
    let before = query.cursor.as_deref().map(parse_cursor).transpose()?;
    let (db, owner) = (std::sync::Arc::clone(state.runtime.db()), caller.user.to_string());
    let page = blocking_query(db, move |conn| db::list_tasks(conn, &owner, status, before, limit)).await?;
    let ids: Vec<String> = page.tasks.into_iter().map(|task| task.id).collect();
    // A task deleted between the page and the views is left out.
    let views = state.runtime.task_views(&caller.user, &ids).await?;
    let places = queue_places(&state, &views).await?;
    let tasks: Vec<ProgressDocument> = views
        .iter()
        .map(|(task, eta)| ProgressDocument {
            queue_place: places.get(&task.task.id).copied(),
            ..ProgressDocument::new(task, eta.as_ref())
        })
        .collect();
    let next_cursor = page.next.map(|(created_at, id)| format!("{created_at}.{id}"));
    Ok(HttpResponse::Ok().json(json!({"tasks": tasks, "next_cursor": next_cursor})))
}

fn parse_cursor(text: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::Malformed(format!("invalid cursor {text:?}; pass next_cursor from the previous page"));
    let (created_at, id) = text.split_once('.').ok_or_else(bad)?;
    Ok((created_at.parse().map_err(|_| bad())?, id.to_owned()))
}

/// `GET /api/tasks/{task_id}/progress`
pub async fn progress(
    state: web::Data<ApiState>,
    caller: Caller,
    task_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(document(&state, &caller.user, &task_id).await?))
}

/// `GET /api/tasks/{task_id}/history`
pub async fn history(
    state: web::Data<ApiState>,
    caller: Caller,
    task_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // Read your own writes: what this server acknowledged and holds back is written first.
    state.runtime.flush().await;
    let (db, owner, id) = (std::sync::Arc::clone(state.runtime.db()), caller.user.to_string(), task_id.clone());
    let rows = blocking_query(db, move |conn| db::progress_history(conn, &owner, &id)).await?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"id": r.id, "seq": r.seq, "step": r.step, "percent": r.percent, "status": r.status.as_str(),
                   "updated_at": rfc3339(r.updated_at)})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"task_id": &*task_id, "rows": rows})))
}

/// `GET /api/tasks/{task_id}/logs`
pub async fn logs(
    state: web::Data<ApiState>,
    caller: Caller,
    task_id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query: LogQuery = query(&req)?;
    let limit = query.limit.unwrap_or(LOG_PAGE);
    if !(1..=MAX_LOG_PAGE).contains(&limit) {
        return Err(ApiError::Malformed(format!("limit must be 1 to {MAX_LOG_PAGE}, got {limit}")));
    }
    if let Some(step) = query.step {
        let task = state.runtime.task(&caller.user, &task_id).await?;
        if !task.steps.iter().any(|s| s.order == step) {
            return Err(ApiError::NotFound(format!("task {} has no step {step}", &*task_id)));
        }
    }
    let after = query.after.unwrap_or(0);
    // Read your own writes: every line this server acknowledged is written first.
    state.runtime.flush().await;
    let (db, owner, id) = (std::sync::Arc::clone(state.runtime.db()), caller.user.to_string(), task_id.clone());
    let lines = blocking_query(db, move |conn| db::logs_after(conn, &owner, &id, query.step, after, limit)).await?;
    let next_after = lines.last().map_or(after, |line| line.seq);
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| json!({"seq": l.seq, "step": l.step, "stream": l.stream.as_str(), "line": l.line, "at": rfc3339(l.created_at)}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"task_id": &*task_id, "lines": lines, "next_after": next_after})))
}

/// Applies a control to `user`'s task and answers with the document after it: what every
/// control route does for its caller (the forwarding middleware carries the request to the
/// server running the task).
async fn apply(state: &ApiState, user: &str, task_id: &str, control: Control) -> Result<HttpResponse, ApiError> {
    state.runtime.control(user, task_id, control).await?;
    Ok(HttpResponse::Ok().json(document(state, user, task_id).await?))
}

/// `POST /api/tasks/{task_id}/start | pause | resume | cancel`: the controls that take no
/// body, named by the route's last segment.
pub async fn control(
    state: web::Data<ApiState>,
    caller: Caller,
    task_id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let control = match req.match_pattern().as_deref().and_then(|pattern| pattern.rsplit('/').next()) {
        Some("start") => Control::Start,
        Some("pause") => Control::Pause,
        Some("resume") => Control::Resume,
        Some("cancel") => Control::Cancel,
        other => return Err(ApiError::Internal(format!("no control is registered at {other:?}"))),
    };
    apply(&state, &caller.user, &task_id, control).await
}

/// `POST /api/tasks/{task_id}/approve`
pub async fn approve(
    state: web::Data<ApiState>,
    caller: Caller,
    task_id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let decision: DecisionBody = body::optional_json(&req, payload, state.limits.max_body_bytes).await?;
    apply(&state, &caller.user, &task_id, Control::Approve { step: decision.step, comment: decision.comment }).await
}

/// `POST /api/tasks/{task_id}/reject`
pub async fn reject(
    state: web::Data<ApiState>,
    caller: Caller,
    task_id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let decision: DecisionBody = body::optional_json(&req, payload, state.limits.max_body_bytes).await?;
    apply(&state, &caller.user, &task_id, Control::Reject { step: decision.step, comment: decision.comment }).await
}

/// `POST /api/tasks/{task_id}/restart`: cancels the task if it is not over and creates a
/// fresh run of the same plan (201 with the new task's document).
pub async fn restart(
    state: web::Data<ApiState>,
    caller: Caller,
    task_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let new_id = state.runtime.restart(&caller.user, &task_id).await?;
    created(&state, &caller, &new_id).await
}

/// `POST /api/tasks/{task_id}/steps/{order}/retry`
pub async fn retry(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (task_id, order) = path.into_inner();
    apply(&state, &caller.user, &task_id, Control::Retry { step: step_order(&order)? }).await
}

/// `POST /api/tasks/{task_id}/steps/{order}/skip`
pub async fn skip(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (task_id, order) = path.into_inner();
    apply(&state, &caller.user, &task_id, Control::Skip { step: step_order(&order)? }).await
}

/// `POST /api/tasks/{task_id}/steps/{order}/report`
pub async fn report(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (task_id, order) = path.into_inner();
    let step = step_order(&order)?;
    let report: Report = body::json(&req, payload, state.limits.max_body_bytes).await?;
    let report = external_report(report)?;
    state.runtime.report(&caller.user, &task_id, step, report).await?;
    Ok(HttpResponse::Ok().json(document(&state, &caller.user, &task_id).await?))
}

fn external_report(report: Report) -> Result<ExternalReport, ApiError> {
    if let Some(percent) = report.progress.filter(|p| !(0.0..=100.0).contains(p)) {
        return Err(ApiError::InvalidReport(format!("progress is a percent, 0 to 100, got {percent}")));
    }
    let outcome = match (report.status, report.error, report.output) {
        (None, None, None) => None,
        (Some(ReportStatus::Completed), None, output) => Some(ReportOutcome::Completed { output }),
        (Some(ReportStatus::Failed), error, None) => {
            Some(ReportOutcome::Failed { error: error.unwrap_or_else(|| "the worker reported a failure".to_owned()) })
        }
        (Some(ReportStatus::Completed), Some(_), _) => {
            return Err(ApiError::InvalidReport("error goes with status \"failed\", not \"completed\"".to_owned()))
        }
        (Some(ReportStatus::Failed), _, Some(_)) => {
            return Err(ApiError::InvalidReport("output goes with status \"completed\", not \"failed\"".to_owned()))
        }
        (None, _, _) => {
            return Err(ApiError::InvalidReport(
                "error and output need a status (\"failed\" or \"completed\")".to_owned(),
            ))
        }
    };
    if report.progress.is_none() && report.substep_done.is_none() && report.log.is_none() && outcome.is_none() {
        return Err(ApiError::InvalidReport("an empty report; send progress, substep_done, log or status".to_owned()));
    }
    Ok(ExternalReport { progress: report.progress, substep_done: report.substep_done, log: report.log, outcome })
}
