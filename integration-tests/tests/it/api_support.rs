//! The API under test: the real server on 127.0.0.1:0 in this process (so tests can drive
//! its clock and runtime), requests to it through the tests' HTTP client, a WebSocket client
//! (tungstenite) on its own thread (blocking I/O runs off the actix thread, which also runs
//! the hub), and the steps most tests take: create a task, report on its steps, read it.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use adapters::api::auth::NewToken;
use config::{ApiSettings, NotificationSettings};
use runtime::{Clock, Runtime, RuntimeOptions};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::http_client;
use crate::support::{options, start_on_database, TestDb, PATIENCE};

/// A running API server.
pub struct ApiServer {
    pub address: SocketAddr,
    pub runtime: Runtime,
    handle: ServerHandle,
}

impl ApiServer {
    /// Starts the runtime and the server on `db` with `api` settings.
    pub async fn start(db: &TestDb, clock: Arc<dyn Clock>, api: ApiSettings) -> ApiServer {
        ApiServer::start_with(db, clock, api, NotificationSettings::default()).await
    }

    /// [`ApiServer::start`] with these `[notifications]` settings.
    pub async fn start_with(
        db: &TestDb,
        clock: Arc<dyn Clock>,
        api: ApiSettings,
        notifications: NotificationSettings,
    ) -> ApiServer {
        ApiServer::start_as("api-server", db, clock, api, notifications).await
    }

    /// [`ApiServer::start_with`] as server `instance` (several may share a database).
    pub async fn start_as(
        instance: &str,
        db: &TestDb,
        clock: Arc<dyn Clock>,
        api: ApiSettings,
        notifications: NotificationSettings,
    ) -> ApiServer {
        ApiServer::start_with_options(db, options(instance, clock), api, notifications).await
    }

    /// Starts the runtime with `options` (its limits and address set to the server's) and
    /// the server on `db`.
    pub async fn start_with_options(
        db: &TestDb,
        options: RuntimeOptions,
        api: ApiSettings,
        notifications: NotificationSettings,
    ) -> ApiServer {
        ApiServer::start_on(Arc::new(db.open()), options, api, notifications).await
    }

