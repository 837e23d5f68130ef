//! `POST /api/chat` against the real server: the bot answers in the seed's format, finds the
//! task from loose words, and does what it was told only once it was confirmed.

use std::sync::Arc;

use runtime::SystemClock;
use serde_json::{json, Value};

use crate::api_support::*;
use crate::on_both_backends;
use crate::support::*;

const CRM: &str = r#"{"title": "Cellphone Store CRM", "complexity": 4, "steps": [
    {"name": "Create database tables", "kind": "external"},
    {"name": "Generate application UI", "kind": "external", "substeps": ["Customer list view", "Sales form"]}
]}"#;

async fn say(server: &ApiServer, token: &str, message: &str) -> Value {
    let answer = server.post("/api/chat", token, &json!({"message": message}).to_string()).await;
    assert_eq!(answer.status, 200, "{message:?}: {:?}", answer.body);
    answer.body
}

async fn status_of(server: &ApiServer, token: &str, id: &str) -> String {
    server.get(&format!("/api/tasks/{id}/progress"), token).await.body["status"].as_str().unwrap().to_owned()
}

on_both_backends! {
    async fn the_bot_reports_progress_in_the_seeds_format(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;
        let created = server.post("/api/tasks", &token, CRM).await;
        let id = created.body["task_id"].as_str().unwrap().to_owned();
        let report = |step: u32, body: &'static str| {
            let path = format!("/api/tasks/{id}/steps/{step}/report");
            let token = token.clone();
            let server = &server;
            async move { server.post(&path, &token, body).await }
        };
        report(1, r#"{"log": "42 tables created", "status": "completed"}"#).await;
        report(2, r#"{"substep_done": "Customer list view"}"#).await;

        let answer = say(&server, &token, "How's my CRM task going?").await;
        assert_eq!(answer["task_id"], id.as_str());
        let reply = answer["reply"].as_str().unwrap();
        assert!(reply.starts_with("📊 Your Cellphone Store CRM task is 75% complete.\n\nCurrently: Generate application UI\n- ✓ Customer list view\n- ⏳ Sales form (in progress)"), "{reply}");
        assert!(reply.contains("\n\nETA: "), "{reply}");
        assert!(answer.get("action").is_none(), "a question acts on nothing");

        let logs = say(&server, &token, "show logs for step 1 of the store one").await;
        assert!(logs["reply"].as_str().unwrap().contains("42 tables created"), "{logs}");
        let listed = say(&server, &token, "WHAT'S RUNNING?").await;
        assert!(listed["reply"].as_str().unwrap().contains("Cellphone Store CRM"), "{listed}");
        let puzzled = say(&server, &token, "sing me a song").await;
        assert!(puzzled["reply"].as_str().unwrap().contains("How's my"), "examples of what it can do: {puzzled}");

        let bob = server.token("bob").await;
        let theirs = say(&server, &bob, "status of my CRM task").await;
        assert!(theirs.get("task_id").is_none(), "bob's bot knows none of alice's tasks: {theirs}");
        server.stop().await;
    }

    async fn a_cancel_waits_for_yes_and_then_really_cancels(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;
        let id = server.post("/api/tasks", &token, CRM).await.body["task_id"].as_str().unwrap().to_owned();

        let asked = say(&server, &token, "Cancel my CRM task").await;
        assert!(asked["reply"].as_str().unwrap().contains("yes"), "{asked}");
        assert_eq!(status_of(&server, &token, &id).await, "running", "not before a yes");
        let declined = say(&server, &token, "no").await;
        assert!(declined.get("action").is_none(), "{declined}");
        assert_eq!(status_of(&server, &token, &id).await, "running");
        // Another message drops the question: a late "yes" confirms nothing.
        say(&server, &token, "cancel it").await;
        say(&server, &token, "how far along is it?").await;
        let stray = say(&server, &token, "yes").await;
        assert!(stray.get("action").is_none(), "{stray}");
        assert_eq!(status_of(&server, &token, &id).await, "running");

        say(&server, &token, "cancle it").await;
        let done = say(&server, &token, "yes").await;
        assert_eq!((done["action"].as_str(), done["task_id"].as_str()), (Some("cancel"), Some(id.as_str())), "{done}");
        assert_eq!(status_of(&server, &token, &id).await, "cancelled");
        server.stop().await;
    }

    async fn start_over_makes_a_fresh_run_that_it_then_means(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;
        let id = server.post("/api/tasks", &token, CRM).await.body["task_id"].as_str().unwrap().to_owned();
        say(&server, &token, "Cancel my CRM task and start over").await;
        let restarted = say(&server, &token, "yes").await;
        assert_eq!(restarted["action"], "restart", "{restarted}");
        let new_id = restarted["task_id"].as_str().unwrap().to_owned();
        assert_ne!(new_id, id);
        assert_eq!(status_of(&server, &token, &id).await, "cancelled");
        let fresh = server.get(&format!("/api/tasks/{new_id}/progress"), &token).await;
        assert_eq!((fresh.body["status"].as_str(), fresh.body["restarted_from"].as_str()), (Some("running"), Some(id.as_str())));
        let paused = say(&server, &token, "pause it").await;
        assert_eq!((paused["action"].as_str(), paused["task_id"].as_str()), (Some("pause"), Some(new_id.as_str())), "\"it\" is the new run");
        assert_eq!(status_of(&server, &token, &new_id).await, "paused");
        let bad = server.post("/api/chat", &token, r#"{"message": ""}"#).await;
        assert_eq!((bad.status, bad.code()), (400, "invalid_request"));
        server.stop().await;
    }
}
