//! The OpenAPI document (`adapters/src/api/openapi.json`, served at `/api/openapi.json`) held
//! against the code: its operations are exactly the routes, every route answers the methods
//! and statuses it documents on a live server (on both backends), and the JSON the server
//! sends — REST bodies and WebSocket messages — fits the documented schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use adapters::api::wire::{event_message, is_logged, logged_message};
use adapters::api::{OPENAPI, ROUTES};
use runtime::{Confidence, Eta, EventKind, LogStream, OnTimeout, StepEta, SystemClock, TaskEvent};
use serde_json::{json, Value};

use crate::api_support::{ApiServer, Response, WsClient};
use crate::on_both_backends;
use crate::support::*;

/// Routes served beside the API (`adapters/src/http.rs`), documented with it.
const HEALTH_ROUTES: &[(&str, &str)] = &[("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")];

/// The keys of a path item that are operations.
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

/// Every operation of the document by (METHOD, path).
fn operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let mut found = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for (key, operation) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&key.as_str()) {
                found.insert((key.to_uppercase(), path.clone()), operation);
            }
        }
    }
    found
}

/// The value a local `$ref` points at.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// `value`, or what it refers to (following chains of `$ref`).
fn deref<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                value = resolve(doc, reference).unwrap_or_else(|| panic!("unresolved $ref {reference}"));
            }
            None => return value,
        }
    }
    panic!("a $ref chain longer than 16")
}

fn collect_refs<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(object) => {
            for (key, item) in object {
                if key == "$ref" {
                    found.push((at.clone(), item.as_str().unwrap_or("<not a string>")));
                } else {
                    collect_refs(item, format!("{at}/{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                collect_refs(item, format!("{at}/{index}"), found);
            }
        }
        _ => {}
    }
}

/// Checks `value` against `schema` (the subset of OpenAPI 3.0 schemas the document uses:
/// `$ref`, `type`, `nullable`, `enum`, `properties`, `required`, `additionalProperties`,
/// `items`, `minItems`/`maxItems`, `minimum`/`maximum`, `oneOf` with a discriminator).
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = deref(doc, schema);
    if value.is_null() {
        if schema["nullable"] != true {
            problems.push(format!("{at}: null, but the schema is not nullable"));
        }
        return;
    }
    if let Some(one_of) = schema.get("oneOf").and_then(Value::as_array) {
        if let Some(property) = schema.pointer("/discriminator/propertyName").and_then(Value::as_str) {
            let tag = value.get(property).and_then(Value::as_str).unwrap_or("");
            match schema.pointer("/discriminator/mapping").and_then(|m| m.get(tag)).and_then(Value::as_str) {
                Some(reference) => check(doc, &json!({ "$ref": reference }), value, at, problems),
                None => problems.push(format!("{at}: {property} {tag:?} is not a documented one")),
            }
            return;
        }
        let fitting = one_of
            .iter()
            .filter(|option| {
                let mut ignored = Vec::new();
                check(doc, option, value, at, &mut ignored);
                ignored.is_empty()
            })
            .count();
        if fitting != 1 {
            problems.push(format!("{at}: fits {fitting} of the oneOf schemas, not exactly 1: {value}"));
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            problems.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(object) = value.as_object() else {
                return problems.push(format!("{at}: expected an object, got {value}"));
            };
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let name = name.as_str().unwrap_or("");
                if !object.contains_key(name) {
                    problems.push(format!("{at}: lacks the required property {name:?}"));
                }
            }
            for (key, item) in object {
                match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                    (Some(property), _) => check(doc, property, item, &format!("{at}.{key}"), problems),
                    (None, Some(Value::Bool(false))) => {
                        problems.push(format!("{at}: has the undocumented property {key:?}"));
                    }
                    (None, Some(extra @ Value::Object(_))) => check(doc, extra, item, &format!("{at}.{key}"), problems),
                    (None, _) => {}
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                return problems.push(format!("{at}: expected an array, got {value}"));
            };
            let count = items.len() as f64;
            if bound("minItems").is_some_and(|min| count < min) || bound("maxItems").is_some_and(|max| count > max) {
                problems.push(format!("{at}: {} items is outside minItems/maxItems", items.len()));
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    check(doc, item_schema, item, &format!("{at}[{index}]"), problems);
                }
            }
        }
        Some("integer") | Some("number") => {
            let is_integer = value.is_i64() || value.is_u64();
            if !value.is_number() || (schema["type"] == "integer" && !is_integer) {
                return problems.push(format!("{at}: expected {}, got {value}", schema["type"]));
            }
            let number = value.as_f64().unwrap_or(0.0);
            if bound("minimum").is_some_and(|min| number < min) || bound("maximum").is_some_and(|max| number > max) {
                problems.push(format!("{at}: {value} is outside minimum/maximum"));
            }
        }
        Some("string") => {
            let Some(text) = value.as_str() else {
                return problems.push(format!("{at}: expected a string, got {value}"));
            };
            if schema["format"] == "date-time"
                && !(text.len() == 20 && text.ends_with('Z') && text.as_bytes()[10] == b'T')
            {
                problems.push(format!("{at}: {text:?} is not RFC 3339 to the second in UTC"));
            }
        }
        Some("boolean") if !value.is_boolean() => problems.push(format!("{at}: expected a boolean, got {value}")),
        _ => {}
    }
}

