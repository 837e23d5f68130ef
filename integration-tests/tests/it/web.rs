//! The web progress view in a real headless Chromium ([`Browser`]). The server runs in this
//! process ([`ApiServer`]); tasks advance through explicit reports on `external` steps, and
//! every wait polls the page's DOM with a deadline. Screenshots of the list and a task's
//! page, at desktop and phone sizes, go to `target/screenshots/`. Web push runs end to end
//! against the local push service of the push tests, with only the browser's own
//! push-service calls substituted (offline, it has none to reach).

use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{ApiSettings, NotificationSettings};
use runtime::{Clock, ManualClock, SystemClock};
use serde_json::{json, Value};

use crate::api_support::*;
use crate::notify_push::PushService;
use crate::on_both_backends;
use crate::support::*;
use crate::webdriver::Browser;

/// The seed's task: four external steps, the second with the seed's substeps, the third
/// waiting for approval.
const PLAN: &str = r#"{"title": "Cellphone Store CRM", "complexity": 4, "steps": [
    {"name": "Create database tables", "kind": "external"},
    {"name": "Generate application UI", "kind": "external",
     "substeps": ["Customer list view", "Product list view", "Sales form", "Repair board"]},
    {"name": "Add search and filters", "kind": "external", "requires_approval": true},
    {"name": "Configure workflows", "kind": "external"}
]}"#;

/// The task page as a person sees it: what the tests wait on and compare.
const TASK_STATE_JS: &str = r##"
const $ = (s, root = document) => root.querySelector(s);
const shown = (e) => !!e && e.offsetParent !== null;
const text = (e) => (e ? e.textContent.trim() : null);
const bar = $("#bar");
return {
  path: location.pathname,
  hash: location.hash,
  connection: $("#connection") && $("#connection").dataset.state,
  loaded: shown($("#task")),
  title: text($("#task-title")),
  valuenow: bar && bar.getAttribute("aria-valuenow"),
  role: bar && bar.getAttribute("role"),
  percent: text($("#percent")),
  step_line: text($("#step-line")),
  started: text($("#started")),
  eta: shown($("#eta")) ? text($("#eta")) : null,
  eta_title: $("#eta") && $("#eta").getAttribute("title"),
  status_line: shown($("#status-line")) ? text($("#status-line")) : null,
  error: shown($("#error")) ? text($("#error")) : null,
  pause: shown($("#pause")),
  resume: shown($("#resume")),
  cancel: shown($("#cancel")),
  restart: text($("#restart")),
  approval: shown($("#approval")) ? text($("#approval-question")) : null,
  steps: [...document.querySelectorAll("#steps > li")].map((li) => ({
    order: Number(li.dataset.order),
    status: li.dataset.status,
    symbol: text($(".step-row > .symbol", li)),
    text: text($(".step-status", li)),
    expected: text($(".step-expected", li)),
    error: shown($(".step-error", li)) ? text($(".step-error", li)) : null,
    retry: shown($(".retry", li)),
    skip: shown($(".skip", li)),
    logs: shown($(".logs", li)) ? text($(".log-lines", li)) : null,
    substeps: [...li.querySelectorAll(".substep")].map((s) => text(s).replace(/\s+/g, " ")),
  })),
  notifications: (window.stepwise && window.stepwise.notifications) || [],
  connections: (window.stepwise && window.stepwise.connections) || [],
  events: (window.stepwise && window.stepwise.events) || [],
  errors: (window.stepwise && window.stepwise.errors) || [],
};
"##;

/// The list page: each task's card.
const LIST_STATE_JS: &str = r##"
const text = (e) => (e ? e.textContent.trim() : null);
return {
  path: location.pathname,
  connection: document.querySelector("#connection") && document.querySelector("#connection").dataset.state,
  tasks: [...document.querySelectorAll("#tasks > li")].map((li) => ({
    id: li.dataset.taskId,
    status: li.dataset.status,
    title: text(li.querySelector(".task-link")),
    href: li.querySelector(".task-link").getAttribute("href"),
    symbol: text(li.querySelector(".symbol")),
    words: text(li.querySelector(".task-status")),
    valuenow: li.querySelector("[role=progressbar]").getAttribute("aria-valuenow"),
    percent: text(li.querySelector(".percent")),
    step: text(li.querySelector(".task-step")),
    eta: text(li.querySelector(".task-eta")),
  })),
  errors: (window.stepwise && window.stepwise.errors) || [],
};
"##;

// ------------------------------------------------------------------ the pages

impl Browser {
    /// Signs in through `/login#token=…` and lands on `next`.
    async fn sign_in(&self, token: &str, next: &str) {
        self.goto(&format!("/login#token={token}&next={next}")).await;
    }

    /// Waits until the task page's state satisfies `wanted`; answers that state.
    async fn task(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        self.wait_on(TASK_STATE_JS, what, wanted).await
    }

    /// Waits until the list page's state satisfies `wanted`.
    async fn list(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        self.wait_on(LIST_STATE_JS, what, wanted).await
    }
}

// ------------------------------------------------------------------ helpers

/// What most tests here start from: the server on `clock` over a fresh database of
/// `backend` (to be kept until the end), and `ada`'s token.
async fn start(backend: Backend, clock: Arc<dyn Clock>) -> (TestDb, ApiServer, String) {
    let db = TestDb::new(backend);
    let server = ApiServer::start_default(&db, clock).await;
    let token = server.token("ada").await;
    (db, server, token)
}

fn step(state: &Value, order: usize) -> &Value {
    &state["steps"][order - 1]
}

fn symbols(state: &Value) -> String {
    state["steps"]
        .as_array()
        .map(|s| s.iter().map(|s| s["symbol"].as_str().unwrap_or("?")).collect())
        .unwrap_or_default()
}

/// Desktop notifications: granted by the browser, switched on with a click.
async fn notifications_on(page: &Browser) {
    page.grant_notifications().await;
    page.click("#notify").await;
    let pressed = "return document.querySelector('#notify').getAttribute('aria-pressed')";
    page.wait_on(pressed, "notifications on", |v| v == "true").await;
}

/// Whether the list `key` of a page's state has `n` entries or more.
fn at_least(state: &Value, key: &str, n: usize) -> bool {
    state[key].as_array().is_some_and(|list| list.len() >= n)
}

fn live(state: &Value) -> bool {
    state["loaded"] == true && state["connection"] == "live"
}

// ------------------------------------------------------------------ the tests

