//! The HTTP and WebSocket API (documented in `openapi.json`, served at
//! `/api/openapi.json`): REST routes on the caller's tasks in [`tasks`], the realtime
//! sessions in [`ws`], the bot (`POST /api/chat`) in `ask`, the notification, web push and
//! approval-link routes in `notifications`, the cluster's servers in `cluster`, requests
//! for a task another server runs carried there in `forward`, bearer tokens and rates in [`auth`], the JSON
//! shapes in [`wire`].
//! Every error is `{"error": {"code", "message", "request_id"}}` ([`error::ApiError`]),
//! unknown routes and methods included.

pub(crate) mod ask;
pub mod auth;
pub(crate) mod body;
pub(crate) mod cluster;
pub mod error;
pub mod forward;
pub(crate) mod notifications;
pub(crate) mod tasks;
pub mod wire;
pub mod ws;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use config::ApiSettings;
use runtime::Runtime;

use self::auth::{Authenticator, SignIn};
use self::error::ApiError;
use crate::mount::MountPath;
use crate::notify::NotifyConfig;

/// The OpenAPI 3 document of every route, kept true by a test that holds the routes
/// against it.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the API's handlers share.
pub struct ApiState {
    /// The task runtime.
    pub runtime: Runtime,
    /// Who is asking, and rates.
    pub auth: Authenticator,
    /// Where the API lives: the root, or an application's path for Stepwise.
    pub mount: MountPath,
    /// The OpenAPI document, its server being the mount path.
    openapi: web::Bytes,
    /// Sizes, origins and timings from the `[api]` settings.
    pub limits: ApiSettings,
    /// The `[notifications]` settings and the VAPID key pair.
    pub notifications: NotifyConfig,
    /// Carries requests for tasks another server runs to that server.
    pub forwarder: forward::Forwarder,
    /// The server's series in the runtime's metrics.
    pub metrics: crate::metrics::ApiMetrics,
}

impl ApiState {
    /// The API over `runtime` at `mount`, authenticating as `sign_in` says, with the `[api]`
    /// settings and the notifications' configuration.
    pub fn new(
        runtime: Runtime,
        mount: MountPath,
        sign_in: SignIn,
        limits: ApiSettings,
        notifications: NotifyConfig,
    ) -> ApiState {
        let auth = Authenticator::new(
            Arc::clone(runtime.db()),
            Arc::clone(runtime.clock()),
            sign_in,
            limits.token_cache_s,
            limits.requests_per_second,
            limits.request_burst,
        );
        let metrics = crate::metrics::ApiMetrics::new(runtime.metrics());
        let openapi = openapi_at(&mount, &limits);
        let forwarder = forward::Forwarder::default();
        ApiState { runtime, auth, mount, openapi, limits, notifications, forwarder, metrics }
    }
}

/// [`OPENAPI`] with the mount path as its server's URL (paths in the document are relative
/// to it), unchanged at the root.
/// The OpenAPI document as this server serves it: at its mount path, and with the step
/// kinds and limits of its `[api]` settings, so a client (or a fuzzer) knows what it takes.
fn openapi_at(mount: &MountPath, limits: &ApiSettings) -> web::Bytes {
    let Ok(mut document) = serde_json::from_str::<serde_json::Value>(OPENAPI) else {
        return web::Bytes::from_static(OPENAPI.as_bytes());
    };
    if !mount.is_root() {
        document["servers"] = serde_json::json!([{"url": mount.as_str()}]);
    }
    let schemas = &mut document["components"]["schemas"];
    schemas["CreateTask"]["properties"]["title"]["maxLength"] = limits.max_title_chars.into();
    schemas["CreateTask"]["properties"]["steps"]["maxItems"] = limits.max_steps.into();
    let step = &mut schemas["PlanStep"]["properties"];
    step["kind"]["enum"] = serde_json::json!(limits.step_kinds);
    step["name"]["maxLength"] = limits.max_title_chars.into();
    step["substeps"]["maxItems"] = limits.max_substeps.into();
    step["substeps"]["items"]["maxLength"] = limits.max_title_chars.into();
    document.to_string().into()
}

/// Every API route, as `(method, path)`: what [`configure`] registers and what the test of
/// the OpenAPI document holds it against.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/openapi.json"),
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks/{task_id}/progress"),
    ("GET", "/api/tasks/{task_id}/history"),
    ("GET", "/api/tasks/{task_id}/logs"),
    ("POST", "/api/tasks/{task_id}/start"),
    ("POST", "/api/tasks/{task_id}/pause"),
    ("POST", "/api/tasks/{task_id}/resume"),
    ("POST", "/api/tasks/{task_id}/cancel"),
    ("POST", "/api/tasks/{task_id}/restart"),
    ("POST", "/api/tasks/{task_id}/approve"),
    ("POST", "/api/tasks/{task_id}/reject"),
    ("POST", "/api/tasks/{task_id}/steps/{order}/retry"),
    ("POST", "/api/tasks/{task_id}/steps/{order}/skip"),
    ("POST", "/api/tasks/{task_id}/steps/{order}/report"),
    ("GET", "/api/chat"),
    ("POST", "/api/chat"),
    ("GET", "/api/notifications"),
    ("GET", "/api/notifications/preferences"),
    ("PUT", "/api/notifications/preferences"),
    ("GET", "/api/push/vapid-public-key"),
    ("POST", "/api/push/subscriptions"),
    ("DELETE", "/api/push/subscriptions/{subscription_id}"),
    ("POST", "/api/approval-links/{token}"),
    ("GET", "/api/cluster"),
    ("POST", "/api/cluster/commands"),
    ("GET", "/ws/tasks"),
    ("GET", "/ws/tasks/{task_id}"),
];

