//! Three real `stepwise serve` processes on one PostgreSQL database, started at the same
//! moment on an empty database, behind no balancer: the test plays the balancer. Every
//! route answers through any server as through one, and a server killed while its tasks run
//! loses nothing the clients on the others see.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api_support::WsClient;
use crate::http_client;
use crate::support::*;

/// Three servers (3 s leases) and a token each for alice and bob.
struct Three {
    servers: Vec<Process>,
    addrs: Vec<SocketAddr>,
    alice: String,
    bob: String,
}

fn env_of(db: &TestDb, id: &str) -> Vec<(String, String)> {
    let mut env = db.env();
    env.push(("STEPWISE_RUNTIME__INSTANCE_ID".into(), id.into()));
    env.push(("STEPWISE_RUNTIME__LEASE_TTL_S".into(), "3".into()));
    env
}

fn start_three(db: &TestDb) -> Three {
    let mut servers: Vec<Process> =
        ["server-a", "server-b", "server-c"].iter().map(|id| Process::spawn(&["serve"], &env_of(db, id))).collect();
    let addrs = servers
        .iter_mut()
        .map(|server| {
            let url = server.wait_for_line("listening on http://");
            url.trim_start_matches("listening on http://").parse().expect("an address")
        })
        .collect();
    let token = |user: &str| {
        let (status, token, stderr) = run_binary(&["token", "create", "--user", user], &env_of(db, "admin"));
        assert!(status.success(), "{stderr}");
        token.trim().to_owned()
    };
    Three { servers, addrs, alice: token("alice"), bob: token("bob") }
}

/// Sends each request to the next of `addrs` in turn.
struct RoundRobin<'a> {
    addrs: &'a [SocketAddr],
    next: usize,
}

impl RoundRobin<'_> {
    fn pick(&mut self) -> SocketAddr {
        let addr = self.addrs[self.next % self.addrs.len()];
        self.next += 1;
        addr
    }

    async fn call(&mut self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let headers = [
            ("Authorization".to_owned(), format!("Bearer {token}")),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ];
        let body = body.map(|b| b.to_string().into_bytes());
        let answer = http_client::send(self.pick(), method, path, &headers, body.as_deref(), PATIENCE).await.unwrap();
        (answer.status, serde_json::from_slice(&answer.body).unwrap_or(Value::Null))
    }

    /// The type of the first message a WebSocket on the next server sends for `path`, or
    /// the status and code it is refused with.
    async fn first(&mut self, path: &str, token: &str) -> String {
        let (addr, path) = (self.pick(), path.to_owned());
        let headers = vec![("Authorization".to_owned(), format!("Bearer {token}"))];
        match tokio::task::spawn_blocking(move || WsClient::connect(addr, &path, &headers)).await.unwrap() {
            Ok(mut socket) => socket.next().await["type"].to_string(),
            Err((status, body)) => format!("{status} {}", body["error"]["code"]),
        }
    }

    /// The logged messages a WebSocket on the next server sends for `path` until one has
    /// `seq` `last` (type and seq each).
    async fn logged(&mut self, path: &str, token: &str, last: i64) -> Vec<(String, i64)> {
        let (addr, path) = (self.pick(), path.to_owned());
        let headers = vec![("Authorization".to_owned(), format!("Bearer {token}"))];
        let mut socket = tokio::task::spawn_blocking(move || WsClient::connect(addr, &path, &headers))
            .await
            .unwrap()
            .expect("a WebSocket");
        let mut seen = Vec::new();
        while seen.last().is_none_or(|(_, seq)| *seq < last) {
            let message = socket
                .next_matching("a logged event", |m| {
                    !["progress", "log", "eta", "snapshot"].contains(&m["type"].as_str().unwrap_or(""))
                })
                .await;
            seen.push((message["type"].as_str().unwrap_or("").to_owned(), message["seq"].as_i64().unwrap_or(-1)));
        }
        seen
    }
}