on_both_backends! {
    async fn the_task_page_follows_a_running_task_live(backend: Backend) {
        let (_db, server, token) = start(backend, Arc::new(SystemClock)).await;
        let id = create(&server, &token, PLAN).await;
        let page = Browser::open(server.address, 1280, 800).await;

        page.sign_in(&token, &format!("/tasks/{id}")).await;
        let state = page.task("the task page, signed in and live", live).await;
        let expected_path = format!("/tasks/{id}");
        assert_eq!(state["path"], expected_path.as_str());
        assert_eq!(state["hash"], "", "the token leaves the address bar");
        assert_eq!(state["title"], "Cellphone Store CRM");
        assert_eq!(state["role"], "progressbar");
        assert_eq!(state["valuenow"], "0");
        assert_eq!(state["step_line"], "Step 1 of 4: Create database tables");
        assert_eq!(symbols(&state), "◐○○○");
        assert_eq!(step(&state, 1)["text"], "in progress");
        assert_eq!(step(&state, 2)["text"], "pending");
        assert_eq!(step(&state, 3)["text"], "pending");
        assert!(state["started"].as_str().unwrap().starts_with("Started: "), "{state:#}");
        assert!(state["started"].as_str().unwrap().ends_with(" ago"), "{state:#}");
        assert!(state["eta"].as_str().unwrap().starts_with("ETA: "), "{state:#}");
        assert!(state["pause"] == true && state["resume"] == false && state["cancel"] == true, "{state:#}");
        assert_eq!(state["restart"], "Cancel and start over");
        let stored = page.js("return localStorage.getItem('stepwise.token')").await;
        assert_eq!(stored, token.as_str());

        notifications_on(&page).await;

        report(&server, &token, &id, 1, json!({"progress": 50, "log": "created 12 tables"})).await;
        let state = page.task("the bar at 12%", |s| s["valuenow"] == "12").await;
        assert_eq!(state["percent"], "12%");
        assert_eq!(step(&state, 1)["text"], "in progress, 50%");
        if state["eta"] != "ETA: estimating…" {
            assert!(state["eta_title"].as_str().is_some_and(|t| t.starts_with("likely ")), "{state:#}");
        }

        // A step's logs on click, then live.
        page.click("[data-order='1'] .logs-toggle").await;
        page.task("step 1's logs", |s| s["steps"][0]["logs"] == "created 12 tables").await;
        report(&server, &token, &id, 1, json!({"log": "indexed customers"})).await;
        page.task("a live log line", |s| s["steps"][0]["logs"] == "created 12 tables\nindexed customers").await;

        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        let state = page.task("step 1 completed", |s| s["step_line"] == "Step 2 of 4: Generate application UI").await;
        assert_eq!(state["valuenow"], "25");
        assert_eq!(symbols(&state), "✓◐○○");
        assert!(step(&state, 1)["text"].as_str().unwrap().starts_with("completed"), "{state:#}");
        assert_eq!(
            step(&state, 2)["substeps"],
            json!([
                "├─ Customer list view ◐ (in progress)",
                "├─ Product list view ○ (pending)",
                "├─ Sales form ○ (pending)",
                "└─ Repair board ○ (pending)"
            ])
        );

        report(&server, &token, &id, 2, json!({"substep_done": "Customer list view"})).await;
        report(&server, &token, &id, 2, json!({"substep_done": "Product list view"})).await;
        report(&server, &token, &id, 2, json!({"progress": 65})).await;
        let state = page.task("two substeps done", |s| s["valuenow"] == "41").await;
        assert_eq!(
            step(&state, 2)["substeps"],
            json!([
                "├─ Customer list view ✓ (done)",
                "├─ Product list view ✓ (done)",
                "├─ Sales form ◐ (in progress)",
                "└─ Repair board ○ (pending)"
            ])
        );
        assert_eq!(step(&state, 2)["text"], "in progress, 65%");

        report(&server, &token, &id, 2, json!({"status": "completed"})).await;
        let state = page.task("step 3 waits for approval", |s| s["approval"].is_string()).await;
        assert_eq!(symbols(&state), "✓✓⚠○");
        assert_eq!(state["step_line"], "Step 3 of 4: Add search and filters (waiting for your approval)");
        assert_eq!(state["approval"], "⚠ Approve step 3: Add search and filters?");
        assert_eq!(state["status_line"], "⚠ Waiting for your approval");
        assert_eq!(step(&state, 3)["text"], "needs your approval");
        assert_eq!(state["valuenow"], "50");

        let approved = server.post(&format!("/api/tasks/{id}/approve"), &token, "{}").await;
        assert_eq!(approved.status, 200, "{:?}", approved.body);
        report(&server, &token, &id, 3, json!({"status": "completed"})).await;
        report(&server, &token, &id, 4, json!({"status": "completed"})).await;
        let state = page.task("the task completed", |s| s["valuenow"] == "100" && s["status_line"].is_string()).await;
        assert_eq!(symbols(&state), "✓✓✓✓");
        assert!(state["status_line"].as_str().unwrap().starts_with("✓ Completed in "), "{state:#}");
        assert_eq!(state["eta"], Value::Null);
        assert!(state["pause"] == false && state["cancel"] == false, "{state:#}");
        assert_eq!(state["restart"], "Start over");
        let state = page.task("every notification", |s| at_least(s, "notifications", 6)).await;
        assert_eq!(
            state["notifications"],
            json!([
                "Step 1 complete: Create database tables",
                "Step 2 complete: Generate application UI",
                "⚠️ Approval required for Step 3",
                "Step 3 complete: Add search and filters",
                "Step 4 complete: Configure workflows",
                "✓ Cellphone Store CRM is complete"
            ])
        );
        assert_eq!(state["errors"], json!([]), "no script errors");
        page.close().await;
        server.stop().await;
    }

    async fn the_page_pauses_resumes_approves_retries_and_starts_over(backend: Backend) {
        let (_db, server, token) = start(backend, Arc::new(SystemClock)).await;
        let id = create(&server, &token, PLAN).await;
        let page = Browser::open(server.address, 1280, 800).await;
        page.sign_in(&token, &format!("/tasks/{id}")).await;
        page.task("the task page", live).await;
        notifications_on(&page).await;

        page.click("#pause").await;
        let state = page.task("paused", |s| s["status_line"] == "⏸ Paused").await;
        assert_eq!(symbols(&state), "⏸○○○");
        assert_eq!(state["step_line"], "Step 1 of 4: Create database tables (paused)");
        assert!(state["resume"] == true && state["pause"] == false, "{state:#}");
        let document = progress(&server, &token, &id).await;
        assert_eq!(document["status"], "paused");
        assert_eq!(document["steps"][0]["status"], "paused");
        let focused = "return document.activeElement && document.activeElement.id";
        page.wait_on(focused, "keyboard focus on Resume, where Pause was", |v| v == "resume").await;

        page.click("#resume").await;
        let state = page.task("running again", |s| s["pause"] == true).await;
        assert_eq!(symbols(&state), "◐○○○");
        assert_eq!(progress(&server, &token, &id).await["status"], "running");

        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        report(&server, &token, &id, 2, json!({"status": "completed"})).await;
        page.task("the approval box", |s| s["approval"] == "⚠ Approve step 3: Add search and filters?").await;
        page.type_into("#approval-comment", "looks good").await;
        page.click("#approve").await;
        let state = page.task("step 3 running", |s| s["steps"][2]["status"] == "running").await;
        assert_eq!(state["approval"], Value::Null);
        let document = progress(&server, &token, &id).await;
        assert_eq!(document["status"], "running");
        assert_eq!(document["steps"][2]["status"], "running");

        report(&server, &token, &id, 3, json!({"status": "failed", "error": "search index unavailable"})).await;
        let state = page.task("step 3 failed", |s| s["steps"][2]["retry"] == true).await;
        assert_eq!(symbols(&state), "✓✓✗○");
        assert_eq!(step(&state, 3)["text"], "failed");
        assert_eq!(step(&state, 3)["error"], "✗ search index unavailable");
        assert_eq!(step(&state, 3)["skip"], true);
        assert_eq!(state["status_line"], "✗ Failed: step 3 failed: search index unavailable");
        assert_eq!(state["pause"], false);
        let state = page.task("the failure's notification", |s| at_least(s, "notifications", 4)).await;
        assert_eq!(
            state["notifications"],
            json!([
                "Step 1 complete: Create database tables",
                "Step 2 complete: Generate application UI",
                "⚠️ Approval required for Step 3",
                "✗ Task failed at Step 3"
            ])
        );

        page.click("[data-order='3'] .retry").await;
        let state = page.task("step 3 retried", |s| s["steps"][2]["status"] == "running").await;
        assert_eq!(step(&state, 3)["text"], "in progress, attempt 2");
        assert_eq!(state["status_line"], Value::Null);
        let document = progress(&server, &token, &id).await;
        assert_eq!(document["status"], "running");
        assert_eq!(document["steps"][2]["attempts"], 2);

        // Cancel and start over: a confirmation, then the new task's page.
        page.click("#restart").await;
        page.wait_on("return !document.querySelector('#confirm').hidden", "the confirmation", |v| v == true).await;
        page.click("#confirm-yes").await;
        let expected = format!("/tasks/{id}");
        let state = page.task("the new run's page", move |s| live(s) && s["path"] != expected.as_str()).await;
        assert_eq!(state["step_line"], "Step 1 of 4: Create database tables");
        assert_eq!(symbols(&state), "◐○○○");
        assert_eq!(progress(&server, &token, &id).await["status"], "cancelled");
        let new_id = state["path"].as_str().unwrap().trim_start_matches("/tasks/").to_owned();
        assert_eq!(progress(&server, &token, &new_id).await["restarted_from"], id.as_str());
        let earlier = page.js("return document.querySelector('#restarted-link').getAttribute('href')").await;
        assert_eq!(earlier, format!("/tasks/{id}").as_str(), "the new run links to the one it replaced");

        page.click("#cancel").await;
        page.click("#confirm-yes").await;
        let state = page.task("cancelled", |s| s["status_line"] == "Cancelled").await;
        assert_eq!(step(&state, 1)["text"], "stopped when the task was cancelled", "{state:#}");
        assert!(step(&state, 1)["error"].is_null(), "{state:#}");
        assert_eq!(progress(&server, &token, &new_id).await["status"], "cancelled");
        assert_eq!(state["errors"], json!([]));
        page.close().await;
        server.stop().await;
    }

    async fn the_page_survives_a_reload_and_a_dropped_socket(backend: Backend) {
        let (_db, server, token) = start(backend, Arc::new(SystemClock)).await;
        let id = create(&server, &token, PLAN).await;
        report(&server, &token, &id, 1, json!({"progress": 40})).await;
        let page = Browser::open(server.address, 1280, 800).await;
        page.sign_in(&token, &format!("/tasks/{id}")).await;
        let before = page.task("the task page at 10%", |s| live(s) && s["valuenow"] == "10").await;

        // Reload in the middle of the task: the same state.
        page.refresh().await;
        let after = page.task("the reloaded page", |s| live(s) && at_least(s, "connections", 1)).await;
        for key in ["title", "valuenow", "percent", "step_line", "pause", "resume", "approval"] {
            assert_eq!(before[key], after[key], "{key} after a reload");
        }
        // The steps too, but for their expected times: estimates that move with the real clock.
        let without_estimates = |state: &Value| {
            let mut steps = state["steps"].clone();
            steps.as_array_mut().unwrap().iter_mut().for_each(|s| _ = s.as_object_mut().unwrap().remove("expected"));
            steps
        };
        assert_eq!(without_estimates(&before), without_estimates(&after), "steps after a reload");

        // Drop the WebSocket and hold the reconnection, as if the network were down…
        let seq = progress(&server, &token, &id).await["seq"].as_i64().unwrap();
        page.js("window.stepwise.offline = true; window.stepwise.socket.close(); return true").await;
        page.task("disconnected", |s| s["connection"] == "offline").await;
        // …while step 1 completes and step 2 gets going.
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        report(&server, &token, &id, 2, json!({"substep_done": "Customer list view"})).await;
        let missed = page.js(TASK_STATE_JS).await;
        assert_eq!(symbols(&missed), "◐○○○", "nothing arrives while disconnected");

        page.js("window.stepwise.reconnectNow(); return true").await;
        // The page reads the task again on reconnecting, so what it shows may come before the
        // replay does: wait for both.
        let state = page.task("reconnected with the missed step, and its replay", |s| {
            live(s)
                && s["step_line"] == "Step 2 of 4: Generate application UI"
                && s["steps"][1]["substeps"][0].as_str().is_some_and(|t| t.contains('✓'))
                && at_least(s, "events", 3)
        })
        .await;
        assert_eq!(symbols(&state), "✓◐○○");
        assert_eq!(state["valuenow"], "31");
        let connections = state["connections"].as_array().unwrap();
        assert_eq!(connections.last().unwrap(), &json!(format!("/ws/tasks/{id}?after_seq={seq}")));
        let replayed: Vec<&str> =
            state["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(replayed, ["step_complete", "step_started", "substep_done"], "the replay, once each, in order");
        assert_eq!(state["errors"], json!([]));

        // And it keeps following.
        report(&server, &token, &id, 2, json!({"status": "completed"})).await;
        page.task("live after the reconnection", |s| s["approval"].is_string()).await;
        page.close().await;
        server.stop().await;
    }
}

#[actix::test]
async fn screenshots_of_the_list_and_the_task_page() {
    let (_db, server, token) = start(Backend::Sqlite, Arc::new(SystemClock)).await;
    // A few tasks in different states for the list, oldest first.
    let done =
        create(&server, &token, r#"{"title": "Nightly import", "steps": [{"name": "Fetch", "kind": "external"}]}"#)
            .await;
    report(&server, &token, &done, 1, json!({"status": "completed"})).await;
    let failed =
        create(&server, &token, r#"{"title": "Resize photos", "steps": [{"name": "Resize", "kind": "external"}]}"#)
            .await;
    report(&server, &token, &failed, 1, json!({"status": "failed", "error": "disk full"})).await;
    let waiting = create(
        &server,
        &token,
        r#"{"title": "Publish catalogue", "steps": [{"name": "Build", "kind": "external"},
            {"name": "Publish", "kind": "external", "requires_approval": true}]}"#,
    )
    .await;
    report(&server, &token, &waiting, 1, json!({"status": "completed"})).await;
    let paused = create(
        &server,
        &token,
        r#"{"title": "Backfill reports", "steps": [{"name": "Backfill", "kind": "external"}]}"#,
    )
    .await;
    report(&server, &token, &paused, 1, json!({"progress": 30})).await;
    assert_eq!(server.post(&format!("/api/tasks/{paused}/pause"), &token, "{}").await.status, 200);
    // The seed's drawing: step 2 of 4 with two substeps done.
    let crm = create(&server, &token, PLAN).await;
    report(&server, &token, &crm, 1, json!({"log": "created tables customers, products, sales, repairs"})).await;
    report(&server, &token, &crm, 1, json!({"status": "completed"})).await;
    report(&server, &token, &crm, 2, json!({"substep_done": "Customer list view"})).await;
    report(&server, &token, &crm, 2, json!({"substep_done": "Product list view"})).await;
    report(&server, &token, &crm, 2, json!({"progress": 60})).await;

    let page = Browser::open(server.address, 1280, 800).await;
    page.sign_in(&token, "/").await;
    let state = page
        .list("the list with five tasks", |s| {
            s["connection"] == "live" && s["tasks"].as_array().is_some_and(|t| t.len() == 5)
        })
        .await;
    // Bars jump rather than glide, so the screenshots show where they are (the setting
    // lasts for the page it is made on).
    page.reduce_motion().await;
    let cards = state["tasks"].as_array().unwrap();
    let titles: Vec<&str> = cards.iter().map(|t| t["title"].as_str().unwrap()).collect();
    assert_eq!(
        titles,
        ["Cellphone Store CRM", "Backfill reports", "Publish catalogue", "Resize photos", "Nightly import"]
    );
    let marks: Vec<&str> = cards.iter().map(|t| t["symbol"].as_str().unwrap()).collect();
    assert_eq!(marks, ["◐", "⏸", "⚠", "✗", "✓"]);
    assert_eq!(cards[0]["valuenow"], "40");
    assert_eq!(cards[0]["step"], "Step 2 of 4: Generate application UI");
    assert_eq!(cards[0]["href"], format!("/tasks/{crm}").as_str());
    assert_eq!(cards[2]["words"], "waiting for your approval");
    assert_eq!(cards[3]["eta"], "✗ Failed: step 1 failed: disk full");

    // The list is live too, and tells of a new task.
    notifications_on(&page).await;
    report(&server, &token, &crm, 2, json!({"progress": 80})).await;
    page.list("the CRM at 45% on the list", |s| s["tasks"][0]["valuenow"] == "45").await;
    let fresh =
        create(&server, &token, r#"{"title": "Send invoices", "steps": [{"name": "Send", "kind": "external"}]}"#).await;
    let state = page.list("a new task on the list", |s| s["tasks"][0]["title"] == "Send invoices").await;
    assert_eq!(state["tasks"][0]["id"], fresh.as_str());
    report(&server, &token, &fresh, 1, json!({"status": "completed"})).await;
    page.list("the new task completed", |s| s["tasks"][0]["symbol"] == "✓").await;
    // The page may show the end (read from the server) a moment before it hears the event.
    let told = page
        .wait_on("return window.stepwise.notifications", "three notifications", |n| {
            n.as_array().is_some_and(|n| n.len() >= 3)
        })
        .await;
    assert_eq!(
        told,
        json!(["Your Send invoices task has started", "Step 1 complete: Send", "✓ Send invoices is complete"])
    );
    let motion = page.js("return getComputedStyle(document.querySelector('.bar-fill')).transitionDuration").await;
    assert_eq!(motion, "0s", "no motion for those who ask for none");
    let list_desktop = page.screenshot("list-desktop.png").await;

    page.goto(&format!("/tasks/{crm}")).await;
    page.task("the CRM task page", |s| live(s) && s["valuenow"] == "45").await;
    page.reduce_motion().await;
    page.click("[data-order='1'] .logs-toggle").await;
    page.task("step 1's logs", |s| s["steps"][0]["logs"].as_str().is_some_and(|l| l.contains("created tables"))).await;
    let task_desktop = page.screenshot("task-desktop.png").await;

    page.viewport(390, 844, true).await;
    let width = page.js("return [window.innerWidth, document.documentElement.scrollWidth]").await;
    assert_eq!(width, json!([390, 390]), "the task page fits a phone's width without scrolling sideways");
    let task_phone = page.screenshot("task-phone.png").await;
    page.goto("/").await;
    page.reduce_motion().await;
    page.list("the list on a phone", |s| {
        s["connection"] == "live" && s["tasks"].as_array().is_some_and(|t| t.len() == 6)
    })
    .await;
    let width = page.js("return [window.innerWidth, document.documentElement.scrollWidth]").await;
    assert_eq!(width, json!([390, 390]), "the list fits a phone's width without scrolling sideways");
    let list_phone = page.screenshot("list-phone.png").await;
    page.goto(&format!("/tasks/{waiting}")).await;
    page.reduce_motion().await;
    page.task("a task waiting for approval", |s| live(s) && s["approval"].is_string()).await;
    let approval_phone = page.screenshot("task-approval-phone.png").await;

    for path in [list_desktop, task_desktop, task_phone, list_phone, approval_phone] {
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 5_000, "{} is a PNG", path.display());
    }
    page.close().await;
    server.stop().await;
}

/// The chat box's transcript: who said what, as shown.
const CHAT_STATE_JS: &str = r##"
const log = document.querySelector("#chat-log");
const text = document.querySelector(".chat-message[data-from=bot] .chat-text");
return {
  role: log.getAttribute("role"),
  live: log.getAttribute("aria-live"),
  label: document.querySelector("label[for=chat-input]").textContent,
  messages: [...log.querySelectorAll(".chat-message")].map((m) => ({
    from: m.dataset.from,
    text: m.querySelector(".chat-text").textContent,
    html: m.querySelector(".chat-text").children.length,
  })),
  white_space: text && getComputedStyle(text).whiteSpace,
  sending: document.querySelector("#chat-form button[type=submit]").disabled,
  errors: (window.stepwise && window.stepwise.errors) || [],
};
"##;

impl Browser {
    /// Types `message` into the chat box, sends it and waits for the bot's reply; answers
    /// the reply's text.
    async fn say(&self, message: &str) -> String {
        // The conversation's turns; notices may land between them.
        let turns = |s: &Value| -> Vec<Value> {
            s["messages"].as_array().unwrap().iter().filter(|m| m["from"] != "notice").cloned().collect()
        };
        let before = turns(&self.js(CHAT_STATE_JS).await).len();
        self.type_into("#chat-input", message).await;
        self.click("#chat-form button[type=submit]").await;
        let state = self
            .wait_on(CHAT_STATE_JS, &format!("the reply to {message:?}"), move |s| {
                s["sending"] == false && turns(s).len() >= before + 2
            })
            .await;
        let messages = turns(&state);
        assert_eq!(messages[before], json!({"from": "you", "text": message, "html": 0}));
        let reply = &messages[before + 1];
        assert_eq!((&reply["from"], &reply["html"]), (&json!("bot"), &json!(0)), "a reply, as text: {state:#}");
        reply["text"].as_str().unwrap().to_owned()
    }
}

#[actix::test]
async fn the_chat_box_answers_and_a_confirmed_cancel_cancels() {
    let (_db, server, token) = start(Backend::Sqlite, Arc::new(SystemClock)).await;
    let id = create(&server, &token, PLAN).await;
    report(&server, &token, &id, 1, json!({"status": "completed"})).await;
    report(&server, &token, &id, 2, json!({"substep_done": "Customer list view"})).await;
    // The notifier writes its notices as it goes: wait for them, so the page opens on them.
    let deadline = Instant::now() + PATIENCE;
    while server.get("/api/chat", &token).await.body["messages"].as_array().map_or(0, Vec::len) < 2 {
        assert!(Instant::now() < deadline, "the notifier wrote no notices into the transcript");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let page = Browser::open(server.address, 1280, 800).await;
    page.sign_in(&token, "/").await;
    page.list("the list with the CRM task", |s| s["connection"] == "live" && s["tasks"][0]["status"] == "running")
        .await;
    page.reduce_motion().await;
    // Before any conversation, the transcript holds the notifier's notices about the task.
    let opened =
        page.wait_on(CHAT_STATE_JS, "the task's notices in the chat box", |s| at_least(s, "messages", 2)).await;
    assert_eq!((&opened["role"], &opened["live"]), (&json!("log"), &json!("polite")));
    assert_eq!(opened["label"], "Your message");
    assert_eq!(
        opened["messages"],
        json!([
            {"from": "notice", "text": "Your Cellphone Store CRM task has started", "html": 0},
            {"from": "notice", "text": "Step 1 complete: Create database tables", "html": 0},
        ])
    );

    let reply = page.say("How's my CRM task going?").await;
    assert!(reply.starts_with("📊 Your Cellphone Store CRM task is"), "{reply}");
    assert!(reply.contains("\n\nCurrently: Generate application UI\n- ✓ Customer list view"), "{reply}");
    let shown = page.js(CHAT_STATE_JS).await;
    assert_eq!(shown["white_space"], "pre-wrap", "the reply's line breaks show");
    let lines = page.js("return document.querySelector('.chat-message[data-from=bot] .chat-text').getClientRects()[0].height / parseFloat(getComputedStyle(document.querySelector('.chat-text')).lineHeight)").await;
    assert!(lines.as_f64().is_some_and(|n| n >= 4.0), "a multi-line reply takes several lines: {lines}");

    let question = page.say("cancel it").await;
    assert!(question.contains("yes"), "{question}");
    assert_eq!(progress(&server, &token, &id).await["status"], "running", "not before a yes");

    let done = page.say("yes").await;
    assert!(!done.is_empty());
    assert_eq!(progress(&server, &token, &id).await["status"], "cancelled");
    // The list hears of it over its WebSocket.
    page.list("the CRM task cancelled on the list", |s| s["tasks"][0]["status"] == "cancelled").await;

    // The notifier's chat notices join the transcript; the box shows the new ones when the
    // page hears of an event worth one.
    let other = create(&server, &token, PLAN).await;
    page.list("the second task on the list", |s| at_least(s, "tasks", 2)).await;
    report(&server, &token, &other, 1, json!({"status": "completed"})).await;
    let step_done = |s: &Value| {
        let messages = s["messages"].as_array().unwrap();
        messages
            .iter()
            .filter(|m| m["from"] == "notice" && m["text"] == "Step 1 complete: Create database tables")
            .count()
    };
    let state =
        page.wait_on(CHAT_STATE_JS, "the second task's notice in the chat box", move |s| step_done(s) == 2).await;
    assert!(state["messages"].as_array().unwrap().iter().all(|m| m["html"] == 0), "{state:#}");
    assert_eq!(state["errors"], json!([]));
    let chat_desktop = page.screenshot("chat-desktop.png").await;

    page.viewport(390, 844, true).await;
    let width = page.js("return [window.innerWidth, document.documentElement.scrollWidth]").await;
    assert_eq!(width, json!([390, 390]), "the chat box fits a phone's width without scrolling sideways");
    let chat_phone = page.screenshot("chat-phone.png").await;
    for path in [chat_desktop, chat_phone] {
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 5_000, "{} is a PNG", path.display());
    }
    page.close().await;
    server.stop().await;
}

/// What the page should say of a step still to come, from the progress document.
fn expected_words(step: &Value) -> String {
    match step["expected_seconds"].as_u64() {
        Some(0) => "under a second".to_owned(),
        Some(seconds) => format!("about {}", adapters::terminal::human_duration(seconds as f64)),
        None => panic!("an expected time: {step}"),
    }
}

#[actix::test]
async fn each_step_not_done_shows_the_time_it_is_expected_to_need() {
    // The server's estimates only move when the test moves its clock.
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (_db, server, token) = start(Backend::Sqlite, clock.clone()).await;
    let id = create(&server, &token, PLAN).await;
    let page = Browser::open(server.address, 1280, 800).await;
    page.sign_in(&token, &format!("/tasks/{id}")).await;
    let state = page.task("the task page, live", live).await;

    let document = progress(&server, &token, &id).await;
    // The running step counts down in the browser's own time, so only its form is fixed.
    let running = step(&state, 1)["expected"].as_str().unwrap();
    assert!(running.starts_with("about ") && running.ends_with(" left") || running == "any moment now", "{state:#}");
    for order in 2..=4 {
        assert_eq!(step(&state, order)["expected"], expected_words(&document["steps"][order - 1]), "{state:#}");
    }

    clock.advance(20_000);
    report(&server, &token, &id, 1, json!({"status": "completed"})).await;
    let document = progress(&server, &token, &id).await;
    let wanted = [expected_words(&document["steps"][2]), expected_words(&document["steps"][3])];
    let state = page
        .task("the estimates after step 1", move |s| {
            s["steps"][0]["expected"] == ""
                && s["steps"][2]["expected"] == wanted[0]
                && s["steps"][3]["expected"] == wanted[1]
        })
        .await;
    assert!(
        step(&state, 2)["expected"].as_str().unwrap().ends_with(" left")
            || step(&state, 2)["expected"] == "any moment now",
        "{state:#}"
    );
    assert!(step(&state, 1)["text"].as_str().unwrap().starts_with("completed"), "{state:#}");
    page.close().await;
    server.stop().await;
}

/// The page's ETA line for the progress document's estimate, `counted` seconds later (with
/// its range, which screen readers get in words).
fn eta_words(document: &Value, counted: f64) -> String {
    let seconds = |v: &Value| adapters::terminal::human_duration(v.as_u64().unwrap() as f64 - counted);
    let range = &document["eta_range"];
    format!(
        "ETA: {} remaining (likely {} to {} ({} confidence))",
        seconds(&document["eta_seconds"]),
        seconds(&range[0]),
        seconds(&range[1]),
        document["eta_confidence"].as_str().unwrap()
    )
}

/// What the page should say of the running step that still needs `seconds`.
fn left_words(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => "any moment now".to_owned(),
        s => format!("about {} left", adapters::terminal::human_duration(s)),
    }
}

