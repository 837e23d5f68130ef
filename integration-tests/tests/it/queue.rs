//! `runtime.max_running_tasks`: a server runs at most that many tasks at once; the others
//! wait in the queue, oldest first, for the first server of the cluster with room. On one
//! server (both backends) and on two sharing PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use config::{ApiSettings, NotificationSettings};
use runtime::{
    Control, EventKind, ExternalReport, ManualClock, ReportOutcome, Runtime, RuntimeError, RuntimeOptions, TaskEvent,
    TaskStatus, Topic,
};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api_support::{create, progress, report, ApiServer};
use crate::on_both_backends;
use crate::support::*;

const NOW: i64 = 1_000_000_000;

fn completed() -> ExternalReport {
    ExternalReport { outcome: Some(ReportOutcome::Completed { output: None }), ..ExternalReport::default() }
}

/// A runtime that runs at most two tasks, with a lease of a minute: it looks at the queue
/// on its own only every 20 s, so anything sooner was a wake-up.
async fn two_at_a_time(db: &TestDb, instance: &str, clock: Arc<ManualClock>) -> Runtime {
    let options =
        RuntimeOptions { max_running_tasks: 2, lease_ttl: Duration::from_secs(60), ..options(instance, clock) };
    start_with(db, options).await
}

async fn status(runtime: &Runtime, id: &str) -> TaskStatus {
    runtime.task("alice", id).await.unwrap().task.status
}

/// Waits for the start of `id`.
async fn started(events: &mut UnboundedReceiver<TaskEvent>, id: &str) {
    loop {
        let event = wait_for(events, "task_started", |kind| matches!(kind, EventKind::TaskStarted)).await;
        if &*event.task_id == id {
            return;
        }
    }
}

// One server that runs two at a time: the third task and later ones queue with their
// places; a pause (or an approval wait) frees a place and the oldest queued task takes it; a
// queued task can be cancelled; a resume never waits; all the others complete.
on_both_backends! {
    async fn a_server_runs_at_most_its_limit_and_queues_the_rest(backend: Backend) {
        let db = TestDb::new(backend);
        let runtime = two_at_a_time(&db, "single", Arc::new(ManualClock::new(NOW))).await;
        let mut events = runtime.events(Topic::All).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(runtime.create_task("alice", &external_plan(&format!("Task {i}"), 1), true).await.unwrap());
        }
        assert_eq!(runtime.running_tasks(), (2, 2));
        let statuses = [status(&runtime, &ids[0]).await, status(&runtime, &ids[2]).await];
        assert_eq!(statuses, [TaskStatus::Running, TaskStatus::Pending]);
        let places = runtime.queue_places(&ids).await.unwrap();
        let places: Vec<Option<u32>> = ids.iter().map(|id| places.get(id).copied()).collect();
        assert_eq!(places, [None, None, Some(1), Some(2), Some(3)], "{backend:?}");

        runtime.control("alice", &ids[0], Control::Pause).await.unwrap();
        started(&mut events, &ids[2]).await;
        assert_eq!(runtime.running_tasks(), (2, 2), "a paused task frees its place");
        runtime.control("alice", &ids[4], Control::Cancel).await.unwrap();
        assert_eq!(status(&runtime, &ids[4]).await, TaskStatus::Cancelled);
        assert_eq!(runtime.queue_places(&ids).await.unwrap().get(&ids[3]), Some(&1));
        runtime.control("alice", &ids[0], Control::Resume).await.unwrap();
        assert_eq!(runtime.running_tasks(), (3, 2), "a person's resume never waits in the queue");

        for id in [&ids[0], &ids[1]] {
            runtime.report("alice", id, 1, completed()).await.unwrap();
        }
        started(&mut events, &ids[3]).await;
        assert_eq!(runtime.running_tasks(), (2, 2), "the next starts only once there is room");
        for id in [&ids[2], &ids[3]] {
            runtime.report("alice", id, 1, completed()).await.unwrap();
        }
        for id in &ids[..4] {
            assert_eq!(status(&runtime, id).await, TaskStatus::Completed, "{backend:?}");
        }
        assert_eq!(runtime.running_tasks(), (0, 2));
        runtime.shutdown().await;
    }
}

