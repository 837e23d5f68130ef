//! The notification routes: `GET /api/notifications` (the caller's delivery log),
//! `GET` / `PUT /api/notifications/preferences`, web push: `GET
//! /api/push/vapid-public-key`, `POST /api/push/subscriptions`, `DELETE
//! /api/push/subscriptions/{subscription_id}`, and `POST /api/approval-links/{token}`, where
//! an approval push's Approve / Reject links are used (no API token: the link is the
//! credential).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::{blocking_query, db_error, ApiError};
use super::wire::rfc3339;
use super::{body, ApiState};
use crate::notify::links::{ApprovalLink, LinkError, SecretError};
use crate::notify::prefs::{self, Preferences, PrefsError};
use crate::notify::push::{PushError, PushSubscriptionJson};

/// Log entries per page unless `limit` says otherwise, and the most allowed.
const PAGE: usize = 50;
const MAX_PAGE: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

fn prefs_error(error: PrefsError) -> ApiError {
    match error {
        PrefsError::Db(error) => db_error(error),
        PrefsError::ShuttingDown => ApiError::Unavailable("the server is shutting down".to_owned()),
    }
}

/// `GET /api/notifications`: the caller's newest delivery attempts first.
pub async fn list(state: web::Data<ApiState>, caller: Caller, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Malformed(format!("invalid query string: {e}")))?;
    let limit = query.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Malformed(format!("limit must be 1 to {MAX_PAGE}, got {limit}")));
    }
    let (db, user) = (std::sync::Arc::clone(state.runtime.db()), caller.user.to_string());
    let records = blocking_query(db, move |conn| db::list_notifications(conn, &user, limit)).await?;
    let notifications: Vec<_> = records
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "task_id": r.task_id,
                "event": r.event,
                "channel": r.channel,
                "target": r.target,
                "message": r.message,
                "attempt": r.attempt,
                "outcome": r.outcome,
                "detail": r.detail,
                "at": rfc3339(r.created_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "notifications": notifications })))
}

/// `GET /api/notifications/preferences`
pub async fn preferences(state: web::Data<ApiState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let preferences = prefs::load(state.runtime.db(), &caller.user).await.map_err(prefs_error)?;
    Ok(HttpResponse::Ok().json(preferences))
}

/// `PUT /api/notifications/preferences`: replaces the caller's preferences.
pub async fn set_preferences(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let sent: Preferences = body::json(&req, payload, state.limits.max_body_bytes).await?;
    let preferences =
        sent.validated(state.notifications.settings.allow_private_endpoints).map_err(ApiError::InvalidRequest)?;
    let now = state.runtime.clock().now_ms();
    prefs::save(state.runtime.db(), &caller.user, &preferences, now).await.map_err(prefs_error)?;
    Ok(HttpResponse::Ok().json(preferences))
}

fn push_error(error: PushError) -> ApiError {
    match error {
        PushError::Db(error) => db_error(error),
        PushError::ShuttingDown => ApiError::Unavailable("the server is shutting down".to_owned()),
        PushError::BadKey => {
            tracing::error!(%error, "web push is unavailable");
            ApiError::Internal(error.to_string())
        }
    }
}

/// `GET /api/push/vapid-public-key`: what a page passes to `PushManager.subscribe` as
/// `applicationServerKey`.
pub async fn vapid_public_key(state: web::Data<ApiState>, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let now = state.runtime.clock().now_ms();
    let vapid = state.notifications.vapid(state.runtime.db(), now).await.map_err(push_error)?;
    Ok(HttpResponse::Ok().json(json!({ "public_key": vapid.public_key })))
}

