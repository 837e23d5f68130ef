//! The API's one error type: every failure becomes `{"error": {"code", "message",
//! "request_id"}}` with the status its code stands for, so clients branch on `code` and show
//! `message`, and an operator finds the request's log lines by `request_id`.

use std::future::Future;
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use runtime::RuntimeError;
use serde_json::json;

tokio::task_local! {
    /// The id of the request being answered, which its error bodies carry.
    static REQUEST_ID: Arc<str>;
}

/// Answers a request (`answer`) with `id` as the request id its errors carry.
pub async fn with_request_id<F: Future>(id: Arc<str>, answer: F) -> F::Output {
    REQUEST_ID.scope(id, answer).await
}

/// The id of the request being answered here, if any.
pub fn request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// The body of every error answer: `{"error": {"code", "message", "request_id"}}`, the
/// last while a request is being answered.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(id) = request_id() {
        error["request_id"] = json!(&*id);
    }
    json!({ "error": error })
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or a path or query value does not parse.
    #[error("{0}")]
    Malformed(String),
    /// The body is JSON but not of the expected shape (wrong type, unknown or missing field).
    #[error("{0}")]
    InvalidRequest(String),
    /// No token, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// The request is refused whoever makes it (e.g. a WebSocket from a foreign origin).
    #[error("{0}")]
    Forbidden(String),
    /// No such task or step, or not the caller's.
    #[error("{0}")]
    NotFound(String),
    /// No such route.
    #[error("no route {0}")]
    NoRoute(String),
    /// The route exists but not with this method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
    },
    /// Not allowed in the task's or step's current state.
    #[error("{0}")]
    Conflict(String),
    /// A single-use credential (an approval link) that was used already.
    #[error("{0}")]
    AlreadyUsed(String),
    /// A credential (an approval link) that was genuine and has expired.
    #[error("{0}")]
    Expired(String),
    /// The body is larger than the limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The body is not sent as `application/json`.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// The plan is well-formed but not acceptable.
    #[error("{0}")]
    InvalidPlan(String),
    /// A worker's report is well-formed but not acceptable.
    #[error("{0}")]
    InvalidReport(String),
    /// An `Idempotency-Key` the caller used within its window for another request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The token made too many requests.
    #[error("too many requests; try again in {retry_after_s} s")]
    RateLimited {
        /// Seconds until a request is allowed again.
        retry_after_s: u64,
    },
    /// Not now: the database is unreachable or the server is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The task is run by another live server: answered like `Unavailable`, and the
    /// forwarding middleware carries the request there instead.
    #[error("{0}")]
    HeldElsewhere(String),
    /// Something failed on our side; the details are in the server's log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable, machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::AlreadyUsed(_) => "already_used",
            ApiError::Expired(_) => "expired",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::InvalidPlan(_) => "invalid_plan",
            ApiError::InvalidReport(_) => "invalid_report",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) | ApiError::HeldElsewhere(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ApiError {
    /// The error another server of the cluster answered (`{"error": {"code", "message"}}`
    /// with `status`), as this server answers it.
    pub fn answered_elsewhere(status: StatusCode, body: &[u8]) -> ApiError {
        let error: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let code = error["error"]["code"].as_str().unwrap_or_default();
        let message = error["error"]["message"].as_str().map_or_else(
            || format!("the server running the task answered {status}"),
            |message| message.strip_prefix("internal error: ").unwrap_or(message).to_owned(),
        );
        match code {
            "not_found" => ApiError::NotFound(message),
            "conflict" => ApiError::Conflict(message),
            "invalid_request" => ApiError::InvalidRequest(message),
            "unavailable" => ApiError::Unavailable(message),
            _ => ApiError::Internal(message),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) | ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::AlreadyUsed(_) => StatusCode::CONFLICT,
            ApiError::Expired(_) => StatusCode::GONE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidPlan(_) | ApiError::InvalidReport(_) | ApiError::IdempotencyKeyReused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::HeldElsewhere(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::RateLimited { retry_after_s } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::Unavailable(_) | ApiError::HeldElsewhere(_) => {
                response.insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_S.to_string()));
            }
            _ => {}
        }
        response.json(error_body(self.code(), &self.to_string()))
    }
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> ApiError {
        match error {
            RuntimeError::TaskNotFound(_) | RuntimeError::StepNotFound { .. } => ApiError::NotFound(error.to_string()),
            RuntimeError::InvalidTransition { .. } | RuntimeError::InvalidStepTransition { .. } => {
                ApiError::Conflict(error.to_string())
            }
            RuntimeError::InvalidPlan(_) => ApiError::InvalidPlan(error.to_string()),
            RuntimeError::InvalidReport(_) => ApiError::InvalidReport(error.to_string()),
            RuntimeError::IdempotencyKeyReused(_) => ApiError::IdempotencyKeyReused(error.to_string()),
            RuntimeError::HeldElsewhere(_) => ApiError::HeldElsewhere(error.to_string()),
            RuntimeError::ShuttingDown => ApiError::Unavailable(error.to_string()),
            RuntimeError::Db(db) => db_error(db),
        }
    }
}

/// The `Retry-After` of a 503: about the time a database restart or a takeover takes.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 5;

/// Runs a query on actix's blocking pool (never on a worker's event loop), with the API's
/// errors.
pub async fn blocking_query<T, F>(db: std::sync::Arc<db::Database>, query: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut db::AnyConnection) -> Result<T, db::DbError> + Send + 'static,
{
    actix_web::web::block(move || {
        let mut conn = db.conn()?;
        query(&mut conn)
    })
    .await
    .map_err(|_| ApiError::Unavailable("the server is shutting down".to_owned()))?
    .map_err(db_error)
}

impl From<crate::transcript::TranscriptError> for ApiError {
    fn from(error: crate::transcript::TranscriptError) -> ApiError {
        match error {
            crate::transcript::TranscriptError::Db(error) => db_error(error),
            crate::transcript::TranscriptError::ShuttingDown => {
                ApiError::Unavailable("the server is shutting down".to_owned())
            }
        }
    }
}

/// A database failure, logged in full and reported without internals; no such task (or
/// another user's, which the database's readers tell no differently) is a 404 like any
/// missing task.
pub fn db_error(error: db::DbError) -> ApiError {
    if let db::DbError::NotFound(_) = error {
        return ApiError::NotFound(error.to_string());
    }
    if let db::DbError::KeyTaken(_) = error {
        return ApiError::Conflict(error.to_string());
    }
    if error.is_unavailable() {
        tracing::warn!(%error, "database unavailable while answering a request");
        return ApiError::Unavailable("the database is unavailable; try again shortly".to_owned());
    }
    tracing::error!(%error, "database error while answering a request");
    ApiError::Internal("a database error; the server's log has the details".to_owned())
}
