//! Notifications through the real server: the chat webhook channel against a receiver on
//! 127.0.0.1, preferences switching events on and off, retries (5xx backoff, 429 with
//! Retry-After), the private-address rule checked on the address connected to, a dead
//! endpoint that slows no other user, bursts that become digests, and the delivery log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{ApiSettings, NotificationSettings};
use runtime::{Clock, SystemClock};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api_support::ApiServer;
use crate::on_both_backends;
use crate::support::*;

/// The server with chosen `[notifications]` settings, and calls that answer JSON.
pub(crate) struct Server(ApiServer);

impl std::ops::Deref for Server {
    type Target = ApiServer;

    fn deref(&self) -> &ApiServer {
        &self.0
    }
}

impl Server {
    pub(crate) async fn start(db: &TestDb, notifications: NotificationSettings) -> Server {
        Server::start_with_clock(db, notifications, Arc::new(SystemClock)).await
    }

    /// [`Server::start`] on a clock the test may drive.
    pub(crate) async fn start_with_clock(
        db: &TestDb,
        notifications: NotificationSettings,
        clock: Arc<dyn Clock>,
    ) -> Server {
        Server(ApiServer::start_with(db, clock, ApiSettings::default(), notifications).await)
    }

    /// Sends a request; returns the status and the JSON body.
    pub(crate) async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        self.request(method, path, Some(token), body).await
    }

    /// Sends a request with no `Authorization` header, as a service worker posts a link.
    pub(crate) async fn call_without_token(&self, method: &str, path: &str) -> (u16, Value) {
        self.request(method, path, None, None).await
    }

    async fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let response = self.0.call(method, path, token, body.as_deref()).await;
        (response.status, response.body)
    }

    /// Creates and starts a task of external steps named `steps`; returns its id.
    pub(crate) async fn task(&self, token: &str, title: &str, steps: &[&str]) -> String {
        let steps: Vec<Value> = steps.iter().map(|name| json!({"name": name, "kind": "external"})).collect();
        let (status, body) =
            self.call("POST", "/api/tasks", token, Some(json!({"title": title, "steps": steps}))).await;
        assert_eq!(status, 201, "{body}");
        body["task_id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn report(&self, token: &str, task: &str, step: u32, status: &str) {
        let path = format!("/api/tasks/{task}/steps/{step}/report");
        let report = match status {
            "failed" => json!({"status": status, "error": "boom"}),
            _ => json!({"status": status}),
        };
        let (code, body) = self.call("POST", &path, token, Some(report)).await;
        assert_eq!(code, 200, "{body}");
    }

    pub(crate) async fn set_webhook(&self, token: &str, url: &str, chat: Option<&[&str]>) {
        let mut preferences = json!({"chat_webhook_url": url});
        if let Some(events) = chat {
            preferences["channels"] = json!({"chat": events});
        }
        let (status, body) = self.call("PUT", "/api/notifications/preferences", token, Some(preferences)).await;
        assert_eq!(status, 200, "{body}");
    }

    /// The caller's delivery log, oldest first.
    pub(crate) async fn log(&self, token: &str) -> Vec<Value> {
        let (status, body) = self.call("GET", "/api/notifications?limit=200", token, None).await;
        assert_eq!(status, 200, "{body}");
        let mut entries = body["notifications"].as_array().unwrap().clone();
        entries.reverse();
        entries
    }

    /// Waits until the log has `n` entries.
    pub(crate) async fn log_of(&self, token: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log(token).await;
            if log.len() >= n {
                return log;
            }
            assert!(Instant::now() < deadline, "the log has {} of {n} entries: {log:#?}", log.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the caller's chat transcript has `n` lines; returns them, oldest first.
    pub(crate) async fn transcript_of(&self, token: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.call("GET", "/api/chat?limit=200", token, None).await;
            assert_eq!(status, 200, "{body}");
            let lines = body["messages"].as_array().unwrap().clone();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "the transcript has {} of {n} lines: {lines:#?}", lines.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn stop(self) {
        self.0.stop().await;
    }
}

/// Settings that let the server reach receivers on 127.0.0.1 and retry quickly.
pub(crate) fn local() -> NotificationSettings {
    NotificationSettings { allow_private_endpoints: true, retry_backoff_ms: 10, ..NotificationSettings::default() }
}

/// What a receiver answers.
#[derive(Clone)]
enum Answer {
    /// This status line and extra headers.
    Status(&'static str, &'static str),
    /// Nothing, ever: the connection stays open.
    Never,
}

/// A webhook receiver on 127.0.0.1: answers each request with the next scripted answer (then
/// 200), and hands over each posted `text` and when it came.
pub(crate) struct Receiver {
    pub(crate) url: String,
    posts: mpsc::UnboundedReceiver<(String, Instant)>,
}

impl Receiver {
    /// A receiver that takes every post.
    pub(crate) fn accepting() -> Receiver {
        Receiver::start(Vec::new())
    }

    fn start(script: Vec<Answer>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/secret-path", listener.local_addr().unwrap());
        let (sender, posts) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                assert!(request_line.starts_with("POST /hooks/secret-path "), "{request_line}");
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap();
                        }
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body: Value = serde_json::from_slice(&body).expect("a JSON body");
                let text = body["text"].as_str().expect("{\"text\": ...}").to_owned();
                if sender.send((text, Instant::now())).is_err() {
                    return;
                }
                let mut stream = reader.into_inner();
                match script.next().unwrap_or(Answer::Status("200 OK", "")) {
                    Answer::Status(status, headers) => {
                        let response =
                            format!("HTTP/1.1 {status}\r\n{headers}Content-Length: 2\r\nConnection: close\r\n\r\nok");
                        let _ = stream.write_all(response.as_bytes());
                    }
                    Answer::Never => held.push(stream),
                }
            }
        });
        Receiver { url, posts }
    }

    /// The next posted text and when it came.
    pub(crate) async fn next(&mut self) -> (String, Instant) {
        tokio::time::timeout(PATIENCE, self.posts.recv()).await.expect("a post within PATIENCE").expect("a post")
    }

    /// The next `n` posted texts.
    pub(crate) async fn texts(&mut self, n: usize) -> Vec<String> {
        let mut texts = Vec::new();
        for _ in 0..n {
            texts.push(self.next().await.0);
        }
        texts
    }
}