/// A task's life through every route, each request to the next server of `addrs`; returns
/// what each answer said (status, error code and the field that matters), with ids and
/// times left out so that runs on different servers compare.
async fn walk(addrs: &[SocketAddr], alice: &str, bob: &str) -> Vec<String> {
    let mut rr = RoundRobin { addrs, next: 0 };
    let mut said = Vec::new();
    let mut note = |what: &str, (status, body): &(u16, Value), field: &str| {
        let code = body["error"]["code"].as_str().unwrap_or("");
        said.push(format!("{what}: {status} {code} {}", body.pointer(field).cloned().unwrap_or(Value::Null)));
    };
    let plan = json!({"title": "Round robin", "steps": [
        {"name": "load", "kind": "external"},
        {"name": "publish", "kind": "external", "requires_approval": true}]});
    let created = rr.call("POST", "/api/tasks", alice, Some(plan)).await;
    note("create", &created, "/status");
    let id = created.1["task_id"].as_str().expect("a task id").to_owned();
    let task = |rest: &str| format!("/api/tasks/{id}{rest}");
    note("progress", &rr.call("GET", &task("/progress"), alice, None).await, "/status");
    note("pause", &rr.call("POST", &task("/pause"), alice, None).await, "/status");
    note("pause again", &rr.call("POST", &task("/pause"), alice, None).await, "/status");
    note("resume", &rr.call("POST", &task("/resume"), alice, None).await, "/status");
    let half = json!({"progress": 50, "log": "half way"});
    note("report", &rr.call("POST", &task("/steps/1/report"), alice, Some(half)).await, "/steps/0/progress");
    let over = json!({"progress": 150});
    note("bad report", &rr.call("POST", &task("/steps/1/report"), alice, Some(over)).await, "/status");
    let nine = json!({"progress": 5});
    note("no step 9", &rr.call("POST", &task("/steps/9/report"), alice, Some(nine)).await, "/status");
    note("bob reads", &rr.call("GET", &task("/progress"), bob, None).await, "/status");
    note("bob pauses", &rr.call("POST", &task("/pause"), bob, None).await, "/status");
    let done = json!({"status": "completed"});
    note("step 1 done", &rr.call("POST", &task("/steps/1/report"), alice, Some(done.clone())).await, "/status");
    let approve = json!({"step": 2, "comment": "fine"});
    note("approve", &rr.call("POST", &task("/approve"), alice, Some(approve)).await, "/status");
    let failed = json!({"status": "failed", "error": "boom"});
    note("step 2 fails", &rr.call("POST", &task("/steps/2/report"), alice, Some(failed)).await, "/status");
    note("retry", &rr.call("POST", &task("/steps/2/retry"), alice, None).await, "/steps/1/status");
    note("skip a running step", &rr.call("POST", &task("/steps/2/skip"), alice, None).await, "/status");
    note("step 2 done", &rr.call("POST", &task("/steps/2/report"), alice, Some(done)).await, "/status");
    let history = rr.call("GET", &task("/history"), alice, None).await;
    note("history", &history, "/rows/0/status");
    // Lines are written with the next flush: whether this one is there yet is timing.
    note("logs", &rr.call("GET", &task("/logs"), alice, None).await, "/error");
    note("bob's history", &rr.call("GET", &task("/history"), bob, None).await, "/rows");
    let list = rr.call("GET", "/api/tasks", alice, None).await;
    note("list", &list, "/tasks/0/status");
    let restarted = rr.call("POST", &task("/restart"), alice, None).await;
    note("restart", &restarted, "/status");
    let fresh = restarted.1["task_id"].as_str().expect("the new task").to_owned();
    note("cancel", &rr.call("POST", &format!("/api/tasks/{fresh}/cancel"), alice, None).await, "/status");
    let ask = json!({"message": "cancel my round robin task"});
    note("chat", &rr.call("POST", "/api/chat", alice, Some(ask)).await, "/action");
    note("transcript", &rr.call("GET", "/api/chat", alice, None).await, "/messages/0/sender");
    let preferences = rr.call("GET", "/api/notifications/preferences", alice, None).await;
    note("preferences", &preferences, "/channels/chat");
    let put = rr.call("PUT", "/api/notifications/preferences", alice, Some(preferences.1.clone())).await;
    note("set preferences", &put, "/channels/chat");
    note("notifications", &rr.call("GET", "/api/notifications", alice, None).await, "/error");
    note("vapid key", &rr.call("GET", "/api/push/vapid-public-key", alice, None).await, "/error");
    let bad = json!({"endpoint": "nope"});
    note("bad subscription", &rr.call("POST", "/api/push/subscriptions", alice, Some(bad)).await, "/id");
    let missing = "/api/push/subscriptions/0000000000000000";
    note("missing subscription", &rr.call("DELETE", missing, alice, None).await, "/id");
    note("link", &rr.call("POST", "/api/approval-links/not-a-link", alice, None).await, "/status");
    let servers = rr.call("GET", "/api/cluster", alice, None).await;
    let live = servers.1["servers"].as_array().map_or(0, |s| s.iter().filter(|s| s["state"] == "live").count());
    said.push(format!("cluster: {} {live} live", servers.0));
    let last_seq = rr.call("GET", &task("/progress"), alice, None).await.1["seq"].as_i64().unwrap();
    for after in [0, 3] {
        let replay = format!("/ws/tasks/{id}?after_seq={after}");
        said.push(format!("replay after {after}: {:?}", rr.logged(&replay, alice, last_seq).await));
    }
    said.push(format!("all tasks: {}", rr.first("/ws/tasks", alice).await));
    said.push(format!("bob's task feed: {}", rr.first(&format!("/ws/tasks/{id}"), bob).await));
    said
}

