//! The `stepwise` binary as a user runs it: serving, health checks, a clean stop, and the
//! clear errors it gives for bad settings, databases and plans.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::on_both_backends;
use crate::support::*;

/// A GET over a plain socket with `headers` (each ending in CRLF): the status code, the
/// head (status line and headers) and the body.
fn get_with(address: &str, path: &str, headers: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to stepwise");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_owned(), body.to_owned())
}

/// A GET: the status code and the body.
fn get(address: &str, path: &str) -> (u16, String) {
    let (status, _, body) = get_with(address, path, "");
    (status, body)
}

/// GET with a bearer token.
fn get_as(address: &str, path: &str, token: &str) -> u16 {
    get_with(address, path, &format!("Authorization: Bearer {token}\r\n")).0
}

/// The value of `name` among the head's headers.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

on_both_backends! {
    async fn tokens_are_made_listed_and_revoked_beside_a_running_server(backend: Backend) {
        let db = TestDb::new(backend);
        let env: Vec<_> = db.env().into_iter().chain([("STEPWISE_API__TOKEN_CACHE_S".to_owned(), "0".to_owned())]).collect();
        let mut server = Process::spawn(&["serve"], &env);
        let url = server.wait_for_line("listening on http://");

        let (status, stdout, stderr) = run_binary(&["token", "create", "--user", "ada"], &env);
        assert!(status.success(), "{status}: {stderr}");
        let token = stdout.trim_end_matches('\n');
        assert!(!token.contains('\n') && token.starts_with("sw_"), "the token alone on stdout: {stdout:?}");
        let id = stderr.split_whitespace().nth(1).expect("the token's id on stderr").to_owned();
        assert!(token.contains(&id), "{stderr}");
        assert_eq!(get_as(&url, "/api/tasks", token), 200);

        let (_, listed, _) = run_binary(&["token", "list"], &env);
        assert!(listed.starts_with(&format!("{id}\tada\t")) && listed.contains("active"), "{listed}");
        assert!(listed.trim_end().ends_with("\tserver's rate"), "{listed}");
        let (status, _, stderr) = run_binary(&["token", "create", "--user", "worker", "--rate", "500"], &env);
        assert!(status.success(), "{stderr}");
        let (_, listed, _) = run_binary(&["token", "list", "--user", "worker"], &env);
        assert!(listed.trim_end().ends_with("\t500 requests/s"), "{listed}");
        let (status, _, stderr) = run_binary(&["token", "create", "--user", "worker", "--rate", "0"], &env);
        assert!(!status.success() && stderr.contains("--rate"), "{stderr}");
        assert!(!listed.contains(token), "list never shows a secret");

        let (status, _, stderr) = run_binary(&["token", "revoke", &id], &env);
        assert!(status.success(), "{stderr}");
        assert_eq!(get_as(&url, "/api/tasks", token), 401, "a revoked token is refused");
        let (status, _, stderr) = run_binary(&["token", "revoke", &id], &env);
        assert!(!status.success() && stderr.contains("no unrevoked token"), "{stderr}");
        let (status, _, stderr) = run_binary(&["token", "create", "--user", " "], &env);
        assert!(!status.success() && stderr.contains("user name"), "{stderr}");
        server.signal(libc::SIGTERM);
        assert!(server.wait().0.success());
    }

    async fn serve_answers_health_checks_and_stops_cleanly_on_sigterm(backend: Backend) {
        let db = TestDb::new(backend);
        let mut server = Process::spawn(&["serve"], &db.env());
        let url = server.wait_for_line("listening on http://");
        let (status, body) = get(&url, "/healthz");
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
        let (status, body) = get(&url, "/readyz");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(if backend == Backend::Sqlite { "sqlite" } else { "postgres" }), "{body}");
        server.signal(libc::SIGTERM);
        let (status, stderr) = server.wait();
        assert!(status.success(), "{status}: {stderr}");
    }

    async fn a_plan_that_is_not_valid_is_refused_before_anything_runs(backend: Backend) {
        let db = TestDb::new(backend);
        let path = db.dir.path().join("plan.json");
        let cases = [
            (r#"{"title": "T", "steps": []}"#, "invalid plan: a task needs at least one step"),
            (r#"{"title": "T", "steps": [{"name": "a", "kind": "wait"}], "extra": 1}"#, "unknown field `extra`"),
            (r#"{"title": "T", "steps": [{"name": "a", "kind": "exec", "params": {"argv": []}}]}"#, "\"argv\" must name a program"),
        ];
        for (text, message) in cases {
            std::fs::write(&path, text).unwrap();
            let (status, _, stderr) = run_binary(&["run", &path.display().to_string()], &db.env());
            assert_eq!(status.code(), Some(2), "{text}: {stderr}");
            assert!(stderr.contains(message), "{text}: {stderr:?} lacks {message:?}");
        }
    }
}

#[test]
fn json_logs_and_error_bodies_carry_the_request_id() {
    let db = TestDb::new(Backend::Sqlite);
    let mut env = db.env();
    env.retain(|(key, _)| key != "STEPWISE_LOG__LEVEL");
    env.extend([("STEPWISE_LOG__FORMAT", "json"), ("STEPWISE_LOG__LEVEL", "debug")].map(|(k, v)| (k.into(), v.into())));
    let mut server = Process::spawn(&["serve"], &env);
    let url = server.wait_for_line("listening on http://");

    let (status, head, body) = get_with(&url, "/no/such/route", "X-Request-Id: abc-123\r\n");
    assert_eq!(status, 404, "{body}");
    assert_eq!(header(&head, "x-request-id"), Some("abc-123"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(body["error"]["code"], "no_route");
    assert_eq!(body["error"]["request_id"], "abc-123");
    // An id that is not short and printable is replaced by one of the server's.
    let (_, head, body) = get_with(&url, "/no/such/route", "X-Request-Id: two words\r\n");
    let made = header(&head, "x-request-id").expect("a request id").to_owned();
    assert!(made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    assert!(body.contains(&format!(r#""request_id":"{made}""#)), "{body}");
    let (status, head, _) = get_with(&url, "/healthz", "");
    assert_eq!(status, 200);
    assert!(header(&head, "x-request-id").is_some(), "every answer has one: {head}");

    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{status}: {stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}")))
        .collect();
    let answered = lines.iter().find(|line| line["span"]["request_id"] == "abc-123").expect("a line of the request");
    assert_eq!((answered["status"].as_u64(), answered["route"].as_str()), (Some(404), Some("no_route")), "{answered}");
    assert!(stderr.contains(r#""request_id":"abc-123""#), "{stderr}");
    assert!(lines.iter().any(|line| line["span"]["request_id"] == made.as_str()), "{stderr}");
}

#[test]
fn a_second_server_on_the_same_sqlite_file_is_refused() {
    let db = TestDb::new(Backend::Sqlite);
    let mut first = Process::spawn(&["serve"], &db.env());
    first.wait_for_line("listening on ");
    let (status, _, stderr) = run_binary(&["serve"], &db.env());
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is in use by another Stepwise server"), "{stderr}");
}

#[test]
fn a_database_that_cannot_be_opened_is_named_in_the_error() {
    let db = TestDb::new(Backend::Sqlite);
    let cases = [
        ("postgres://nobody@127.0.0.1:1/stepwise", "cannot open database postgres://nobody@127.0.0.1:1/stepwise"),
        ("sqlite:///proc/stepwise/test.db", "cannot open database sqlite:///proc/stepwise/test.db"),
        ("mysql://localhost/x", "unsupported scheme \"mysql\""),
        (":memory:", "in-memory SQLite database"),
    ];
    for (url, message) in cases {
        let mut env = db.env();
        env.retain(|(k, _)| k != "STEPWISE_DATABASE__URL");
        env.push(("STEPWISE_DATABASE__URL".into(), url.into()));
        let (status, _, stderr) = run_binary(&["serve"], &env);
        assert_eq!(status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(message), "{url}: {stderr:?} lacks {message:?}");
    }
}

#[test]
fn a_setting_of_the_wrong_type_names_the_key_and_value() {
    let db = TestDb::new(Backend::Sqlite);
    let cases = [
        (
            "STEPWISE_DATABASE__POOL_SIZE",
            "lots",
            "invalid type for database.pool_size: expected an integer, got \"lots\"",
        ),
        ("STEPWISE_SERVER__LISTEN", "nowhere", "invalid value for server.listen: \"nowhere\""),
        ("STEPWISE_SERVR__LISTEN", "127.0.0.1:0", "unknown key servr"),
        (
            "STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL",
            "smtp://mail.example.com?tls=always",
            "invalid value for notifications.email.smtp_url: \"smtp://mail.example.com?tls=always\" (unknown query",
        ),
    ];
    for (key, value, message) in cases {
        let mut env = db.env();
        env.push((key.into(), value.into()));
        let (status, _, stderr) = run_binary(&["serve"], &env);
        assert_eq!(status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(message), "{key}: {stderr:?} lacks {message:?}");
    }
}

#[test]
fn email_that_cannot_be_set_up_stops_the_server_at_start() {
    let db = TestDb::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    // Passes the check at load (it looks like PEM) but is no certificate.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n").unwrap();
    let mut env = db.env();
    env.push(("STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL".into(), "smtp://127.0.0.1:1?tls=required".into()));
    env.push(("STEPWISE_NOTIFICATIONS__EMAIL__CA_FILE".into(), ca_file.display().to_string()));
    let (status, stdout, stderr) = run_binary(&["serve"], &env);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let message = format!(
        "cannot set up email: notifications.email.ca_file {ca_file:?}: the certificate at byte 0 does not parse"
    );
    assert!(stderr.contains(&message), "{stderr:?} lacks {message:?}");
    assert!(!stdout.contains("listening on"), "{stdout}");
}

#[test]
fn help_documents_every_command() {
    let (status, stdout, _) = run_binary(&["--help"], &[]);
    assert!(status.success());
    for command in ["serve", "demo", "run", "watch", "token", "cluster", "report", "approve", "pause", "--config"] {
        assert!(stdout.contains(command), "--help lacks {command}: {stdout}");
    }
}

/// `/readyz` tells when the database stops answering, and recovers with it. PostgreSQL only:
/// the test refuses new connections to the test database and ends the open ones.
#[test]
fn readyz_reports_an_unreachable_database_and_recovers() {
    let db = TestDb::new(Backend::Postgres);
    let name = db.url.rsplit('/').next().expect("a database name").to_owned();
    let mut server = Process::spawn(&["serve"], &db.env());
    let url = server.wait_for_line("listening on http://");
    assert_eq!(get(&url, "/readyz").0, 200);

    let admin = std::env::var("STEPWISE_TEST_PG_URL").expect("STEPWISE_TEST_PG_URL");
    psql_on(
        &admin,
        &format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}'"
        ),
    );
    let (status, body) = get(&url, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""code":"database_unavailable""#), "{body}");

    psql_on(&admin, &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let deadline = std::time::Instant::now() + PATIENCE;
    while get(&url, "/readyz").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "/readyz did not recover within {PATIENCE:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_demo_runs_the_seeds_task_to_completion() {
    let db = TestDb::new(Backend::Sqlite);
    // The embedded default: a SQLite file in the data directory.
    let env: Vec<_> = db.env().into_iter().filter(|(k, _)| k != "STEPWISE_DATABASE__URL").collect();
    let (status, stdout, stderr) = run_binary(&["demo", "--speed", "30"], &env);
    assert!(status.success(), "{status}: {stderr}");
    for step in ["Create database tables", "Generate application UI", "Add search and filters", "Configure workflows"] {
        assert!(stdout.contains(step), "the view shows {step:?}: {stdout}");
    }
    let token = stdout.lines().find_map(|l| l.strip_prefix("token ")).expect("the demo prints its user's token");
    assert!(token.starts_with("sw_"), "{token}");
    assert!(stdout.contains(&format!("curl -H 'Authorization: Bearer {token}'")), "{stdout}");
    assert!(
        stdout.contains(&format!("/login#token={token}&next=/tasks/")),
        "a link that opens the task page signed in: {stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(last, "Cellphone Store CRM 100% step 4/4 ✓ Configure workflows [completed]");
    assert!(db.dir.path().join("stepwise.db").exists(), "the default database lives in the data directory");
}

#[test]
fn settings_come_from_the_config_file_given_by_flag_or_variable() {
    let db = TestDb::new(Backend::Sqlite);
    for by_flag in [true, false] {
        let data = db.dir.path().join(format!("data-{by_flag}"));
        let file = db.dir.path().join(format!("stepwise-{by_flag}.toml"));
        let toml = format!("data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n", data.display().to_string());
        std::fs::write(&file, toml).unwrap();
        let path = file.display().to_string();
        let (args, env) = match by_flag {
            true => (vec!["--config", path.as_str(), "serve"], vec![]),
            false => (vec!["serve"], vec![("STEPWISE_CONFIG".to_owned(), path.clone())]),
        };
        let mut server = Process::spawn(&args, &env);
        let url = server.wait_for_line("listening on http://");
        assert_eq!(get(&url, "/healthz").0, 200);
        assert!(data.join("stepwise.db").exists(), "data_dir comes from the file ({args:?})");
    }
}

/// `stepwise report` and the control commands drive a task on a running server from a shell
/// (`STEPWISE_URL`, `STEPWISE_TOKEN`): each prints where the task stands, a refusal exits 1
/// with the API's code and message, and a server whose shell exports those variables still
/// starts.
#[test]
fn a_shell_reports_on_a_step_and_controls_a_task() {
    let db = TestDb::new(Backend::Sqlite);
    let (status, token, stderr) = run_binary(&["token", "create", "--user", "ci"], &db.env());
    assert!(status.success(), "{stderr}");
    let mut env = db.env();
    env.push(("STEPWISE_TOKEN".into(), token.trim().into()));
    env.push(("STEPWISE_URL".into(), "http://127.0.0.1:9".into()));
    let mut server = Process::spawn(&["serve"], &env);
    let address = server.wait_for_line("listening on http://");
    let url = format!("http://{address}");
    env.retain(|(key, _)| key != "STEPWISE_URL");
    env.push(("STEPWISE_URL".into(), url.clone()));
    let plan = r#"{"title": "Nightly build", "steps": [{"name": "Compile", "kind": "external", "substeps": ["core"]},
        {"name": "Ship", "kind": "external", "requires_approval": true}]}"#;
    let created = post_as(&address, "/api/tasks", token.trim(), plan);
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["task_id"].as_str().unwrap().to_owned();
    let stepwise = |args: &[&str]| run_binary(args, &env);

    let (status, stdout, stderr) = stepwise(&["report", &id, "1", "--progress", "40", "--log", "compiling"]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("task {id} running 20%, step 1 of 2 running at 40% (Compile)"));
    assert!(stepwise(&["report", &id, "1", "--substep-done", "core"]).0.success());
    let (status, _, stderr) = stepwise(&["report", &id, "1", "--progress", "150"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("422 invalid_report: progress is a percent, 0 to 100"), "{stderr}");
    let (status, _, stderr) = stepwise(&["report", &id, "1"]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("422 invalid_report: an empty report"), "{stderr}");
    assert!(stepwise(&["pause", &id]).0.success());
    let (status, _, stderr) = stepwise(&["pause", &id]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("409 conflict"), "{stderr}");
    assert!(stepwise(&["resume", &id]).0.success());
    let (status, stdout, _) = stepwise(&["report", &id, "1", "--complete"]);
    assert!(status.success());
    assert!(stdout.contains("approval"), "{stdout}");
    let (status, stdout, stderr) = stepwise(&["approve", &id, "--comment", "ship it"]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("step 2 of 2 running at 0% (Ship)"), "{stdout}");
    let (status, stdout, _) = stepwise(&["report", &id, "2", "--fail", "disk full"]);
    assert!(status.success());
    assert!(stdout.starts_with(&format!("task {id} failed")), "{stdout}");
    let (status, _, stderr) = stepwise(&["cancel", "0000000000000000"]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("404 not_found"), "{stderr}");

    let unreachable: Vec<_> = env
        .iter()
        .cloned()
        .map(|(key, value)| if key == "STEPWISE_URL" { (key, "http://127.0.0.1:9".to_owned()) } else { (key, value) })
        .collect();
    let (status, _, stderr) = run_binary(&["pause", &id], &unreachable);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("cannot reach http://127.0.0.1:9"), "{stderr}");
    let no_token: Vec<_> = env.iter().filter(|(key, _)| key != "STEPWISE_TOKEN").cloned().collect();
    let (status, _, stderr) = run_binary(&["pause", &id], &no_token);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("set STEPWISE_TOKEN"), "{stderr}");
    let schemeless: Vec<_> = env
        .iter()
        .cloned()
        .map(|(key, value)| if key == "STEPWISE_URL" { (key, address.clone()) } else { (key, value) })
        .collect();
    let (status, _, stderr) = run_binary(&["pause", &id], &schemeless);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("STEPWISE_URL must start with http:// or https://"), "{stderr}");
    server.signal(libc::SIGTERM);
    assert!(server.wait().0.success());
}

/// POST with a bearer token; answers the body.
fn post_as(address: &str, path: &str, token: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to stepwise");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}
