//! `GET /metrics`: the server's figures in the Prometheus text format. The series live in
//! the runtime's own registry ([`runtime::Metrics`]): the runtime's (steps, percents,
//! commits, the hub, ETAs) and the server's, added here (HTTP requests, WebSockets, tasks by
//! status, the database pool) and by the notifier (delivery attempts). Every name starts
//! with `stepwise_`.
//!
//! Served only when `api.metrics_token` is set, and only to a request that presents it as
//! its bearer token: the figures cover every user, so a user's API token does not open
//! them. Without the setting the route answers 404 `not_found`, saying how to turn it on.
//! Tasks by status and the pool are read when scraped; the rest is counted as it happens.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use runtime::TaskStatus;

use crate::api::auth::{request_token, same_secret};
use crate::api::error::{blocking_query, ApiError};
use crate::api::ApiState;

/// The text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// HTTP request latency, seconds: a tenth of a millisecond to the forwarding timeout.
const HTTP_SECONDS: &[f64] =
    &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

/// What the route label says of a request that matched no route: one series for every
/// unknown path, not one per path a scanner tries.
pub const NO_ROUTE: &str = "no_route";

/// The server's series.
pub struct ApiMetrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    /// WebSocket sessions open now.
    pub websockets: IntGauge,
    tasks: IntGaugeVec,
    db_connections: IntGaugeVec,
}

impl ApiMetrics {
    /// The server's series, added to the runtime's registry.
    pub fn new(metrics: &runtime::Metrics) -> ApiMetrics {
        ApiMetrics {
            http_requests: metrics.register(IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests answered, by method, route pattern and status."),
                &["method", "route", "status"],
            )),
            http_seconds: metrics.register(HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time to answer HTTP requests, by method and route pattern.",
                )
                .buckets(HTTP_SECONDS.to_vec()),
                &["method", "route"],
            )),
            websockets: metrics.register(IntGauge::new("websocket_connections", "WebSocket sessions open now.")),
            tasks: metrics.register(IntGaugeVec::new(
                Opts::new("tasks", "Tasks in the database, by status (every server's)."),
                &["status"],
            )),
            db_connections: metrics.register(IntGaugeVec::new(
                Opts::new(
                    "db_connections",
                    "This server's database pool: connections in use and idle, callers waiting.",
                ),
                &["state"],
            )),
            registry: metrics.registry().clone(),
        }
    }

    /// Counts a request answered with `status` after `seconds`; `route` is the pattern it
    /// matched (`/api/tasks/{task_id}/progress`), never the path, so the ids in paths make
    /// no series.
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.http_seconds.with_label_values(&[method, route]).observe(seconds);
    }
}

/// `GET /metrics`.
pub async fn serve(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let Some(expected) = &state.limits.metrics_token else {
        return Err(ApiError::NotFound(
            "metrics are off: set api.metrics_token and scrape with it as the bearer token".to_owned(),
        ));
    };
    let token = request_token(&req, false)?;
    if !same_secret(token.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Unauthorized("not the metrics token (api.metrics_token)".to_owned()));
    }
    let metrics = &state.metrics;
    let counts = blocking_query(Arc::clone(state.runtime.db()), db::count_tasks_by_status).await?;
    for status in TaskStatus::ALL {
        let count = counts.iter().find(|(counted, _)| counted == status).map_or(0, |(_, count)| *count);
        metrics.tasks.with_label_values(&[status.as_str()]).set(count);
    }
    let pool = state.runtime.db().pool_state();
    metrics.db_connections.with_label_values(&["in_use"]).set(i64::from(pool.in_use));
    metrics.db_connections.with_label_values(&["idle"]).set(i64::from(pool.idle));
    metrics.db_connections.with_label_values(&["waiting"]).set(i64::from(pool.waiting));
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&metrics.registry.gather())
        .map_err(|error| ApiError::Internal(format!("cannot write the metrics: {error}")))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}