/// Every route and both WebSocket routes through the three servers in turn answer as they
/// do through one server; and all three came up together on an empty database.
#[actix::test]
async fn every_route_answers_through_any_of_three_servers_as_through_one() {
    let db = TestDb::new(Backend::Postgres);
    let three = start_three(&db);
    let through_one = walk(&three.addrs[..1], &three.alice, &three.bob).await;
    let through_all = walk(&three.addrs, &three.alice, &three.bob).await;
    assert_eq!(through_all, through_one, "round robin against one server");
    let expected_start = [
        "create: 201  \"running\"",
        "progress: 200  \"running\"",
        "pause: 200  \"paused\"",
        "pause again: 409 conflict null",
        "resume: 200  \"running\"",
        "report: 200  50",
        "bad report: 422 invalid_report null",
        "no step 9: 404 not_found null",
        "bob reads: 404 not_found null",
        "bob pauses: 404 not_found null",
        "step 1 done: 200  \"approval\"",
        "approve: 200  \"running\"",
        "step 2 fails: 200  \"failed\"",
    ];
    assert_eq!(&through_one[..expected_start.len()], expected_start);
    assert!(through_one.contains(&"cluster: 200 3 live".to_owned()), "{through_one:#?}");
    assert!(through_one.iter().any(|l| l.starts_with("replay after 0: [(\"task_created\", 1)")), "{through_one:#?}");
    assert!(through_one.contains(&"bob's task feed: 404 \"not_found\"".to_owned()), "{through_one:#?}");
    drop(three.servers);
}

