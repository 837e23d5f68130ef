//! `GET /metrics` on a live server: what a small task, a request and a WebSocket leave in
//! the series, read as a Prometheus scraper reads them; who may read them; and a second
//! server in the same process counting only its own.

use std::sync::Arc;

use config::ApiSettings;
use runtime::SystemClock;
use serde_json::json;

use crate::api_support::{create, progress, report, ApiServer};
use crate::on_both_backends;
use crate::support::*;

/// The scraper's token (`api.metrics_token`).
const SCRAPER: &str = "scraper-0123456789abcdef";

/// Two external steps: a worker drives them over the API.
const PLAN: &str = r#"{"title": "Import", "steps": [
    {"name": "Fetch", "kind": "external"},
    {"name": "Load", "kind": "external"}
]}"#;

/// A server whose metrics `SCRAPER` may read.
async fn scraped_server(db: &TestDb) -> ApiServer {
    let api = ApiSettings { metrics_token: Some(SCRAPER.to_owned()), ..ApiSettings::default() };
    ApiServer::start(db, Arc::new(SystemClock), api).await
}

/// The metrics as the scraper reads them.
async fn scrape(server: &ApiServer) -> String {
    let answer = server.get("/metrics", SCRAPER).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    answer.body.as_str().expect("text").to_owned()
}

/// The value of one series (`name{labels}` as written), if the text has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    let line = text.lines().find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// [`sample`], which must be there.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

on_both_backends! {
    async fn a_task_a_request_and_a_websocket_show_in_the_metrics(backend: Backend) {
        let db = TestDb::new(backend);
        let server = scraped_server(&db).await;
        let alice = server.token("alice").await;

        let id = create(&server, &alice, PLAN).await;
        for step in [1, 2] {
            report(&server, &alice, &id, step, json!({"progress": 50})).await;
            report(&server, &alice, &id, step, json!({"status": "completed"})).await;
        }
        assert_eq!(progress(&server, &alice, &id).await["status"], "completed");
        let bearer = format!("Bearer {alice}");
        let mut live = server.websocket(&format!("/ws/tasks/{id}"), &[("Authorization", &bearer)]).await.unwrap();
        assert_eq!(live.next().await["type"], "snapshot");

        let text = scrape(&server).await;
        let kind = r#"{kind="external"}"#;
        assert_eq!(value(&text, &format!("stepwise_steps_started_total{kind}")), 2.0);
        assert_eq!(value(&text, &format!("stepwise_steps_completed_total{kind}")), 2.0);
        assert_eq!(sample(&text, &format!("stepwise_steps_failed_total{kind}")), None, "no step failed");
        assert_eq!(value(&text, &format!("stepwise_step_duration_seconds_count{kind}")), 2.0);
        assert_eq!(value(&text, "stepwise_progress_events_total"), 2.0);
        // Creating (and starting) the task, ending step 1 (starting step 2), ending step 2.
        assert!(value(&text, "stepwise_commit_duration_seconds_count") >= 3.0, "{text}");
        assert_eq!(value(&text, "stepwise_eta_ratio_count"), 1.0, "the task was estimated when it started");
        let route = |method: &str, route: &str, status: u16| {
            format!(r#"stepwise_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#)
        };
        assert_eq!(value(&text, &route("GET", "/api/tasks/{task_id}/progress", 200)), 1.0);
        assert_eq!(value(&text, &route("POST", "/api/tasks/{task_id}/steps/{order}/report", 200)), 4.0);
        assert_eq!(value(&text, &route("POST", "/api/tasks", 201)), 1.0);
        let latency = r#"stepwise_http_request_duration_seconds_count{method="POST",route="/api/tasks/{task_id}/steps/{order}/report"}"#;
        assert_eq!(value(&text, latency), 4.0);
        assert!(!text.contains(&id), "paths with ids make no series");
        assert_eq!(value(&text, r#"stepwise_tasks{status="completed"}"#), 1.0);
        assert_eq!(value(&text, r#"stepwise_tasks{status="running"}"#), 0.0);
        assert_eq!(value(&text, "stepwise_websocket_connections"), 1.0);
        // The recorder, the notifier and the WebSocket.
        assert_eq!(value(&text, "stepwise_hub_subscribers"), 3.0);
        assert_eq!(value(&text, "stepwise_hub_lagged_drops_total"), 0.0);
        assert!(value(&text, r#"stepwise_db_connections{state="idle"}"#) >= 1.0, "{text}");
        assert!(sample(&text, r#"stepwise_db_connections{state="in_use"}"#).is_some(), "{text}");
        assert_eq!(value(&text, r#"stepwise_db_connections{state="waiting"}"#), 0.0, "{text}");
        let foreign: Vec<&str> =
            text.lines().filter(|line| !line.starts_with('#') && !line.starts_with("stepwise_")).collect();
        assert!(foreign.is_empty(), "every series is stepwise_…: {foreign:?}");

        // The scrape before this one counts too, under its own route.
        let again = scrape(&server).await;
        assert_eq!(value(&again, &route("GET", "/metrics", 200)), 1.0);

        // A second server in this process has a registry of its own.
        let other_db = TestDb::new(backend);
        let other = scraped_server(&other_db).await;
        let other_text = scrape(&other).await;
        assert_eq!(sample(&other_text, &format!("stepwise_steps_started_total{kind}")), None, "{other_text}");
        assert_eq!(value(&other_text, r#"stepwise_tasks{status="completed"}"#), 0.0);
        assert_eq!(value(&other_text, "stepwise_websocket_connections"), 0.0);
        other.stop().await;

        // Only the scraper's token opens them: not a user's, not none.
        for token in [None, Some(alice.as_str()), Some("scraper-0123456789abcdeX")] {
            let refused = server.call("GET", "/metrics", token, None).await;
            assert_eq!((refused.status, refused.code()), (401, "unauthorized"), "{token:?}: {:?}", refused.body);
            assert!(refused.body["error"]["request_id"].is_string(), "{:?}", refused.body);
        }
        server.stop().await;
    }

    async fn metrics_are_not_served_without_a_metrics_token(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let alice = server.token("alice").await;
        for token in [None, Some(alice.as_str()), Some(SCRAPER)] {
            let answer = server.call("GET", "/metrics", token, None).await;
            assert_eq!((answer.status, answer.code()), (404, "not_found"), "{token:?}: {:?}", answer.body);
            let message = answer.body["error"]["message"].as_str().unwrap_or("");
            assert!(message.contains("api.metrics_token"), "{message}");
        }
        server.stop().await;
    }
}