#[actix::test]
async fn the_page_counts_down_only_while_the_task_runs() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (_db, server, token) = start(Backend::Sqlite, clock.clone()).await;
    let plan = r#"{"title": "Approve, then deploy", "complexity": 2, "steps": [
        {"name": "Prepare", "kind": "external"},
        {"name": "Deploy", "kind": "external", "requires_approval": true}]}"#;
    // History: Prepare takes 10 s, Deploy 20 s.
    for _ in 0..3 {
        let id = create(&server, &token, plan).await;
        clock.advance(10_000);
        report(&server, &token, &id, 1, json!({"status": "completed"})).await;
        assert_eq!(server.post(&format!("/api/tasks/{id}/approve"), &token, "{}").await.status, 200);
        clock.advance(20_000);
        report(&server, &token, &id, 2, json!({"status": "completed"})).await;
    }
    let id = create(&server, &token, plan).await;
    let page = Browser::open(server.address, 1280, 800).await;
    page.freeze_clock().await;
    page.sign_in(&token, &format!("/tasks/{id}")).await;
    page.task("the task page, live", live).await;
    let document = progress(&server, &token, &id).await;
    let prepare = document["steps"][0]["expected_seconds"].as_u64().unwrap();

    // Six seconds of the browser's time while Prepare runs: the page counts them off.
    page.js("window.stepwiseTest.advance(6000); return true").await;
    let wanted = left_words(prepare as f64 - 6.0);
    let state = page.task("six seconds counted down", move |s| s["steps"][0]["expected"] == wanted.as_str()).await;
    assert_eq!(state["eta"], eta_words(&document, 6.0), "{state:#}");

    // Prepare ends and Deploy waits for approval for twenty seconds: nothing is counted.
    clock.advance(10_000);
    report(&server, &token, &id, 1, json!({"status": "completed"})).await;
    page.task("Deploy waits for approval", |s| s["steps"][1]["status"] == "approval").await;
    page.js("window.stepwiseTest.advance(20000); return true").await;
    assert_eq!(server.post(&format!("/api/tasks/{id}/approve"), &token, "{}").await.status, 200);
    let document = progress(&server, &token, &id).await;
    let deploy = document["steps"][1]["expected_seconds"].as_u64().unwrap();
    let wanted = left_words(deploy as f64);
    let state = page
        .task("Deploy running, with its whole time", move |s| {
            s["steps"][1]["status"] == "running" && s["steps"][1]["expected"] == wanted.as_str()
        })
        .await;
    assert_eq!(state["eta"], eta_words(&document, 0.0), "{state:#}");

    // A failed task expects nothing more of any step.
    report(&server, &token, &id, 2, json!({"status": "failed", "error": "no capacity"})).await;
    let state = page.task("the task failed", |s| s["status_line"].as_str().is_some_and(|l| l.starts_with("✗"))).await;
    let expected: Vec<&Value> = state["steps"].as_array().unwrap().iter().map(|s| &s["expected"]).collect();
    assert_eq!(expected, [&json!(""), &json!("")], "{state:#}");
    page.close().await;
    server.stop().await;
}

