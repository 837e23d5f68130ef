//! `WS /ws/tasks` and `WS /ws/tasks/{task_id}`: a session actor per connection that sends
//! a `snapshot` per task (or, with `?after_seq=N`, every logged event after N from the
//! database), then live events, with no gap and no duplicate among logged events.
//!
//! A session reads the hub through a bounded channel. The actor only runs while its socket
//! takes data, so a client that stops reading fills the channel and the hub drops its
//! events and flags it as lagged; when the client reads again the session throws its stale
//! deltas away and sends fresh snapshots. Its memory stays bounded and nobody else waits.
//!
//! Tasks another server runs (several servers on one PostgreSQL database) reach this
//! server's hub through the runtime's relay, which reads them from the database at each
//! ring of the cluster's doorbell: a session handles them as it does the tasks this server
//! runs. A logged event of such a task that `/ws/tasks` had no snapshot of (a task created
//! on another server since) first brings the task's earlier events, as a local task's
//! would have come live from its creation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytestring::ByteString;
use runtime::{BoundedEvents, SubscriptionId, TaskEvent, Topic};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Caller, WS_BEARER_PREFIX};
use super::error::{blocking_query, ApiError};
use super::wire::{event_message, is_logged, logged_message, snapshot_message};
use super::ApiState;

/// The subprotocol the server speaks; a browser that sends its token as a subprotocol
/// offers this one too, and the server selects it (it never echoes the token).
pub const SUBPROTOCOL: &str = "stepwise.v1";

/// Logged events read from the database per query when replaying.
const REPLAY_PAGE: usize = 1000;

/// Snapshots `/ws/tasks` sends on connect: the caller's newest tasks.
const SNAPSHOT_TASKS: usize = 50;

/// Close codes the server uses (RFC 6455 and the private range).
pub mod close_code {
    /// The client sent nothing, not even a pong, for `api.ws_client_timeout_s`.
    pub const TIMED_OUT: u16 = 4008;
    /// The client sent a frame over `api.max_frame_bytes` (1009 "message too big").
    pub const TOO_BIG: u16 = 1009;
    /// The session could not read its snapshots or replay from the database.
    pub const UNAVAILABLE: u16 = 1011;
}

/// `GET /ws/tasks`
pub async fn all_tasks(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (caller, protocol) = authorize(&req, &state).await?;
    if !req.query_string().is_empty() {
        return Err(ApiError::Malformed(
            "/ws/tasks takes no query parameters; to resume, send {\"type\": \"resume\", \"after_seq\": {...}}"
                .to_owned(),
        ));
    }
    let topic = Topic::Owner(Arc::clone(&caller.user));
    open(req, stream, state, caller, protocol, Scope::All, None, topic).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OneTaskQuery {
    after_seq: Option<i64>,
}

/// `GET /ws/tasks/{task_id}`
pub async fn one_task(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<ApiState>,
    task_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (caller, protocol) = authorize(&req, &state).await?;
    let query = web::Query::<OneTaskQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Malformed(format!("invalid query string: {e}")))?;
    if query.after_seq.is_some_and(|n| n < 0) {
        return Err(ApiError::Malformed("after_seq is a seq, 0 or more".to_owned()));
    }
    // Another user's task answers 404 before any upgrade, exactly like a missing one.
    let task = state.runtime.task(&caller.user, &task_id).await?;
    if let Some(after) = query.after_seq {
        check_after(after, task.task.last_seq)?;
    }
    let task_id: Arc<str> = task.task.id.into();
    let topic = Topic::Task(Arc::clone(&task_id));
    open(req, stream, state, caller, protocol, Scope::One(task_id), query.after_seq, topic).await
}

/// A client cannot have seen events the task has not had yet: trusting such a seq would
/// hide the events up to it.
fn check_after(after: i64, last_seq: i64) -> Result<(), ApiError> {
    match after <= last_seq {
        true => Ok(()),
        false => Err(ApiError::Malformed(format!("after_seq {after} is past the task's newest seq {last_seq}"))),
    }
}

