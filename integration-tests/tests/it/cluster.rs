//! Servers sharing one database: each sees the others in the membership, and the tasks of a
//! server that stopped or is gone are taken over by another. Several servers need
//! PostgreSQL (SQLite allows one server per file); the membership route runs on both.

use std::sync::Arc;
use std::time::Duration;

use runtime::{
    EventKind, ExternalReport, ManualClock, Member, ReportOutcome, Runtime, RuntimeError, StepStatus, TaskEvent, Topic,
};
use serde_json::{json, Value};

use config::{ApiSettings, NotificationSettings};

use crate::api_support::{create, progress, report, ApiServer, WsClient};
use crate::http_client;
use crate::on_both_backends;
use crate::support::*;

const NOW: i64 = 1_000_000_000;

fn states(members: &[Member]) -> Vec<(&str, &str, bool)> {
    members.iter().map(|m| (m.server.id.as_str(), m.state.as_str(), m.is_self)).collect()
}

/// Two runtimes on one database, the second's clock a second ahead of the first's (and
/// movable), and a running two-step task of alice's on the first.
async fn a_task_on_the_first_of_two(db: &TestDb) -> (Runtime, Runtime, Arc<ManualClock>, String) {
    let first = start_on(db, "server-a", Arc::new(ManualClock::new(NOW))).await;
    let id = first.create_task("alice", &external_plan("Shared", 2), true).await.unwrap();
    let clock = Arc::new(ManualClock::new(NOW + 1_000));
    let second = start_on(db, "server-b", clock.clone()).await;
    (first, second, clock, id)
}

fn completed() -> ExternalReport {
    ExternalReport { outcome: Some(ReportOutcome::Completed { output: None }), ..ExternalReport::default() }
}

/// A task the first server runs reaches the second server's subscribers of that task and
/// of its owner through the second's relay: the first's logged events with their seqs, in
/// order, once, and its percent and log line. Never the second's subscribers of everything
/// (its recorder and notifiers): a notification goes out once, from the server running the
/// task. The second's own task, created last, marks where its events to everything end.
#[actix::test]
async fn another_servers_task_reaches_its_followers_here_and_not_every_subscriber() {
    let db = TestDb::new(Backend::Postgres);
    let (first, second, _, id) = a_task_on_the_first_of_two(&db).await;
    let mut everything = second.events(Topic::All).await.unwrap();
    let mut owners = second.events(Topic::Owner("alice".into())).await.unwrap();
    let mut followers = events_of(&second, &id).await;
    let line = ExternalReport { progress: Some(40.0), log: Some("line one".into()), ..ExternalReport::default() };
    first.report("alice", &id, 1, line).await.unwrap();
    first.flush().await;
    /// What the second server's followers of the task saw.
    #[derive(Default)]
    struct Seen {
        logged: Vec<i64>,
        percent: bool,
        lines: Vec<String>,
    }
    let mut seen = Seen::default();
    let mut next = async || tokio::time::timeout(PATIENCE, followers.recv()).await.expect("relayed events").unwrap();
    let see = |seen: &mut Seen, event: TaskEvent| match &event.kind {
        EventKind::Progress { step: 1, percent: 40, .. } => seen.percent = true,
        EventKind::Log { line, .. } => seen.lines.push(line.to_string()),
        EventKind::Progress { .. } | EventKind::EtaUpdated(_) => {}
        _ => seen.logged.push(event.seq),
    };
    while !seen.percent || seen.lines.is_empty() {
        see(&mut seen, next().await);
    }
    first.report("alice", &id, 1, completed()).await.unwrap();
    first.flush().await;
    let on_first = first.task("alice", &id).await.unwrap().task.last_seq;
    while seen.logged.last() != Some(&on_first) {
        see(&mut seen, next().await);
    }
    let logged = &seen.logged;
    assert!(logged.windows(2).all(|pair| pair[1] == pair[0] + 1), "in order, once, without a gap: {logged:?}");
    assert_eq!(seen.lines, ["line one"], "the line, once");
    let by_owner =
        wait_for(&mut owners, "step 1 completing", |kind| matches!(kind, EventKind::StepCompleted { .. })).await;
    assert_eq!(by_owner.task_id.as_ref(), id, "the owner's subscribers follow it too");

    let own = second.create_task("alice", &external_plan("Local", 1), false).await.unwrap();
    let mut before_own = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, everything.recv()).await.expect("the second's own task").unwrap();
        if *event.task_id == *own {
            break;
        }
        before_own.push(event.task_id.to_string());
    }
    assert!(
        before_own.iter().all(|task| *task != id),
        "the first server's task reached every subscriber: {before_own:?}"
    );
    first.shutdown().await;
    second.shutdown().await;
}

