//! The HTTP and WebSocket API against the real server on 127.0.0.1 with a real database:
//! every route's success and error paths, users kept apart, and the realtime stream's
//! snapshot, replay and slow-client rules.

use std::sync::Arc;

use config::ApiSettings;
use runtime::{ManualClock, SystemClock};
use serde_json::{json, Value};

use crate::api_support::*;
use crate::on_both_backends;
use crate::support::*;

/// Two external steps; the first has substeps, the second waits for approval.
const PLAN: &str = r#"{"title": "Cellphone Store CRM", "complexity": 3, "steps": [
    {"name": "Create database", "kind": "external", "substeps": ["customers", "products"]},
    {"name": "Generate UI", "kind": "external", "requires_approval": true}
]}"#;

/// Method, path, body, then the status, error code and words the message must contain.
type BadRequest = (&'static str, String, Option<String>, u16, &'static str, &'static str);

#[actix::test]
async fn approval_links_are_rate_limited_by_address() {
    let db = TestDb::new(Backend::Sqlite);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let api = ApiSettings { requests_per_second: 1, request_burst: 1, ..ApiSettings::default() };
    let server = ApiServer::start(&db, clock.clone(), api).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let answer = server.call("POST", "/api/approval-links/nonsense", None, None).await;
        statuses.push(answer.status);
        if answer.status == 429 {
            assert_eq!(answer.header("retry-after"), Some("1"), "{:?}", answer.body);
        }
    }
    assert_eq!(statuses, [400, 400, 429], "one a second and a burst of one, from one address");
    clock.advance(1_000);
    assert_eq!(server.call("POST", "/api/approval-links/nonsense", None, None).await.status, 400, "refilled");
    server.stop().await;
}