    /// [`ApiServer::start_with_options`] on an opened `database`.
    pub async fn start_on(
        database: Arc<db::Database>,
        options: RuntimeOptions,
        api: ApiSettings,
        notifications: NotificationSettings,
    ) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let address = listener.local_addr().unwrap();
        let options = RuntimeOptions {
            limits: adapters::app::plan_limits(&api),
            address: Some(format!("http://{address}")),
            ..options
        };
        let runtime = start_on_database(database, options).await;
        let server = adapters::http::server(listener, runtime.clone(), api, notifications, Duration::from_secs(1))
            .expect("server");
        ApiServer::serving(address, runtime, server)
    }

    /// Runs `server`, listening on `address`, with `runtime` (another application's server
    /// embedding Stepwise, for one).
    pub fn serving(address: SocketAddr, runtime: Runtime, server: actix_web::dev::Server) -> ApiServer {
        let handle = server.handle();
        actix::spawn(server);
        ApiServer { address, runtime, handle }
    }

    /// Starts with the default `[api]` settings.
    pub async fn start_default(db: &TestDb, clock: Arc<dyn Clock>) -> ApiServer {
        ApiServer::start(db, clock, ApiSettings::default()).await
    }

    /// A fresh token for `user`, stored as `stepwise token create` stores it.
    pub async fn token(&self, user: &str) -> String {
        let token = NewToken::generate();
        let (db, user, id, hash) = (Arc::clone(self.runtime.db()), user.to_owned(), token.id, token.hash);
        let now = self.runtime.clock().now_ms();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn().unwrap();
            db::insert_token(&mut conn, &id, &user, &hash, now).unwrap();
        })
        .await
        .unwrap();
        token.secret
    }

    /// Sends a request; `token` goes in `Authorization: Bearer`.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Response {
        let mut headers = Vec::new();
        if let Some(token) = token {
            headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
        }
        if body.is_some() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        self.raw(method, path, &headers, body.map(str::as_bytes)).await
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call("GET", path, Some(token), None).await
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: &str) -> Response {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// Sends a request with exactly these headers and body.
    pub async fn raw(&self, method: &str, path: &str, headers: &[(String, String)], body: Option<&[u8]>) -> Response {
        let answer = http_client::send(self.address, method, path, headers, body, PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("the server did not answer: {e}"));
        let text = String::from_utf8_lossy(&answer.body);
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()));
        Response { status: answer.status, headers: answer.headers, body }
    }

    /// Opens a WebSocket on `path` with extra request headers.
    pub async fn websocket(&self, path: &str, headers: &[(&str, &str)]) -> Result<WsClient, (u16, Value)> {
        let (address, path) = (self.address, path.to_owned());
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tokio::task::spawn_blocking(move || WsClient::connect(address, &path, &headers))
            .await
            .expect("the WebSocket client thread")
    }

    /// Stops the server and the runtime.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.runtime.shutdown().await;
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Response {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A WebSocket client reading on its own thread; messages arrive in a channel.
pub struct WsClient {
    messages: mpsc::UnboundedReceiver<WsEvent>,
    outgoing: std::sync::mpsc::Sender<String>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
    /// While set, the reader thread stops reading (to act as a slow client).
    pub paused: Arc<std::sync::atomic::AtomicBool>,
}

/// What the reader thread saw.
#[derive(Debug)]
pub enum WsEvent {
    Message(Value),
    Closed(Option<u16>),
}

impl WsClient {
    pub fn connect(address: SocketAddr, path: &str, headers: &[(String, String)]) -> Result<WsClient, (u16, Value)> {
        use tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{address}{path}").into_client_request().unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let stream = TcpStream::connect(address).expect("connect to the server");
        let (mut socket, response) = match tungstenite::client(request, stream) {
            Ok(connected) => connected,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().unwrap_or(b"");
                return Err((status, serde_json::from_slice(body).unwrap_or(Value::Null)));
            }
            Err(other) => panic!("WebSocket handshake failed: {other}"),
        };
        let protocol = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
        socket.get_mut().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let (sender, messages) = mpsc::unbounded_channel();
        let (outgoing, to_send) = std::sync::mpsc::channel::<String>();
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader_paused = Arc::clone(&paused);
        std::thread::spawn(move || loop {
            while let Ok(text) = to_send.try_recv() {
                if socket.send(tungstenite::Message::text(text)).is_err() {
                    return;
                }
            }
            if reader_paused.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            match socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let value = serde_json::from_str(text.as_str()).expect("the server sends JSON");
                    if sender.send(WsEvent::Message(value)).is_err() {
                        return;
                    }
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    let _ = sender.send(WsEvent::Closed(frame.map(|f| u16::from(f.code))));
                    return;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => {
                    let _ = sender.send(WsEvent::Closed(None));
                    return;
                }
            }
        });
        Ok(WsClient { messages, outgoing, protocol, paused })
    }

    /// The next message; panics after PATIENCE or if the socket closed.
    pub async fn next(&mut self) -> Value {
        match tokio::time::timeout(PATIENCE, self.messages.recv()).await {
            Ok(Some(WsEvent::Message(value))) => value,
            other => panic!("expected a WebSocket message, got {other:?}"),
        }
    }

    /// The next message that satisfies `wanted`, skipping others.
    pub async fn next_matching(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                match self.messages.recv().await {
                    Some(WsEvent::Message(value)) if wanted(&value) => return Some(value),
                    Some(WsEvent::Message(value)) => seen.push(value["type"].to_string()),
                    _ => return None,
                }
            }
        })
        .await;
        match found {
            Ok(Some(value)) => value,
            _ => panic!("no {what} within {PATIENCE:?}; saw {seen:?}"),
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(PATIENCE, self.messages.recv()).await {
                Ok(Some(WsEvent::Closed(code))) => return code,
                Ok(Some(WsEvent::Message(_))) => {}
                Ok(None) => return None,
                Err(_) => panic!("the server did not close the socket within {PATIENCE:?}"),
            }
        }
    }

    /// The next message within `patience`, or `None` if none came or the socket closed.
    pub async fn next_within(&mut self, patience: Duration) -> Option<Value> {
        match tokio::time::timeout(patience, self.messages.recv()).await {
            Ok(Some(WsEvent::Message(value))) => Some(value),
            _ => None,
        }
    }

    /// The messages that have arrived, without waiting, and whether the connection ended.
    pub fn arrived(&mut self) -> (Vec<Value>, bool) {
        let mut messages = Vec::new();
        loop {
            match self.messages.try_recv() {
                Ok(WsEvent::Message(value)) => messages.push(value),
                Ok(WsEvent::Closed(_)) | Err(mpsc::error::TryRecvError::Disconnected) => return (messages, true),
                Err(mpsc::error::TryRecvError::Empty) => return (messages, false),
            }
        }
    }

    /// Every message until the connection ends (a close frame or a dead peer); panics after
    /// PATIENCE.
    pub async fn until_closed(&mut self) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            match tokio::time::timeout(PATIENCE, self.messages.recv()).await {
                Ok(Some(WsEvent::Message(value))) => messages.push(value),
                Ok(Some(WsEvent::Closed(_)) | None) => return messages,
                Err(_) => panic!("the connection did not end within {PATIENCE:?}"),
            }
        }
    }

    /// Sends a text frame.
    pub fn send(&self, text: &str) {
        self.outgoing.send(text.to_owned()).expect("the WebSocket client thread");
    }
}