/// A clean shutdown releases the server's leases and marks it stopped: another server
/// takes its running task at once, without waiting for the lease to lapse, and runs it on.
#[actix::test]
async fn a_stopped_servers_tasks_are_taken_over_at_once() {
    let db = TestDb::new(Backend::Postgres);
    let (first, second, _, id) = a_task_on_the_first_of_two(&db).await;
    assert_eq!(second.take_over_orphans().await.unwrap(), 0, "a live server's task stays");
    assert_eq!(states(&second.cluster().await.unwrap()), [("server-a", "live", false), ("server-b", "live", true)]);

    let mut events = events_of(&second, &id).await;
    first.shutdown().await;
    assert_eq!(states(&second.cluster().await.unwrap()), [("server-a", "stopped", false), ("server-b", "live", true)]);
    // The heartbeat may have taken it already; either way it is the second server's now.
    second.take_over_orphans().await.unwrap();
    assert_eq!(second.live_tasks(), 1, "released at shutdown, taken at once");
    // The move goes into the task's history (in the background: the task runs at once).
    wait_for(&mut events, "task_recovered", |kind| *kind == EventKind::TaskRecovered).await;

    second.report("alice", &id, 1, completed()).await.unwrap();
    let task = second.task("alice", &id).await.unwrap();
    assert_eq!((task.steps[0].status, task.steps[1].status), (StepStatus::Completed, StepStatus::Running));
}

/// A server whose heartbeat stopped (killed, cut off) shows as gone once its heartbeat is
/// older than a lease; its tasks then move to another server, and its own writes are
/// fenced off.
#[actix::test]
async fn a_gone_servers_tasks_are_taken_over_when_its_lease_lapses() {
    let db = TestDb::new(Backend::Postgres);
    let (first, second, clock, id) = a_task_on_the_first_of_two(&db).await;
    assert_eq!(second.take_over_orphans().await.unwrap(), 0);

    // Past the first server's 30 s lease and heartbeat, not yet past the second's heartbeat.
    clock.advance(29_501);
    assert_eq!(states(&second.cluster().await.unwrap()), [("server-a", "gone", false), ("server-b", "live", true)]);
    second.take_over_orphans().await.unwrap();
    assert_eq!(second.live_tasks(), 1, "a lapsed lease is taken over");

    let fenced = first.report("alice", &id, 1, completed()).await.unwrap_err();
    assert!(matches!(fenced, RuntimeError::Db(db::DbError::LeaseLost { .. })), "{fenced}");
    second.report("alice", &id, 1, completed()).await.unwrap();
    assert_eq!(second.task("alice", &id).await.unwrap().steps[1].status, StepStatus::Running);
}

/// A report that reaches a server not holding the task is refused while its holder is live
/// (never acknowledged and then lost), and once the holder's lease lapsed the server takes
/// the lease with it and stores the percent.
#[actix::test]
async fn a_report_to_a_server_without_the_lease_is_refused_or_stored_never_lost() {
    let db = TestDb::new(Backend::Postgres);
    let (first, second, clock, id) = a_task_on_the_first_of_two(&db).await;
    let forty = ExternalReport { progress: Some(40.0), ..ExternalReport::default() };

    let refused = second.report("alice", &id, 1, forty.clone()).await.unwrap_err();
    assert!(matches!(refused, RuntimeError::HeldElsewhere(_)), "{refused}");
    assert_eq!(first.task("alice", &id).await.unwrap().steps[0].progress, 0, "nothing was applied");

    clock.advance(29_501);
    second.report("alice", &id, 1, forty).await.unwrap();
    second.flush().await;
    let stored = db::load_task(&mut second.db().conn().unwrap(), &id).unwrap().unwrap();
    assert_eq!(stored.steps[0].progress, 40, "the acknowledged percent is stored");
    assert_eq!(psql_on(&db.url, &format!("SELECT lease_owner FROM tasks WHERE id = '{id}'")), "server-b");
}

