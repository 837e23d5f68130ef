//! A user sees only their own tasks: every route of the API and both WebSocket routes answer
//! another user's task exactly like a missing one. The test walks `adapters::api::ROUTES`,
//! so a new route that is not probed here fails it until someone decides how it is probed.

use std::sync::Arc;

use runtime::SystemClock;
use serde_json::{json, Value};

use crate::api_support::*;
use crate::on_both_backends;
use crate::support::*;

/// An id no task has, of the same shape as a real one.
const MISSING: &str = "0000000000000000";

const PLAN: &str = r#"{"title": "Cellphone Store CRM", "steps": [
    {"name": "Gather", "kind": "external"},
    {"name": "Design", "kind": "external", "requires_approval": true}]}"#;

/// How a route is probed for a leak of alice's task to bob.
enum Probe {
    /// The route names a task: bob's request on alice's task must read exactly like his
    /// request on a missing one (status and body, the id aside).
    TaskPath { body: Option<&'static str> },
    /// The route names no task and answers for the caller alone. Those that hold task data
    /// (the task list, the chat, the notification log, WebSocket feeds, push subscriptions)
    /// are checked below; the others (preferences, the VAPID key, subscribing, approval
    /// links, whose token is the credential, the OpenAPI document, the cluster's servers,
    /// the commands servers carry to each other, which need the cluster's secret) hold none.
    Owned,
}

/// The probe of each route; a route this does not know fails the test.
fn probe(method: &str, path: &str) -> Probe {
    match (method, path) {
        ("POST", "/api/tasks/{task_id}/steps/{order}/report") => Probe::TaskPath { body: Some(r#"{"progress": 5}"#) },
        ("POST", "/api/tasks/{task_id}/approve" | "/api/tasks/{task_id}/reject") => {
            Probe::TaskPath { body: Some(r#"{"step": 2, "comment": "fine"}"#) }
        }
        (_, path) if path.contains("{task_id}") => Probe::TaskPath { body: None },
        ("GET" | "POST", "/api/tasks" | "/api/chat")
        | ("GET", "/api/notifications" | "/api/notifications/preferences" | "/api/push/vapid-public-key")
        | ("PUT", "/api/notifications/preferences")
        | ("POST", "/api/push/subscriptions")
        | ("DELETE", "/api/push/subscriptions/{subscription_id}")
        | ("POST", "/api/approval-links/{token}")
        | ("GET", "/api/openapi.json" | "/api/cluster" | "/ws/tasks")
        | ("POST", "/api/cluster/commands") => Probe::Owned,
        (method, path) => panic!("{method} {path} is not probed for ownership: add it to `probe`"),
    }
}

/// `body` with `id` replaced, and without its request id (each request has its own).
fn without(body: &Value, id: &str) -> String {
    let mut body = body.clone();
    if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
        error.remove("request_id");
    }
    body.to_string().replace(id, "ID")
}

on_both_backends! {
    async fn another_users_task_reads_like_a_missing_one_on_every_route(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let (alice, bob) = (server.token("alice").await, server.token("bob").await);
        let id = create(&server, &alice, PLAN).await;
        report(&server, &alice, &id, 1, json!({"progress": 30, "log": "alice's line"})).await;
        let bearer = format!("Bearer {bob}");
        let mut bobs_feed = server.websocket("/ws/tasks", &[("Authorization", &bearer)]).await.unwrap();

        for (method, template) in adapters::api::ROUTES {
            let Probe::TaskPath { body } = probe(method, template) else { continue };
            let path = template.replace("{task_id}", &id).replace("{order}", "1");
            let paths = if path.starts_with("/ws/") {
                vec![path.clone(), format!("{path}?after_seq=0")]
            } else if path.ends_with("/logs") {
                vec![path.clone(), format!("{path}?step=1"), format!("{path}?step=1&after=0")]
            } else {
                vec![path]
            };
            for path in paths {
                let missing_path = path.replace(&id, MISSING);
                let (theirs, missing) = if path.starts_with("/ws/") {
                    let theirs = server.websocket(&path, &[("Authorization", &bearer)]).await.err();
                    let missing = server.websocket(&missing_path, &[("Authorization", &bearer)]).await.err();
                    (theirs.expect("bob cannot follow alice's task"), missing.expect("nor a missing one"))
                } else {
                    let theirs = server.call(method, &path, Some(&bob), body).await;
                    let missing = server.call(method, &missing_path, Some(&bob), body).await;
                    ((theirs.status, theirs.body), (missing.status, missing.body))
                };
                assert_eq!(theirs.0, 404, "{method} {path}: {}", theirs.1);
                assert_eq!(theirs.1["error"]["code"], "not_found", "{method} {path}");
                assert_eq!(
                    (theirs.0, without(&theirs.1, &id)),
                    (missing.0, without(&missing.1, MISSING)),
                    "{method} {path}: another user's task reads exactly like a missing one"
                );
            }
        }

        // The routes that name no task show bob nothing of alice's.
        assert_eq!(server.get("/api/tasks", &bob).await.body["tasks"], json!([]));
        let asked = server.post("/api/chat", &bob, r#"{"message": "How's my CRM task going?"}"#).await;
        assert!(asked.body.get("task_id").is_none(), "bob's bot knows none of alice's tasks: {}", asked.body);
        let transcript = server.get("/api/chat", &bob).await;
        assert!(!transcript.body.to_string().contains(&id), "bob's transcript: {}", transcript.body);
        assert_eq!(server.get("/api/notifications", &bob).await.body["notifications"], json!([]));

        // A resume on bob's feed for alice's task is answered like one for a missing task.
        let mut answers = Vec::new();
        for task in [id.as_str(), MISSING] {
            bobs_feed.send(&json!({"type": "resume", "after_seq": {task: 0}}).to_string());
            answers.push(bobs_feed.next_matching("an error", |m| m["type"] == "error").await);
        }
        let (theirs, missing) = (&answers[0], &answers[1]);
        assert_eq!(without(theirs, &id), without(missing, MISSING), "a resume on alice's task");
        assert_eq!(theirs["error"]["code"], "not_found");

        // Alice's subscriptions are hers: bob's delete finds none.
        let subscription = alices_push_subscription(&server).await;
        let theirs = server.call("DELETE", &format!("/api/push/subscriptions/{subscription}"), Some(&bob), None).await;
        let missing = server.call("DELETE", &format!("/api/push/subscriptions/{MISSING}"), Some(&bob), None).await;
        assert_eq!((theirs.status, without(&theirs.body, &subscription)), (missing.status, without(&missing.body, MISSING)));
        assert_eq!(theirs.status, 404);

        // Alice's task moves; bob's feed sees nothing of it, only his own task afterwards.
        report(&server, &alice, &id, 1, json!({"status": "completed"})).await;
        let own = create(&server, &bob, PLAN).await;
        let first = bobs_feed.next_matching("a message about a task", |m| m.get("task_id").is_some()).await;
        assert_eq!(first["task_id"], own.as_str(), "bob's first task message is about his own task: {first}");
        assert_eq!(server.get(&format!("/api/tasks/{id}/progress"), &alice).await.body["status"], "approval");
        server.stop().await;
    }
}

/// Stores a push subscription of alice's straight in the database; returns its id.
async fn alices_push_subscription(server: &ApiServer) -> String {
    let db = Arc::clone(server.runtime.db());
    let record = db::PushSubscriptionRecord {
        id: "sub-alice-1".to_owned(),
        user: "alice".to_owned(),
        endpoint: "https://push.example/alice".to_owned(),
        p256dh: "key".to_owned(),
        auth: "secret".to_owned(),
        created_at: 0,
    };
    tokio::task::spawn_blocking(move || db::save_push_subscription(&mut db.conn().unwrap(), &record).unwrap().id)
        .await
        .unwrap()
}