// Over the API, a queued task is `pending` with its place in the progress document, the
// task list and a WebSocket snapshot, and moves up as the tasks before it start.
on_both_backends! {
    async fn the_api_shows_a_queued_tasks_place(backend: Backend) {
        let db = TestDb::new(backend);
        let options = RuntimeOptions { max_running_tasks: 1, ..options("api", Arc::new(ManualClock::new(NOW))) };
        let server =
            ApiServer::start_with_options(&db, options, ApiSettings::default(), NotificationSettings::default()).await;
        let alice = server.token("alice").await;
        let plan = r#"{"title": "Queued", "steps": [{"name": "a", "kind": "external"}]}"#;
        let ids = [create(&server, &alice, plan).await, create(&server, &alice, plan).await, create(&server, &alice, plan).await];
        let third = progress(&server, &alice, &ids[2]).await;
        assert_eq!((third["status"].as_str(), third["queue_place"].as_u64()), (Some("pending"), Some(2)), "{third}");
        assert!(progress(&server, &alice, &ids[0]).await["queue_place"].is_null());
        let list = server.get("/api/tasks", &alice).await;
        let places: BTreeMap<String, serde_json::Value> = list.body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["task_id"].as_str().unwrap().to_owned(), t["queue_place"].clone()))
            .collect();
        let expected =
            BTreeMap::from([(ids[2].clone(), json!(2)), (ids[1].clone(), json!(1)), (ids[0].clone(), json!(null))]);
        assert_eq!(places, expected, "{backend:?}");
        let bearer = format!("Bearer {alice}");
        let mut socket = server.websocket(&format!("/ws/tasks/{}", ids[1]), &[("Authorization", &bearer)]).await.unwrap();
        let snapshot = socket.next_matching("a snapshot", |m| m["type"] == "snapshot").await;
        assert_eq!(snapshot["task"]["queue_place"], 1);

        report(&server, &alice, &ids[0], 1, json!({"status": "completed"})).await;
        socket.next_matching("the queued task's start", |m| m["type"] == "task_started").await;
        let third = progress(&server, &alice, &ids[2]).await;
        assert_eq!(third["queue_place"], 1, "{third}");
        server.stop().await;
    }
}

/// Reports the step of `id` completed on the server running it.
async fn complete_where_it_runs(servers: &[&Runtime], id: &str) {
    for server in servers {
        match server.report("alice", id, 1, completed()).await {
            Ok(()) => return,
            Err(RuntimeError::HeldElsewhere(_)) => continue,
            Err(error) => panic!("completing {id}: {error}"),
        }
    }
    panic!("no server runs {id}");
}

/// Two servers that run two at a time each, ten tasks created through the first: four run
/// at once, two on each (the second woken by the doorbell, well before it would look on its
/// own), the rest queue, and every completion lets the oldest queued task start, until all
/// ten complete.
#[actix::test]
async fn two_servers_share_the_queue_and_run_their_limit_each() {
    let db = TestDb::new(Backend::Postgres);
    let first = two_at_a_time(&db, "server-a", Arc::new(ManualClock::new(NOW))).await;
    let second = two_at_a_time(&db, "server-b", Arc::new(ManualClock::new(NOW + 1_000))).await;
    let (mut on_first, mut on_second) =
        (first.events(Topic::All).await.unwrap(), second.events(Topic::All).await.unwrap());
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(first.create_task("alice", &external_plan(&format!("Task {i}"), 1), true).await.unwrap());
    }
    let woken = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..2 {
            wait_for(&mut on_second, "task_started", |kind| matches!(kind, EventKind::TaskStarted)).await;
        }
    });
    woken.await.expect("the second server claims queued tasks when the doorbell rings, not 20 s later");
    assert_eq!((first.running_tasks(), second.running_tasks()), ((2, 2), (2, 2)));
    let queued = psql_on(&db.url, "SELECT count(*) FROM tasks WHERE status = 'pending' AND queued_at IS NOT NULL");
    assert_eq!(queued, "6");

    let (mut done, mut ran_on_second) = (0, 2);
    while done < ids.len() {
        let mut running = Vec::new();
        for id in &ids {
            if status(&first, id).await == TaskStatus::Running {
                running.push(id.clone());
            }
        }
        assert!(!running.is_empty() && running.len() <= 4, "{running:?}");
        // Both servers are full, so nothing starts until a completion frees a place.
        let queued: usize = psql_on(&db.url, "SELECT count(*) FROM tasks WHERE status = 'pending'").parse().unwrap();
        for id in &running {
            complete_where_it_runs(&[&first, &second], id).await;
        }
        done += running.len();
        // As many start as places were freed, while tasks wait.
        let mut starts = running.len().min(queued);
        while starts > 0 {
            tokio::select! {
                event = on_first.recv() => if matches!(event.map(|e| e.kind), Some(EventKind::TaskStarted)) { starts -= 1 },
                event = on_second.recv() => if matches!(event.map(|e| e.kind), Some(EventKind::TaskStarted)) { starts -= 1; ran_on_second += 1 },
            }
            assert!(first.running_tasks().0 <= 2 && second.running_tasks().0 <= 2);
        }
    }
    for id in &ids {
        assert_eq!(status(&first, id).await, TaskStatus::Completed);
    }
    assert!((2..=8).contains(&ran_on_second), "both servers ran tasks: {ran_on_second} of 10 on the second");
    first.shutdown().await;
    second.shutdown().await;
}
