//! The stand-alone HTTP server: health checks, and [`Stepwise`] at the root with API tokens
//! (the API, [`crate::api`], the metrics, [`crate::metrics`], and the web pages,
//! [`crate::web`]), and JSON errors for anything else, every request with an id and counted
//! ([`crate::observe`]).

use std::any::Any;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use config::{ApiSettings, NotificationSettings};
use runtime::Runtime;
use serde_json::json;

use crate::api::error::error_body;
use crate::api::{self, ApiState};
use crate::embed::{Options, Stepwise};
use crate::notify::email::EmailError;

/// How long `/readyz` waits for a database connection before answering 503.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listener could not be used.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    /// Email is configured but cannot be set up.
    #[error("cannot set up email: {0}")]
    Email(#[from] EmailError),
}

/// Builds the server on an already-bound listener (so tests can bind port 0) with a
/// graceful-shutdown timeout and these `[notifications]` settings; it stops on SIGINT or
/// SIGTERM. Starts the [`crate::notify::Notifier`] on the current arbiter: call it inside the actix system.
pub fn server(
    listener: TcpListener,
    runtime: Runtime,
    api: ApiSettings,
    notifications: NotificationSettings,
    shutdown_timeout: Duration,
) -> Result<Server, ServerError> {
    let stalled_after = Duration::from_secs(api.ws_client_timeout_s);
    let options = Options { api, notifications, ..Options::default() };
    let stepwise = Stepwise::start(runtime, listener.local_addr()?, options)?;
    Ok(HttpServer::new(move || {
        App::new()
            .service(api::get_only("/healthz", web::get().to(healthz)))
            .service(api::get_only("/readyz", web::get().to(readyz)))
            .configure(|config| stepwise.configure(config))
            .default_service(web::to(api::no_route))
            .wrap(actix_web::middleware::from_fn(crate::observe::requests))
    })
    // Progress frames are small and often follow each other closely: send each at once.
    .tcp_nodelay(true)
    .on_connect(move |connection, _| drop_when_stalled(connection, stalled_after))
    .listen(listener)?
    .shutdown_timeout(shutdown_timeout.as_secs())
    .run())
}

/// Has the kernel drop a connection whose peer leaves the server's data unread (its receive
/// window shut) or unacknowledged for `after` (TCP_USER_TIMEOUT). A WebSocket client that
/// stops reading cannot be pinged once its socket is full (the session is not polled while
/// the write waits), so without this it held its connection and megabytes of kernel send
/// queue until TCP gave up by itself, many minutes later. An application that mounts
/// Stepwise ([`crate::embed`]) passes it to its own `HttpServer::on_connect`.
pub fn drop_when_stalled(connection: &dyn Any, after: Duration) {
    let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else { return };
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(after)) {
        tracing::warn!(%error, "cannot set TCP_USER_TIMEOUT: a client that stops reading is kept until TCP gives up");
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let db = std::sync::Arc::clone(state.runtime.db());
    let checked = web::block(move || db.check(READY_CHECK_TIMEOUT)).await;
    match checked {
        Ok(Ok(())) => {
            HttpResponse::Ok().json(json!({"status": "ready", "database": state.runtime.db().backend().name()}))
        }
        Ok(Err(error)) => unavailable().json(error_body("database_unavailable", &error.to_string())),
        Err(_) => unavailable().json(error_body("shutting_down", "the server is shutting down")),
    }
}

fn unavailable() -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::ServiceUnavailable();
    response.insert_header((actix_web::http::header::RETRY_AFTER, api::error::UNAVAILABLE_RETRY_AFTER_S.to_string()));
    response
}