#[actix::test]
async fn sign_in_and_out_and_the_page_routes() {
    let (_db, server, token) = start(Backend::Sqlite, Arc::new(SystemClock)).await;

    // Pages load without a token; assets are compiled in; unknown paths stay JSON 404s.
    for path in ["/", "/tasks/anything", "/login"] {
        let page = server.call("GET", path, None, None).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"), "{path}");
        assert!(page.header("content-security-policy").is_some_and(|p| p.contains("script-src 'self'")), "{path}");
        assert!(page.body.as_str().is_some_and(|b| b.starts_with("<!doctype html>")), "{path}");
    }
    let script = server.call("GET", "/assets/task.js", None, None).await;
    assert_eq!(script.status, 200);
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    let etag = script.header("etag").expect("an ETag").to_owned();
    let headers = [("If-None-Match".to_owned(), etag)];
    assert_eq!(server.raw("GET", "/assets/task.js", &headers, None).await.status, 304);
    for path in ["/assets/nope.js", "/nope", "/tasks/a/b"] {
        let missing = server.call("GET", path, None, None).await;
        assert_eq!((missing.status, missing.code()), (404, "no_route"), "{path}");
    }
    let wrong = server.call("POST", "/", None, Some("{}")).await;
    assert_eq!((wrong.status, wrong.code()), (405, "method_not_allowed"));
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    let head = server.call("HEAD", "/login", None, None).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "", "HEAD answers with the head only");

    let page = Browser::open(server.address, 1280, 800).await;
    // Without a token, a page sends the visitor to sign in, and back after.
    page.goto("/").await;
    page.wait_on("return location.pathname + location.search", "the sign-in page", |v| v == "/login?next=%2F").await;
    page.type_into("#token", "sw_000000000000_nope").await;
    page.click("#sign-in button[type=submit]").await;
    let error = page
        .wait_on(
            "const e = document.querySelector('#login-error'); return e.hidden ? null : e.textContent",
            "refused",
            |v| v.is_string(),
        )
        .await;
    assert_eq!(error, "That token was not accepted: it is unknown or revoked.");
    page.type_into("#token", &token).await;
    page.click("#sign-in button[type=submit]").await;
    page.list("the list after signing in", |s| s["path"] == "/" && s["connection"] == "live").await;

    page.click("#sign-out").await;
    page.wait_on("return location.pathname + location.search", "signed out", |v| v == "/login?reason=signed-out").await;
    assert_eq!(page.js("return localStorage.getItem('stepwise.token')").await, Value::Null);
    let message = page.js("return document.querySelector('#message').textContent").await;
    assert_eq!(message, "You are signed out. The token was removed from this browser.");

    // A task that is not the visitor's reads as missing.
    let other = server.token("grace").await;
    let theirs = create(&server, &other, PLAN).await;
    page.sign_in(&token, &format!("/tasks/{theirs}")).await;
    let error = page
        .wait_on(
            "const e = document.querySelector('#error'); return e.hidden ? null : e.textContent",
            "not found",
            |v| v.is_string(),
        )
        .await;
    assert_eq!(error, format!("There is no task {theirs}, or it is not yours.").as_str());
    page.close().await;
    server.stop().await;
}