/// Two API servers on one database: every command on a task reaches the server that runs it,
/// whichever server it was sent to, and is answered as that server answers (success, bad
/// input, another user's task). A request that says it was forwarded already is not sent
/// on again, and the server that forwarded keeps no copy of the task.
#[actix::test]
async fn a_command_sent_to_any_server_is_applied_by_the_one_running_the_task() {
    let db = TestDb::new(Backend::Postgres);
    let (first, second) = two_api_servers(&db).await;
    let (alice, bob) = (first.token("alice").await, first.token("bob").await);
    let plan =
        r#"{"title": "Shared", "steps": [{"name": "a", "kind": "external"}, {"name": "b", "kind": "external"}]}"#;
    let id = create(&first, &alice, plan).await;

    let paused = second.post(&format!("/api/tasks/{id}/pause"), &alice, "").await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(progress(&first, &alice, &id).await["status"], "paused", "applied by the server running it");
    assert_eq!(second.post(&format!("/api/tasks/{id}/resume"), &alice, "").await.status, 200);
    let reported = report(&second, &alice, &id, 1, json!({"progress": 40})).await;
    assert_eq!(reported["steps"][0]["progress"], 40, "the holder's document: {reported}");
    let (there, here) = (progress(&second, &alice, &id).await, progress(&first, &alice, &id).await);
    assert!(!here["eta_seconds"].is_null(), "{here}");
    assert_eq!(there, here, "the progress document, live estimate included, is the holder's");

    // The same request id on both: the one carried to the holder keeps the client's.
    let bad = format!("/api/tasks/{id}/steps/9/report");
    let (here, there) = (
        post_as(&first, &bad, &alice, r#"{"progress": 5}"#, "bad-input").await,
        post_as(&second, &bad, &alice, r#"{"progress": 5}"#, "bad-input").await,
    );
    assert_eq!((there.status, &there.body), (here.status, &here.body), "bad input answers alike");
    assert_eq!(there.body["error"]["request_id"], "bad-input");
    let theirs = post_as(&second, &format!("/api/tasks/{id}/pause"), &bob, "", "bob-pause").await;
    let missing = post_as(&second, "/api/tasks/0000000000000000/pause", &bob, "", "bob-pause").await;
    assert_eq!(theirs.status, 404);
    assert_eq!(theirs.body.to_string().replace(&id, "0000000000000000"), missing.body.to_string());

    let secret = psql_on(&db.url, "SELECT secret FROM server_secrets WHERE name = 'cluster_forwarding'");
    let headers = |secret: &str| {
        vec![
            ("Authorization".to_owned(), format!("Bearer {alice}")),
            (adapters::api::forward::FORWARDED_HEADER.to_owned(), secret.to_owned()),
        ]
    };
    let pause = format!("/api/tasks/{id}/pause");
    let not_again = second.raw("POST", &pause, &headers(&secret), None).await;
    assert_eq!((not_again.status, not_again.code()), (503, "unavailable"), "a forwarded request goes no further");
    let forged = second.raw("POST", &pause, &headers("guessed"), None).await;
    assert_eq!(forged.status, 200, "a wrong secret is only a header: the request is forwarded like any other");
    assert_eq!(second.runtime.live_tasks(), 0, "the forwarding server keeps no copy of the task");
    first.stop().await;
    second.stop().await;
}

/// The chat and approval links act on a task whichever server they reach: the command is
/// carried to the server running the task and answered with what it did there, refusals
/// included; the conversation continues on the other server ("yes" to a question asked by
/// the first); and commands servers carry need the cluster's secret.
#[actix::test]
async fn chat_and_approval_links_on_any_server_act_where_the_task_runs() {
    let db = TestDb::new(Backend::Postgres);
    let (first, second) = two_api_servers(&db).await;
    let alice = first.token("alice").await;
    let plan = r#"{"title": "CRM import", "steps": [{"name": "load", "kind": "external"},
        {"name": "publish", "kind": "external", "requires_approval": true}]}"#;
    let id = create(&first, &alice, plan).await;

    let paused = say(&second, &alice, "pause my CRM task").await;
    assert_eq!((paused.status, paused.body["action"].as_str()), (200, Some("pause")), "{}", paused.body);
    assert_eq!(progress(&first, &alice, &id).await["status"], "paused", "applied by the server running it");
    let refused = say(&second, &alice, "pause it").await;
    assert_eq!(refused.status, 200, "{}", refused.body);
    assert!(refused.body["action"].is_null(), "a refusal from the holder is the bot's reply: {}", refused.body);
    assert!(refused.body["reply"].as_str().unwrap().contains("paused"), "{}", refused.body);
    assert_eq!(say(&second, &alice, "resume it").await.body["action"], "resume");
    assert_eq!(first.runtime.live_tasks(), 1);
    assert_eq!(second.runtime.live_tasks(), 0, "the server the chat reached keeps no copy of the task");

    report(&first, &alice, &id, 1, json!({"status": "completed"})).await;
    assert_eq!(progress(&first, &alice, &id).await["status"], "approval");
    let key = adapters::notify::links::LinkKey::load_or_create(second.runtime.db(), NOW).await.unwrap();
    let links = key.issue(&id, 2, "alice", NOW + 3_600_000);
    let (_, approve) = links.iter().find(|(decision, _)| decision.name() == "approve").unwrap();
    let approved = second.call("POST", approve, None, None).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.body["steps"][1]["status"], "running", "{}", approved.body);
    let again = second.call("POST", approve, None, None).await;
    assert_eq!((again.status, again.code()), (409, "already_used"));

    let asked = say(&first, &alice, "cancel the CRM task").await;
    assert!(asked.body["reply"].as_str().unwrap().contains("yes"), "a cancel waits for a yes: {}", asked.body);
    let confirmed = say(&second, &alice, "yes").await;
    assert_eq!(confirmed.body["action"], "cancel", "the other server knows the question: {}", confirmed.body);
    assert_eq!(progress(&first, &alice, &id).await["status"], "cancelled");

    let command = json!({"owner": "alice", "task_id": id, "control": {"kind": "resume"}}).to_string();
    let headers = |secret: &str| {
        vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            (adapters::api::forward::FORWARDED_HEADER.to_owned(), secret.to_owned()),
        ]
    };
    let forged = first.raw("POST", "/api/cluster/commands", &headers("guessed"), Some(command.as_bytes())).await;
    assert_eq!((forged.status, forged.code()), (403, "forbidden"));
    let secret = psql_on(&db.url, "SELECT secret FROM server_secrets WHERE name = 'cluster_forwarding'");
    let carried = first.raw("POST", "/api/cluster/commands", &headers(&secret), Some(command.as_bytes())).await;
    assert_eq!((carried.status, carried.code()), (409, "conflict"), "a cancelled task does not resume");
    first.stop().await;
    second.stop().await;
}