on_both_backends! {
    async fn a_line_acknowledged_is_in_the_logs_and_a_percent_in_the_history_at_once(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("ada").await;
        let id = create(&server, &token, r#"{"title": "Read back", "steps": [{"name": "Work", "kind": "external"}]}"#).await;
        report(&server, &token, &id, 1, json!({"progress": 30, "log": "halfway there"})).await;
        let history = server.get(&format!("/api/tasks/{id}/history"), &token).await;
        let percents: Vec<u64> = history.body["rows"].as_array().unwrap().iter().filter_map(|r| r["percent"].as_u64()).collect();
        assert!(percents.contains(&30), "{:?}", history.body);
        report(&server, &token, &id, 1, json!({"log": "last words", "status": "completed"})).await;
        let logs = server.get(&format!("/api/tasks/{id}/logs"), &token).await;
        let lines: Vec<&str> = logs.body["lines"].as_array().unwrap().iter().filter_map(|l| l["line"].as_str()).collect();
        assert_eq!(lines, ["halfway there", "last words"], "every acknowledged line, right after");
        server.stop().await;
    }

    async fn a_percent_with_decimals_is_taken_and_the_estimator_keeps_them(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("ada").await;
        let id = create(&server, &token, r#"{"title": "Ten thousand rows", "steps": [{"name": "Import", "kind": "external"}]}"#).await;
        let document = report(&server, &token, &id, 1, json!({"progress": 12.5})).await;
        assert_eq!((document["steps"][0]["progress"].as_u64(), document["progress"].as_u64()), (Some(12), Some(12)));
        report(&server, &token, &id, 1, json!({"progress": 12.75})).await;
        for bad in [json!({"progress": -0.5}), json!({"progress": 100.01})] {
            let refused = server.post(&format!("/api/tasks/{id}/steps/1/report"), &token, &bad.to_string()).await;
            assert_eq!((refused.status, refused.code()), (422, "invalid_report"), "{bad}: {:?}", refused.body);
        }
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        let database = Arc::clone(server.runtime.db());
        let runs = tokio::task::spawn_blocking(move || db::task_step_runs(&mut database.conn().unwrap(), &id).unwrap())
            .await
            .unwrap();
        let percents: Vec<f64> = runs[0].progress.iter().map(|mark| mark.percent).collect();
        assert_eq!(percents, [12.5, 12.75], "the estimator learns from the exact percents");
        server.stop().await;
    }

    async fn a_task_runs_end_to_end_over_http(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;

        let created = server.post("/api/tasks", &token, PLAN).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["task_id"].as_str().unwrap().to_owned();
        assert_eq!(created.header("location"), Some(format!("/api/tasks/{id}/progress").as_str()));
        let document = &created.body;
        // The seed's fields, in the seed's order, then ours.
        let keys: Vec<&str> = document.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            &keys[..9],
            ["task_id", "title", "status", "progress", "current_step", "total_steps", "started_at", "eta_seconds", "steps"]
        );
        assert_eq!(document["status"], "running");
        assert_eq!(document["current_step"], 1);
        assert_eq!(document["total_steps"], 2);
        assert!(document["started_at"].as_str().unwrap().ends_with('Z'));
        assert!(document["eta_seconds"].as_u64().is_some(), "a running task has an ETA: {document}");
        let step = &document["steps"][0];
        assert_eq!(step["status"], "running");
        assert_eq!(step["substeps"], json!([{"name": "customers", "done": false}, {"name": "products", "done": false}]));

        report(&server, &token, &id, 1, json!({"progress": 40, "log": "made tables"})).await;
        let ticked = report(&server, &token, &id, 1, json!({"substep_done": "customers"})).await;
        assert_eq!(ticked["steps"][0]["substeps"][0]["done"], true);
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;

        let progress = server.get(&format!("/api/tasks/{id}/progress"), &token).await;
        assert_eq!(progress.body["status"], "approval");
        assert_eq!(progress.body["waiting_on"], json!({"kind": "approval", "step": 2}));
        assert_eq!(progress.body["progress"], 50);
        // Naming another step than the waiting one decides nothing.
        let wrong = server.post(&format!("/api/tasks/{id}/approve"), &token, r#"{"step": 1, "comment": "go"}"#).await;
        assert_eq!((wrong.status, wrong.code()), (409, "conflict"), "{:?}", wrong.body);
        let approved = server.post(&format!("/api/tasks/{id}/approve"), &token, r#"{"step": 2, "comment": "go"}"#).await;
        assert_eq!(approved.status, 200, "{:?}", approved.body);
        assert_eq!(approved.body["steps"][1]["status"], "running");
        report(&server, &token, &id, 2, json!({"status": "completed", "output": "ui"})).await;

        let finished = server.get(&format!("/api/tasks/{id}/progress"), &token).await;
        assert_eq!(finished.body["status"], "completed");
        assert_eq!(finished.body["progress"], 100);
        assert_eq!(finished.body["eta_seconds"], 0);
        assert!(finished.body["finished_at"].is_string());

        server.runtime.flush().await;
        let history = server.get(&format!("/api/tasks/{id}/history"), &token).await;
        assert_eq!(history.status, 200);
        let rows = history.body["rows"].as_array().unwrap();
        assert!(rows.iter().any(|r| r["step"] == 1 && r["status"] == "completed" && r["percent"] == 100), "{rows:?}");
        let logs = server.get(&format!("/api/tasks/{id}/logs?step=1"), &token).await;
        assert_eq!(logs.status, 200, "{:?}", logs.body);
        let lines: Vec<&str> = logs.body["lines"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap()).collect();
        assert!(lines.contains(&"made tables"), "{lines:?}");
        let after = logs.body["next_after"].as_i64().unwrap();
        let none_after = server.get(&format!("/api/tasks/{id}/logs?after={after}"), &token).await;
        assert_eq!(none_after.body["lines"], json!([]));

        let list = server.get("/api/tasks?status=completed", &token).await;
        assert_eq!(list.body["tasks"][0]["task_id"], id.as_str());
        let running = server.get("/api/tasks?status=running", &token).await;
        assert_eq!(running.body["tasks"], json!([]));
        server.stop().await;
    }

    async fn every_step_not_done_carries_its_expected_time_in_the_document_and_the_stream(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let server = ApiServer::start_default(&db, clock.clone()).await;
        let token = server.token("alice").await;
        let plan = r#"{"title": "Three", "steps": [
            {"name": "a", "kind": "external"}, {"name": "b", "kind": "external"}, {"name": "c", "kind": "external"}
        ]}"#;
        let id = create(&server, &token, plan).await;
        let bearer = format!("Bearer {token}");
        let mut stream = server.websocket(&format!("/ws/tasks/{id}"), &[("Authorization", &bearer)]).await.unwrap();
        let snapshot = stream.next().await;
        let expected = |steps: &Value| -> Vec<Value> {
            steps.as_array().unwrap().iter().map(|s| s["expected_seconds"].clone()).collect()
        };
        let at_start = expected(&snapshot["task"]["steps"]);
        assert!(at_start.iter().all(|e| e.as_u64().is_some_and(|s| s > 0)), "each step has a time: {snapshot}");

        clock.advance(5_000);
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        let eta = stream.next_matching("the ETA after step 1", |m| m["type"] == "eta" && m["steps"][0]["step"] != 1).await;
        let listed: Vec<u64> = eta["steps"].as_array().unwrap().iter().map(|s| s["step"].as_u64().unwrap()).collect();
        assert_eq!(listed, [2, 3], "the steps still to go, the running one first: {eta}");
        let document = server.get(&format!("/api/tasks/{id}/progress"), &token).await.body;
        let in_document = expected(&document["steps"]);
        assert_eq!(in_document[0], Value::Null, "a completed step needs nothing more: {document}");
        assert_eq!(
            in_document[1..],
            [eta["steps"][0]["expected_seconds"].clone(), eta["steps"][1]["expected_seconds"].clone()],
            "the document and the stream agree: {document} {eta}"
        );

        clock.advance(5_000);
        report(&server, &token, &id, 2, json!({"status": "completed"})).await;
        clock.advance(5_000);
        report(&server, &token, &id, 3, json!({"status": "completed"})).await;
        let document = server.get(&format!("/api/tasks/{id}/progress"), &token).await.body;
        assert_eq!(document["status"], "completed");
        assert_eq!(expected(&document["steps"]), [Value::Null, Value::Null, Value::Null], "{document}");
        server.stop().await;
    }

    async fn the_task_list_pages_newest_first(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let server = ApiServer::start_default(&db, clock.clone()).await;
        let token = server.token("alice").await;
        let mut ids = Vec::new();
        for i in 0..5 {
            clock.advance(1000);
            let plan = format!(r#"{{"title": "T{i}", "start": false, "steps": [{{"name": "a", "kind": "external"}}]}}"#);
            ids.push(create(&server, &token, &plan).await);
        }
        ids.reverse();
        let mut listed = Vec::new();
        let mut path = "/api/tasks?limit=2".to_owned();
        loop {
            let page = server.get(&path, &token).await;
            assert_eq!(page.status, 200, "{:?}", page.body);
            listed.extend(page.body["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap().to_owned()));
            match page.body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/tasks?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(listed, ids, "every task once, newest first");
        let pending = server.get("/api/tasks?status=pending&limit=200", &token).await;
        assert_eq!(pending.body["tasks"].as_array().unwrap().len(), 5);
        server.stop().await;
    }

    async fn controls_answer_with_the_new_state_and_409_when_not_allowed(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;
        let id = create(&server, &token, &PLAN.replace("\"complexity\": 3,", "\"complexity\": 3, \"start\": false,")).await;
        let pending = server.get(&format!("/api/tasks/{id}/progress"), &token).await;
        assert_eq!(pending.body["status"], "pending");
        let resumed = server.post(&format!("/api/tasks/{id}/resume"), &token, "").await;
        assert_eq!((resumed.status, resumed.code()), (409, "conflict"), "{:?}", resumed.body);
        assert_eq!(server.post(&format!("/api/tasks/{id}/start"), &token, "").await.body["status"], "running");
        assert_eq!(server.post(&format!("/api/tasks/{id}/pause"), &token, "").await.body["status"], "paused");
        assert_eq!(server.post(&format!("/api/tasks/{id}/resume"), &token, "").await.body["status"], "running");

        let failed = report(&server, &token, &id, 1, json!({"status": "failed", "error": "disk full"})).await;
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["steps"][0]["error"], "disk full");
        assert_eq!(failed["waiting_on"], json!({"kind": "retry", "step": 1}));
        let late = server.post(&format!("/api/tasks/{id}/steps/1/report"), &token, r#"{"progress": 10}"#).await;
        assert_eq!(late.status, 409, "a report to a step that is not running: {:?}", late.body);
        let retried = server.post(&format!("/api/tasks/{id}/steps/1/retry"), &token, "").await;
        assert_eq!(retried.body["steps"][0]["status"], "running");
        assert_eq!(retried.body["steps"][0]["attempts"], 2);
        report(&server, &token, &id, 1, json!({"status": "failed"})).await;
        let skipped = server.post(&format!("/api/tasks/{id}/steps/1/skip"), &token, "").await;
        assert_eq!(skipped.body["steps"][0]["status"], "skipped");
        assert_eq!(skipped.body["status"], "approval");
        let rejected = server.post(&format!("/api/tasks/{id}/reject"), &token, r#"{"comment": "no"}"#).await;
        assert_eq!(rejected.body["status"], "failed", "{:?}", rejected.body);

        let restarted = server.post(&format!("/api/tasks/{id}/restart"), &token, "").await;
        assert_eq!(restarted.status, 201, "{:?}", restarted.body);
        assert_eq!(restarted.body["restarted_from"], id.as_str());
        assert_eq!(restarted.body["status"], "running");
        let new_id = restarted.body["task_id"].as_str().unwrap().to_owned();
        let cancelled = server.post(&format!("/api/tasks/{new_id}/cancel"), &token, "").await;
        assert_eq!(cancelled.body["status"], "cancelled");
        let again = server.post(&format!("/api/tasks/{new_id}/pause"), &token, "").await;
        assert_eq!((again.status, again.code()), (409, "conflict"));
        assert!(again.body["error"]["message"].as_str().unwrap().contains("cancelled"), "{:?}", again.body);
        server.stop().await;
    }

    async fn bad_requests_get_the_documented_errors(backend: Backend) {
        let db = TestDb::new(backend);
        let api = ApiSettings { max_body_bytes: 4096, max_steps: 3, ..ApiSettings::default() };
        let server = ApiServer::start(&db, Arc::new(SystemClock), api).await;
        let token = server.token("alice").await;
        let id = create(&server, &token, PLAN).await;

        let cases: Vec<BadRequest> = vec![
            ("POST", "/api/tasks".into(), Some("{\"title\": ".into()), 400, "malformed", "not valid JSON"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": 5, "steps": []}"#.into()), 400, "invalid_request", "at title"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": "T", "steps": [], "colour": 1}"#.into()), 400, "invalid_request", "unknown field `colour`"),
            ("POST", "/api/tasks".into(), Some(r#"{"steps": []}"#.into()), 400, "invalid_request", "missing field `title`"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": "T", "steps": []}"#.into()), 422, "invalid_plan", "at least one step"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": "T", "steps": [{"name": "a", "kind": "teleport"}]}"#.into()), 422, "invalid_plan", "teleport"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": "T", "steps": [{"name": "a", "kind": "exec", "params": {"argv": ["true"]}}]}"#.into()), 422, "invalid_plan", "api.step_kinds"),
            ("POST", "/api/tasks".into(), Some(format!(r#"{{"title": "T", "steps": [{}]}}"#, [r#"{"name": "a", "kind": "wait"}"#; 4].join(","))), 422, "invalid_plan", "limit of 3"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": "T", "steps": [{"name": "a", "kind": "wait", "params": {"seconds": 1}, "retry": {"max_attempts": 0}}]}"#.into()), 422, "invalid_plan", "step 1: retry.max_attempts must be 1 to 100, got 0"),
            ("POST", "/api/tasks".into(), Some(r#"["T", [{"name": "a", "kind": "wait"}]]"#.into()), 400, "invalid_request", "must be a JSON object"),
            ("PUT", "/api/notifications/preferences".into(), Some("[null, null]".into()), 400, "invalid_request", "must be a JSON object"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": "T", "steps": [{"name": "a", "kind": "wait", "params": {"seconds": 1}, "retry": {"max_attempts": 2, "on": ["boredom"]}}]}"#.into()), 400, "invalid_request", "unknown variant `boredom`"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": "T", "steps": [{"name": "a", "kind": "wait", "params": {"seconds": 1}, "approval": {"timeout_s": 60, "on_timeout": "shrug"}}]}"#.into()), 400, "invalid_request", "unknown variant `shrug`"),
            ("POST", "/api/tasks".into(), Some(r#"{"title": "T", "steps": [{"name": "a", "kind": "wait", "params": {"seconds": 1}, "approval": {"timeout_s": 0}}]}"#.into()), 422, "invalid_plan", "approval.timeout_s must be more than 0"),
            ("POST", "/api/tasks".into(), Some(format!(r#"{{"title": "{}", "steps": []}}"#, "x".repeat(5000))), 413, "too_large", "4096"),
            ("GET", "/api/tasks/nope/progress".into(), None, 404, "not_found", "no task nope"),
            ("GET", format!("/api/tasks/{id}/logs?step=9"), None, 404, "not_found", "no step 9"),
            ("GET", format!("/api/tasks/{id}/logs?after=x"), None, 400, "malformed", "query"),
            ("GET", "/api/tasks?status=lost".into(), None, 400, "malformed", "unknown status"),
            ("GET", "/api/tasks?limit=0".into(), None, 400, "malformed", "limit"),
            ("GET", "/api/tasks?cursor=zzz".into(), None, 400, "malformed", "cursor"),
            ("GET", "/api/tasks?colour=red".into(), None, 400, "malformed", "colour"),
            ("POST", format!("/api/tasks/{id}/steps/x/retry"), None, 400, "malformed", "positive integer"),
            ("POST", format!("/api/tasks/{id}/steps/7/skip"), None, 404, "not_found", "no step 7"),
            ("POST", format!("/api/tasks/{id}/steps/1/report"), Some(r#"{"progress": 101}"#.into()), 422, "invalid_report", "0 to 100"),
            ("POST", format!("/api/tasks/{id}/steps/1/report"), Some(r#"{"status": "done"}"#.into()), 400, "invalid_request", "at status"),
            ("POST", format!("/api/tasks/{id}/steps/1/report"), Some("{}".into()), 422, "invalid_report", "empty report"),
            ("POST", format!("/api/tasks/{id}/approve"), Some(r#"{"comment": 3}"#.into()), 400, "invalid_request", "at comment"),
            ("DELETE", format!("/api/tasks/{id}/progress"), None, 405, "method_not_allowed", "DELETE"),
            ("DELETE", "/healthz".into(), None, 405, "method_not_allowed", "DELETE"),
            ("POST", "/metrics".into(), None, 405, "method_not_allowed", "POST"),
            ("GET", "/api/everything".into(), None, 404, "no_route", "/api/everything"),
        ];
        for (method, path, body, status, code, says) in cases {
            let response = server.call(method, &path, Some(&token), body.as_deref()).await;
            assert_eq!((response.status, response.code()), (status, code), "{method} {path}: {:?}", response.body);
            let message = response.body["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{method} {path}: {message:?} should mention {says:?}");
        }

        let not_allowed = server.call("PUT", "/api/tasks", Some(&token), None).await;
        assert_eq!((not_allowed.status, not_allowed.header("allow")), (405, Some("GET, POST")), "405 says what is allowed");
        let headers = [("Authorization".to_owned(), format!("Bearer {token}"))];
        let untyped = server.raw("POST", "/api/tasks", &headers, Some(PLAN.as_bytes())).await;
        assert_eq!((untyped.status, untyped.code()), (415, "unsupported_media_type"));
        server.stop().await;
    }

    async fn exec_steps_come_over_the_api_only_when_the_operator_allows_them(backend: Backend) {
        let plan = r#"{"title": "Shell", "start": false, "steps": [{"name": "Say hi", "kind": "exec", "params": {"argv": ["sh", "-c", "echo hi"]}}]}"#;
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;
        let refused = server.post("/api/tasks", &token, plan).await;
        assert_eq!((refused.status, refused.code()), (422, "invalid_plan"));
        assert_eq!(server.get("/api/tasks", &token).await.body["tasks"], json!([]), "nothing was stored");
        server.stop().await;

        let db = TestDb::new(backend);
        let api = ApiSettings { step_kinds: vec!["exec".into()], ..ApiSettings::default() };
        let server = ApiServer::start(&db, Arc::new(SystemClock), api).await;
        let token = server.token("alice").await;
        let id = create(&server, &token, plan).await;
        let mut feed = server.websocket(&format!("/ws/tasks/{id}"), &[("Authorization", &format!("Bearer {token}"))]).await.unwrap();
        assert_eq!(feed.next().await["type"], "snapshot");
        assert_eq!(server.post(&format!("/api/tasks/{id}/start"), &token, "").await.status, 200);
        let line = feed.next_matching("the program's output", |m| m["type"] == "log").await;
        assert_eq!(line["line"], "hi");
        feed.next_matching("task_complete", |m| m["type"] == "task_complete").await;
        server.stop().await;
    }

    async fn tokens_are_required_checked_and_revocable(backend: Backend) {
        let db = TestDb::new(backend);
        let api = ApiSettings { token_cache_s: 0, ..ApiSettings::default() };
        let server = ApiServer::start(&db, Arc::new(SystemClock), api).await;
        let token = server.token("alice").await;
        let none = server.call("GET", "/api/tasks", None, None).await;
        assert_eq!((none.status, none.code()), (401, "unauthorized"));
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        let bad = server.get("/api/tasks", "sw_000000000000_nope").await;
        assert_eq!((bad.status, bad.code()), (401, "unauthorized"));
        let basic = server.raw("GET", "/api/tasks", &[("Authorization".into(), "Basic YTpi".into())], None).await;
        assert_eq!(basic.status, 401);
        let in_query = server.call("GET", &format!("/api/tasks?token={token}"), None, None).await;
        assert_eq!(in_query.status, 401);
        assert!(in_query.body["error"]["message"].as_str().unwrap().contains("query string"));
        assert_eq!(server.get("/api/tasks", &token).await.status, 200);

        let database = Arc::clone(server.runtime.db());
        let now = server.runtime.clock().now_ms();
        let revoked = tokio::task::spawn_blocking(move || {
            db::revoke_tokens(&mut database.conn().unwrap(), db::TokenSelector::User("alice"), now).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(revoked, 1);
        let after = server.get("/api/tasks", &token).await;
        assert_eq!((after.status, after.code()), (401, "unauthorized"), "a revoked token is refused");
        server.stop().await;
    }

    async fn each_token_is_held_to_its_rate(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let api = ApiSettings { requests_per_second: 2, request_burst: 1, ..ApiSettings::default() };
        let server = ApiServer::start(&db, clock.clone(), api).await;
        let (alice, bob) = (server.token("alice").await, server.token("bob").await);
        // Two a second plus one: three pass, the fourth waits half a second (rounded up).
        for _ in 0..3 {
            assert_eq!(server.get("/api/tasks", &alice).await.status, 200);
        }
        let limited = server.get("/api/tasks", &alice).await;
        assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
        assert_eq!(limited.header("retry-after"), Some("1"));
        assert_eq!(server.get("/api/tasks", &bob).await.status, 200, "another token has its own rate");
        clock.advance(500);
        assert_eq!(server.get("/api/tasks", &alice).await.status, 200, "half a second refills one request");
        assert_eq!(server.get("/api/tasks", &alice).await.status, 429);

        // A token with its own rate (`stepwise token create --rate 10`): ten a second plus the
        // burst, where the server's rate would allow three.
        let worker = server.token("worker").await;
        let id = worker.trim_start_matches("sw_").split('_').next().unwrap().to_owned();
        let database = Arc::clone(server.runtime.db());
        tokio::task::spawn_blocking(move || db::set_token_rate(&mut database.conn().unwrap(), &id, 10).unwrap())
            .await
            .unwrap();
        for i in 0..11 {
            assert_eq!(server.get("/api/tasks", &worker).await.status, 200, "request {i} within the token's own rate");
        }
        let limited = server.get("/api/tasks", &worker).await;
        assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
        clock.advance(100);
        assert_eq!(server.get("/api/tasks", &worker).await.status, 200, "a tenth of a second refills one");
        server.stop().await;
    }

    async fn a_websocket_gets_a_snapshot_then_live_events_in_seq_order(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;
        let id = create(&server, &token, PLAN).await;
        let bearer = format!("Bearer {token}");
        let mut one = server.websocket(&format!("/ws/tasks/{id}"), &[("Authorization", &bearer)]).await.unwrap();
        let mut all = server.websocket("/ws/tasks", &[("Authorization", &bearer)]).await.unwrap();
        for socket in [&mut one, &mut all] {
            let snapshot = socket.next().await;
            assert_eq!(snapshot["type"], "snapshot");
            assert_eq!(snapshot["task"]["task_id"], id.as_str());
            assert_eq!(snapshot["seq"], snapshot["task"]["seq"]);
        }
        report(&server, &token, &id, 1, json!({"progress": 50})).await;
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        server.post(&format!("/api/tasks/{id}/approve"), &token, "").await;
        report(&server, &token, &id, 2, json!({"status": "completed"})).await;
        for socket in [&mut one, &mut all] {
            let progress = socket.next_matching("progress", |m| m["type"] == "progress").await;
            assert_eq!((progress["percent"].as_u64(), progress["step"].as_u64()), (Some(25), Some(1)), "{progress}");
            let complete = socket.next_matching("step_complete", |m| m["type"] == "step_complete").await;
            assert_eq!(complete["step"], 1);
            let approval = socket.next_matching("approval_needed", |m| m["type"] == "approval_needed").await;
            assert_eq!(approval["approval"]["step"], 2);
            assert_eq!(approval["approval"]["name"], "Generate UI");
            let done = socket.next_matching("task_complete", |m| m["type"] == "task_complete").await;
            assert_eq!(done["result"], "completed");
        }
        server.stop().await;
    }

    async fn a_reconnect_after_seq_replays_every_missed_event_once(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;
        let steps: Vec<String> = (1..=6).map(|i| format!(r#"{{"name": "S{i}", "kind": "external"}}"#)).collect();
        let id = create(&server, &token, &format!(r#"{{"title": "Long", "steps": [{}]}}"#, steps.join(","))).await;
        let bearer = format!("Bearer {token}");
        let path = format!("/ws/tasks/{id}");
        let mut first = server.websocket(&path, &[("Authorization", &bearer)]).await.unwrap();
        let snapshot = first.next().await;
        let mut seen: Vec<i64> = Vec::new();
        let mut last = snapshot["seq"].as_i64().unwrap();
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        report(&server, &token, &id, 2, json!({"status": "completed"})).await;
        let started_3 = first.next_matching("step 3 started", |m| m["type"] == "step_started" && m["step"] == 3).await;
        last = last.max(started_3["seq"].as_i64().unwrap());
        drop(first);
        // The task moves on while nobody listens.
        report(&server, &token, &id, 3, json!({"progress": 30})).await;
        report(&server, &token, &id, 3, json!({"status": "completed"})).await;
        report(&server, &token, &id, 4, json!({"status": "failed", "error": "boom"})).await;
        server.post(&format!("/api/tasks/{id}/steps/4/retry"), &token, "").await;

        let mut second = server.websocket(&format!("{path}?after_seq={last}"), &[("Authorization", &bearer)]).await.unwrap();
        // And on while the replay is read.
        report(&server, &token, &id, 4, json!({"status": "completed"})).await;
        report(&server, &token, &id, 5, json!({"status": "completed"})).await;
        report(&server, &token, &id, 6, json!({"status": "completed"})).await;
        loop {
            let message = second.next().await;
            assert_ne!(message["type"], "snapshot", "a resumed stream replays instead of a snapshot");
            if matches!(message["type"].as_str(), Some("progress" | "log" | "eta")) {
                continue;
            }
            seen.push(message["seq"].as_i64().unwrap());
            if message["type"] == "task_complete" {
                break;
            }
        }
        let expected: Vec<i64> = (last + 1..=*seen.last().unwrap()).collect();
        assert_eq!(seen, expected, "every logged event after {last}, in order, once");

        server.runtime.flush().await;
        let database = Arc::clone(server.runtime.db());
        let task_id = id.clone();
        let log = tokio::task::spawn_blocking(move || db::events_after(&mut database.conn().unwrap(), "alice", &task_id, last, 1000).unwrap())
            .await
            .unwrap();
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), seen, "the stream is the persisted log");
        assert_eq!(log.last().unwrap().kind, "task_complete");
        server.stop().await;
    }

    async fn a_resume_message_replays_missed_events_on_the_all_tasks_feed(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("alice").await;
        let id = create(&server, &token, PLAN).await;
        let bearer = format!("Bearer {token}");
        let before = server.get(&format!("/api/tasks/{id}/progress"), &token).await.body["seq"].as_i64().unwrap();
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        let mut feed = server.websocket("/ws/tasks", &[("Authorization", &bearer)]).await.unwrap();
        let snapshot = feed.next().await;
        let now = snapshot["seq"].as_i64().unwrap();
        assert!(now > before);
        feed.send(&json!({"type": "resume", "after_seq": {id.clone(): before}}).to_string());
        let mut replayed = Vec::new();
        while replayed.len() < (now - before) as usize {
            replayed.push(feed.next().await["seq"].as_i64().unwrap());
        }
        assert_eq!(replayed, (before + 1..=now).collect::<Vec<_>>());
        feed.send(r#"{"type": "resume", "after_seq": {"0000000000000000": 0}}"#);
        let refused = feed.next().await;
        assert_eq!(refused["error"]["code"], "not_found", "{refused}");
        feed.send("{\"type\": \"dance\"}");
        assert_eq!(feed.next().await["error"]["code"], "invalid_request");
        server.stop().await;
    }

    async fn websocket_upgrades_check_token_origin_and_protocol(backend: Backend) {
        let db = TestDb::new(backend);
        let api = ApiSettings { allowed_origins: vec!["https://app.example".into()], max_frame_bytes: 1024, ..ApiSettings::default() };
        let server = ApiServer::start(&db, Arc::new(SystemClock), api).await;
        let token = server.token("alice").await;
        let bearer = format!("Bearer {token}");
        let refused = |result: Result<WsClient, (u16, Value)>| result.err().map(|(status, body)| (status, body["error"]["code"].as_str().unwrap_or("").to_owned()));

        assert_eq!(refused(server.websocket("/ws/tasks", &[]).await), Some((401, "unauthorized".into())));
        let in_query = server.websocket(&format!("/ws/tasks?token={token}"), &[]).await;
        assert_eq!(refused(in_query), Some((401, "unauthorized".into())));
        let foreign = server.websocket("/ws/tasks", &[("Authorization", &bearer), ("Origin", "https://evil.example")]).await;
        assert_eq!(refused(foreign), Some((403, "forbidden".into())));
        let listed = server.websocket("/ws/tasks", &[("Authorization", &bearer), ("Origin", "https://app.example")]).await;
        assert!(listed.is_ok(), "a configured origin may connect");
        let own = format!("http://{}", server.address);
        assert!(server.websocket("/ws/tasks", &[("Authorization", &bearer), ("Origin", &own)]).await.is_ok(), "the server's own origin may connect");

        // Browsers put the token in the subprotocol list; the server selects stepwise.v1, never the token.
        let protocols = format!("stepwise.v1, bearer.{token}");
        let mut browser = server.websocket("/ws/tasks", &[("Sec-WebSocket-Protocol", &protocols)]).await.unwrap();
        assert_eq!(browser.protocol.as_deref(), Some("stepwise.v1"));
        let no_v1 = server.websocket("/ws/tasks", &[("Sec-WebSocket-Protocol", &format!("bearer.{token}"))]).await;
        assert_eq!(refused(no_v1), Some((400, "malformed".into())));

        let id = create(&server, &token, PLAN).await;
        let future = server.websocket(&format!("/ws/tasks/{id}?after_seq=999"), &[("Authorization", &bearer)]).await;
        assert_eq!(refused(future), Some((400, "malformed".into())), "a seq the task has not reached");
        let negative = server.websocket(&format!("/ws/tasks/{id}?after_seq=-1"), &[("Authorization", &bearer)]).await;
        assert_eq!(refused(negative), Some((400, "malformed".into())));
        let all_with_query = server.websocket("/ws/tasks?after_seq=1", &[("Authorization", &bearer)]).await;
        assert_eq!(refused(all_with_query), Some((400, "malformed".into())));

        browser.send(&format!("{{\"type\": \"ping\", \"pad\": \"{}\"}}", "x".repeat(2000)));
        assert_eq!(browser.closed().await, Some(1009), "a frame over the limit closes with 1009");
        server.stop().await;
    }

    async fn a_client_that_stops_reading_slows_nobody_and_catches_up_with_a_snapshot(backend: Backend) {
        let db = TestDb::new(backend);
        let scraper = "scraper-0123456789abcdef";
        let api = ApiSettings {
            ws_queue_events: 8,
            requests_per_second: 1_000_000,
            metrics_token: Some(scraper.to_owned()),
            ..ApiSettings::default()
        };
        let server = ApiServer::start(&db, Arc::new(SystemClock), api).await;
        let token = server.token("alice").await;
        let id = create(&server, &token, PLAN).await;
        let bearer = format!("Bearer {token}");
        let path = format!("/ws/tasks/{id}");
        let mut slow = server.websocket(&path, &[("Authorization", &bearer)]).await.unwrap();
        let mut fast = server.websocket(&path, &[("Authorization", &bearer)]).await.unwrap();
        assert_eq!(slow.next().await["type"], "snapshot");
        assert_eq!(fast.next().await["type"], "snapshot");
        slow.paused.store(true, std::sync::atomic::Ordering::Release);

        // Far more than the sockets' buffers and the session's queue hold: long log lines.
        let line = "y".repeat(32 * 1024);
        for i in 0..1000 {
            report(&server, &token, &id, 1, json!({"log": format!("{i} {line}")})).await;
            let got = fast.next_matching("the log line", |m| m["type"] == "log").await;
            assert!(got["line"].as_str().unwrap().starts_with(&format!("{i} ")), "the fast client keeps up, in order");
        }
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        fast.next_matching("step_complete", |m| m["type"] == "step_complete").await;

        slow.paused.store(false, std::sync::atomic::Ordering::Release);
        let caught_up = slow.next_matching("a fresh snapshot", |m| m["type"] == "snapshot").await;
        assert_eq!(caught_up["task"]["status"], "approval", "the snapshot is the task as it is now");
        let metrics = server.get("/metrics", scraper).await;
        let text = metrics.body.as_str().unwrap_or_default();
        let dropped = text.lines().find_map(|line| line.strip_prefix("stepwise_hub_lagged_drops_total "));
        assert!(dropped.and_then(|n| n.parse::<f64>().ok()).is_some_and(|n| n > 0.0), "the drops are counted: {dropped:?}");
        server.stop().await;
    }

    // The heartbeat reads the runtime's clock, which the test moves; the pings themselves
    // go out every real second. A timeout of a minute that a real clock would not reach
    // within the test's patience shows it is the runtime's clock that counts.
    async fn a_client_that_answers_no_pings_is_disconnected(backend: Backend) {
        let db = TestDb::new(backend);
        let api = ApiSettings { ws_heartbeat_s: 1, ws_client_timeout_s: 60, ..ApiSettings::default() };
        let clock = Arc::new(ManualClock::new(1_000_000));
        let server = ApiServer::start(&db, Arc::clone(&clock) as Arc<dyn runtime::Clock>, api).await;
        let token = server.token("alice").await;
        let bearer = format!("Bearer {token}");
        let mut alive = server.websocket("/ws/tasks", &[("Authorization", &bearer)]).await.unwrap();
        // A client that neither reads nor writes sends no pongs either.
        let silent = SilentSocket::connect(&server, "/ws/tasks", &[("Authorization", &bearer)]).await;
        clock.advance(30_000);
        // The pong shows the server has read the ping, and so heard from the client.
        alive.send(r#"{"type": "ping"}"#);
        assert_eq!(alive.next_matching("pong", |m| m["type"] == "pong").await["type"], "pong");
        clock.advance(31_000);
        assert_eq!(silent.close_code().await, Some(4008), "closed for want of pongs past the timeout");
        alive.send(r#"{"type": "ping"}"#);
        assert_eq!(alive.next_matching("pong", |m| m["type"] == "pong").await["type"], "pong", "the other one lives");
        server.stop().await;
    }

    async fn an_idempotency_key_makes_a_retried_creation_one_task(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let server = ApiServer::start(&db, Arc::clone(&clock) as Arc<dyn runtime::Clock>, ApiSettings::default()).await;
        let (alice, bob) = (server.token("alice").await, server.token("bob").await);
        let create = |token: &str, key: &str, body: String| {
            let headers = [
                ("Authorization".to_owned(), format!("Bearer {token}")),
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("Idempotency-Key".to_owned(), key.to_owned()),
            ];
            let server = &server;
            async move { server.raw("POST", "/api/tasks", &headers, Some(body.as_bytes())).await }
        };
        let first = create(&alice, "order-42", PLAN.to_owned()).await;
        assert_eq!((first.status, first.header("idempotent-replayed")), (201, None), "{:?}", first.body);
        // The same body spaced otherwise is the same request.
        let spaced = serde_json::to_string_pretty(&serde_json::from_str::<Value>(PLAN).unwrap()).unwrap();
        let retry = create(&alice, "order-42", spaced).await;
        assert_eq!((retry.status, retry.header("idempotent-replayed")), (201, Some("true")), "{:?}", retry.body);
        assert_eq!(retry.body["task_id"], first.body["task_id"]);
        assert_eq!(server.get("/api/tasks", &alice).await.body["tasks"].as_array().unwrap().len(), 1, "one task");

        let other = PLAN.replace("Cellphone Store CRM", "Another");
        let reused = create(&alice, "order-42", other.clone()).await;
        assert_eq!((reused.status, reused.code()), (422, "idempotency_key_reused"), "{:?}", reused.body);
        let bobs = create(&bob, "order-42", PLAN.to_owned()).await;
        assert_eq!(bobs.status, 201, "keys are per user");
        assert_ne!(bobs.body["task_id"], first.body["task_id"]);
        for bad in ["", &"k".repeat(256), "two words", "tab\there"] {
            let refused = create(&alice, bad, PLAN.to_owned()).await;
            assert_eq!((refused.status, refused.code()), (400, "invalid_request"), "{bad:?}: {:?}", refused.body);
        }

        // Two at once with one key: one task, whichever stores it first.
        let (a, b) = futures_util::future::join(
            create(&alice, "burst", PLAN.to_owned()),
            create(&alice, "burst", PLAN.to_owned()),
        )
        .await;
        assert_eq!((a.status, b.status), (201, 201), "{:?} {:?}", a.body, b.body);
        assert_eq!(a.body["task_id"], b.body["task_id"]);
        assert_eq!([&a, &b].iter().filter(|r| r.header("idempotent-replayed").is_some()).count(), 1);

        // Past the window the key is free again.
        clock.advance(runtime::IDEMPOTENCY_WINDOW_MS + 1);
        let later = create(&alice, "order-42", other).await;
        assert_eq!((later.status, later.header("idempotent-replayed")), (201, None), "{:?}", later.body);
        assert_ne!(later.body["task_id"], first.body["task_id"]);
        server.stop().await;
    }

    // The runtime's clock stands still, so the session's own heartbeat never times the
    // client out: only the kernel's TCP_USER_TIMEOUT (set to `ws_client_timeout_s`) can.
    async fn a_client_whose_socket_stops_draining_is_dropped_after_the_client_timeout(backend: Backend) {
        let db = TestDb::new(backend);
        let scraper = "scraper-0123456789abcdef";
        let api = ApiSettings {
            ws_heartbeat_s: 1,
            ws_client_timeout_s: 2,
            requests_per_second: 1_000_000,
            metrics_token: Some(scraper.to_owned()),
            ..ApiSettings::default()
        };
        let clock = Arc::new(ManualClock::new(1_000_000));
        let server = ApiServer::start(&db, clock as Arc<dyn runtime::Clock>, api).await;
        let token = server.token("alice").await;
        let id = create(&server, &token, PLAN).await;
        let bearer = format!("Bearer {token}");
        let path = format!("/ws/tasks/{id}");
        let mut reader = server.websocket(&path, &[("Authorization", &bearer)]).await.unwrap();
        let stuck = SilentSocket::connect(&server, &path, &[("Authorization", &bearer)]).await;
        let open_sockets = || async {
            let text = server.get("/metrics", scraper).await.body.as_str().unwrap_or_default().to_owned();
            text.lines().find_map(|l| l.strip_prefix("stepwise_websocket_connections ")?.parse::<f64>().ok())
        };
        assert_eq!(open_sockets().await, Some(2.0));

        // Far more than both ends' socket buffers hold (loopback grows them to a few MB).
        let line = "z".repeat(32 * 1024);
        for i in 0..600 {
            report(&server, &token, &id, 1, json!({"log": format!("{i} {line}")})).await;
        }
        let deadline = std::time::Instant::now() + PATIENCE;
        while open_sockets().await != Some(1.0) {
            assert!(std::time::Instant::now() < deadline, "the stuck client is still connected after {PATIENCE:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        reader.send(r#"{"type": "ping"}"#);
        assert_eq!(reader.next_matching("pong", |m| m["type"] == "pong").await["type"], "pong", "the reader stays");
        drop(stuck);
        server.stop().await;
    }

    // An outside worker in another process (curl) drives an external step to completion.
    async fn an_external_step_is_driven_over_http_from_another_process(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let token = server.token("worker").await;
        let id = create(&server, &token, r#"{"title": "Outside", "steps": [{"name": "Remote", "kind": "external", "substeps": ["a"]}]}"#).await;
        let url = format!("http://{}/api/tasks/{id}/steps/1/report", server.address);
        let script = format!(
            "set -e; for body in '{{\"progress\": 50}}' '{{\"substep_done\": \"a\"}}' '{{\"status\": \"completed\", \"output\": \"ok\"}}'; do \
             curl -sf -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d \"$body\" {url} >/dev/null; done"
        );
        let status = tokio::task::spawn_blocking(move || std::process::Command::new("sh").args(["-c", &script]).status().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "curl reported a failure: {status}");
        let done = server.get(&format!("/api/tasks/{id}/progress"), &token).await;
        assert_eq!(done.body["status"], "completed", "{:?}", done.body);
        assert_eq!(done.body["steps"][0]["substeps"][0]["done"], true);
        server.stop().await;
    }
}
