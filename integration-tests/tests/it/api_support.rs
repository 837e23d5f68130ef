//! The API under test: the real server on 127.0.0.1:0 in this process (so tests can drive
//! its clock and runtime), a plain HTTP/1.1 client over a TCP socket, and a WebSocket
//! client (tungstenite) on its own thread. Blocking I/O runs off the actix thread, which
//! also runs the hub.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use adapters::api::auth::NewToken;
use config::{ApiSettings, NotificationSettings};
use runtime::{Clock, Runtime, RuntimeOptions};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::support::{options, start_with, TestDb, PATIENCE};

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
        let options = RuntimeOptions { limits: adapters::app::plan_limits(&api), ..options("api-server", clock) };
        let runtime = start_with(db, options).await;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let address = listener.local_addr().unwrap();
        let server = adapters::http::server(listener, runtime.clone(), api, notifications, Duration::from_secs(1))
            .expect("server");
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
        let (address, method, path) = (self.address, method.to_owned(), path.to_owned());
        let headers = headers.to_vec();
        let body = body.map(<[u8]>::to_vec);
        tokio::task::spawn_blocking(move || http(address, &method, &path, &headers, body.as_deref()))
            .await
            .expect("the HTTP client thread")
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

fn http(address: SocketAddr, method: &str, path: &str, headers: &[(String, String)], body: Option<&[u8]>) -> Response {
    let mut stream = TcpStream::connect(address).expect("connect to the server");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.map_or(0, <[u8]>::len)));
    stream.write_all(request.as_bytes()).unwrap();
    if let Some(body) = body {
        // A server that refuses a large body early may close before it is all sent.
        let _ = stream.write_all(body);
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    Response { status, headers, body }
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
    fn connect(address: SocketAddr, path: &str, headers: &[(String, String)]) -> Result<WsClient, (u16, Value)> {
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

/// Pauses tokio's clock for as long as it is held, so that time moves only by
/// `tokio::time::advance`. A paused clock otherwise jumps to the next timer whenever the
/// runtime idles, as it does while a client thread is on its way; tokio does not jump while
/// a blocking task runs, so one is kept running until this is dropped.
pub struct FrozenClock {
    _release: std::sync::mpsc::Sender<()>,
}

impl FrozenClock {
    /// Pauses the clock of the current (single-threaded) runtime.
    pub fn start() -> FrozenClock {
        tokio::time::pause();
        let (release, released) = std::sync::mpsc::channel::<()>();
        drop(tokio::task::spawn_blocking(move || released.recv()));
        FrozenClock { _release: release }
    }
}
