//! The service files in `deploy/`. No systemd runs here to start the unit for real, so the
//! test does what it would: runs its `ExecStart` with its `Environment=` (paths moved into
//! a temporary directory), checks the server comes up, and stops it with the unit's
//! `KillSignal` within its `TimeoutStopSec`, exiting cleanly so `Restart=on-failure` leaves
//! it stopped. `.ci/run` checks the unit's directives with `systemd-analyze verify`.

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