/// `POST /api/push/subscriptions`: the browser's `PushSubscription` JSON.
pub async fn subscribe(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let sent: PushSubscriptionJson = body::json(&req, payload, state.limits.max_body_bytes).await?;
    sent.validate(state.notifications.settings.allow_private_endpoints).map_err(ApiError::InvalidRequest)?;
    let record = db::PushSubscriptionRecord {
        id: format!("{:016x}", rand::random::<u64>()),
        user: caller.user.to_string(),
        endpoint: sent.endpoint,
        // Stored without padding, the form web-push decodes.
        p256dh: sent.keys.p256dh.trim_end_matches('=').to_owned(),
        auth: sent.keys.auth.trim_end_matches('=').to_owned(),
        created_at: state.runtime.clock().now_ms(),
    };
    let db = std::sync::Arc::clone(state.runtime.db());
    let stored = blocking_query(db, move |conn| db::save_push_subscription(conn, &record)).await?;
    Ok(HttpResponse::Created().json(json!({
        "id": stored.id,
        "endpoint": stored.endpoint,
        "created_at": rfc3339(stored.created_at),
    })))
}

/// `DELETE /api/push/subscriptions/{subscription_id}`: only the caller's own.
pub async fn unsubscribe(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (db, user, wanted) = (std::sync::Arc::clone(state.runtime.db()), caller.user.to_string(), id.clone());
    let deleted = blocking_query(db, move |conn| db::delete_push_subscription(conn, &user, &wanted)).await?;
    if deleted {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no push subscription {id}")))
    }
}

fn secret_error(error: SecretError) -> ApiError {
    match error {
        SecretError::Db(error) => db_error(error),
        SecretError::ShuttingDown => ApiError::Unavailable("the server is shutting down".to_owned()),
        SecretError::BadSecret => {
            tracing::error!(%error, "approval links are unavailable");
            ApiError::Internal(error.to_string())
        }
    }
}

fn link_error(error: LinkError) -> ApiError {
    match error {
        LinkError::Malformed => ApiError::Malformed(error.to_string()),
        LinkError::Forged => ApiError::Forbidden(error.to_string()),
        LinkError::Expired { expires_at } => ApiError::Expired(format!(
            "this approval link expired at {}; approve or reject on the task's page instead",
            rfc3339(expires_at)
        )),
    }
}

/// `POST /api/approval-links/{token}`: makes the decision the link carries, as the task's
/// owner, through the same path as `POST /api/tasks/{task_id}/approve|reject`. The link is
/// marked used before anything is decided, so of two uses at once only one acts; if the
/// decision then cannot be made (the step no longer waits, the server is busy) the mark is
/// taken back, so the link is spent only by the decision it carries.
pub async fn use_approval_link(
    state: web::Data<ApiState>,
    token: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.auth.admit_address(req.peer_addr())?;
    let now = state.runtime.clock().now_ms();
    let key = state.notifications.link_key(state.runtime.db(), now).await.map_err(secret_error)?;
    let link = key.verify(&token, now).map_err(link_error)?;
    let used = db::ApprovalLinkUse {
        link_id: link.id.clone(),
        task_id: link.task_id.clone(),
        step: link.step,
        decision: link.decision.name().to_owned(),
        user: link.owner.clone(),
        expires_at: link.expires_at,
        used_at: now,
    };
    let db = std::sync::Arc::clone(state.runtime.db());
    if !blocking_query(db, move |conn| db::use_approval_link(conn, &used)).await? {
        return Err(ApiError::AlreadyUsed("this approval link was already used".to_owned()));
    }
    let decided = decide(&state, &link).await;
    if decided.is_err() {
        let (db, id) = (std::sync::Arc::clone(state.runtime.db()), link.id.clone());
        if let Err(error) = blocking_query(db, move |conn| db::release_approval_link(conn, &id)).await {
            tracing::warn!(%error, task_id = link.task_id, "cannot make an approval link usable again after it failed");
        }
    }
    decided
}

/// Decides for the link's step. The runtime refuses the decision unless that very step is
/// the one waiting, so a link can never decide a later approval of the same task.
async fn decide(state: &ApiState, link: &ApprovalLink) -> Result<HttpResponse, ApiError> {
    let control = link.decision.control(link.step);
    super::forward::command(state, &link.owner, &link.task_id, control).await.map_err(|error| match error {
        ApiError::Conflict(_) => {
            ApiError::Conflict(format!("step {} of task {} is no longer waiting for approval", link.step, link.task_id))
        }
        other => other,
    })?;
    Ok(HttpResponse::Ok().json(super::tasks::document(state, &link.owner, &link.task_id).await?))
}