/// A WebSocket client that, once connected, neither reads nor writes until asked how the
/// server closed it: a client that reads would answer the server's pings, and one that
/// answers a ping after the server has closed gets its connection reset, losing the close
/// frame.
pub struct SilentSocket(TcpStream);

impl SilentSocket {
    /// Connects with these request headers.
    pub async fn connect(server: &ApiServer, path: &str, headers: &[(&str, &str)]) -> SilentSocket {
        use tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}{path}", server.address).into_client_request().unwrap();
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        let address = server.address;
        tokio::task::spawn_blocking(move || {
            let stream = TcpStream::connect(address).expect("connect to the server");
            let (socket, _) = tungstenite::client(request, stream).expect("WebSocket handshake");
            SilentSocket(socket.into_inner())
        })
        .await
        .unwrap()
    }

    /// Reads everything the server sent until it closed the connection; the code of its
    /// close frame, if it sent one.
    pub async fn close_code(mut self) -> Option<u16> {
        let mut bytes = Vec::new();
        self.0.set_read_timeout(Some(PATIENCE)).unwrap();
        let read = tokio::task::spawn_blocking(move || self.0.read_to_end(&mut bytes).map(|_| bytes));
        let bytes = read.await.unwrap().expect("the server closes the connection");
        close_code_in(&bytes)
    }
}

/// The code of the first close frame among the server's (unmasked) frames.
fn close_code_in(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let (opcode, short) = (bytes[0] & 0x0f, usize::from(bytes[1] & 0x7f));
        let (length, header) = match short {
            126 => (usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])), 4),
            127 => (usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?, 10),
            length => (length, 2),
        };
        let payload = bytes.get(header..header + length)?;
        if opcode == 0x8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
        bytes = &bytes[header + length..];
    }
    None
}

/// Creates a task from `plan` (JSON) as the token's user; answers its id.
pub async fn create(server: &ApiServer, token: &str, plan: &str) -> String {
    let created = server.post("/api/tasks", token, plan).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["task_id"].as_str().unwrap().to_owned()
}

/// An outside worker's report on step `step` of task `id`, which the server must accept;
/// answers the progress document it answers with.
pub async fn report(server: &ApiServer, token: &str, id: &str, step: u32, body: Value) -> Value {
    let answer = server.post(&format!("/api/tasks/{id}/steps/{step}/report"), token, &body.to_string()).await;
    assert_eq!(answer.status, 200, "report {body} on step {step}: {:?}", answer.body);
    answer.body
}

/// Task `id`'s progress document.
pub async fn progress(server: &ApiServer, token: &str, id: &str) -> Value {
    let answer = server.get(&format!("/api/tasks/{id}/progress"), token).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body
}