/// POSTs JSON `body` with `token` and this `X-Request-Id`.
async fn post_as(
    server: &ApiServer,
    path: &str,
    token: &str,
    body: &str,
    request_id: &str,
) -> crate::api_support::Response {
    let headers = [
        ("Authorization", format!("Bearer {token}")),
        ("Content-Type", "application/json".to_owned()),
        ("X-Request-Id", request_id.to_owned()),
    ];
    let headers: Vec<(String, String)> = headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    server.raw("POST", path, &headers, Some(body.as_bytes())).await
}

async fn say(server: &ApiServer, token: &str, message: &str) -> crate::api_support::Response {
    server.post("/api/chat", token, &json!({ "message": message }).to_string()).await
}

/// Two API servers on one PostgreSQL database, with their own clocks a second apart.
async fn two_api_servers(db: &TestDb) -> (ApiServer, ApiServer) {
    let (api, notifications) = (ApiSettings::default(), NotificationSettings::default());
    let first =
        ApiServer::start_as("server-a", db, Arc::new(ManualClock::new(NOW)), api.clone(), notifications.clone()).await;
    let second = ApiServer::start_as("server-b", db, Arc::new(ManualClock::new(NOW + 1_000)), api, notifications).await;
    (first, second)
}

/// The logged messages (not `progress`, `log` or `eta`) a WebSocket sends up to and with
/// the task's end, as (type, seq, step).
async fn logged_until_the_end(socket: &mut WsClient) -> Vec<(String, i64, Value)> {
    let mut logged = Vec::new();
    loop {
        let message = socket
            .next_matching("a logged event", |m| {
                !["progress", "log", "eta"].contains(&m["type"].as_str().unwrap_or(""))
            })
            .await;
        let kind = message["type"].as_str().unwrap_or("").to_owned();
        logged.push((kind.clone(), message["seq"].as_i64().unwrap_or(-1), message["step"].clone()));
        if kind == "task_complete" {
            return logged;
        }
    }
}