/// Checks the origin and who is asking; returns the caller and the subprotocol to select.
async fn authorize(req: &HttpRequest, state: &ApiState) -> Result<(Caller, Option<&'static str>), ApiError> {
    check_origin(req, &state.limits.allowed_origins)?;
    let caller = state.auth.caller(req, true).await?;
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let protocol = match (offered.is_empty(), offered.contains(&SUBPROTOCOL)) {
        (true, _) => None,
        (false, true) => Some(SUBPROTOCOL),
        // A browser fails a connection whose offered subprotocols are all ignored; say why
        // here instead.
        (false, false) => {
            return Err(ApiError::Malformed(format!(
                "offer the subprotocol {SUBPROTOCOL:?} (with `{WS_BEARER_PREFIX}<token>` if the token travels that way)"
            )))
        }
    };
    Ok((caller, protocol))
}

/// A browser page may open a WebSocket only from the server's own origin or a configured
/// one; clients that are not browsers send no `Origin` and are not limited.
fn check_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let same_origin = origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
    let listed = allowed.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if same_origin || listed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "origin {origin:?} may not open WebSockets here; add it to api.allowed_origins"
        )))
    }
}

#[allow(clippy::too_many_arguments)]
async fn open(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<ApiState>,
    caller: Caller,
    protocol: Option<&'static str>,
    scope: Scope,
    after_seq: Option<i64>,
    topic: Topic,
) -> Result<HttpResponse, ApiError> {
    let protocols: Vec<&str> = protocol.into_iter().collect();
    let mut response = ws::handshake_with_protocols(&req, &protocols)
        .map_err(|e| ApiError::Malformed(format!("not a WebSocket upgrade: {e}")))?;
    // Subscribed before anything is read from the database, so no event falls between the
    // snapshot and the live stream.
    let events = state.runtime.bounded_events(topic, state.limits.ws_queue_events).await?;
    let codec = actix_http::ws::Codec::new().max_size(state.limits.max_frame_bytes);
    let session = Session::new(state.clone().into_inner(), caller, scope, after_seq, events);
    Ok(response.streaming(ws::WebsocketContext::with_codec(session, stream, codec)))
}

/// Which tasks a session follows.
#[derive(Debug, Clone)]
enum Scope {
    All,
    One(Arc<str>),
}

/// Whether live events go straight out or wait for a database read to finish.
#[derive(Debug)]
enum Phase {
    /// Snapshots or a replay are being read: live events wait here.
    Loading(Vec<Arc<TaskEvent>>),
    Live,
}

/// One WebSocket connection.
pub struct Session {
    state: Arc<ApiState>,
    caller: Caller,
    scope: Scope,
    after_seq: Option<i64>,
    events: Option<tokio::sync::mpsc::Receiver<Arc<TaskEvent>>>,
    lagged: Arc<std::sync::atomic::AtomicBool>,
    subscription: SubscriptionId,
    /// Per task, the seq of the newest logged event this client has (from a snapshot, a
    /// replay or a live event).
    delivered: HashMap<Arc<str>, i64>,
    phase: Phase,
    /// When the client last sent anything, by the runtime's clock (which tests move).
    last_heard_ms: i64,
}

impl Session {
    fn new(
        state: Arc<ApiState>,
        caller: Caller,
        scope: Scope,
        after_seq: Option<i64>,
        events: BoundedEvents,
    ) -> Session {
        let last_heard_ms = state.runtime.clock().now_ms();
        Session {
            state,
            caller,
            scope,
            after_seq,
            events: Some(events.receiver),
            lagged: events.lagged,
            subscription: events.id,
            delivered: HashMap::new(),
            phase: Phase::Loading(Vec::new()),
            last_heard_ms,
        }
    }

    fn send(ctx: &mut ws::WebsocketContext<Self>, message: &Value) {
        ctx.text(message.to_string());
    }

