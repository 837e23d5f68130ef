//! `kill -9` at random moments of a mixed workload, then an invariant checker.
//!
//! One real `stepwise serve` runs plans of `exec` steps (each run appends a line to a file of
//! its own), `external` steps the test's reporters drive, `wait` steps, approvals and
//! substeps, while four clients send reports, pauses, resumes, approvals, retries and skips,
//! and a WebSocket per task follows it, resuming with `after_seq` after every restart. The
//! server is killed with SIGKILL at a random moment `STEPWISE_CHAOS_KILLS` times (20 by
//! default; `scripts/chaos` runs 200) and started again. On PostgreSQL the same runs across a
//! cluster of three servers behind a balancer the test plays (each request and WebSocket to
//! any of them): each kill takes a random one, which comes back as itself or, half the time,
//! as a new machine whose predecessor's tasks the others take over once their leases lapse
//! (3 s). Then the clients give every input
//! until each task has ended, and the checker holds the stored event log against what the
//! clients were told:
//!
//! - every acknowledged (2xx) completion, substep, approval, skip, pause and resume is in
//!   the log;
//! - every task was made by an acknowledged creation: one the kill cut off is sent again with
//!   its `Idempotency-Key`, which must answer with the task the first one made, if any;
//! - every task's log is gap-free from seq 1, and every task ended;
//! - no step whose completion or skip was committed ran again (its file did not grow);
//! - every WebSocket saw each logged event once, in order, across its reconnections.
//!
//! The kill moments come from `STEPWISE_CHAOS_SEED` (printed; random when unset), so a
//! failing run can be tried again at the same moments, though the server's own timing
//! differs from run to run. The figures print as a table (`--no-capture` shows it).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::api_support::WsClient;
use crate::http_client;
use crate::on_both_backends;
use crate::support::*;

/// How long one request may take before the client gives up on it (it is then neither
/// acknowledged nor refused: the server may or may not have applied it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The tasks kept running at once.
const LIVE_TASKS: usize = 8;
/// The clients sending requests at once, each to its share of the tasks.
const CLIENTS: usize = 4;
/// The longest a server lives before it is killed.
const LONGEST_LIFE_MS: u64 = 1_500;

/// What the clients were told: each acknowledged request, and how many were answered how.
#[derive(Default)]
struct Ledger {
    completed: BTreeSet<(String, u32)>,
    substeps: BTreeSet<(String, u32, String)>,
    approved: BTreeSet<(String, u32)>,
    skipped: BTreeSet<(String, u32)>,
    retried: usize,
    /// Acknowledged pauses and resumes by task and the event each must have logged.
    controls: BTreeMap<(String, &'static str), usize>,
    created: BTreeSet<String>,
    /// Creations sent again with their idempotency key after a kill cut the first off.
    creations_retried: usize,
    sent: usize,
    acknowledged: usize,
    refused: BTreeMap<String, usize>,
    unanswered: usize,
}

/// One task's WebSocket follower: the logged events it saw, in the order it saw them.
#[derive(Default)]
struct Follower {
    seen: Vec<(i64, String)>,
    /// Its WebSocket, and the server it is open on.
    socket: Option<(WsClient, SocketAddr)>,
    reconnects: usize,
    ended: bool,
}

/// The whole run's state, shared by the clients of one server's life.
struct Chaos {
    token: String,
    runs: PathBuf,
    ledger: Ledger,
    followers: BTreeMap<String, Follower>,
    /// Exec steps whose completion or skip was committed, with their run count then.
    settled: HashMap<(String, u32), usize>,
    violations: Vec<String>,
    rng: StdRng,
    next_plan: usize,
    /// A creation a kill cut off, with its idempotency key: sent again before any other.
    unanswered_create: Option<(String, Value)>,
}

/// Types of WebSocket messages that are not logged events.
const UNLOGGED: [&str; 4] = ["snapshot", "progress", "log", "eta"];
/// Task statuses no input changes.
const ENDED: [&str; 2] = ["completed", "cancelled"];

fn exec_step(name: &str, runs: &Path, fail_first: bool, substeps: &[&str]) -> Value {
    // The first line of every run goes to the step's own file, before anything else.
    let fail = if fail_first {
        r#"if [ ! -e "$F.failed" ]; then touch "$F.failed"; echo "first run fails" >&2; exit 3; fi; "#
    } else {
        ""
    };
    let script = format!(
        r#"F="$RUNS/$STEPWISE_TASK_ID-$STEPWISE_STEP"; echo run >> "$F"; {fail}echo progress 30; sleep 0.4; echo working; {ticks}sleep 0.4"#,
        ticks = substeps.iter().map(|s| format!("echo substep-done {s}; ")).collect::<String>()
    );
    json!({"name": name, "kind": "exec", "substeps": substeps,
           "params": {"argv": ["sh", "-c", script], "env": {"RUNS": runs.display().to_string()}}})
}

impl Chaos {
    fn plan(&mut self) -> Value {
        self.next_plan += 1;
        match self.next_plan % 2 {
            0 => json!({"title": "Chaos exec", "steps": [
                exec_step("fetch", &self.runs, false, &["page one", "page two"]),
                {"name": "settle", "kind": "wait", "params": {"seconds": 0.3}},
                exec_step("flaky", &self.runs, true, &[]),
            ]}),
            _ => json!({"title": "Chaos external", "steps": [
                {"name": "gather", "kind": "external", "substeps": ["a", "b"]},
                {"name": "sign off", "kind": "external", "requires_approval": true},
                {"name": "send", "kind": "external"},
            ]}),
        }
    }