/// The push switch and what came of pressing it.
const PUSH_STATE_JS: &str = r##"
const button = document.querySelector("#push");
return {
  text: button.textContent,
  pressed: button.getAttribute("aria-pressed"),
  disabled: button.disabled,
  tag: button.tagName,
  message: document.querySelector("#push-message").textContent,
  role: document.querySelector("#push-message").getAttribute("role"),
  stored: localStorage.getItem("stepwise.push"),
  errors: (window.stepwise && window.stepwise.errors) || [],
};
"##;

/// The scope of the page's active service worker, once there is one.
const SERVICE_WORKER_SCOPE_JS: &str = r##"
navigator.serviceWorker.ready.then((r) => (window.swScope = r.scope));
return window.swScope || null;
"##;

/// The notifications the service worker shows.
const SHOWN_JS: &str = r##"
navigator.serviceWorker.ready
  .then((r) => r.getNotifications())
  .then((shown) => (window.shown = shown.map((n) => ({
    title: n.title, body: n.body, tag: n.tag, data: n.data,
    actions: n.actions.map((a) => ({ action: a.action, title: a.title })),
  }))));
return window.shown || [];
"##;

/// `ada`'s push subscriptions as the server keeps them, as `(id, endpoint)`.
async fn stored_subscriptions(server: &ApiServer) -> Vec<(String, String)> {
    let db = Arc::clone(server.runtime.db());
    let stored = tokio::task::spawn_blocking(move || db::push_subscriptions(&mut db.conn().unwrap(), "ada").unwrap())
        .await
        .unwrap();
    stored.into_iter().map(|s| (s.id, s.endpoint)).collect()
}