    /// Reads snapshots of the scope (or for `One` with `after_seq`, the replay), then sends
    /// what was read and whatever arrived meanwhile.
    fn load(&mut self, ctx: &mut ws::WebsocketContext<Self>, replay_after: Option<i64>) {
        if matches!(self.phase, Phase::Live) {
            self.phase = Phase::Loading(Vec::new());
        }
        if let (Scope::One(task_id), Some(after)) = (&self.scope, replay_after) {
            // The client has everything up to `after`, whether or not the replay finds more.
            self.delivered.insert(Arc::clone(task_id), after);
        }
        let (state, caller, scope) = (Arc::clone(&self.state), self.caller.clone(), self.scope.clone());
        let read = async move {
            match (&scope, replay_after) {
                (Scope::One(task_id), Some(after)) => replay(&state, &caller, task_id, after).await,
                (Scope::One(task_id), None) => snapshots(&state, &caller, &[task_id.to_string()]).await,
                (Scope::All, _) => snapshots(&state, &caller, &newest_tasks(&state, &caller).await?).await,
            }
        };
        ctx.spawn(read.into_actor(self).map(|loaded, session, ctx| match loaded {
            Ok(loaded) => session.loaded(loaded, ctx),
            Err(error) => {
                tracing::warn!(%error, "a WebSocket session could not read its tasks");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Other(close_code::UNAVAILABLE),
                    description: Some(error.to_string()),
                }));
                ctx.stop();
            }
        }));
    }

    fn loaded(&mut self, loaded: Loaded, ctx: &mut ws::WebsocketContext<Self>) {
        for (task_id, seq, message) in loaded {
            Self::send(ctx, &message);
            self.delivered.insert(task_id, seq);
        }
        let Phase::Loading(waiting) = std::mem::replace(&mut self.phase, Phase::Live) else { return };
        for event in waiting {
            self.forward(event, ctx);
        }
    }

    /// Sends a live event unless the client already has it; a logged event past a gap
    /// (published out of order, or relayed from another server) first brings the missing
    /// ones from the database.
    fn forward(&mut self, event: Arc<TaskEvent>, ctx: &mut ws::WebsocketContext<Self>) {
        if let Phase::Loading(waiting) = &mut self.phase {
            waiting.push(event);
            return;
        }
        let known = self.delivered.get(&event.task_id).copied();
        if !is_logged(&event.kind) {
            // Transient: drop it only if it is older than what the client has.
            if known.is_none_or(|seq| event.seq >= seq) {
                ctx.text(encoded(&event));
            }
            return;
        }
        match known {
            Some(seq) if event.seq <= seq => {}
            Some(seq) if event.seq > seq + 1 => {
                let (task_id, after) = (Arc::clone(&event.task_id), seq);
                self.phase = Phase::Loading(vec![event]);
                self.fill(task_id, after, ctx);
            }
            None if event.seq > 1 && !self.state.runtime.runs_here(&event.task_id) => {
                let task_id = Arc::clone(&event.task_id);
                self.phase = Phase::Loading(vec![event]);
                self.fill(task_id, 0, ctx);
            }
            _ => {
                self.delivered.insert(Arc::clone(&event.task_id), event.seq);
                ctx.text(encoded(&event));
            }
        }
    }

    /// Sends one task's logged events after `after` from the database, then goes live.
    fn fill(&mut self, task_id: Arc<str>, after: i64, ctx: &mut ws::WebsocketContext<Self>) {
        if matches!(self.phase, Phase::Live) {
            self.phase = Phase::Loading(Vec::new());
        }
        let (state, caller) = (Arc::clone(&self.state), self.caller.clone());
        let read = async move { replay(&state, &caller, &task_id, after).await };
        ctx.spawn(read.into_actor(self).map(|read, session, ctx| match read {
            Ok(events) => session.loaded(events, ctx),
            Err(error) => {
                Self::send(ctx, &error_message(&error));
                session.loaded(Vec::new(), ctx);
            }
        }));
    }

    fn client_message(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let message: ClientMessage = match super::body::parse(text.as_bytes()) {
            Ok(message) => message,
            Err(error) => return Self::send(ctx, &error_message(&error)),
        };
        match message {
            ClientMessage::Resume { after_seq } => {
                for (task_id, after) in after_seq {
                    if after < 0 {
                        Self::send(ctx, &error_message(&ApiError::Malformed("after_seq is 0 or more".to_owned())));
                        continue;
                    }
                    if let Scope::One(own) = &self.scope {
                        if **own != *task_id {
                            let missing = ApiError::NotFound(format!("no task {task_id} on this connection"));
                            Self::send(ctx, &error_message(&missing));
                            continue;
                        }
                    }
                    let task_id: Arc<str> = task_id.into();
                    self.delivered.insert(Arc::clone(&task_id), after);
                    self.fill(task_id, after, ctx);
                }
            }
            ClientMessage::Ping => Self::send(ctx, &json!({"type": "pong"})),
        }
    }
}