/// A WebSocket on a server that does not run the task sends what one on the server running
/// it sends: the logged events with the same seqs, in the same order, once each, the step's
/// percent and the estimate; also after its server's doorbell connection was cut. `/ws/tasks` there
/// shows a task created on the other server.
#[actix::test]
async fn a_websocket_on_any_server_follows_a_task_another_server_runs() {
    let db = TestDb::new(Backend::Postgres);
    let (first, second) = two_api_servers(&db).await;
    let alice = first.token("alice").await;
    let bearer = format!("Bearer {alice}");
    let auth = [("Authorization", bearer.as_str())];
    let plan =
        r#"{"title": "Followed", "steps": [{"name": "a", "kind": "external"}, {"name": "b", "kind": "external"}]}"#;
    let id = create(&first, &alice, plan).await;
    let path = format!("/ws/tasks/{id}");
    let (mut here, mut there) =
        (first.websocket(&path, &auth).await.unwrap(), second.websocket(&path, &auth).await.unwrap());
    let mut all_there = second.websocket("/ws/tasks", &auth).await.unwrap();
    for socket in [&mut here, &mut there, &mut all_there] {
        socket.next_matching("a snapshot", |m| m["type"] == "snapshot").await;
    }

    report(&first, &alice, &id, 1, json!({"progress": 40, "log": "line one"})).await;
    // The percent, the line and the holder's estimate, in whichever order the rings bring them.
    let (mut percent, mut estimate, mut lines) = (false, false, Vec::new());
    while !(percent && estimate && !lines.is_empty()) {
        let message = there
            .next_matching("the percent, the line and the estimate from the other server", |m| {
                (m["type"] == "progress" && m["step_percent"] == 40) || m["type"] == "eta" || m["type"] == "log"
            })
            .await;
        percent |= message["type"] == "progress";
        estimate |= message["type"] == "eta" && message["eta_seconds"].is_u64() && message["steps"].is_array();
        if message["type"] == "log" {
            lines.push(message);
        }
    }
    let line_here = here.next_matching("the line on the holder", |m| m["type"] == "log").await;
    assert_eq!(lines, [line_here], "the same log message on both servers, once");
    let (_, stored) = second.runtime.task_view("alice", &id).await.unwrap();
    assert!(stored.is_some(), "a task another server runs is shown with that server's estimate");
    report(&first, &alice, &id, 1, json!({"status": "completed"})).await;
    let second_task = create(&first, &alice, plan).await;
    all_there
        .next_matching("the task created on the other server", |m| {
            m["type"] == "task_created" && m["task_id"] == second_task.as_str()
        })
        .await;

    let cut = psql_on(
        &db.url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    );
    assert_eq!(cut, "2", "both servers' doorbell connections");
    report(&first, &alice, &id, 2, json!({"status": "completed"})).await;
    let (seen_here, seen_there) = (logged_until_the_end(&mut here).await, logged_until_the_end(&mut there).await);
    assert_eq!(seen_there, seen_here, "the same logged events, seqs and order on both servers");
    assert!(seen_here.len() >= 4, "{seen_here:?}");
    first.stop().await;
    second.stop().await;
}

on_both_backends! {
    async fn the_cluster_route_lists_the_servers_sharing_the_database(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(ManualClock::new(NOW))).await;
        let token = server.token("ops").await;
        let listed = server.get("/api/cluster", &token).await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        let servers = listed.body["servers"].as_array().expect("a list of servers");
        assert_eq!(servers.len(), 1, "{}", listed.body);
        let this = &servers[0];
        assert_eq!(this["id"], "api-server");
        assert_eq!(this["address"], json!(format!("http://{}", server.address)));
        assert_eq!((this["state"].as_str(), this["this_server"].as_bool()), (Some("live"), Some(true)));
        assert_eq!(this["started_at"], "1970-01-12T13:46:40Z");
        assert_eq!(this["stopped_at"], json!(null));
        assert!(this["running_tasks"].as_u64().is_some() && this["heartbeat_age_s"].as_f64().is_some(), "{this}");

        let refused = server.call("GET", "/api/cluster", None, None).await;
        assert_eq!((refused.status, refused.code()), (401, "unauthorized"));
        server.stop().await;
    }
}