    fn follow(&mut self, id: &str) {
        self.followers.entry(id.to_owned()).or_default();
    }

    /// Takes in what a follower's socket delivered: logged events must follow its last seen
    /// seq one by one.
    fn saw(&mut self, id: &str, messages: Vec<Value>) {
        let follower = self.followers.get_mut(id).expect("a follower");
        for message in messages {
            let kind = message["type"].as_str().unwrap_or_default().to_owned();
            let Some(seq) = message["seq"].as_i64().filter(|_| !UNLOGGED.contains(&kind.as_str())) else { continue };
            let last = follower.seen.last().map_or(0, |(seq, _)| *seq);
            if seq != last + 1 {
                self.violations.push(format!("task {id}: WebSocket got {kind} seq {seq} after seq {last}"));
            }
            follower.ended |= ["task_complete", "task_cancelled"].contains(&kind.as_str());
            follower.seen.push((seq, kind));
        }
    }

    /// With the server down: every exec step whose completion or skip is committed must
    /// not run again, so its run count must stay what it was when first seen settled.
    fn check_settled_steps(&mut self, conn: &mut db::AnyConnection) {
        let ids: Vec<String> = self.followers.keys().cloned().collect();
        for id in ids {
            let events = db::events_after(conn, "alice", &id, 0, 1_000_000).expect("read the event log");
            for event in events.iter().filter(|e| ["step_complete", "step_skipped"].contains(&e.kind.as_str())) {
                let step = event.step.expect("a step event names its step");
                let Some(runs) = run_count(&self.runs, &id, step) else { continue };
                match self.settled.get(&(id.clone(), step)) {
                    Some(before) if *before != runs => self.violations.push(format!(
                        "task {id} step {step} ran again after its {} was committed ({before} runs, then {runs})",
                        event.kind
                    )),
                    Some(_) => {}
                    None => {
                        self.settled.insert((id.clone(), step), runs);
                    }
                }
            }
        }
    }
}

/// How many times the exec step `task`-`step` started, if it is an exec step that did.
fn run_count(runs: &Path, task: &str, step: u32) -> Option<usize> {
    let text = std::fs::read_to_string(runs.join(format!("{task}-{step}"))).ok()?;
    Some(text.lines().count())
}

/// Whether `log` holds a `kind` event of `step` whose detail has `field` = value.
fn logged(log: &[db::EventRecord], kind: &str, step: u32, detail: Option<&(&str, Value)>) -> bool {
    log.iter().any(|e| {
        e.kind == kind
            && e.step == Some(step)
            && detail.is_none_or(|(field, value)| {
                serde_json::from_str::<Value>(e.detail.as_deref().unwrap_or("null")).is_ok_and(|d| d[field] == *value)
            })
    })
}

/// The run's state, borrowed by one client at a time between awaits (one thread).
type Shared = Rc<RefCell<Chaos>>;

/// Sends one request; its status and body when answered, `None` when not (the server may
/// or may not have applied it).
async fn call(chaos: &Shared, addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
    send(chaos, addr, method, path, body, None).await
}

/// [`call`] with an `Idempotency-Key`, if given.
async fn send(
    chaos: &Shared,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> Option<(u16, Value)> {
    let token = chaos.borrow().token.clone();
    let mut headers = vec![
        ("Authorization".to_owned(), format!("Bearer {token}")),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    headers.extend(idempotency_key.map(|key| ("Idempotency-Key".to_owned(), key.to_owned())));
    let body = body.map(|b| b.to_string().into_bytes());
    let answer = http_client::send(addr, method, path, &headers, body.as_deref(), REQUEST_TIMEOUT).await;
    let ledger = &mut chaos.borrow_mut().ledger;
    ledger.sent += 1;
    match answer {
        Ok(answer) => {
            let body = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            match (200..300).contains(&answer.status) {
                true => ledger.acknowledged += 1,
                false => {
                    *ledger.refused.entry(format!("{} {}", answer.status, body["error"]["code"])).or_default() += 1
                }
            }
            Some((answer.status, body))
        }
        Err(_) => {
            ledger.unanswered += 1;
            None
        }
    }
}

fn acknowledged(answer: &Option<(u16, Value)>) -> bool {
    answer.as_ref().is_some_and(|(status, _)| (200..300).contains(status))
}

/// The order of the first step of `document` in `status`.
fn step_in(document: &Value, status: &str) -> Option<u32> {
    let steps = document["steps"].as_array()?;
    let step = steps.iter().find(|s| s["status"] == status)?;
    step["order"].as_u64().and_then(|n| u32::try_from(n).ok())
}

/// One client: walks its share of the live tasks and gives each what it waits for, until
/// `stop`. While `disturbing`, it also creates tasks and pauses running ones at random.
async fn drive(chaos: Shared, addrs: Rc<Vec<SocketAddr>>, part: usize, stop: Rc<Cell<bool>>, disturbing: bool) {
    while !stop.get() {
        let live: Vec<String> = {
            let c = chaos.borrow();
            c.followers.iter().filter(|(_, f)| !f.ended).map(|(id, _)| id.clone()).collect()
        };
        let retry_creation = chaos.borrow().unanswered_create.is_some();
        if part == 0 && (retry_creation || (disturbing && live.len() < LIVE_TASKS)) {
            create_task(&chaos, pick(&chaos, &addrs)).await;
        }
        for id in live.into_iter().skip(part).step_by(CLIENTS) {
            if stop.get() {
                return;
            }
            let addr = pick(&chaos, &addrs);
            let Some((200, document)) = call(&chaos, addr, "GET", &format!("/api/tasks/{id}/progress"), None).await
            else {
                continue;
            };
            act_on(&chaos, addr, &id, &document, disturbing).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The server a request goes to: any of them, as behind a balancer that checks nothing.
fn pick(chaos: &Shared, addrs: &[SocketAddr]) -> SocketAddr {
    addrs[chaos.borrow_mut().rng.random_range(0..addrs.len())]
}

/// Every client's `drive` at once.
async fn clients(chaos: &Shared, addrs: &Rc<Vec<SocketAddr>>, stop: &Rc<Cell<bool>>, disturbing: bool) {
    let clients = (0..CLIENTS).map(|part| drive(Rc::clone(chaos), Rc::clone(addrs), part, Rc::clone(stop), disturbing));
    futures_util::future::join_all(clients).await;
}

/// Creates a task, or sends the creation a kill cut off again with the same idempotency
/// key: the retry must answer with the task the first request made, if it made one.
async fn create_task(chaos: &Shared, addr: SocketAddr) {
    let (key, plan) = {
        let mut c = chaos.borrow_mut();
        match c.unanswered_create.take() {
            Some(unanswered) => {
                c.ledger.creations_retried += 1;
                unanswered
            }
            None => {
                let plan = c.plan();
                (format!("chaos-{}", c.next_plan), plan)
            }
        }
    };
    let answer = send(chaos, addr, "POST", "/api/tasks", Some(plan.clone()), Some(&key)).await;
    let mut c = chaos.borrow_mut();
    match answer {
        // Not made, or not known to be: try again later with the same key.
        None | Some((503, _)) => c.unanswered_create = Some((key, plan)),
        Some((201, body)) => {
            let id = body["task_id"].as_str().expect("a created task's id");
            c.ledger.created.insert(id.to_owned());
            c.follow(id);
        }
        Some((status, body)) => c.violations.push(format!("creating {key} was refused: {status} {body}")),
    }
}

/// Gives the task what it waits for: a resume, a retry or skip, an approval, a report.
async fn act_on(chaos: &Shared, addr: SocketAddr, id: &str, document: &Value, disturbing: bool) {
    let task = format!("/api/tasks/{id}");
    let (pause, resume, retry, report) = {
        let rng = &mut chaos.borrow_mut().rng;
        (rng.random_bool(0.02), rng.random_bool(0.5), rng.random_bool(0.5), rng.random_range(0..10u8))
    };
    let key = |step: u32| (id.to_owned(), step);
    match document["status"].as_str().unwrap_or_default() {
        "paused" if resume || !disturbing => control(chaos, addr, id, "resume", "task_resumed").await,
        "failed" => {
            let Some(step) = step_in(document, "failed") else { return };
            let what = if retry { "retry" } else { "skip" };
            if acknowledged(&call(chaos, addr, "POST", &format!("{task}/steps/{step}/{what}"), None).await) {
                let ledger = &mut chaos.borrow_mut().ledger;
                match retry {
                    true => ledger.retried += 1,
                    false => _ = ledger.skipped.insert(key(step)),
                }
            }
        }
        "approval" => {
            let Some(step) = step_in(document, "approval") else { return };
            let body = json!({"step": step, "comment": "chaos says yes"});
            if acknowledged(&call(chaos, addr, "POST", &format!("{task}/approve"), Some(body)).await) {
                chaos.borrow_mut().ledger.approved.insert(key(step));
            }
        }
        "running" if pause && disturbing => control(chaos, addr, id, "pause", "task_paused").await,
        "running" => {
            let Some(step) = step_in(document, "running") else { return };
            let entry = &document["steps"][usize::try_from(step).unwrap() - 1];
            if entry["kind"] != "external" {
                return;
            }
            let open = entry["substeps"].as_array().and_then(|s| s.iter().find(|s| s["done"] != true)).cloned();
            let body = match (report, &open) {
                (0..=2, _) => json!({"progress": f64::from(report) * 10.0 + 5.5}),
                (3, _) => json!({"log": format!("line {report} from the chaos reporter")}),
                (_, Some(substep)) => json!({"substep_done": substep["name"]}),
                (4..=7, None) => json!({"progress": f64::from(report) * 10.0 + 5.5}),
                (_, None) => json!({"status": "completed"}),
            };
            let answer = call(chaos, addr, "POST", &format!("{task}/steps/{step}/report"), Some(body.clone())).await;
            if acknowledged(&answer) {
                let ledger = &mut chaos.borrow_mut().ledger;
                if let Some(name) = body["substep_done"].as_str() {
                    ledger.substeps.insert((id.to_owned(), step, name.to_owned()));
                }
                if body["status"] == "completed" {
                    ledger.completed.insert(key(step));
                }
            }
        }
        _ => {}
    }
}

/// Sends a pause or resume; counts it if acknowledged, against the event it must log.
async fn control(chaos: &Shared, addr: SocketAddr, id: &str, action: &str, logs: &'static str) {
    if acknowledged(&call(chaos, addr, "POST", &format!("/api/tasks/{id}/{action}"), None).await) {
        *chaos.borrow_mut().ledger.controls.entry((id.to_owned(), logs)).or_default() += 1;
    }
}

/// Starts the server on `env` and answers it with its address.
fn start_server(env: &[(String, String)]) -> (Process, SocketAddr) {
    let mut server = Process::spawn(&["serve"], env);
    let url = server.wait_for_line("listening on http://");
    let addr = url.trim_start_matches("listening on http://").parse().expect("an address");
    (server, addr)
}

/// Opens (again) every unended follower's WebSocket, resuming after the last seq it saw;
/// also follows tasks the clients did not know of (created by a request whose answer the
/// kill cut off).
async fn reconnect(chaos: &Shared, addrs: &[SocketAddr]) {
    let ids: Vec<String> = chaos.borrow().followers.keys().cloned().collect();
    for id in ids {
        let arrived =
            chaos.borrow_mut().followers.get_mut(&id).and_then(|f| f.socket.as_mut().map(|(s, _)| s.arrived()));
        if let Some((messages, ended)) = arrived {
            chaos.borrow_mut().saw(&id, messages);
            if ended {
                chaos.borrow_mut().followers.get_mut(&id).expect("a follower").socket = None;
            }
        }
    }
    if let Some((200, page)) = call(chaos, pick(chaos, addrs), "GET", "/api/tasks?limit=50", None).await {
        let mut c = chaos.borrow_mut();
        for task in page["tasks"].as_array().into_iter().flatten() {
            if let Some(id) =
                task["task_id"].as_str().filter(|_| !ENDED.contains(&task["status"].as_str().unwrap_or("")))
            {
                c.follow(id);
            }
        }
    }
    let open: Vec<(String, i64)> = chaos
        .borrow()
        .followers
        .iter()
        .filter(|(_, f)| !f.ended && f.socket.is_none())
        .map(|(id, f)| (id.clone(), f.seen.last().map_or(0, |(seq, _)| *seq)))
        .collect();
    let token = chaos.borrow().token.clone();
    for (id, after) in open {
        let addr = pick(chaos, addrs);
        let headers = vec![("Authorization".to_owned(), format!("Bearer {token}"))];
        let path = format!("/ws/tasks/{id}?after_seq={after}");
        let connected = tokio::task::spawn_blocking(move || WsClient::connect(addr, &path, &headers)).await.unwrap();
        let mut c = chaos.borrow_mut();
        match connected {
            Ok(socket) => {
                let follower = c.followers.get_mut(&id).expect("a follower");
                follower.socket = Some((socket, addr));
                follower.reconnects += 1;
            }
            Err((status, body)) => {
                c.violations.push(format!("task {id}: resuming after seq {after} refused: {status} {body}"))
            }
        }
    }
}

/// Reads the socket of each follower on the killed server until its death closed it.
async fn collect_after_kill(chaos: &Shared, killed: SocketAddr) {
    let ids: Vec<String> = chaos.borrow().followers.keys().cloned().collect();
    for id in ids {
        let socket = chaos.borrow_mut().followers.get_mut(&id).and_then(|f| {
            let on_killed = f.socket.as_ref().is_some_and(|(_, addr)| *addr == killed);
            on_killed.then(|| f.socket.take()).flatten()
        });
        if let Some((mut socket, _)) = socket {
            let messages = socket.until_closed().await;
            chaos.borrow_mut().saw(&id, messages);
        }
    }
}

/// Reads each follower's socket until it has seen seq `last` of its task's log.
async fn collect_until(chaos: &Shared, last_seqs: &BTreeMap<String, i64>) {
    for (id, last) in last_seqs {
        let socket = chaos.borrow_mut().followers.get_mut(id).and_then(|f| f.socket.take());
        let Some((mut socket, _)) = socket else { continue };
        while chaos.borrow().followers[id].seen.last().map_or(0, |(seq, _)| *seq) < *last {
            let Some(message) = socket.next_within(PATIENCE).await else {
                chaos.borrow_mut().violations.push(format!("task {id}: its WebSocket never got seq {last}"));
                break;
            };
            chaos.borrow_mut().saw(id, vec![message]);
        }
    }
}

on_both_backends! {
    async fn kill_nine_at_random_moments_loses_nothing_that_was_acknowledged(backend: Backend) {
        run(backend, 1).await;
    }
}

// PostgreSQL only: it is what several servers share.
#[actix::test]
async fn kill_nine_of_a_random_server_of_three_loses_nothing_that_was_acknowledged() {
    run(Backend::Postgres, 3).await;
}

/// The run: `servers` servers on one database, one of them killed at each of the kills.
async fn run(backend: Backend, servers: usize) {
    let kills: usize = std::env::var("STEPWISE_CHAOS_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("STEPWISE_CHAOS_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or_else(rand::random);
    let db = TestDb::new(backend);
    let mut env = db.env();
    env.push(("STEPWISE_API__STEP_KINDS".into(), "exec,external,wait".into()));
    if servers > 1 {
        // Short leases, so a server that does not come back is taken over within the run.
        env.push(("STEPWISE_RUNTIME__LEASE_TTL_S".into(), "3".into()));
    }
    let env_of = |instance: &str| {
        let mut env = env.clone();
        env.push(("STEPWISE_RUNTIME__INSTANCE_ID".into(), instance.to_owned()));
        env
    };
    let mut instances: Vec<String> = (0..servers).map(|i| format!("chaos-{i}")).collect();
    let runs = db.dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let (status, token, stderr) = run_binary(&["token", "create", "--user", "alice", "--rate", "100000"], &env);
    assert!(status.success(), "{stderr}");
    let chaos: Shared = Rc::new(RefCell::new(Chaos {
        token: token.trim().to_owned(),
        runs,
        ledger: Ledger::default(),
        followers: BTreeMap::new(),
        settled: HashMap::new(),
        violations: Vec::new(),
        rng: StdRng::seed_from_u64(seed),
        next_plan: 0,
        unanswered_create: None,
    }));
    let started = Instant::now();

    let mut running: Vec<(Process, SocketAddr)> = instances.iter().map(|id| start_server(&env_of(id))).collect();
    let mut replacements = 0;
    for _ in 0..kills {
        let addrs = Rc::new(running.iter().map(|(_, addr)| *addr).collect::<Vec<_>>());
        reconnect(&chaos, &addrs).await;
        let (life, victim) = {
            let rng = &mut chaos.borrow_mut().rng;
            (Duration::from_millis(rng.random_range(0..LONGEST_LIFE_MS)), rng.random_range(0..servers))
        };
        let stop = Rc::new(Cell::new(false));
        let killer = async {
            tokio::time::sleep(life).await;
            running[victim].0.signal(libc::SIGKILL);
            stop.set(true);
        };
        futures_util::future::join(killer, clients(&chaos, &addrs, &stop, true)).await;
        let (killed, killed_addr) = running.remove(victim);
        let (exit, _) = killed.wait();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&exit), Some(libc::SIGKILL));
        collect_after_kill(&chaos, killed_addr).await;
        chaos.borrow_mut().check_settled_steps(&mut db.open().conn().unwrap());
        // In a cluster, half the time a new machine replaces it: its predecessor's tasks
        // wait for their leases to lapse and go to whichever server sweeps first.
        if servers > 1 && chaos.borrow_mut().rng.random_bool(0.5) {
            replacements += 1;
            instances[victim] = format!("chaos-{victim}-{replacements}");
        }
        running.insert(victim, start_server(&env_of(&instances[victim])));
    }

    // Calm: every input is given until each task has ended.
    let addrs = Rc::new(running.iter().map(|(_, addr)| *addr).collect::<Vec<_>>());
    reconnect(&chaos, &addrs).await;
    let stop = Rc::new(Cell::new(false));
    let calm = async {
        let deadline = Instant::now() + PATIENCE * 2;
        let busy = || {
            let c = chaos.borrow();
            c.unanswered_create.is_some() || c.followers.values().any(|f| !f.ended)
        };
        while busy() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let ids: Vec<String> =
                chaos.borrow().followers.iter().filter(|(_, f)| !f.ended).map(|(id, _)| id.clone()).collect();
            for id in ids {
                let addr = pick(&chaos, &addrs);
                if let Some((200, document)) =
                    call(&chaos, addr, "GET", &format!("/api/tasks/{id}/progress"), None).await
                {
                    if ENDED.contains(&document["status"].as_str().unwrap_or("")) {
                        chaos.borrow_mut().followers.get_mut(&id).unwrap().ended = true;
                    }
                }
            }
        }
        stop.set(true);
    };
    futures_util::future::join(calm, clients(&chaos, &addrs, &stop, false)).await;

    // Every follower reads up to its task's newest seq; then the server stops.
    let mut last_seqs = BTreeMap::new();
    let ids: Vec<String> = chaos.borrow().followers.keys().cloned().collect();
    for id in ids {
        let answer = call(&chaos, addrs[0], "GET", &format!("/api/tasks/{id}/progress"), None).await;
        let (200, document) = answer.expect("the calm server answers") else { panic!("no progress document of {id}") };
        last_seqs.insert(id, document["seq"].as_i64().expect("a seq"));
    }
    collect_until(&chaos, &last_seqs).await;
    for (server, _) in running {
        server.signal(libc::SIGTERM);
        let (exit, stderr) = server.wait();
        assert!(exit.success(), "a calm server's exit: {stderr}");
    }

    // The checker: the stored log against what the clients were told.
    let database = db.open();
    let mut conn = database.conn().unwrap();
    let logs: BTreeMap<String, Vec<db::EventRecord>> = chaos
        .borrow()
        .followers
        .keys()
        .map(|id| (id.clone(), db::events_after(&mut conn, "alice", id, 0, 1_000_000).expect("the event log")))
        .collect();
    let mut c = chaos.borrow_mut();
    c.check_settled_steps(&mut conn);
    let mut violations = std::mem::take(&mut c.violations);
    let mut events = 0;
    for (id, log) in &logs {
        events += log.len();
        let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
        if seqs != (1..=i64::try_from(log.len()).unwrap()).collect::<Vec<_>>() {
            violations.push(format!("task {id}: its log is not gap-free from 1: {seqs:?}"));
        }
        if !log.last().is_some_and(|e| ["task_complete", "task_cancelled"].contains(&e.kind.as_str())) {
            violations.push(format!("task {id} did not end: its log ends with {:?}", log.last().map(|e| &e.kind)));
        }
        let stored: Vec<(i64, String)> = log.iter().map(|e| (e.seq, e.kind.clone())).collect();
        if c.followers[id].seen != stored {
            violations
                .push(format!("task {id}: its WebSocket saw {:?}, the log holds {stored:?}", c.followers[id].seen));
        }
    }
    if logs.len() != c.ledger.created.len() {
        let unmade: Vec<&String> = logs.keys().filter(|id| !c.ledger.created.contains(*id)).collect();
        violations.push(format!("tasks no acknowledged creation made (a retry made a second task?): {unmade:?}"));
    }
    for ((id, kind), told) in &c.ledger.controls {
        let logged = logs.get(id).map_or(0, |log| log.iter().filter(|e| e.kind == *kind).count());
        if logged < *told {
            violations.push(format!("task {id}: {told} acknowledged, {logged} {kind} logged"));
        }
    }
    let ledger = &c.ledger;
    let told = ledger.completed.iter().map(|(id, step)| (id, *step, "step_complete", None));
    let told = told.chain(ledger.skipped.iter().map(|(id, step)| (id, *step, "step_skipped", None)));
    let told = told
        .chain(ledger.approved.iter().map(|(id, step)| (id, *step, "approval_given", Some(("approved", json!(true))))));
    let told = told
        .chain(ledger.substeps.iter().map(|(id, step, name)| (id, *step, "substep_done", Some(("name", json!(name))))));
    for (id, step, kind, detail) in told {
        if !logs.get(id).is_some_and(|log| logged(log, kind, step, detail.as_ref())) {
            violations.push(format!("task {id}: an acknowledged {kind} of step {step} ({detail:?}) is not in its log"));
        }
    }
    let (exec_steps, exec_runs) = (c.settled.len(), c.settled.values().sum::<usize>());
    let reconnects: usize = c.followers.values().map(|f| f.reconnects).sum();
    println!(
        "chaos on {backend:?}, {servers} server(s): seed {seed}, {kills} kills with SIGKILL in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (figure, value) in [
        ("tasks (created acknowledged / in all)", format!("{} / {}", ledger.created.len(), logs.len())),
        ("  creations resent with their key", ledger.creations_retried.to_string()),
        ("requests sent", ledger.sent.to_string()),
        (
            "  answered 2xx / refused / cut off",
            format!("{} / {} / {}", ledger.acknowledged, ledger.refused.values().sum::<usize>(), ledger.unanswered),
        ),
        ("  refused, by status and code", format!("{:?}", ledger.refused)),
        ("acknowledged completions / substeps", format!("{} / {}", ledger.completed.len(), ledger.substeps.len())),
        (
            "acknowledged approvals / skips / retries",
            format!("{} / {} / {}", ledger.approved.len(), ledger.skipped.len(), ledger.retried),
        ),
        ("acknowledged pauses / resumes", {
            let count = |kind| ledger.controls.iter().filter(|((_, k), _)| *k == kind).map(|(_, n)| n).sum::<usize>();
            format!("{} / {}", count("task_paused"), count("task_resumed"))
        }),
        ("logged events checked", events.to_string()),
        ("WebSocket (re)connections with after_seq", reconnects.to_string()),
        ("settled exec steps / their runs", format!("{exec_steps} / {exec_runs}")),
        ("violations", violations.len().to_string()),
    ] {
        println!("  {figure:<45} {value}");
    }
    assert!(violations.is_empty(), "{} violations (seed {seed}):\n{}", violations.len(), violations.join("\n"));
}