/// What a session asks of the server.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    /// Replay each task's logged events after the given seq.
    Resume { after_seq: HashMap<String, i64> },
    /// An application-level ping; answered with `{"type": "pong"}`.
    Ping,
}

thread_local! {
    /// The event this worker thread encoded last, with its text: the hub shares one event
    /// among all its sessions, so each worker encodes it once, not once per client.
    static LAST_ENCODED: RefCell<Option<(Arc<TaskEvent>, ByteString)>> = const { RefCell::new(None) };
}

/// The message text of a live event. The cache holds the event itself, so its address
/// cannot be reused by another event while it is the key.
fn encoded(event: &Arc<TaskEvent>) -> ByteString {
    LAST_ENCODED.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some((last, text)) = cell.as_ref().filter(|(last, _)| Arc::ptr_eq(last, event)) {
            debug_assert!(Arc::ptr_eq(last, event));
            return text.clone();
        }
        let text = ByteString::from(event_message(event).to_string());
        *cell = Some((Arc::clone(event), text.clone()));
        text
    })
}

fn error_message(error: &ApiError) -> Value {
    json!({"type": "error", "error": {"code": error.code(), "message": error.to_string()}})
}

/// Messages read for a session (snapshots or a replay), each with its task and seq.
type Loaded = Vec<(Arc<str>, i64, Value)>;

async fn newest_tasks(state: &ApiState, caller: &Caller) -> Result<Vec<String>, ApiError> {
    let (db, owner) = (Arc::clone(state.runtime.db()), caller.user.to_string());
    let page = blocking_query(db, move |conn| db::list_tasks(conn, &owner, None, None, SNAPSHOT_TASKS)).await?;
    Ok(page.tasks.into_iter().map(|t| t.id).collect())
}

async fn snapshots(state: &ApiState, caller: &Caller, ids: &[String]) -> Result<Loaded, ApiError> {
    let views = state.runtime.task_views(&caller.user, ids).await?;
    let places = super::tasks::queue_places(state, &views).await?;
    let snapshots = views
        .iter()
        .map(|(task, eta)| {
            let place = places.get(&task.task.id).copied();
            (Arc::from(task.task.id.as_str()), task.task.last_seq, snapshot_message(task, eta.as_ref(), place))
        })
        .collect();
    Ok(snapshots)
}

/// The task's logged events after `after`, read page by page up to the newest.
async fn replay(state: &ApiState, caller: &Caller, task_id: &str, after: i64) -> Result<Loaded, ApiError> {
    // For the newest seq `after` may not pass (another user's task reads as missing).
    let task = state.runtime.task(&caller.user, task_id).await?;
    check_after(after, task.task.last_seq)?;
    let id: Arc<str> = task_id.into();
    let mut messages = Vec::new();
    let mut from = after;
    loop {
        let (db, owner, task) = (Arc::clone(state.runtime.db()), caller.user.to_string(), task_id.to_owned());
        let page = blocking_query(db, move |conn| db::events_after(conn, &owner, &task, from, REPLAY_PAGE)).await?;
        let full = page.len() == REPLAY_PAGE;
        for event in &page {
            from = event.seq;
            messages.push((Arc::clone(&id), event.seq, logged_message(event)));
        }
        if !full {
            return Ok(messages);
        }
    }
}

