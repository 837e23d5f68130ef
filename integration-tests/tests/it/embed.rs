//! Stepwise embedded in another application: the `host_app` example's own server (its code
//! is included from the example, so what runs here is what the example runs) on
//! 127.0.0.1:0 over a real database, with Stepwise under `/stepwise`, the application's
//! session cookie as the only credential and the application's own step kind.

use std::net::TcpListener;
use std::sync::Arc;

use adapters::embed::Stepwise;
use runtime::{Runtime, RuntimeOptions, SystemClock};
use serde_json::{json, Value};

use crate::api_support::{ApiServer, Response};
use crate::on_both_backends;
use crate::support::*;
use crate::webdriver::Browser;

#[path = "../../../adapters/examples/host_app/app.rs"]
mod host_app;

/// The application's server over `db`, as the example starts it.
async fn start(db: &TestDb) -> ApiServer {
    start_as(db, "host-app", &host_app::Sessions::default()).await
}

/// The application's server `instance` over `db` with these sessions (several servers of
/// one application share them, as they share its database).
async fn start_as(db: &TestDb, instance: &str, sessions: &host_app::Sessions) -> ApiServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let address = listener.local_addr().unwrap();
    let options =
        RuntimeOptions { address: Some(format!("http://{address}")), ..options(instance, Arc::new(SystemClock)) };
    let (runtime, _) = Runtime::start(Arc::new(db.open()), host_app::handlers(), options).await.expect("runtime");
    let stepwise = Stepwise::start(runtime.clone(), address, host_app::options(sessions)).expect("Stepwise starts");
    let server = host_app::server(listener, sessions.clone(), stepwise).expect("the server");
    ApiServer::serving(address, runtime, server)
}