on_both_backends! {
    async fn the_chat_webhook_gets_the_seeds_messages_and_every_attempt_is_logged(backend: Backend) {
        let db = TestDb::new(backend);
        let server = Server::start(&db, local()).await;
        let ada = server.token("ada").await;
        let mut receiver = Receiver::start(Vec::new());
        server.set_webhook(&ada, &receiver.url, None).await;

        let crm = server.task(&ada, "CRM", &["Database created", "Schema loaded"]).await;
        server.report(&ada, &crm, 1, "completed").await;
        server.report(&ada, &crm, 2, "failed").await;
        let texts = receiver.texts(3).await;
        assert_eq!(texts, ["Your CRM task has started", "Step 1 complete: Database created", "❌ Task failed at Step 2"]);

        let steps = json!([{"name": "Build", "kind": "external"}, {"name": "Deploy", "kind": "external", "requires_approval": true}]);
        let (status, body) = server.call("POST", "/api/tasks", &ada, Some(json!({"title": "CRM", "steps": steps}))).await;
        assert_eq!(status, 201, "{body}");
        let second = body["task_id"].as_str().unwrap().to_owned();
        server.report(&ada, &second, 1, "completed").await;
        assert_eq!(receiver.texts(3).await, ["Your CRM task has started", "Step 1 complete: Build", "⚠️ Approval required for Step 2"]);
        let (status, _) = server.call("POST", &format!("/api/tasks/{second}/approve"), &ada, None).await;
        assert_eq!(status, 200);
        server.report(&ada, &second, 2, "completed").await;
        assert_eq!(receiver.texts(2).await, ["Step 2 complete: Deploy", "✅ Your CRM is ready!"]);

        let log = server.log_of(&ada, 8).await;
        let origin = receiver.url.trim_end_matches("/hooks/secret-path");
        for entry in &log {
            assert_eq!((entry["channel"].as_str(), entry["outcome"].as_str()), (Some("chat"), Some("delivered")), "{entry}");
            assert_eq!(entry["target"], origin, "the webhook's secret path stays out of the log");
            assert_eq!((entry["attempt"].as_i64(), entry["detail"].as_str()), (Some(1), Some("200 OK")));
        }
        let events: Vec<&str> = log.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["task_started", "step_complete", "task_failed", "task_started", "step_complete", "approval_needed", "step_complete", "task_complete"]);
        assert_eq!(log[0]["task_id"], crm.as_str());
        assert_eq!(log[0]["message"], "Your CRM task has started");

        // Someone else sees none of it.
        let bob = server.token("bob").await;
        assert!(server.log(&bob).await.is_empty());
        server.stop().await;
    }

    async fn preferences_default_switch_chat_events_and_are_validated(backend: Backend) {
        let db = TestDb::new(backend);
        let server = Server::start(&db, local()).await;
        let ada = server.token("ada").await;
        let all = json!(["task_started", "step_complete", "approval_needed", "task_complete", "task_failed"]);
        let (status, defaults) = server.call("GET", "/api/notifications/preferences", &ada, None).await;
        assert_eq!(status, 200);
        let email = json!(["approval_needed", "task_complete", "task_failed"]);
        assert_eq!(
            defaults,
            json!({"chat_webhook_url": null, "email": null, "email_long_tasks_only": true, "channels": {"browser": all, "chat": all, "push": all, "email": email}})
        );

        let mut receiver = Receiver::start(Vec::new());
        server.set_webhook(&ada, &receiver.url, Some(&["task_failed", "task_started", "task_failed"])).await;
        let (_, stored) = server.call("GET", "/api/notifications/preferences", &ada, None).await;
        assert_eq!(stored["channels"], json!({"browser": all, "chat": ["task_started", "task_failed"], "push": all, "email": email}));
        let task = server.task(&ada, "Import", &["Fetch", "Load"]).await;
        server.report(&ada, &task, 1, "completed").await;
        server.report(&ada, &task, 2, "failed").await;
        // Step 1's completion is off: the next message after the start is the failure.
        assert_eq!(receiver.texts(2).await, ["Your Import task has started", "❌ Task failed at Step 2"]);

        // Only completions now: the start and the step are left out.
        server.set_webhook(&ada, &receiver.url, Some(&["task_complete"])).await;
        let quiet = server.task(&ada, "Quiet", &["Only"]).await;
        server.report(&ada, &quiet, 1, "completed").await;
        assert_eq!(receiver.next().await.0, "✅ Your Quiet is ready!");
        assert_eq!(server.log_of(&ada, 3).await.len(), 3);

        for (body, wanted) in [
            (json!({"channels": {"chat": ["lunch"]}}), "invalid_request"),
            (json!({"channels": {"fax": []}}), "invalid_request"),
            (json!({"chat_webhook_url": "ftp://hooks.example.com/x"}), "invalid_request"),
            (json!({"chat_webhook_url": "https://user:pw@hooks.example.com/x"}), "invalid_request"),
        ] {
            let (status, answer) = server.call("PUT", "/api/notifications/preferences", &ada, Some(body.clone())).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(wanted)), "{body}: {answer}");
        }
        server.stop().await;
    }

    async fn private_webhooks_are_refused_unless_allowed_even_behind_a_name(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let ada = server.token("ada").await;
        let receiver = Receiver::start(Vec::new());
        let port = receiver.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
        for url in [receiver.url.clone(), format!("https://127.0.0.1:{port}/hooks/secret-path"), format!("https://[::1]:{port}/x")] {
            let answer = server.call("PUT", "/api/notifications/preferences", Some(&ada), Some(&json!({"chat_webhook_url": url}).to_string())).await;
            assert_eq!((answer.status, answer.code()), (400, "invalid_request"), "{url}: {:?}", answer.body);
        }
        // A name passes the first check; the address it resolves to is refused on connecting.
        let named = format!("https://localhost:{port}/hooks/secret-path");
        let answer = server.call("PUT", "/api/notifications/preferences", Some(&ada), Some(&json!({"chat_webhook_url": named}).to_string())).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let task = server.post("/api/tasks", &ada, &json!({"title": "CRM", "steps": [{"name": "A", "kind": "external"}]}).to_string()).await;
        assert_eq!(task.status, 201);
        let deadline = Instant::now() + PATIENCE;
        let entry = loop {
            let log = server.get("/api/notifications", &ada).await;
            if let Some(entry) = log.body["notifications"].as_array().and_then(|l| l.first()) {
                break entry.clone();
            }
            assert!(Instant::now() < deadline, "nothing logged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(entry["outcome"], "refused", "{entry}");
        assert_eq!(entry["detail"], "localhost resolves to no public address");
        assert_eq!(entry["attempt"], 1);
        assert!(receiver.posts.is_empty(), "nothing reached the private address");
        server.stop().await;
    }

    async fn failures_are_retried_with_backoff_and_429_waits_for_retry_after(backend: Backend) {
        let db = TestDb::new(backend);
        let server = Server::start(&db, NotificationSettings { max_attempts: 4, ..local() }).await;
        let ada = server.token("ada").await;
        let mut receiver = Receiver::start(vec![
            Answer::Status("503 Service Unavailable", ""),
            Answer::Status("429 Too Many Requests", "Retry-After: 1\r\n"),
        ]);
        server.set_webhook(&ada, &receiver.url, Some(&["task_started"])).await;
        server.task(&ada, "CRM", &["A"]).await;
        let (first, _) = receiver.next().await;
        let (_, limited_at) = receiver.next().await;
        let (third, delivered_at) = receiver.next().await;
        assert_eq!((first.as_str(), third.as_str()), ("Your CRM task has started", "Your CRM task has started"));
        assert!(delivered_at - limited_at >= Duration::from_secs(1), "Retry-After: 1 was not honoured");
        let log = server.log_of(&ada, 3).await;
        let attempts: Vec<(i64, &str, &str)> = log
            .iter()
            .map(|e| (e["attempt"].as_i64().unwrap(), e["outcome"].as_str().unwrap(), e["detail"].as_str().unwrap()))
            .collect();
        assert_eq!(attempts, [(1, "failed", "503 Service Unavailable"), (2, "failed", "429 Too Many Requests"), (3, "delivered", "200 OK")]);

        // Giving up: every attempt fails, and there are exactly max_attempts of them.
        let mut failing = Receiver::start(vec![Answer::Status("500 Internal Server Error", ""); 4]);
        server.set_webhook(&ada, &failing.url, Some(&["task_started"])).await;
        server.task(&ada, "Store", &["A"]).await;
        assert_eq!(failing.texts(4).await.len(), 4);
        let log = server.log_of(&ada, 7).await;
        assert!(log[3..].iter().all(|e| e["outcome"] == "failed" && e["message"] == "Your Store task has started"));
        // A 4xx other than 408 and 429 is not retried.
        let mut gone = Receiver::start(vec![Answer::Status("404 Not Found", "")]);
        server.set_webhook(&ada, &gone.url, Some(&["task_started"])).await;
        server.task(&ada, "Gone", &["A"]).await;
        gone.next().await;
        let log = server.log_of(&ada, 8).await;
        assert_eq!((log[7]["outcome"].as_str(), log[7]["detail"].as_str()), (Some("failed"), Some("404 Not Found")));
        server.stop().await;
    }

    async fn a_dead_webhook_slows_no_other_user(backend: Backend) {
        let db = TestDb::new(backend);
        // A long timeout: the dead endpoint holds its delivery for the whole test.
        let server = Server::start(&db, NotificationSettings { timeout_s: 300, ..local() }).await;
        let (ada, bob) = (server.token("ada").await, server.token("bob").await);
        let mut dead = Receiver::start(vec![Answer::Never]);
        let mut alive = Receiver::start(Vec::new());
        server.set_webhook(&ada, &dead.url, None).await;
        server.set_webhook(&bob, &alive.url, None).await;
        server.task(&ada, "Stuck", &["A"]).await;
        dead.next().await;
        let task = server.task(&bob, "CRM", &["A"]).await;
        server.report(&bob, &task, 1, "completed").await;
        assert_eq!(alive.texts(3).await, ["Your CRM task has started", "Step 1 complete: A", "✅ Your CRM is ready!"]);
        assert_eq!(server.log_of(&bob, 3).await.len(), 3);
        assert!(server.log(&ada).await.is_empty(), "ada's delivery is still waiting for its dead endpoint");
        server.stop().await;
    }

    async fn a_burst_becomes_a_digest(backend: Backend) {
        let db = TestDb::new(backend);
        let server = Server::start(&db, NotificationSettings { burst: 2, digest_window_s: 2, ..local() }).await;
        let ada = server.token("ada").await;
        let mut receiver = Receiver::start(Vec::new());
        server.set_webhook(&ada, &receiver.url, None).await;
        let task = server.task(&ada, "CRM", &["A", "B", "C", "D"]).await;
        for step in 1..=4 {
            server.report(&ada, &task, step, "completed").await;
        }
        let expected = [
            "Your CRM task has started",
            "Step 1 complete: A",
            "Step 2 complete: B",
            "Step 3 complete: C",
            "Step 4 complete: D",
            "✅ Your CRM is ready!",
        ];
        // Two go out at once; the rest wait for the window and come as digests, in order.
        let (first, first_at) = receiver.next().await;
        let (second, _) = receiver.next().await;
        assert_eq!([first.as_str(), second.as_str()], expected[..2]);
        let mut lines = Vec::new();
        while lines.len() < 4 {
            let (text, at) = receiver.next().await;
            // The window, less what the first post's trip to the receiver may have taken.
            assert!(at - first_at >= Duration::from_millis(1500), "a post came within the window");
            // What was held comes as a digest, or as itself if alone (a slow report).
            match text.split_once(" updates:\n") {
                Some((count, rest)) => {
                    let items: Vec<String> = rest.lines().map(|l| l.trim_start_matches("• ").to_owned()).collect();
                    assert_eq!(count.parse::<usize>().unwrap(), items.len());
                    lines.extend(items);
                }
                None => lines.push(text),
            }
        }
        assert_eq!(lines, expected[2..]);
        let log = server.log_of(&ada, 3).await;
        assert_eq!(log[2]["event"], "digest", "at least the first held post is a digest");
        server.stop().await;
    }

    async fn chat_notices_join_the_transcript_beside_the_conversation(backend: Backend) {
        let db = TestDb::new(backend);
        let server = Server::start(&db, local()).await;
        let ada = server.token("ada").await;
        // No webhook: the transcript needs none.
        let crm = server.task(&ada, "CRM", &["Database created"]).await;
        server.report(&ada, &crm, 1, "completed").await;
        let (status, answer) =
            server.call("POST", "/api/chat", &ada, Some(json!({"message": "How's my CRM task going?"}))).await;
        assert_eq!(status, 200, "{answer}");

        let lines = server.transcript_of(&ada, 5).await;
        let said = |from: &str| -> Vec<String> {
            lines.iter().filter(|l| l["from"] == from).map(|l| l["text"].as_str().unwrap().to_owned()).collect()
        };
        // The notices are written as the events happen, the conversation as it is held: each
        // in its own order, interleaved as they came.
        assert_eq!(said("notice"), ["Your CRM task has started", "Step 1 complete: Database created", "✅ Your CRM is ready!"]);
        assert_eq!(said("user"), ["How's my CRM task going?"]);
        assert_eq!(said("bot"), [answer["reply"].as_str().unwrap()]);
        assert!(lines.iter().filter(|l| l["from"] == "notice").all(|l| l["task_id"] == crm.as_str()), "{lines:#?}");
        let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
        let (status, later) = server.call("GET", &format!("/api/chat?after={}", ids[2]), &ada, None).await;
        assert_eq!(status, 200, "{later}");
        assert_eq!(later["messages"].as_array().unwrap()[..], lines[3..]);
        let (_, newest) = server.call("GET", "/api/chat?limit=2", &ada, None).await;
        assert_eq!(newest["messages"].as_array().unwrap()[..], lines[3..]);

        // Chat preferences choose the notices too: with only failures, a completed task
        // leaves no trace, and the failure after it shows every earlier event was handled.
        let (status, body) = server
            .call("PUT", "/api/notifications/preferences", &ada, Some(json!({"channels": {"chat": ["task_failed"]}})))
            .await;
        assert_eq!(status, 200, "{body}");
        let quiet = server.task(&ada, "Quiet", &["Only"]).await;
        server.report(&ada, &quiet, 1, "completed").await;
        let broken = server.task(&ada, "Broken", &["Only"]).await;
        server.report(&ada, &broken, 1, "failed").await;
        let lines = server.transcript_of(&ada, 6).await;
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert_eq!((lines[5]["text"].as_str(), lines[5]["task_id"].as_str()), (Some("❌ Task failed at Step 1"), Some(broken.as_str())));

        for query in ["limit=0", "limit=201", "limit=x", "before=1"] {
            let (status, body) = server.call("GET", &format!("/api/chat?{query}"), &ada, None).await;
            assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed")), "{query}: {body}");
        }
        let bob = server.token("bob").await;
        let (_, theirs) = server.call("GET", "/api/chat", &bob, None).await;
        assert_eq!(theirs, json!({"messages": []}), "another user's transcript is their own");
        server.stop().await;
    }
}