/// Real servers on one PostgreSQL database with 3 s leases, the first two started at the
/// same moment on an empty database. Kill -9 the one running a task: the other takes it over
/// once the lease lapses, with no request for it, and `stepwise cluster` shows the killed
/// one gone. SIGTERM that one in turn: a third, whose own heartbeat comes only every 20 s,
/// takes the task at once (the stopping server rings when it releases its leases), and the
/// stopped one shows as stopped.
#[actix::test]
async fn real_servers_take_over_from_a_killed_one_and_a_stopped_one() {
    let db = TestDb::new(Backend::Postgres);
    let env_of = |id: &str| {
        let mut env = db.env();
        env.push(("STEPWISE_RUNTIME__INSTANCE_ID".into(), id.into()));
        env.push(("STEPWISE_RUNTIME__LEASE_TTL_S".into(), "3".into()));
        env
    };
    let mut first = Process::spawn(&["serve"], &env_of("server-a"));
    let mut second = Process::spawn(&["serve"], &env_of("server-b"));
    let first_url = first.wait_for_line("listening on http://");
    second.wait_for_line("listening on http://");
    let (status, token, stderr) = run_binary(&["token", "create", "--user", "alice"], &env_of("admin"));
    assert!(status.success(), "{stderr}");
    let headers = [
        ("Authorization".to_owned(), format!("Bearer {}", token.trim())),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    let plan = br#"{"title": "Moves", "steps": [{"name": "Wait", "kind": "external"}]}"#;
    let created = http_client::send(first_url.parse().unwrap(), "POST", "/api/tasks", &headers, Some(plan), PATIENCE)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let id =
        serde_json::from_slice::<serde_json::Value>(&created.body).unwrap()["task_id"].as_str().unwrap().to_owned();
    let holder = || psql_on(&db.url, &format!("SELECT lease_owner FROM tasks WHERE id = '{id}'"));
    assert_eq!(holder(), "server-a");
    let cluster = || run_binary(&["cluster"], &env_of("admin")).1;
    let state_of = |listing: &str, id: &str| -> Option<String> {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{id}\t")))
            .and_then(|l| l.split('\t').nth(2))
            .map(str::to_owned)
    };
    let listing = cluster();
    assert_eq!(state_of(&listing, "server-a").as_deref(), Some("live"), "{listing}");
    assert_eq!(state_of(&listing, "server-b").as_deref(), Some("live"), "{listing}");

    first.signal(libc::SIGKILL);
    eventually("the second server to take the killed one's task", || holder() == "server-b").await;
    let listing = cluster();
    assert_eq!(state_of(&listing, "server-a").as_deref(), Some("gone"), "{listing}");

    let mut slow_heartbeat = env_of("server-c");
    slow_heartbeat.retain(|(key, _)| key != "STEPWISE_RUNTIME__LEASE_TTL_S");
    slow_heartbeat.push(("STEPWISE_RUNTIME__LEASE_TTL_S".into(), "60".into()));
    let mut third = Process::spawn(&["serve"], &slow_heartbeat);
    third.wait_for_line("listening on http://");
    second.signal(libc::SIGTERM);
    assert!(second.wait().0.success());
    let released = holder();
    assert!(released.is_empty() || released == "server-c", "released at exit, not left to lapse: {released:?}");
    let exited = std::time::Instant::now();
    while holder() != "server-c" {
        assert!(exited.elapsed() < Duration::from_secs(5), "not taken over at once (the next heartbeat is 20 s away)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listing = cluster();
    assert_eq!(state_of(&listing, "server-b").as_deref(), Some("stopped"), "{listing}");
    assert_eq!(state_of(&listing, "server-c").as_deref(), Some("live"), "{listing}");
    let status = psql_on(&db.url, &format!("SELECT status FROM tasks WHERE id = '{id}'"));
    assert_eq!(status, "running", "the task runs on, never restarted from scratch");
}
