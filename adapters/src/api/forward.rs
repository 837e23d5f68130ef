//! Carrying a request to the server that runs its task. A server asked to act on a task
//! whose lease another live server holds cannot apply the request: its actor could not take
//! the lease, wrote nothing and stopped. This middleware then sends the same request to that
//! server's advertised address (`server.advertise_url`, from the membership) and answers
//! with that server's answer, status and body, so any server answers as the holder would.
//! A task's progress document travels too when another server runs the task (its running
//! time is counted there); its history and logs are read from the database on any server.
//! A forwarded request carries the cluster's secret (made by the first server, kept in the
//! database) in `X-Stepwise-Forwarded`, and one that carries it is never forwarded again: a
//! lease that moves mid-flight ends in a 503 the client retries, never in a loop. The
//! request goes with its headers, and the holder checks the caller itself (their token, or
//! an embedding application's sign-in), so the forwarding server vouches for nothing.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use hyper::client::HttpConnector;
use hyper_tls::HttpsConnector;
use runtime::{Control, Runtime, RuntimeError};
use serde::{Deserialize, Serialize};

use super::auth::same_secret;
use super::body;
use super::error::{blocking_query, ApiError};
use super::ApiState;
use crate::mount::MountPath;

/// The header a forwarded request carries the cluster's secret in.
pub const FORWARDED_HEADER: &str = "x-stepwise-forwarded";

/// The name of the cluster's secret among the server secrets.
const SECRET_NAME: &str = "cluster_forwarding";

/// How long the holder may take to answer: a command's answer waits for its commit.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The request headers a forwarded request does not carry: those of this connection (RFC
/// 9110 §7.6.1), those the client sets for the body it sends, and the cluster's own, which
/// only this server may set.
const NOT_CARRIED: [header::HeaderName; 11] = [
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    header::CONTENT_LENGTH,
    header::EXPECT,
    header::HeaderName::from_static(FORWARDED_HEADER),
];

/// The headers of the holder's answer that go back to the client.
const ANSWER_HEADERS: [header::HeaderName; 4] =
    [header::CONTENT_TYPE, header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::ALLOW];

/// The client that carries requests to other servers (pooled, so a busy pair of servers
/// keeps its connections) and the cluster's secret once read.
pub struct Forwarder {
    client: hyper::Client<HttpsConnector<HttpConnector>, hyper::Body>,
    secret: tokio::sync::OnceCell<String>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder {
            client: hyper::Client::builder().build(HttpsConnector::new()),
            secret: tokio::sync::OnceCell::new(),
        }
    }
}

impl Forwarder {
    /// The cluster's secret: the stored one, or a fresh one stored now if none is.
    async fn secret(&self, runtime: &Runtime) -> Result<&str, ApiError> {
        let secret = self
            .secret
            .get_or_try_init(|| {
                let (db, now) = (std::sync::Arc::clone(runtime.db()), runtime.clock().now_ms());
                let candidate = format!("{:032x}", rand::random::<u128>());
                blocking_query(db, move |conn| db::server_secret(conn, SECRET_NAME, &candidate, now))
            })
            .await?;
        Ok(secret)
    }

    /// Whether `req` was forwarded by another server of the cluster.
    async fn was_forwarded(&self, runtime: &Runtime, req: &HttpRequest) -> bool {
        let Some(sent) = req.headers().get(FORWARDED_HEADER) else { return false };
        match self.secret(runtime).await {
            Ok(secret) => same_secret(sent.as_bytes(), secret.as_bytes()),
            Err(_) => false,
        }
    }

    /// Sends `req` with `body` to the live server holding `task_id`'s lease and answers its
    /// answer; `None` when no other live server holds it (the local answer stands).
    async fn forward(
        &self,
        runtime: &Runtime,
        task_id: &str,
        req: &HttpRequest,
        body: web::Bytes,
    ) -> Option<HttpResponse> {
        let path = req.uri().path_and_query().map_or(req.path(), |p| p.as_str());
        let method = hyper::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(hyper::Method::POST);
        self.send_to_holder(runtime, task_id, |address, secret| {
            let mut request = hyper::Request::builder().method(method).uri(format!("{address}{path}"));
            // The holder asks who is asking itself, from the same headers: a token, or
            // whatever an embedding application's sign-in reads (its cookie, its proxy's
            // header).
            for (name, value) in req.headers().iter().filter(|(name, _)| !NOT_CARRIED.contains(name)) {
                request = request.header(name.as_str(), value.as_bytes());
            }
            // The holder's log lines and answer carry this request's id too.
            if let Some(id) = super::error::request_id() {
                request = request.header(crate::observe::REQUEST_ID_HEADER, id.as_bytes());
            }
            request.header(FORWARDED_HEADER, secret).body(hyper::Body::from(body))
        })
        .await
    }

