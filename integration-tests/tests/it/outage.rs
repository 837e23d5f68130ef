//! The database goes away under a running server and comes back: requests are told so at
//! once (503 `unavailable` with `Retry-After`, `/readyz` too) instead of hanging, nothing
//! panics, and the tasks carry on when it returns. PostgreSQL only: a TCP proxy of the
//! test's own stands between the server and the database and stops accepting connections,
//! cutting those open. (SQLite has no connection to cut; a disk that refuses writes is not
//! tried here.)

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::{ApiSettings, NotificationSettings};
use runtime::SystemClock;

use crate::api_support::{create, ApiServer};
use crate::support::*;

/// A TCP proxy to one address that can be taken down (refusing every new connection and
/// cutting the open ones) and brought back up.
struct Proxy {
    address: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (up, open) = (Arc::new(AtomicBool::new(true)), Arc::new(Mutex::new(Vec::new())));
        let (accepting_up, accepted) = (Arc::clone(&up), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !accepting_up.load(Ordering::SeqCst) {
                    // Refused: closed before a byte is read, as a server that is down.
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else { continue };
                let mut open = accepted.lock().unwrap();
                open.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { address, up, open }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `url` with its host and port replaced by `address`.
fn through(url: &str, address: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let user = authority.rsplit_once('@').map_or(String::new(), |(user, _)| format!("{user}@"));
    format!("{scheme}://{user}{address}/{path}")
}

#[actix::test]
async fn a_database_outage_answers_503_at_once_and_the_tasks_carry_on_after_it() {
    let db = TestDb::new(Backend::Postgres);
    let target: SocketAddr = {
        let rest = db.url.split_once("://").unwrap().1;
        let authority = rest.split('/').next().unwrap();
        authority.rsplit_once('@').map_or(authority, |(_, host)| host).parse().unwrap()
    };
    let proxy = Proxy::start(target);
    let url = through(&db.url, proxy.address);
    let database = db::Database::open(&url, 4).unwrap().with_acquire_timeout(Duration::from_secs(1));
    let options = options("outage", Arc::new(SystemClock));
    let server =
        ApiServer::start_on(Arc::new(database), options, ApiSettings::default(), NotificationSettings::default()).await;
    let token = server.token("ada").await;
    let id =
        create(&server, &token, r#"{"title": "Outlasts it", "steps": [{"name": "Work", "kind": "external"}]}"#).await;

    proxy.down();
    // A line needs no commit: the server takes it, and must store it once it can.
    let logged =
        server.post(&format!("/api/tasks/{id}/steps/1/report"), &token, r#"{"log": "said while it was down"}"#).await;
    assert_eq!(logged.status, 200, "{:?}", logged.body);
    for (method, path, body) in [
        ("POST", format!("/api/tasks/{id}/pause"), Some("")),
        ("POST", "/api/tasks".to_owned(), Some(r#"{"title": "New", "steps": [{"name": "a", "kind": "external"}]}"#)),
        ("GET", "/api/tasks".to_owned(), None),
        ("GET", format!("/api/tasks/{id}/history"), None),
    ] {
        let answer = server.call(method, &path, Some(&token), body).await;
        assert_eq!((answer.status, answer.code()), (503, "unavailable"), "{method} {path}: {:?}", answer.body);
        assert_eq!(answer.header("retry-after"), Some("5"), "{method} {path}");
    }
    let ready = server.call("GET", "/readyz", None, None).await;
    assert_eq!((ready.status, ready.header("retry-after")), (503, Some("5")), "{:?}", ready.body);

    proxy.up();
    // Back: the first requests may still meet a connection cut while it was down, and are
    // told to try again; within moments they are answered as ever.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let paused = server.post(&format!("/api/tasks/{id}/pause"), &token, "").await;
        if paused.status == 200 {
            assert_eq!(paused.body["status"], "paused");
            break;
        }
        assert_eq!(paused.status, 503, "only `unavailable` while it comes back: {:?}", paused.body);
        assert!(Instant::now() < deadline, "the server did not recover within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = server.get(&format!("/api/tasks/{id}/logs"), &token).await;
    let lines: Vec<&str> = logs.body["lines"].as_array().unwrap().iter().filter_map(|l| l["line"].as_str()).collect();
    assert_eq!(lines, ["said while it was down"], "the failed write was kept and written later");
    assert_eq!(server.post(&format!("/api/tasks/{id}/resume"), &token, "").await.status, 200);
    let done = server.post(&format!("/api/tasks/{id}/steps/1/report"), &token, r#"{"status": "completed"}"#).await;
    assert_eq!((done.status, done.body["status"].as_str()), (200, Some("completed")), "{:?}", done.body);
    assert_eq!(server.call("GET", "/readyz", None, None).await.status, 200);
    server.stop().await;
}
