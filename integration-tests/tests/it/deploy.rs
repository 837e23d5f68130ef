//! The service files in `deploy/`. No systemd runs here to start the unit for real, so the
//! test does what it would: runs its `ExecStart` with its `Environment=` (paths moved into
//! a temporary directory), checks the server comes up, and stops it with the unit's
//! `KillSignal` within its `TimeoutStopSec`, exiting cleanly so `Restart=on-failure` leaves
//! it stopped. `.ci/run` checks the unit's directives with `systemd-analyze verify`. The
//! nginx example runs for real in front of a server: plain requests and a WebSocket pass it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::http_client;
use crate::support::*;

/// The `Key=value` lines of the unit's `[Service]` section, in order.
fn service_settings() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/stepwise.service");
    let unit = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not Key=value: {line}"));
            settings.push((key.to_owned(), value.to_owned()));
        }
    }
    settings
}

#[actix::test]
async fn the_systemd_unit_starts_a_server_and_stops_it_within_its_timeout() {
    let settings = service_settings();
    let value = |key: &str| -> &str {
        let found = settings.iter().find(|(k, _)| k == key);
        found.map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("the unit sets no {key}"))
    };
    let command: Vec<&str> = value("ExecStart").split_whitespace().collect();
    assert_eq!(command.first().and_then(|bin| bin.rsplit('/').next()), Some("stepwise"), "{command:?}");

    // The unit's paths, moved: its state directory and /etc/stepwise (made as its header says).
    let root = tempfile::tempdir().unwrap();
    let state_dir = format!("/var/lib/{}", value("StateDirectory"));
    let moved = |text: &str| {
        text.replace(&state_dir, &root.path().join("state").display().to_string())
            .replace("/etc/stepwise", &root.path().join("etc").display().to_string())
    };
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/stepwise.toml"), "").unwrap();
    let mut env: Vec<(String, String)> = settings
        .iter()
        .filter(|(key, _)| key == "Environment")
        .map(|(_, assignment)| {
            let (name, value) = assignment.split_once('=').unwrap_or_else(|| panic!("Environment={assignment}"));
            (name.to_owned(), moved(value))
        })
        .collect();
    assert!(env.iter().any(|(name, _)| name == "STEPWISE_DATA_DIR"), "the unit names the data directory: {env:?}");
    // Only the port differs from the unit: tests never take a fixed one.
    env.push(("STEPWISE_SERVER__LISTEN".into(), "127.0.0.1:0".into()));

    let mut server = Process::spawn(&command[1..], &env);
    let url = server.wait_for_line("listening on http://");
    let ready = http_client::send(url.parse().unwrap(), "GET", "/readyz", &[], None, PATIENCE).await.unwrap();
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
    assert!(root.path().join("state/stepwise.db").exists(), "the database is in the unit's state directory");

    assert_eq!(value("KillSignal"), "SIGTERM");
    let timeout: u64 = value("TimeoutStopSec").trim_end_matches('s').parse().expect("TimeoutStopSec in seconds");
    let asked = Instant::now();
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "a clean stop, which Restart=on-failure does not restart: {status} {stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(timeout),
        "stopped in {:?}, over the unit's {timeout} s",
        asked.elapsed()
    );
}

/// nginx from `deploy/nginx.conf`, run as it is (only its upstream moved to the test's
/// server and its `listen` to a free port on 127.0.0.1), in a directory of its own.
struct Nginx {
    address: std::net::SocketAddr,
    master: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstream: std::net::SocketAddr) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("nginx is not installed: `apt-get install nginx-light` (.ci/run does)");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf");
        let example = std::fs::read_to_string(&example).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let moved = example
            .replace("server 127.0.0.1:8080 ", &format!("server {upstream} "))
            .replace("listen 80;", &format!("listen {address};"));
        assert_ne!(moved, example, "the example's upstream and listen lines moved");
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("stepwise.conf"), moved).unwrap();
        // As root (CI) the workers would run as `nobody`, who cannot write in the test's
        // directory; the directive is ignored otherwise.
        let main = format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {pid};\nerror_log {log};\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {access};\n  client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n  \
             fastcgi_temp_path {temp}/fastcgi;\n  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n  include {conf};\n}}\n",
            pid = at("nginx.pid"),
            log = at("error.log"),
            access = at("access.log"),
            temp = at("temp"),
            conf = at("stepwise.conf"),
        );
        std::fs::create_dir_all(dir.path().join("temp")).unwrap();
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let config = at("nginx.conf");
        let checked =
            std::process::Command::new(binary).args(["-t", "-q", "-c", &config, "-p", &at("")]).output().unwrap();
        assert!(checked.status.success(), "nginx -t: {}", String::from_utf8_lossy(&checked.stderr));
        let master = std::process::Command::new(binary)
            .args(["-c", &config, "-p", &at("")])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within {PATIENCE:?}: {}",
                std::fs::read_to_string(at("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { address, master, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM stops the master and its workers at once (a KILL would leave the workers).
        let _ = std::process::Command::new("kill").args(["-TERM", &self.master.id().to_string()]).status();
        let _ = self.master.wait();
    }
}

#[actix::test]
async fn the_nginx_example_carries_requests_and_live_websockets() {
    use crate::api_support::{create, ApiServer, WsClient};

    let db = TestDb::new(Backend::Sqlite);
    let server = ApiServer::start_default(&db, std::sync::Arc::new(runtime::SystemClock)).await;
    let token = server.token("ada").await;
    let nginx = Nginx::start(server.address);
    let through = |method: &'static str, path: String, body: Option<&'static str>| {
        let mut headers = vec![("Authorization".to_owned(), format!("Bearer {token}"))];
        if body.is_some() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        let address = nginx.address;
        async move { http_client::send(address, method, &path, &headers, body.map(str::as_bytes), PATIENCE).await.unwrap() }
    };

    let health = through("GET", "/healthz".into(), None).await;
    assert_eq!(health.status, 200);
    assert!(health.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("x-request-id")), "{:?}", health.headers);
    let id =
        create(&server, &token, r#"{"title": "Behind nginx", "steps": [{"name": "Work", "kind": "external"}]}"#).await;

    // A WebSocket upgraded through the proxy gets its snapshot, then live progress at once
    // (nothing waits in a buffer).
    let (address, path, auth) = (nginx.address, format!("/ws/tasks/{id}"), format!("Bearer {token}"));
    let mut socket =
        tokio::task::spawn_blocking(move || WsClient::connect(address, &path, &[("Authorization".into(), auth)]))
            .await
            .unwrap()
            .expect("the upgrade passes the proxy");
    assert_eq!(socket.next().await["type"], "snapshot");
    let reported = through("POST", format!("/api/tasks/{id}/steps/1/report"), Some(r#"{"progress": 40}"#)).await;
    assert_eq!(reported.status, 200, "{}", String::from_utf8_lossy(&reported.body));
    let progress = socket.next_matching("progress through nginx", |m| m["type"] == "progress").await;
    assert_eq!(progress["step_percent"], 40);
    let done = through("POST", format!("/api/tasks/{id}/steps/1/report"), Some(r#"{"status": "completed"}"#)).await;
    assert_eq!(done.status, 200);
    socket.next_matching("task_complete through nginx", |m| m["type"] == "task_complete").await;
    drop(nginx);
    server.stop().await;
}