/// Kill -9 one of three servers while tasks run on all three and WebSockets on the other
/// two watch: its tasks finish on the survivors, no completed step runs again, every
/// acknowledged report counts, and both watchers see each task's logged events once, in
/// order, the same on both.
#[actix::test]
async fn a_killed_server_of_three_loses_nothing_its_watchers_see() {
    let db = TestDb::new(Backend::Postgres);
    let three = start_three(&db);
    let mut rr = RoundRobin { addrs: &three.addrs, next: 0 };
    let plan =
        json!({"title": "Spread", "steps": [{"name": "a", "kind": "external"}, {"name": "b", "kind": "external"}]});
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (status, body) = rr.call("POST", "/api/tasks", &three.alice, Some(plan.clone())).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["task_id"].as_str().unwrap().to_owned());
    }
    let holders: Vec<String> =
        ids.iter().map(|id| psql_on(&db.url, &format!("SELECT lease_owner FROM tasks WHERE id = '{id}'"))).collect();
    for server in ["server-a", "server-b", "server-c"] {
        assert_eq!(holders.iter().filter(|h| *h == server).count(), 2, "two tasks on each: {holders:?}");
    }
    let watch = |addr: SocketAddr| {
        let headers = vec![("Authorization".to_owned(), format!("Bearer {}", three.alice))];
        tokio::task::spawn_blocking(move || WsClient::connect(addr, "/ws/tasks", &headers))
    };
    let mut watchers = [watch(three.addrs[1]).await.unwrap().unwrap(), watch(three.addrs[2]).await.unwrap().unwrap()];
    for watcher in &mut watchers {
        watcher.next_matching("a snapshot", |m| m["type"] == "snapshot").await;
    }
    let report = |rr: &mut RoundRobin<'_>, id: &str, step: u32| {
        let (id, token) = (id.to_owned(), three.alice.clone());
        let path = format!("/api/tasks/{id}/steps/{step}/report");
        let addr = rr.pick();
        async move {
            let headers = [
                ("Authorization".to_owned(), format!("Bearer {token}")),
                ("Content-Type".to_owned(), "application/json".to_owned()),
            ];
            let body = br#"{"status": "completed"}"#;
            // A task whose server was killed is unavailable (503) until a survivor takes it.
            let began = Instant::now();
            loop {
                let answer = http_client::send(addr, "POST", &path, &headers, Some(body), PATIENCE).await.unwrap();
                if answer.status == 200 {
                    return;
                }
                assert_eq!(answer.status, 503, "{}", String::from_utf8_lossy(&answer.body));
                assert!(began.elapsed() < PATIENCE, "{path} never taken over");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for id in &ids {
        report(&mut rr, id, 1).await;
    }
    three.servers[0].signal(libc::SIGKILL);
    // Requests go to the survivors only, as a balancer's health check would have it.
    let survivors = [three.addrs[1], three.addrs[2]];
    let mut rr = RoundRobin { addrs: &survivors, next: 0 };
    for id in &ids {
        report(&mut rr, id, 2).await;
    }
    for id in &ids {
        let row = psql_on(&db.url, &format!("SELECT status FROM tasks WHERE id = '{id}'"));
        assert_eq!(row, "completed", "{id}");
        let attempts =
            psql_on(&db.url, &format!("SELECT attempts FROM steps WHERE task_id = '{id}' AND step_order = 1"));
        assert_eq!(attempts, "1", "a completed step never runs again ({id})");
    }
    let mut seen: Vec<Vec<(String, i64, String)>> = Vec::new();
    for watcher in &mut watchers {
        let mut logged = Vec::new();
        let mut complete = 0;
        while complete < ids.len() {
            let message = watcher
                .next_matching("a logged event", |m| {
                    !["progress", "log", "eta", "snapshot"].contains(&m["type"].as_str().unwrap_or(""))
                })
                .await;
            let kind = message["type"].as_str().unwrap_or("").to_owned();
            complete += usize::from(kind == "task_complete");
            logged.push((message["task_id"].as_str().unwrap_or("").to_owned(), message["seq"].as_i64().unwrap(), kind));
        }
        for id in &ids {
            let seqs: Vec<i64> = logged.iter().filter(|(t, _, _)| t == id).map(|(_, seq, _)| *seq).collect();
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "each logged event once and in order: {id} {seqs:?}");
        }
        logged.sort();
        seen.push(logged);
    }
    assert_eq!(seen[0], seen[1], "both watchers saw the same logged events");
    drop(three.servers);
}