/// Panics unless `value` fits the schema `schema`.
fn assert_fits(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let mut problems = Vec::new();
    check(doc, schema, value, "$", &mut problems);
    assert!(problems.is_empty(), "{what} does not fit its documented schema:\n{}\n{value:#}", problems.join("\n"));
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `path` with its parameters filled in.
fn fill(path: &str, task_id: &str) -> String {
    path.replace("{task_id}", task_id).replace("{order}", "1").replace("{token}", "not-a-link")
}

/// Whether the operation needs a token (the document's default unless it says `security: []`).
fn secured(doc: &Value, operation: &Value) -> bool {
    let security = operation.get("security").unwrap_or(&doc["security"]);
    security.as_array().is_some_and(|requirements| !requirements.is_empty())
}

/// Checks that `response` is one `operation` documents, and that its body fits the
/// documented schema for that status.
fn assert_documented(doc: &Value, operation: &Value, response: &Response, what: &str) {
    let status = response.status.to_string();
    let Some(documented) = operation["responses"].get(&status) else {
        let listed: Vec<&String> = operation["responses"].as_object().map(|r| r.keys().collect()).unwrap_or_default();
        panic!("{what} answered {status} (body {}), which it does not document ({listed:?})", response.body);
    };
    let documented = deref(doc, documented);
    if let Some(schema) = documented.pointer("/content/application~1json/schema") {
        assert_fits(doc, schema, &response.body, &format!("{what}: the {status} body"));
    }
    if let Some(error) = response.body.get("error").filter(|_| response.status >= 400) {
        let code = error["code"].as_str().unwrap_or("");
        let description = documented["description"].as_str().unwrap_or("");
        assert!(
            description.contains(&format!("`{code}`")),
            "{what}: {status} with code {code:?}, which the {status} response does not list: {description}"
        );
    }
    if let Some(headers) = documented.get("headers").and_then(Value::as_object) {
        for name in
            headers.keys().filter(|name| matches!(name.as_str(), "Retry-After" | "Location" | "WWW-Authenticate"))
        {
            assert!(response.header(name).is_some(), "{what}: {status} lacks its documented {name} header");
        }
    }
}

#[test]
fn the_document_is_openapi_3_and_documents_exactly_the_routes() {
    let doc = document();
    let version = doc["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3.0."), "OpenAPI 3.0.x, got {version:?}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string(), "info has a title and version");

    let documented: BTreeSet<(String, String)> = operations(&doc).into_keys().collect();
    let routes: BTreeSet<(String, String)> =
        ROUTES.iter().chain(HEALTH_ROUTES).map(|(method, path)| (method.to_string(), path.to_string())).collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let not_routes: Vec<_> = documented.difference(&routes).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    assert!(not_routes.is_empty(), "openapi.json documents operations that are not routes: {not_routes:?}");

    let mut refs = Vec::new();
    collect_refs(&doc, String::new(), &mut refs);
    assert!(!refs.is_empty());
    for (at, reference) in refs {
        assert!(reference.starts_with("#/"), "{at}: only local $refs, got {reference}");
        assert!(resolve(&doc, reference).is_some(), "{at}: $ref {reference} does not resolve");
    }

    let mut ids = BTreeSet::new();
    for ((method, path), operation) in operations(&doc) {
        let what = format!("{method} {path}");
        let id = operation["operationId"].as_str().unwrap_or("");
        assert!(!id.is_empty(), "{what} has no operationId");
        assert!(ids.insert(id.to_owned()), "{what}: operationId {id} is used twice");
        assert!(operation["summary"].is_string() && operation["description"].is_string(), "{what}: summary");
        let statuses: Vec<&String> = operation["responses"].as_object().map(|r| r.keys().collect()).unwrap_or_default();
        assert!(
            statuses.iter().any(|s| s.starts_with('2') || *s == "101"),
            "{what} documents no 2xx (or 101) response: {statuses:?}"
        );
        // Every `{name}` in the path is a documented path parameter, and nothing else is.
        let in_path: BTreeSet<&str> = path.split('{').skip(1).filter_map(|rest| rest.split('}').next()).collect();
        let parameters: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| deref(&doc, p))
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{what}: path parameter {} must be required", p["name"]);
                p["name"].as_str().unwrap_or("")
            })
            .collect();
        assert_eq!(in_path, parameters, "{what}: path parameters");
        // Every secured operation documents 401 and 429 (with Retry-After).
        if secured(&doc, operation) {
            for status in ["401", "429"] {
                assert!(operation["responses"].get(status).is_some(), "{what} does not document {status}");
            }
            let limited = deref(&doc, &operation["responses"]["429"]);
            assert!(limited.pointer("/headers/Retry-After").is_some(), "{what}: 429 without Retry-After");
        }
        // The WebSocket routes point at their message schemas.
        if path.starts_with("/ws/") {
            for side in ["server", "client"] {
                let reference = operation["x-websocket-messages"][side]["$ref"].as_str().unwrap_or("");
                assert!(resolve(&doc, reference).is_some(), "{what}: x-websocket-messages.{side}");
            }
            assert!(operation["responses"].get("101").is_some(), "{what}: 101");
        }
    }
}