    /// Carries `owner`'s `control` to the live server holding `task_id` (`POST
    /// /api/cluster/commands` under `mount`, where every server of the cluster serves the
    /// API) and answers what it did; `None` when no other live server holds it.
    async fn carry(
        &self,
        runtime: &Runtime,
        mount: &MountPath,
        owner: &str,
        task_id: &str,
        control: Control,
    ) -> Option<Result<(), ApiError>> {
        let command = CarriedCommand { owner: owner.to_owned(), task_id: task_id.to_owned(), control };
        let body = match serde_json::to_vec(&command) {
            Ok(body) => body,
            Err(error) => return Some(Err(ApiError::Internal(error.to_string()))),
        };
        let answer = self
            .send_to_holder(runtime, task_id, |address, secret| {
                hyper::Request::builder()
                    .method(hyper::Method::POST)
                    .uri(format!("{address}{}", mount.join("/api/cluster/commands")))
                    .header(header::CONTENT_TYPE.as_str(), "application/json")
                    .header(FORWARDED_HEADER, secret)
                    .body(hyper::Body::from(body))
            })
            .await?;
        if answer.status().is_success() {
            return Some(Ok(()));
        }
        let status = answer.status();
        let body = actix_web::body::to_bytes(answer.into_body()).await.unwrap_or_default();
        Some(Err(ApiError::answered_elsewhere(status, &body)))
    }

    /// Sends the request `build` makes (given the holder's address and the cluster's secret)
    /// to the live server holding `task_id`'s lease and answers its answer; `None` when no
    /// other live server holds it.
    async fn send_to_holder(
        &self,
        runtime: &Runtime,
        task_id: &str,
        build: impl FnOnce(&str, &str) -> Result<hyper::Request<hyper::Body>, hyper::http::Error>,
    ) -> Option<HttpResponse> {
        let holder = match runtime.holder_elsewhere(task_id).await {
            Ok(holder) => holder?,
            Err(error) => return Some(ApiError::from(error).error_response()),
        };
        let address = holder.address?;
        let secret = match self.secret(runtime).await {
            Ok(secret) => secret,
            Err(error) => return Some(error.error_response()),
        };
        let answered = match build(&address, secret) {
            Ok(request) => tokio::time::timeout(FORWARD_TIMEOUT, self.exchange(request)).await,
            Err(error) => return Some(ApiError::Internal(error.to_string()).error_response()),
        };
        Some(match answered {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => silent(task_id, &holder.server_id, &address, &error.to_string()),
            Err(_) => silent(task_id, &holder.server_id, &address, "no answer within 30 s"),
        })
    }

    async fn exchange(&self, request: hyper::Request<hyper::Body>) -> Result<HttpResponse, hyper::Error> {
        let (head, body) = self.client.request(request).await?.into_parts();
        let body = hyper::body::to_bytes(body).await?;
        let status = StatusCode::from_u16(head.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut answer = HttpResponse::build(status);
        for name in ANSWER_HEADERS {
            if let Some(value) = head.headers.get(name.as_str()) {
                answer.insert_header((name, value.as_bytes()));
            }
        }
        Ok(answer.body(body))
    }
}

/// A command one server carries to the server running its task, on behalf of the task's
/// owner (a chat message or an approval link that reached another server).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarriedCommand {
    owner: String,
    task_id: String,
    control: Control,
}