#[actix::test]
async fn the_push_switch_subscribes_and_the_service_worker_shows_an_approval() {
    let db = TestDb::new(Backend::Sqlite);
    // The push service is on 127.0.0.1, as a real one never is.
    let notifications = NotificationSettings { allow_private_endpoints: true, ..NotificationSettings::default() };
    let server = ApiServer::start_with(&db, Arc::new(SystemClock), ApiSettings::default(), notifications).await;
    let token = server.token("ada").await;
    let only_approvals = json!({"channels": {"push": ["approval_needed"]}}).to_string();
    assert_eq!(
        server.call("PUT", "/api/notifications/preferences", Some(&token), Some(&only_approvals)).await.status,
        200
    );

    // The service worker: JavaScript at the root (so its scope is the whole site), under a
    // policy that lets the pages register it.
    let worker = server.call("GET", "/sw.js", None, None).await;
    assert_eq!(worker.status, 200);
    assert_eq!(worker.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert!(worker.body.as_str().is_some_and(|js| js.contains("notificationclick")), "{:?}", worker.body);
    let list = server.call("GET", "/", None, None).await;
    assert!(list.header("content-security-policy").is_some_and(|p| p.contains("worker-src 'self'")));

    let page = Browser::open(server.address, 1280, 800).await;
    page.sign_in(&token, "/").await;
    page.list("the list, live", |s| s["connection"] == "live").await;
    page.grant_notifications().await;
    let state = page.js(PUSH_STATE_JS).await;
    assert_eq!(
        (&state["tag"], &state["text"], &state["pressed"]),
        (&json!("BUTTON"), &json!("Turn on push"), &json!("false"))
    );
    assert_eq!((&state["message"], &state["role"]), (&json!(""), &json!("status")));

    // A browser whose push service cannot be reached: subscribing fails, and the page says
    // so. Only PushManager.subscribe is replaced, by one failing as Chromium's does offline.
    page.js(r#"PushManager.prototype.subscribe = () =>
             Promise.reject(new DOMException("Registration failed - push service not available", "AbortError"));
           return true;"#)
        .await;
    page.click("#push").await;
    let state = page.wait_on(PUSH_STATE_JS, "the failure said", |s| s["message"] != "" && s["disabled"] == false).await;
    assert_eq!(
        state["message"],
        "Push could not be turned on: the browser's push service failed (Registration failed - push service not available)."
    );
    assert_eq!(
        (&state["text"], &state["pressed"], &state["stored"]),
        (&json!("Turn on push"), &json!("false"), &Value::Null)
    );
    // The service worker was registered on the way, for the whole site.
    let scope = page.wait_on(SERVICE_WORKER_SCOPE_JS, "an active service worker", |v| v.is_string()).await;
    assert_eq!(scope, format!("{}/", page.base).as_str());
    page.enable_service_workers().await;
    assert!(stored_subscriptions(&server).await.is_empty());

    // A push service on 127.0.0.1 that checks the server's VAPID token and decrypts with the
    // browser's keys. Again only the browser's push-service part is replaced: subscribe
    // answers with that service's subscription (getSubscription finds it again); the page
    // registers it with the server itself.
    let vapid = server.get("/api/push/vapid-public-key", &token).await.body["public_key"].as_str().unwrap().to_owned();
    let mut service = PushService::start(&vapid, Vec::new());
    let subscription = service.subscription.clone();
    page.js(&format!(
        r#"const json = {subscription};
           const fake = {{
             endpoint: json.endpoint,
             toJSON: () => json,
             unsubscribe: () => {{ window.unsubscribed = true; return Promise.resolve(true); }},
           }};
           let subscribed = null;
           PushManager.prototype.subscribe = function (options) {{
             const key = new Uint8Array(options.applicationServerKey);
             window.subscribeOptions = {{
               userVisibleOnly: options.userVisibleOnly,
               key: btoa(String.fromCharCode(...key)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
             }};
             subscribed = fake;
             return Promise.resolve(fake);
           }};
           PushManager.prototype.getSubscription = () => Promise.resolve(subscribed);
           return true;"#
    ))
    .await;
    page.click("#push").await;
    let state = page.wait_on(PUSH_STATE_JS, "push on", |s| s["pressed"] == "true" && s["disabled"] == false).await;
    assert_eq!(state["text"], "Push on");
    assert_eq!(state["message"], "Push is on: this browser hears of your tasks even with no page open.");
    let shot = page.screenshot("push-on-desktop.png").await;
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"), "{} is a PNG", shot.display());
    assert_eq!(page.js("return window.subscribeOptions").await, json!({"userVisibleOnly": true, "key": vapid}));
    let id = state["stored"].as_str().expect("the subscription's id, kept").to_owned();
    let endpoint = subscription["endpoint"].as_str().unwrap().to_owned();
    assert_eq!(stored_subscriptions(&server).await, [(id, endpoint)]);

    // An approval: the server pushes, the push service decrypts, the browser hands it to the
    // service worker, which shows it with Approve and Reject.
    let id = create(
        &server,
        &token,
        r#"{"title": "Publish catalogue", "steps": [{"name": "Publish", "kind": "external", "requires_approval": true}]}"#,
    )
    .await;
    let pushed = service.next().await.payload;
    assert_eq!(pushed["event"], "approval_needed");
    let shown = page.deliver_push(&pushed.to_string(), SHOWN_JS).await;
    let links = json!({"approve": pushed["actions"][0]["url"], "reject": pushed["actions"][1]["url"]});
    assert!(links["approve"].as_str().is_some_and(|l| l.starts_with("/api/approval-links/")), "{pushed}");
    assert_eq!(
        shown,
        json!([{
            "title": "Stepwise",
            "body": "⚠️ Approval required for Step 1",
            "tag": format!("task:{id}"),
            "data": {"url": format!("/tasks/{id}"), "task_id": id, "links": links},
            "actions": [{"action": "approve", "title": "Approve"}, {"action": "reject", "title": "Reject"}],
        }])
    );

    // Off again, from the keyboard: unsubscribed in the browser and gone from the server.
    page.press_enter("#push").await;
    let state = page.wait_on(PUSH_STATE_JS, "push off", |s| s["pressed"] == "false" && s["disabled"] == false).await;
    assert_eq!((&state["text"], &state["message"]), (&json!("Turn on push"), &json!("Push is off for this browser.")));
    assert_eq!(state["stored"], Value::Null);
    assert_eq!(page.js("return window.unsubscribed === true").await, true);
    assert!(stored_subscriptions(&server).await.is_empty());
    assert_eq!(state["errors"], json!([]), "no script errors");
    page.close().await;
    server.stop().await;
}

/// A task waiting in the queue (its server runs `runtime.max_running_tasks` already) says so
/// with its place, on its page and in the list; the place moves up as the tasks before it
/// start (the page reads it again while the task waits), and the task runs in its turn.
#[actix::test]
async fn a_queued_task_shows_its_place_until_it_starts() {
    let db = TestDb::new(Backend::Sqlite);
    let options = runtime::RuntimeOptions { max_running_tasks: 1, ..options("web", Arc::new(SystemClock)) };
    let server =
        ApiServer::start_with_options(&db, options, ApiSettings::default(), NotificationSettings::default()).await;
    let token = server.token("ada").await;
    let plan = r#"{"title": "Queued import", "steps": [{"name": "Load rows", "kind": "external"}]}"#;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&server, &token, plan).await);
    }
    let page = Browser::open(server.address, 1280, 800).await;
    page.sign_in(&token, "/").await;
    let second_in_line = "Queued for a server with room: 2nd in line";
    page.list("the last task's card", |s| {
        s["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|t| t["id"] == ids[2].as_str() && t["eta"] == second_in_line))
    })
    .await;
    page.goto(&format!("/tasks/{}", ids[2])).await;
    let state = page.task("the last task's page", |s| s["status_line"] == second_in_line).await;
    assert!(state["step_line"].as_str().unwrap().ends_with("(queued)"), "{state:#}");
    report(&server, &token, &ids[0], 1, json!({"status": "completed"})).await;
    page.task("moved up", |s| s["status_line"] == "Queued for a server with room: 1st in line").await;
    report(&server, &token, &ids[1], 1, json!({"status": "completed"})).await;
    page.task("running in its turn", |s| s["steps"][0]["status"] == "running" && s["status_line"].is_null()).await;
    page.close().await;
    server.stop().await;
}

/// A step that was running when its task was cancelled ends `failed` in the API (the seed's
/// seven states), with an error that says why; the page says it was stopped, not that it
/// failed.
#[actix::test]
async fn a_step_stopped_by_a_cancel_reads_as_stopped() {
    let (_db, server, token) = start(Backend::Sqlite, Arc::new(SystemClock)).await;
    let id = create(&server, &token, PLAN).await;
    let cancelled = server.post(&format!("/api/tasks/{id}/cancel"), &token, "").await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.body["steps"][0]["status"], "failed");
    assert_eq!(cancelled.body["steps"][0]["error"], runtime::STOPPED_BY_CANCEL);
    let page = Browser::open(server.address, 1280, 800).await;
    page.sign_in(&token, &format!("/tasks/{id}")).await;
    let state = page.task("the cancelled task's page", |s| s["status_line"] == "Cancelled").await;
    let first = step(&state, 1);
    assert_eq!(
        (first["symbol"].as_str(), first["text"].as_str()),
        (Some("⊘"), Some("stopped when the task was cancelled")),
        "{state:#}"
    );
    assert!(first["error"].is_null(), "{state:#}");
    assert_eq!(step(&state, 2)["text"], "pending", "{state:#}");
    page.close().await;
    server.stop().await;
}

#[actix::test]
async fn a_step_waiting_to_retry_or_for_a_deadline_says_when() {
    let (_db, server, token) = start(Backend::Sqlite, Arc::new(SystemClock)).await;
    let flaky = r#"{"title": "Flaky", "steps": [{"name": "Call the API", "kind": "external",
        "retry": {"max_attempts": 3, "backoff": {"initial_s": 300}}}]}"#;
    let id = create(&server, &token, flaky).await;
    let report = r#"{"status": "failed", "error": "service busy"}"#;
    let failed = server.post(&format!("/api/tasks/{id}/steps/1/report"), &token, report).await;
    assert_eq!((failed.status, failed.body["status"].as_str()), (200, Some("running")), "{:?}", failed.body);
    assert_eq!(
        (failed.body["steps"][0]["status"].as_str(), failed.body["steps"][0]["max_attempts"].as_u64()),
        (Some("pending"), Some(3))
    );
    assert!(failed.body["steps"][0]["due_at"].is_string(), "{:?}", failed.body);
    let page = Browser::open(server.address, 1280, 800).await;
    page.sign_in(&token, &format!("/tasks/{id}")).await;
    let state = page
        .task("the retry's countdown", |s| {
            live(s) && step(s, 1)["text"].as_str().is_some_and(|t| t.contains("next try"))
        })
        .await;
    let first = step(&state, 1);
    assert_eq!(first["text"], "pending, attempt 2 of 3, next try in 5 min", "{state:#}");
    assert_eq!(first["error"], "✗ service busy", "{state:#}");

    let waiting = r#"{"title": "Needs a yes", "steps": [{"name": "Deploy", "kind": "external",
        "approval": {"timeout_s": 1200, "on_timeout": "skip"}}]}"#;
    let id = create(&server, &token, waiting).await;
    page.goto(&format!("/tasks/{id}")).await;
    let state = page
        .task("the approval's deadline", |s| {
            live(s) && step(s, 1)["text"].as_str().is_some_and(|t| t.contains("lapses"))
        })
        .await;
    assert_eq!(step(&state, 1)["text"], "needs your approval, lapses in 20 min", "{state:#}");
    page.close().await;
    server.stop().await;
}