/// Every `EventKind`, so a new kind must be added here (the match in `kind_name` does not
/// compile otherwise) and so to the document.
fn every_event_kind() -> Vec<EventKind> {
    let name: Arc<str> = "Fetch".into();
    let text: Arc<str> = "worker gave up".into();
    vec![
        EventKind::TaskCreated,
        EventKind::TaskStarted,
        EventKind::TaskRecovered,
        EventKind::StepStarted { step: 1, name: Arc::clone(&name), attempt: 1 },
        EventKind::Progress { step: 1, attempt: 1, percent: 40, task_percent: 20 },
        EventKind::SubstepDone { step: 1, index: 0, name: Arc::clone(&name) },
        EventKind::Log { step: 1, stream: LogStream::Stderr, line: "a line".into() },
        EventKind::StepCompleted { step: 1, name: Arc::clone(&name), duration_ms: 1200 },
        EventKind::StepFailed { step: 1, error: Arc::clone(&text) },
        EventKind::StepRetrying { step: 1, attempt: 2, max_attempts: 3, retry_at: 1_790_000_040_000 },
        EventKind::StepSkipped { step: 2 },
        EventKind::ApprovalNeeded { step: 2, name: Arc::clone(&name), due_at: None },
        EventKind::ApprovalNeeded { step: 2, name: Arc::clone(&name), due_at: Some(1_790_000_060_000) },
        EventKind::ApprovalReminder { step: 2, name: Arc::clone(&name), due_at: 1_790_000_060_000 },
        EventKind::ApprovalTimedOut { step: 2, on_timeout: OnTimeout::Skip },
        EventKind::ApprovalGiven { step: 2, approved: true, comment: Some("fine".into()) },
        EventKind::ApprovalGiven { step: 2, approved: false, comment: None },
        EventKind::TaskPaused,
        EventKind::TaskResumed,
        EventKind::TaskCompleted,
        EventKind::TaskFailed { step: 1, error: text },
        EventKind::TaskCancelled,
        EventKind::EtaUpdated(Eta {
            seconds: 12.4,
            range: (8.0, 20.6),
            confidence: Confidence::Medium,
            steps: vec![StepEta { step: 2, expected_s: 4.6 }, StepEta { step: 3, expected_s: 9.0 }],
        }),
    ]
}