/// Signs `user` in with the application's form: the `Cookie` of their session.
async fn sign_in(server: &ApiServer, user: &str) -> String {
    let form = [("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())];
    let answer = server.raw("POST", "/login", &form, Some(format!("user={user}").as_bytes())).await;
    assert_eq!((answer.status, answer.header("location")), (303, Some("/stepwise/")), "{:?}", answer.body);
    let cookie = answer.header("set-cookie").expect("a session cookie").split(';').next().unwrap();
    assert!(cookie.starts_with(&format!("{}=", host_app::SESSION_COOKIE)), "{cookie}");
    cookie.to_owned()
}

/// A request as `session` (a `Cookie` value, or none), with a JSON body if any.
async fn call(server: &ApiServer, method: &str, path: &str, session: Option<&str>, body: Option<Value>) -> Response {
    let mut headers = Vec::new();
    if let Some(cookie) = session {
        headers.push(("Cookie".to_owned(), cookie.to_owned()));
    }
    if body.is_some() {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    server.raw(method, path, &headers, body.map(|b| b.to_string().into_bytes()).as_deref()).await
}

/// A task of the application's own kind: three batches, not started.
fn export_plan() -> Value {
    json!({"title": "Export orders", "start": false, "steps": [{
        "name": "Export", "kind": host_app::EXPORT_KIND, "params": {"batches": 3, "ms_per_batch": 5}
    }]})
}

on_both_backends! {
    async fn an_application_signs_its_users_in_and_runs_its_own_kind_under_its_path(backend: Backend) {
        let db = TestDb::new(backend);
        let server = start(&db).await;

        // The application's own route is still its own.
        let home = call(&server, "GET", "/", None, None).await;
        assert_eq!(home.status, 200);
        assert!(home.body.as_str().is_some_and(|html| html.contains(r#"action="/login""#)), "{:?}", home.body);

        // Without the application's session Stepwise refuses, in its JSON, with the
        // application's words; a Stepwise token is no credential here.
        let token = server.token("ada").await;
        for refused in [
            call(&server, "GET", "/stepwise/api/tasks", None, None).await,
            server.get("/stepwise/api/tasks", &token).await,
            call(&server, "GET", "/stepwise/api/tasks", Some("host_session=forged"), None).await,
        ] {
            assert_eq!((refused.status, refused.code()), (401, "unauthorized"), "{:?}", refused.body);
            assert_eq!(refused.body["error"]["message"], "sign in at / first: no valid host_session cookie");
        }
        let (status, body) = server.websocket("/stepwise/ws/tasks", &[]).await.err().expect("refused");
        assert_eq!((status, &body["error"]["code"]), (401, &json!("unauthorized")));

        // Ada creates a task of the application's kind; its Location is under the path.
        let ada = sign_in(&server, "ada").await;
        let created = call(&server, "POST", "/stepwise/api/tasks", Some(&ada), Some(export_plan())).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["task_id"].as_str().unwrap().to_owned();
        let progress = format!("/stepwise/api/tasks/{id}/progress");
        assert_eq!(created.header("location"), Some(progress.as_str()));
        assert_eq!(created.body["steps"][0]["kind"], host_app::EXPORT_KIND);

        // Its WebSocket under the path, with the session's cookie, follows it to the end.
        let cookie = [("Cookie", ada.as_str())];
        let mut socket = server.websocket(&format!("/stepwise/ws/tasks/{id}"), &cookie).await.expect("upgraded");
        let snapshot = socket.next().await;
        assert_eq!((&snapshot["type"], &snapshot["task"]["status"]), (&json!("snapshot"), &json!("pending")));
        let started = call(&server, "POST", &format!("/stepwise/api/tasks/{id}/start"), Some(&ada), None).await;
        assert_eq!(started.status, 200, "{:?}", started.body);
        let mut seen = Vec::new();
        loop {
            let message = socket.next().await;
            seen.push(message.clone());
            if message["type"] == "task_complete" {
                break;
            }
        }
        let logged: Vec<&Value> = seen.iter().filter(|m| m["type"] == "log").map(|m| &m["line"]).collect();
        assert_eq!(logged, ["exported batch 1 of 3", "exported batch 2 of 3", "exported batch 3 of 3"], "{seen:?}");
        assert!(seen.iter().any(|m| m["type"] == "step_complete" && m["name"] == "Export"), "{seen:?}");
        let done = call(&server, "GET", &progress, Some(&ada), None).await;
        assert_eq!((&done.body["status"], &done.body["progress"]), (&json!("completed"), &json!(100)));

        // Another user of the application sees none of it: 404 as for a missing task.
        let grace = sign_in(&server, "grace").await;
        let theirs = call(&server, "GET", &progress, Some(&grace), None).await;
        assert_eq!((theirs.status, theirs.code()), (404, "not_found"));
        let control = call(&server, "POST", &format!("/stepwise/api/tasks/{id}/cancel"), Some(&grace), None).await;
        assert_eq!((control.status, control.code()), (404, "not_found"));
        let (status, _) = server
            .websocket(&format!("/stepwise/ws/tasks/{id}"), &[("Cookie", grace.as_str())])
            .await
            .err()
            .expect("refused");
        assert_eq!(status, 404);
        let listed = |r: Response| r.body["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].clone()).collect::<Vec<_>>();
        assert_eq!(listed(call(&server, "GET", "/stepwise/api/tasks", Some(&grace), None).await), Vec::<Value>::new());
        assert_eq!(listed(call(&server, "GET", "/stepwise/api/tasks", Some(&ada), None).await), [json!(id)]);

        // A user the application named exists for Stepwise: their preferences are kept.
        let preferences = json!({"channels": {"push": ["approval_needed"]}});
        let saved = call(&server, "PUT", "/stepwise/api/notifications/preferences", Some(&grace), Some(preferences)).await;
        assert_eq!(saved.status, 200, "{:?}", saved.body);
        server.stop().await;
    }
}

/// Two servers of the application on one PostgreSQL database: a request for a task the
/// other one runs is carried there with the request's headers, so the holder knows the
/// application's user as the first server did, and answers for them.
#[actix::test]
async fn a_request_for_a_task_another_server_runs_is_carried_with_the_applications_session() {
    let db = TestDb::new(Backend::Postgres);
    let sessions = host_app::Sessions::default();
    let (first, second) = (start_as(&db, "host-a", &sessions).await, start_as(&db, "host-b", &sessions).await);
    let ada = sign_in(&first, "ada").await;
    let mut plan = export_plan();
    plan["start"] = json!(true);
    plan["steps"][0]["params"] = json!({"batches": 100, "ms_per_batch": 60_000});
    let created = call(&first, "POST", "/stepwise/api/tasks", Some(&ada), Some(plan)).await;
    let id = created.body["task_id"].as_str().unwrap().to_owned();

    let pause = format!("/stepwise/api/tasks/{id}/pause");
    let paused = call(&second, "POST", &pause, Some(&ada), None).await;
    assert_eq!((paused.status, &paused.body["status"]), (200, &json!("paused")), "{:?}", paused.body);
    let there = call(&first, "GET", &format!("/stepwise/api/tasks/{id}/progress"), Some(&ada), None).await;
    assert_eq!(there.body["status"], "paused", "applied by the server running it");
    assert_eq!(second.runtime.live_tasks(), 0, "the forwarding server keeps no copy of the task");
    let grace = sign_in(&second, "grace").await;
    let theirs = call(&second, "POST", &format!("/stepwise/api/tasks/{id}/cancel"), Some(&grace), None).await;
    assert_eq!((theirs.status, theirs.code()), (404, "not_found"));
    let cancelled = call(&second, "POST", &format!("/stepwise/api/tasks/{id}/cancel"), Some(&ada), None).await;
    assert_eq!((cancelled.status, &cancelled.body["status"]), (200, &json!("cancelled")), "{:?}", cancelled.body);
    first.stop().await;
    second.stop().await;
}

#[actix::test]
async fn the_pages_and_documents_live_under_the_applications_path() {
    let db = TestDb::new(Backend::Sqlite);
    let server = start(&db).await;
    let get = |path: &'static str| call(&server, "GET", path, None, None);

    let bare = get("/stepwise").await;
    assert_eq!((bare.status, bare.header("location")), (308, Some("/stepwise/")));
    for path in ["/stepwise/", "/stepwise/tasks/anything"] {
        let page = get(path).await;
        assert_eq!((page.status, page.header("content-type")), (200, Some("text/html; charset=utf-8")), "{path}");
        let html = page.body.as_str().unwrap();
        assert!(html.contains(r#"<meta name="stepwise" data-root="/stepwise" data-sign-in="application">"#), "{html}");
        assert!(html.contains(r#"<link rel="stylesheet" href="/stepwise/assets/app.css">"#), "{html}");
        assert!(html.contains(r#"<script type="module" src="/stepwise/assets/chat.js">"#), "{html}");
        for unprefixed in [r#"="/assets"#, r#"href="/""#, r#"="/tasks"#, r#"="/login"#] {
            assert!(!html.contains(unprefixed), "{path} links {unprefixed}: {html}");
        }
    }
    for (path, kind) in [("/stepwise/assets/live.js", "text/javascript"), ("/stepwise/sw.js", "text/javascript")] {
        let file = get(path).await;
        assert_eq!(file.status, 200, "{path}");
        assert!(file.header("content-type").is_some_and(|t| t.starts_with(kind)), "{path}");
    }
    // The application signs its users in: Stepwise's token page is not there.
    for path in ["/stepwise/login", "/stepwise/nope", "/stepwise/assets/nope.js"] {
        let missing = get(path).await;
        assert_eq!((missing.status, missing.code()), (404, "no_route"), "{path}");
    }
    let document = get("/stepwise/api/openapi.json").await;
    assert_eq!(document.body["servers"], json!([{"url": "/stepwise"}]));
    assert!(document.body["paths"]["/api/tasks"].is_object());
    let wrong = call(&server, "POST", "/stepwise/api/openapi.json", None, Some(json!({}))).await;
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("GET")));
    server.stop().await;
}

/// What the pages show: where they are, the connection, the tasks listed, the task's
/// status and percent, the WebSocket paths opened and any script error.
const PAGE_STATE_JS: &str = r##"
const text = (s) => (document.querySelector(s) ? document.querySelector(s).textContent.trim() : null);
const task = document.querySelector("#task");
return {
  path: location.pathname,
  connection: document.querySelector("#connection") && document.querySelector("#connection").dataset.state,
  listed: [...document.querySelectorAll("#tasks > li")].map((li) => li.querySelector(".task-link").getAttribute("href")),
  status: task && !task.hidden ? task.dataset.status : null,
  percent: text("#percent"),
  sign_out_shown: !!document.querySelector("#sign-out") && !document.querySelector("#sign-out").hidden,
  connections: (window.stepwise && window.stepwise.connections) || [],
  errors: (window.stepwise && window.stepwise.errors) || [],
};
"##;

#[actix::test]
async fn a_signed_in_user_of_the_application_follows_a_task_on_the_mounted_pages() {
    let db = TestDb::new(Backend::Sqlite);
    let server = start(&db).await;
    let ada = sign_in(&server, "ada").await;
    let created = call(&server, "POST", "/stepwise/api/tasks", Some(&ada), Some(export_plan())).await;
    let id = created.body["task_id"].as_str().unwrap().to_owned();
    let task_page = format!("/stepwise/tasks/{id}");

    // Signed in through the application's own form, the visitor lands on the list.
    let page = Browser::open(server.address, 1280, 800).await;
    page.goto("/").await;
    page.type_into("#user", "ada").await;
    page.click("button[type=submit]").await;
    let list =
        page.wait_on(PAGE_STATE_JS, "the list, live", |s| s["path"] == "/stepwise/" && s["connection"] == "live").await;
    assert_eq!(list["listed"], json!([task_page]));
    assert_eq!(list["sign_out_shown"], false, "the application signs its users out");

    page.goto(&task_page).await;
    page.wait_on(PAGE_STATE_JS, "the task, live", |s| s["connection"] == "live" && s["status"] == "pending").await;
    let started = call(&server, "POST", &format!("/stepwise/api/tasks/{id}/start"), Some(&ada), None).await;
    assert_eq!(started.status, 200, "{:?}", started.body);
    let done = page.wait_on(PAGE_STATE_JS, "the task completed", |s| s["status"] == "completed").await;
    assert_eq!(done["percent"], "100%");
    assert_eq!(done["connections"], json!([format!("/stepwise/ws/tasks/{id}")]));
    assert_eq!(done["errors"], json!([]), "no script errors");
    page.close().await;
    server.stop().await;
}