/// Whether a client last heard from at `last_heard_ms` has been silent for longer than
/// `timeout_ms` at `now_ms`; silent for exactly the timeout is not yet too long.
fn timed_out(last_heard_ms: i64, now_ms: i64, timeout_ms: i64) -> bool {
    now_ms.saturating_sub(last_heard_ms) > timeout_ms
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.state.metrics.websockets.inc();
        if let Some(receiver) = self.events.take() {
            ctx.add_stream(futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|event| (event, receiver))
            }));
        }
        let heartbeat = Duration::from_secs(self.state.limits.ws_heartbeat_s);
        let timeout_ms = i64::try_from(self.state.limits.ws_client_timeout_s).unwrap_or(i64::MAX / 1000) * 1000;
        ctx.run_interval(heartbeat, move |session, ctx| {
            if timed_out(session.last_heard_ms, session.state.runtime.clock().now_ms(), timeout_ms) {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Other(close_code::TIMED_OUT),
                    description: Some("no pong from the client".to_owned()),
                }));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
        self.load(ctx, self.after_seq);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.state.metrics.websockets.dec();
        self.state.runtime.unsubscribe(self.subscription);
    }
}

impl StreamHandler<Arc<TaskEvent>> for Session {
    fn handle(&mut self, event: Arc<TaskEvent>, ctx: &mut Self::Context) {
        if self.lagged.swap(false, Ordering::AcqRel) {
            // Events were dropped for this client: whatever is still queued is stale too.
            // Fresh snapshots replace it all.
            self.phase = Phase::Loading(Vec::new());
            self.load(ctx, None);
            return;
        }
        self.forward(event, ctx);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The hub is gone: the server is stopping.
        ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Away, description: None }));
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, message: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard_ms = self.state.runtime.clock().now_ms();
        match message {
            Ok(ws::Message::Text(text)) => self.client_message(&text, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Binary(_)) => {
                let error = ApiError::Malformed("send JSON text frames, not binary ones".to_owned());
                Self::send(ctx, &error_message(&error));
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_) | ws::Message::Nop) => {}
            Err(ws::ProtocolError::Overflow) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Other(close_code::TOO_BIG),
                    description: Some(format!("frames are limited to {} bytes", self.state.limits.max_frame_bytes)),
                }));
                ctx.stop();
            }
            Err(error) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: Some(error.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    use super::ClientMessage;
    use crate::api::error::ApiError;

    proptest! {
        #![proptest_config(Config { cases: 512, rng_seed: RngSeed::Fixed(31), failure_persistence: None, ..Config::default() })]

        /// Any frame a client sends is read as a message or refused as malformed or of the
        /// wrong shape; never a panic.
        #[test]
        fn any_client_frame_is_a_message_or_a_typed_refusal(
            frame in prop_oneof![
                any::<String>(),
                "\\{\"type\": \"(resume|ping|pong)\"(, \"after_seq\": \\{(\"[a-z0-9]{0,8}\": -?[0-9]{1,20})?\\})?\\}",
            ]
        ) {
            match crate::api::body::parse::<ClientMessage>(frame.as_bytes()) {
                Ok(_) | Err(ApiError::Malformed(_) | ApiError::InvalidRequest(_)) => {}
                Err(other) => prop_assert!(false, "{frame:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_client_times_out_only_when_silent_for_longer_than_the_timeout() {
        for (last_heard, now, timed_out) in [(0, 44_999, false), (0, 45_000, false), (0, 45_001, true), (10, 5, false)]
        {
            assert_eq!(super::timed_out(last_heard, now, 45_000), timed_out, "heard at {last_heard}, now {now}");
        }
    }
}