/// Exhaustive on purpose: a new event kind breaks this until it is listed above.
fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::TaskCreated
        | EventKind::TaskStarted
        | EventKind::TaskRecovered
        | EventKind::StepStarted { .. }
        | EventKind::Progress { .. }
        | EventKind::SubstepDone { .. }
        | EventKind::Log { .. }
        | EventKind::StepCompleted { .. }
        | EventKind::StepFailed { .. }
        | EventKind::StepRetrying { .. }
        | EventKind::StepSkipped { .. }
        | EventKind::ApprovalNeeded { .. }
        | EventKind::ApprovalReminder { .. }
        | EventKind::ApprovalTimedOut { .. }
        | EventKind::ApprovalGiven { .. }
        | EventKind::TaskPaused
        | EventKind::TaskResumed
        | EventKind::TaskCompleted
        | EventKind::TaskFailed { .. }
        | EventKind::TaskCancelled
        | EventKind::EtaUpdated(_) => kind.name(),
    }
}

#[test]
fn every_event_message_fits_its_documented_schema_live_and_replayed() {
    let doc = document();
    let message_schema = schema_ref("WsMessage");
    let mapping: BTreeSet<String> = doc
        .pointer("/components/schemas/WsMessage/discriminator/mapping")
        .and_then(Value::as_object)
        .expect("WsMessage has a discriminator mapping")
        .keys()
        .cloned()
        .collect();
    let mut names = BTreeSet::new();
    for (seq, kind) in every_event_kind().into_iter().enumerate() {
        let name = kind_name(&kind);
        names.insert(name.to_owned());
        let event = TaskEvent {
            task_id: "0123456789abcdef".into(),
            owner: "alice".into(),
            seq: seq as i64 + 2,
            lease_token: 1,
            at: 1_790_000_000_000,
            kind: kind.clone(),
        };
        let live = event_message(&event);
        assert_eq!(live["type"], name);
        assert_fits(&doc, &message_schema, &live, &format!("the live {name} message"));
        let reference = doc["components"]["schemas"]["WsMessage"]["discriminator"]["mapping"][name].as_str();
        let schema = resolve(&doc, reference.unwrap_or("")).unwrap_or_else(|| panic!("{name} is not mapped"));
        let seq_text = schema.pointer("/properties/seq/description").and_then(Value::as_str).unwrap_or("");
        assert_eq!(
            seq_text.contains("Transient"),
            !is_logged(&kind),
            "{name}: the schema's seq must say whether the message is transient"
        );
        if is_logged(&kind) {
            let record = db::EventRecord {
                task_id: "0123456789abcdef".into(),
                seq: event.seq,
                kind: name.to_owned(),
                step: kind.step(),
                detail: kind.detail(),
                created_at: event.at,
            };
            let replayed = logged_message(&record);
            assert_fits(&doc, &message_schema, &replayed, &format!("the replayed {name} message"));
        }
    }
    let created = db::EventRecord {
        task_id: "0123456789abcdef".into(),
        seq: 1,
        kind: "task_created".into(),
        step: None,
        detail: None,
        created_at: 1_790_000_000_000,
    };
    assert_fits(&doc, &message_schema, &logged_message(&created), "the replayed task_created message");
    names.extend(["snapshot", "task_created", "error", "pong"].map(str::to_owned));
    assert_eq!(names, mapping, "the documented WebSocket message types are exactly the ones the server sends");
}

/// A plan of external steps as the API takes it.
fn external_plan_json(title: &str) -> String {
    json!({
        "title": title,
        "complexity": 2,
        "steps": [
            {"name": "Fetch", "kind": "external", "params": {}, "substeps": ["customers", "orders"]},
            {"name": "Load", "kind": "external", "requires_approval": true},
        ],
    })
    .to_string()
}