/// The handler of a route in [`ROUTES`].
fn route(method: &str, path: &str) -> Option<actix_web::Route> {
    Some(match (method, path) {
        ("GET", "/api/openapi.json") => web::get().to(openapi),
        ("GET", "/api/tasks") => web::get().to(tasks::list),
        ("POST", "/api/tasks") => web::post().to(tasks::create),
        ("GET", "/api/tasks/{task_id}/progress") => web::get().to(tasks::progress),
        ("GET", "/api/tasks/{task_id}/history") => web::get().to(tasks::history),
        ("GET", "/api/tasks/{task_id}/logs") => web::get().to(tasks::logs),
        (
            "POST",
            "/api/tasks/{task_id}/start"
            | "/api/tasks/{task_id}/pause"
            | "/api/tasks/{task_id}/resume"
            | "/api/tasks/{task_id}/cancel",
        ) => web::post().to(tasks::control),
        ("POST", "/api/tasks/{task_id}/restart") => web::post().to(tasks::restart),
        ("POST", "/api/tasks/{task_id}/approve") => web::post().to(tasks::approve),
        ("POST", "/api/tasks/{task_id}/reject") => web::post().to(tasks::reject),
        ("POST", "/api/tasks/{task_id}/steps/{order}/retry") => web::post().to(tasks::retry),
        ("POST", "/api/tasks/{task_id}/steps/{order}/skip") => web::post().to(tasks::skip),
        ("POST", "/api/tasks/{task_id}/steps/{order}/report") => web::post().to(tasks::report),
        ("GET", "/api/chat") => web::get().to(ask::transcript),
        ("POST", "/api/chat") => web::post().to(ask::ask),
        ("GET", "/api/notifications") => web::get().to(notifications::list),
        ("GET", "/api/notifications/preferences") => web::get().to(notifications::preferences),
        ("PUT", "/api/notifications/preferences") => web::put().to(notifications::set_preferences),
        ("GET", "/api/push/vapid-public-key") => web::get().to(notifications::vapid_public_key),
        ("POST", "/api/push/subscriptions") => web::post().to(notifications::subscribe),
        ("DELETE", "/api/push/subscriptions/{subscription_id}") => web::delete().to(notifications::unsubscribe),
        ("POST", "/api/approval-links/{token}") => web::post().to(notifications::use_approval_link),
        ("GET", "/api/cluster") => web::get().to(cluster::servers),
        ("POST", "/api/cluster/commands") => web::post().to(forward::receive_command),
        ("GET", "/ws/tasks") => web::get().to(ws::all_tasks),
        ("GET", "/ws/tasks/{task_id}") => web::get().to(ws::one_task),
        _ => return None,
    })
}

/// Registers every route of [`ROUTES`]; each path answers 405 (in JSON) to the methods it
/// lacks.
pub fn configure(config: &mut web::ServiceConfig) {
    let mut paths: Vec<&str> = Vec::new();
    for (_, path) in ROUTES {
        if !paths.contains(path) {
            paths.push(path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path).default_service(web::to(method_not_allowed));
        let mut acts_on_a_task = false;
        for (method, _) in ROUTES.iter().filter(|(_, p)| *p == path) {
            if let Some(route) = route(method, path) {
                resource = resource.route(route);
            }
            acts_on_a_task |= path.starts_with("/api/tasks/{task_id}")
                && (*method == "POST" || path == "/api/tasks/{task_id}/progress");
        }
        match acts_on_a_task {
            // Another server may run the task: the request goes there (see `forward`).
            true => config.service(resource.wrap(actix_web::middleware::from_fn(forward::to_holder))),
            false => config.service(resource),
        };
    }
}

async fn method_not_allowed(req: HttpRequest, state: web::Data<ApiState>) -> HttpResponse {
    let error = ApiError::MethodNotAllowed { method: req.method().to_string(), path: req.path().to_owned() };
    let matched = req.match_pattern().unwrap_or_default();
    let pattern = state.mount.strip(&matched);
    let allowed: Vec<&str> = ROUTES.iter().filter(|(_, path)| *path == pattern).map(|(method, _)| *method).collect();
    let mut response = actix_web::ResponseError::error_response(&error);
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// A resource outside the API's route table that answers `GET` only (health checks, the
/// metrics): any other method is a 405 like the API's.
pub fn get_only(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path).route(route).default_service(web::to(|req: HttpRequest| async move {
        let error = ApiError::MethodNotAllowed { method: req.method().to_string(), path: req.path().to_owned() };
        let mut response = actix_web::ResponseError::error_response(&error);
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, actix_web::http::header::HeaderValue::from_static("GET"));
        response
    }))
}

/// What unknown paths answer.
pub async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute(req.path().to_owned()))
}

async fn openapi(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(state.openapi.clone())
}