/// Applies `owner`'s `control` to their task wherever it runs: here, or on the live server
/// holding it, whose answer this is. What the chat and approval links call (the task's own
/// routes are carried whole by [`to_holder`]).
pub async fn command(state: &ApiState, owner: &str, task_id: &str, control: Control) -> Result<(), ApiError> {
    match state.runtime.control(owner, task_id, control.clone()).await {
        Err(RuntimeError::HeldElsewhere(why)) => {
            match state.forwarder.carry(&state.runtime, &state.mount, owner, task_id, control).await {
                Some(done) => done,
                // The holder let go meanwhile: whoever takes the task next applies it.
                None => Err(ApiError::Unavailable(format!("{why}; try again"))),
            }
        }
        done => Ok(done?),
    }
}

/// "Cancel and start over" for `owner`'s task wherever it runs: the cancel goes to the
/// server running the task, the new run starts here. Returns the new task's id.
pub async fn restart(state: &ApiState, owner: &str, task_id: &str) -> Result<String, ApiError> {
    match state.runtime.restart(owner, task_id).await {
        Err(RuntimeError::HeldElsewhere(_)) => {
            match command(state, owner, task_id, Control::Cancel).await {
                // Ended meanwhile: a restart of an ended task needs no cancel.
                Ok(()) | Err(ApiError::Conflict(_)) => {}
                Err(other) => return Err(other),
            }
            Ok(state.runtime.restart(owner, task_id).await?)
        }
        done => Ok(done?),
    }
}

/// `POST /api/cluster/commands`: a command another server of the cluster carried here
/// because this server runs its task. Only a request signed with the cluster's secret is
/// taken; the answer is 204, or the error applying it met (never carried on again).
pub async fn receive_command(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if !state.forwarder.was_forwarded(&state.runtime, &req).await {
        return Err(ApiError::Forbidden(format!(
            "only servers of the cluster send commands here, signed with the cluster's secret in {FORWARDED_HEADER}"
        )));
    }
    let command: CarriedCommand = body::json(&req, payload, state.limits.max_body_bytes).await?;
    state.runtime.control(&command.owner, &command.task_id, command.control).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The answer when the holder did not answer: it may have just died, and its tasks move
/// once its lease lapses.
fn silent(task_id: &str, server: &str, address: &str, why: &str) -> HttpResponse {
    tracing::warn!(task_id, server, address, why, "the server holding a task did not answer a forwarded request");
    ApiError::Unavailable(format!(
        "task {task_id} is run by server {server} at {address}, which did not answer ({why}); try again"
    ))
    .error_response()
}

/// The middleware on a task's POST routes and its progress document. A request for a task
/// with no actor here goes straight to the live server holding it, if one does; any other
/// is handled here, and if it meets a lease another server took meanwhile, is carried there.
pub async fn to_holder(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    let task_id = req.match_info().get("task_id").map(str::to_owned);
    let (Some(state), Some(task_id)) = (state, task_id) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // On SQLite this server is the only one: no lookup, and the body is not read twice on
    // the report path, the busiest of all.
    let shared = matches!(state.runtime.db().backend(), db::Backend::Postgres(_));
    if !shared || (req.method() != Method::POST && req.method() != Method::GET) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    // The body is kept so that the same request can be sent on.
    let (http_req, payload) = req.into_parts();
    let body = match body::read(&http_req, payload, state.limits.max_body_bytes).await {
        Ok(body) => body.freeze(),
        Err(error) => return Ok(ServiceResponse::new(http_req, error.error_response())),
    };
    let forwarded = state.forwarder.was_forwarded(&state.runtime, &http_req).await;
    if !forwarded && !state.runtime.runs_here(&task_id) {
        if let Some(answer) = state.forwarder.forward(&state.runtime, &task_id, &http_req, body.clone()).await {
            return Ok(ServiceResponse::new(http_req, answer));
        }
    }
    let local = next.call(ServiceRequest::from_parts(http_req.clone(), Payload::from(body.clone()))).await?;
    let held_elsewhere = local.response().error().and_then(|e| e.as_error::<ApiError>());
    if forwarded || !matches!(held_elsewhere, Some(ApiError::HeldElsewhere(_))) {
        return Ok(local.map_into_boxed_body());
    }
    match state.forwarder.forward(&state.runtime, &task_id, &http_req, body).await {
        Some(answer) => Ok(ServiceResponse::new(http_req, answer)),
        None => Ok(local.map_into_boxed_body()),
    }
}