on_both_backends! {
    async fn every_documented_operation_answers_as_documented(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let doc = document();
        let alice = server.token("alice").await;

        let created = server.post("/api/tasks", &alice, &external_plan_json("OpenAPI probe")).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["task_id"].as_str().expect("task_id").to_owned();
        let first_report = r#"{"progress": 30, "log": "working", "substep_done": "customers"}"#;
        let report = server.post(&format!("/api/tasks/{id}/steps/1/report"), &alice, first_report).await;
        assert_eq!(report.status, 200, "{:?}", report.body);
        server.runtime.flush().await;

        // The progress document: every required property, nothing the schema lacks.
        let progress = server.get(&format!("/api/tasks/{id}/progress"), &alice).await;
        assert_eq!(progress.status, 200);
        let schema = deref(&doc, &doc["components"]["schemas"]["ProgressDocument"]);
        let properties: BTreeSet<&str> =
            schema["properties"].as_object().expect("properties").keys().map(String::as_str).collect();
        let required: BTreeSet<&str> =
            schema["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
        let present: BTreeSet<&str> =
            progress.body.as_object().expect("an object").keys().map(String::as_str).collect();
        let missing: Vec<_> = required.difference(&present).collect();
        assert!(missing.is_empty(), "missing: {missing:?}");
        let undocumented: Vec<_> = present.difference(&properties).collect();
        assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
        assert_fits(&doc, &schema_ref("ProgressDocument"), &progress.body, "GET progress");
        assert_eq!(progress.body["steps"][0]["substeps"][0], json!({"name": "customers", "done": true}));

        let operations = operations(&doc);
        // Every route in ROUTES order (so the controls meet a task in several states), then
        // the health checks.
        for (method, path) in ROUTES.iter().chain(HEALTH_ROUTES) {
            let operation = operations[&(method.to_string(), path.to_string())];
            let what = format!("{method} {path}");
            let url = fill(path, &id);
            let body = operation.pointer("/requestBody/content/application~1json/example").map(Value::to_string);
            let response = server.call(method, &url, Some(&alice), body.as_deref()).await;
            assert!(
                !(response.status == 404 && response.code() == "no_route") && response.status != 405,
                "{what} is documented but not routed: {} {:?}",
                response.status,
                response.body
            );
            assert_documented(&doc, operation, &response, &what);
            if path.starts_with("/ws/") {
                assert_eq!((response.status, response.code()), (400, "malformed"), "{what} without an upgrade");
            }

            // Without a token: 401 where a token is needed; elsewhere the same answer as with
            // one (an approval link is its own credential: a bad one is refused either way).
            let anonymous = server.call(method, &url, None, body.as_deref()).await;
            if secured(&doc, operation) {
                assert_eq!((anonymous.status, anonymous.code()), (401, "unauthorized"), "{what} without a token");
            } else {
                let (with, without) = ((response.status, response.code()), (anonymous.status, anonymous.code()));
                assert_eq!(without, with, "{what} needs no token: {anonymous:?}");
            }
            assert_documented(&doc, operation, &anonymous, &format!("{what} without a token"));
        }

        // A method a path does not document: 405 `method_not_allowed`, the health checks and
        // the metrics included, as their descriptions say.
        let mut by_path: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (method, path) in ROUTES.iter().chain(HEALTH_ROUTES) {
            by_path.entry(*path).or_default().insert(*method);
        }
        for (path, methods) in by_path {
            let method = ["DELETE", "PUT", "PATCH", "POST", "GET"].into_iter().find(|m| !methods.contains(m)).unwrap();
            let response = server.call(method, &fill(path, &id), Some(&alice), None).await;
            let what = format!("{method} {path}");
            let expected = (405, "method_not_allowed");
            assert_eq!((response.status, response.code()), expected, "{what}: {:?}", response.body);
            if HEALTH_ROUTES.iter().any(|(_, p)| *p == path) {
                let operation = operations[&("GET".to_owned(), path.to_owned())];
                let description = operation["description"].as_str().unwrap_or("");
                assert!(description.contains("405 `method_not_allowed`"), "{what}: the description must say so");
                assert_eq!(response.header("allow"), Some("GET"), "{what}");
            }
            assert_fits(&doc, &schema_ref("Error"), &response.body, &what);
        }
        server.stop().await;
    }

    async fn websocket_messages_fit_the_documented_schemas(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let doc = document();
        let alice = server.token("alice").await;
        let created = server.post("/api/tasks", &alice, &external_plan_json("OpenAPI messages")).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["task_id"].as_str().expect("task_id").to_owned();
        let task = |action: &str| format!("/api/tasks/{id}/{action}");
        let bearer = format!("Bearer {alice}");

        let mut live =
            server.websocket(&format!("/ws/tasks/{id}"), &[("Authorization", &bearer)]).await.expect("upgrade");
        assert_eq!(live.protocol, None, "no subprotocol offered, none selected");
        let mut seen = BTreeSet::new();
        let snapshot = until(&mut live, &doc, &mut seen, "snapshot").await;
        assert_eq!(snapshot["task"]["task_id"], id.as_str());

        let steps = [
            ("steps/1/report", r#"{"progress": 30, "log": "working"}"#, vec!["progress", "log"]),
            ("steps/1/report", r#"{"substep_done": "customers"}"#, vec!["substep_done"]),
            (
                "steps/1/report",
                r#"{"status": "completed", "output": "2 tables"}"#,
                vec!["step_complete", "approval_needed"],
            ),
            ("approve", r#"{"comment": "go"}"#, vec!["approval_given", "step_started"]),
            ("pause", "", vec!["task_paused"]),
            ("resume", "", vec!["task_resumed"]),
            (
                "steps/2/report",
                r#"{"status": "failed", "error": "worker gave up"}"#,
                vec!["step_failed", "task_failed"],
            ),
            ("steps/2/skip", "", vec!["step_skipped", "task_complete"]),
        ];
        for (action, body, expected) in steps {
            let body = (!body.is_empty()).then_some(body);
            let response = server.call("POST", &task(action), Some(&alice), body).await;
            assert_eq!(response.status, 200, "{action}: {:?}", response.body);
            until_all(&mut live, &doc, &mut seen, &expected).await;
        }
        live.send(r#"{"type": "ping"}"#);
        until(&mut live, &doc, &mut seen, "pong").await;
        live.send("not json");
        let error = until(&mut live, &doc, &mut seen, "error").await;
        assert_eq!(error["error"]["code"], "malformed");
        live.send(r#"{"type": "resume", "after_seq": {"someone-elses": 0}}"#);
        assert_eq!(until(&mut live, &doc, &mut seen, "error").await["error"]["code"], "not_found");

        // A replay of the whole log, authenticated the browser's way.
        let last_seq = server.get(&task("progress"), &alice).await.body["seq"].as_i64().expect("seq");
        let protocols = format!("stepwise.v1, bearer.{alice}");
        let mut replay = server
            .websocket(&format!("/ws/tasks/{id}?after_seq=0"), &[("Sec-WebSocket-Protocol", &protocols)])
            .await
            .expect("upgrade");
        assert_eq!(replay.protocol.as_deref(), Some("stepwise.v1"), "the documented subprotocol");
        let mut seqs = Vec::new();
        while seqs.last() != Some(&last_seq) {
            let message = replay.next().await;
            assert_fits(&doc, &schema_ref("WsMessage"), &message, &format!("the replayed {}", message["type"]));
            let kind = message["type"].as_str().unwrap_or("").to_owned();
            assert!(!["progress", "log", "eta", "snapshot"].contains(&kind.as_str()), "only logged events: {message}");
            seen.insert(kind);
            seqs.push(message["seq"].as_i64().expect("seq"));
        }
        assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>(), "a replay is gap-free and in order");

        // Every task of the caller: a snapshot each, and a resume.
        let mut all = server.websocket("/ws/tasks", &[("Authorization", &bearer)]).await.expect("upgrade");
        until(&mut all, &doc, &mut seen, "snapshot").await;
        all.send(&json!({"type": "resume", "after_seq": {&id: last_seq - 1}}).to_string());
        let resumed = until(&mut all, &doc, &mut seen, "task_complete").await;
        assert_eq!(resumed["seq"], last_seq);

        let expected = [
            "snapshot", "task_created", "task_started", "step_started", "progress", "log", "substep_done",
            "step_complete", "approval_needed", "approval_given", "task_paused", "task_resumed", "step_failed",
            "task_failed", "step_skipped", "task_complete", "pong", "error",
        ];
        let missing: Vec<&str> = expected.into_iter().filter(|kind| !seen.contains(*kind)).collect();
        assert!(missing.is_empty(), "never saw {missing:?}; saw {seen:?}");
        server.stop().await;
    }
}

/// Reads messages, checking each against the documented `WsMessage`, until it has had one
/// of each type in `wanted` (in any order).
async fn until_all(ws: &mut WsClient, doc: &Value, seen: &mut BTreeSet<String>, wanted: &[&str]) {
    let mut missing: BTreeSet<&str> = wanted.iter().copied().collect();
    while !missing.is_empty() {
        let message = ws.next().await;
        let kind = message["type"].as_str().unwrap_or("").to_owned();
        assert_fits(doc, &schema_ref("WsMessage"), &message, &format!("the {kind} message"));
        missing.remove(kind.as_str());
        seen.insert(kind);
    }
}

/// Reads messages, checking each against the documented `WsMessage`, until one of type
/// `wanted`.
async fn until(ws: &mut WsClient, doc: &Value, seen: &mut BTreeSet<String>, wanted: &str) -> Value {
    loop {
        let message = ws.next().await;
        let kind = message["type"].as_str().unwrap_or("").to_owned();
        assert_fits(doc, &schema_ref("WsMessage"), &message, &format!("the {kind} message"));
        seen.insert(kind.clone());
        if kind == wanted {
            return message;
        }
    }
}
