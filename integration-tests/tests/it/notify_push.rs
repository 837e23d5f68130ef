//! Web push through the real server against a push service on 127.0.0.1 that does what a
//! real one does: checks the VAPID token (signature, audience with the port, expiry at most
//! 24 h) and hands the encrypted payload to the "browser", which decrypts it with its own
//! keys (the `ece` crate) as a browser would. Also: subscriptions validated, 404/410 removes
//! a subscription, 429 waits for Retry-After, the VAPID key is kept in the database (where a
//! restarted server reads it), and an approval's message carries Approve / Reject links that
//! decide once, and only while genuine and unexpired.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::NotificationSettings;
use jwt_simple::prelude::{
    Base64UrlSafeNoPadding, ECDSAP256PublicKeyLike, ES256KeyPair, ES256PublicKey, NoCustomClaims, VerificationOptions,
};
use jwt_simple::reexports::ct_codecs::{Decoder as _, Encoder as _};
use runtime::{Clock, ManualClock, SystemClock};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api_support::ApiServer;
use crate::notify::{local, Server};
use crate::on_both_backends;
use crate::support::*;

/// What the push service received and the browser read.
#[derive(Debug)]
pub(crate) struct Pushed {
    /// The decrypted payload.
    pub(crate) payload: Value,
    ttl: String,
    urgency: String,
    at: Instant,
}

/// A browser's subscription and the push service behind it.
pub(crate) struct PushService {
    /// The PushSubscription JSON the browser would send.
    pub(crate) subscription: Value,
    pushes: mpsc::UnboundedReceiver<Pushed>,
}

impl PushService {
    /// A push service that expects tokens signed by `vapid_key` (base64url) and answers
    /// with `script` (status lines with headers), then `201 Created`.
    pub(crate) fn start(vapid_key: &str, script: Vec<&'static str>) -> PushService {
        let (browser, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        let components = browser.raw_components().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let subscription = json!({
            "endpoint": format!("{origin}/push/browser-1"),
            "expirationTime": null,
            "keys": {
                "p256dh": Base64UrlSafeNoPadding::encode_to_string(browser.pub_as_raw().unwrap()).unwrap(),
                "auth": Base64UrlSafeNoPadding::encode_to_string(auth).unwrap(),
            },
        });
        let expected_key = Base64UrlSafeNoPadding::decode_to_vec(vapid_key, None).unwrap();
        let (sender, pushes) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                assert!(request_line.starts_with("POST /push/browser-1 "), "{request_line}");
                let mut headers = std::collections::HashMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
                    }
                }
                let length: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();

                // The VAPID token: signed by the server's key, for this origin (port
                // included), expiring within 24 hours.
                let authorization = &headers["authorization"];
                let rest = authorization.strip_prefix("vapid t=").expect("vapid authorization");
                let (token, key) = rest.split_once(", k=").expect("t and k");
                let key = Base64UrlSafeNoPadding::decode_to_vec(key, None).unwrap();
                assert_eq!(key, expected_key, "signed with the server's VAPID key");
                let options = VerificationOptions {
                    allowed_audiences: Some(HashSet::from([origin.clone()])),
                    ..VerificationOptions::default()
                };
                let claims = ES256PublicKey::from_bytes(&key)
                    .unwrap()
                    .verify_token::<NoCustomClaims>(token, Some(options))
                    .expect("a valid VAPID token for this origin");
                let expires = claims.expires_at.expect("exp").as_secs();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                assert!(expires > now && expires - now <= 24 * 3600, "exp within 24 h");
                assert!(claims.subject.is_some(), "a sub claim");

                // What the browser does: decrypt with its own key.
                assert_eq!(headers["content-encoding"], "aes128gcm");
                assert!(body.len() < 4096, "{} bytes", body.len());
                let plain = ece::decrypt(&components, &auth, &body).expect("decrypts with the browser's key");
                let pushed = Pushed {
                    payload: serde_json::from_slice(&plain).unwrap(),
                    ttl: headers["ttl"].clone(),
                    urgency: headers.get("urgency").cloned().unwrap_or_default(),
                    at: Instant::now(),
                };
                if sender.send(pushed).is_err() {
                    return;
                }
                let status = script.next().unwrap_or("201 Created\r\n");
                let response = format!("HTTP/1.1 {status}Content-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = reader.into_inner().write_all(response.as_bytes());
            }
        });
        PushService { subscription, pushes }
    }

    pub(crate) async fn next(&mut self) -> Pushed {
        tokio::time::timeout(PATIENCE, self.pushes.recv()).await.expect("a push within PATIENCE").expect("a push")
    }
}

async fn vapid_key(server: &Server, token: &str) -> String {
    let (status, body) = server.call("GET", "/api/push/vapid-public-key", token, None).await;
    assert_eq!(status, 200, "{body}");
    let key = body["public_key"].as_str().unwrap().to_owned();
    let raw = Base64UrlSafeNoPadding::decode_to_vec(&key, None).unwrap();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    key
}

async fn subscribe(server: &Server, token: &str, service: &PushService) -> String {
    let (status, body) =
        server.call("POST", "/api/push/subscriptions", token, Some(service.subscription.clone())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["endpoint"], service.subscription["endpoint"]);
    body["id"].as_str().unwrap().to_owned()
}

on_both_backends! {
    async fn pushes_are_signed_for_the_endpoints_origin_and_decrypt_as_a_browser_would(backend: Backend) {
        let db = TestDb::new(backend);
        let server = Server::start(&db, NotificationSettings { push_ttl_s: 600, ..local() }).await;
        let ada = server.token("ada").await;
        let key = vapid_key(&server, &ada).await;
        let mut service = PushService::start(&key, Vec::new());
        subscribe(&server, &ada, &service).await;

        let task = server.task(&ada, "CRM", &["Database created"]).await;
        server.report(&ada, &task, 1, "completed").await;
        let mut texts = Vec::new();
        for urgency in ["low", "low", "normal"] {
            let pushed = service.next().await;
            assert_eq!((pushed.ttl.as_str(), pushed.urgency.as_str()), ("600", urgency), "{pushed:?}");
            assert_eq!(pushed.payload["task_id"], task.as_str());
            assert_eq!(pushed.payload["url"], format!("/tasks/{task}"));
            assert_eq!(pushed.payload["title"], "Stepwise");
            texts.push(pushed.payload["body"].as_str().unwrap().to_owned());
        }
        assert_eq!(texts, ["Your CRM task has started", "Step 1 complete: Database created", "✅ Your CRM is ready!"]);
        let log = server.log_of(&ada, 3).await;
        for entry in &log {
            assert_eq!((entry["channel"].as_str(), entry["outcome"].as_str(), entry["detail"].as_str()), (Some("push"), Some("delivered"), Some("201 Created")), "{entry}");
        }

        // The key pair is kept in the database, where a restarted server reads it.
        let db = Arc::clone(server.runtime.db());
        let stored = tokio::task::spawn_blocking(move || db::vapid_private_key(&mut db.conn().unwrap(), "unused", 0))
            .await
            .unwrap()
            .unwrap();
        let pair = ES256KeyPair::from_bytes(&Base64UrlSafeNoPadding::decode_to_vec(&stored, None).unwrap()).unwrap();
        let public = pair.public_key().public_key().to_bytes_uncompressed();
        assert_eq!(Base64UrlSafeNoPadding::encode_to_string(public).unwrap(), key);
        server.stop().await;
    }

    async fn a_gone_subscription_is_removed_and_429_waits_for_retry_after(backend: Backend) {
        let db = TestDb::new(backend);
        let server = Server::start(&db, local()).await;
        let ada = server.token("ada").await;
        let key = vapid_key(&server, &ada).await;
        let mut busy = PushService::start(&key, vec!["429 Too Many Requests\r\nRetry-After: 1\r\n"]);
        let mut gone = PushService::start(&key, vec!["410 Gone\r\n"]);
        subscribe(&server, &ada, &busy).await;
        let gone_id = subscribe(&server, &ada, &gone).await;
        let (status, _) = server.call("PUT", "/api/notifications/preferences", &ada, Some(json!({"channels": {"push": ["task_started"]}}))).await;
        assert_eq!(status, 200);

        server.task(&ada, "CRM", &["A"]).await;
        let limited = busy.next().await;
        assert_eq!(gone.next().await.payload["body"], "Your CRM task has started");
        let retried = busy.next().await;
        assert!(retried.at - limited.at >= Duration::from_secs(1), "Retry-After: 1 was not honoured");
        let log = server.log_of(&ada, 3).await;
        let mut details: Vec<&str> = log.iter().map(|e| e["detail"].as_str().unwrap()).collect();
        details.sort_unstable();
        assert_eq!(details, ["201 Created", "410 Gone; the subscription is removed", "429 Too Many Requests"]);

        // Removed: deleting it finds nothing, and the next message goes to the other only.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, _) = server.call("DELETE", &format!("/api/push/subscriptions/{gone_id}"), &ada, None).await;
            if status == 404 {
                break;
            }
            assert!(Instant::now() < deadline, "the gone subscription was not removed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.task(&ada, "Store", &["A"]).await;
        assert_eq!(busy.next().await.payload["body"], "Your Store task has started");
        assert_eq!(server.log_of(&ada, 4).await.len(), 4);
        server.stop().await;
    }

    async fn subscriptions_are_validated_and_deleted_by_their_owner_only(backend: Backend) {
        let db = TestDb::new(backend);
        let server = ApiServer::start_default(&db, Arc::new(SystemClock)).await;
        let (ada, bob) = (server.token("ada").await, server.token("bob").await);
        let key = server.get("/api/push/vapid-public-key", &ada).await.body["public_key"].as_str().unwrap().to_owned();
        let service = PushService::start(&key, Vec::new());
        let good = service.subscription.clone();
        let public = json!({"endpoint": "https://push.example.invalid/send/abc", "keys": good["keys"]});
        let mut short_key = public.clone();
        short_key["keys"]["p256dh"] = json!("AAAA");
        let mut bad_auth = public.clone();
        bad_auth["keys"]["auth"] = json!("not base64!");
        let mut extra = public.clone();
        extra["extra"] = json!(1);
        // The local service is a private address: refused unless the settings allow it.
        for (body, what) in [(good, "a private endpoint"), (short_key, "a short key"), (bad_auth, "a bad secret"), (extra, "an unknown field")] {
            let answer = server.post("/api/push/subscriptions", &ada, &body.to_string()).await;
            assert_eq!((answer.status, answer.code()), (400, "invalid_request"), "{what}: {:?}", answer.body);
        }
        let created = server.post("/api/push/subscriptions", &ada, &public.to_string()).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["id"].as_str().unwrap();
        let path = format!("/api/push/subscriptions/{id}");
        assert_eq!(server.call("DELETE", &path, Some(&bob), None).await.status, 404);
        assert_eq!(server.call("DELETE", &path, Some(&ada), None).await.status, 204);
        assert_eq!(server.call("DELETE", &path, Some(&ada), None).await.status, 404);
        server.stop().await;
    }
}

/// Creates and starts a task whose first step waits for approval; returns its id.
async fn approval_task(server: &Server, token: &str, title: &str) -> String {
    let plan = json!({"title": title, "steps": [
        {"name": "Review", "kind": "external", "requires_approval": true},
        {"name": "Deploy", "kind": "external"},
    ]});
    let (status, body) = server.call("POST", "/api/tasks", token, Some(plan)).await;
    assert_eq!(status, 201, "{body}");
    body["task_id"].as_str().unwrap().to_owned()
}

/// The next push, which must be the approval of `task`'s step 1; answers its Approve and
/// Reject links.
async fn approval_links(service: &mut PushService, task: &str) -> (String, String) {
    let pushed = service.next().await;
    assert_eq!((pushed.payload["event"].as_str(), pushed.urgency.as_str()), (Some("approval_needed"), "high"));
    assert_eq!(pushed.payload["task_id"], task);
    assert_eq!(pushed.payload["body"], "⚠️ Approval required for Step 1");
    let actions = pushed.payload["actions"].as_array().expect("actions");
    let shape: Vec<(&str, &str)> =
        actions.iter().map(|a| (a["action"].as_str().unwrap(), a["title"].as_str().unwrap())).collect();
    assert_eq!(shape, [("approve", "Approve"), ("reject", "Reject")]);
    let url = |i: usize| actions[i]["url"].as_str().unwrap().to_owned();
    for link in [url(0), url(1)] {
        assert!(link.starts_with("/api/approval-links/"), "{link}");
    }
    (url(0), url(1))
}

async fn task_status(server: &Server, token: &str, task: &str) -> (String, String) {
    let (status, body) = server.call("GET", &format!("/api/tasks/{task}/progress"), token, None).await;
    assert_eq!(status, 200, "{body}");
    (body["status"].as_str().unwrap().to_owned(), body["steps"][0]["status"].as_str().unwrap().to_owned())
}

on_both_backends! {
    async fn approval_links_decide_once_and_only_while_genuine_and_unexpired(backend: Backend) {
        let db = TestDb::new(backend);
        // A clock the test moves, to reach a link's expiry without waiting a day.
        let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
        let server = Server::start_with_clock(&db, local(), clock.clone()).await;
        let ada = server.token("ada").await;
        let key = vapid_key(&server, &ada).await;
        let mut service = PushService::start(&key, Vec::new());
        subscribe(&server, &ada, &service).await;
        let only_approvals = json!({"channels": {"push": ["approval_needed"]}});
        let (status, _) = server.call("PUT", "/api/notifications/preferences", &ada, Some(only_approvals)).await;
        assert_eq!(status, 200);

        let task = approval_task(&server, &ada, "CRM").await;
        let (approve, reject) = approval_links(&mut service, &task).await;
        assert_eq!(task_status(&server, &ada, &task).await, ("approval".to_owned(), "approval".to_owned()));

        // Changed links are refused, and decide nothing: a character of the signature
        // flipped, the payload's task id changed (signature kept), not a link at all, and a
        // link signed with another server's secret.
        let (payload, signature) = approve.rsplit_once('.').unwrap();
        let mut flipped: Vec<char> = signature.chars().collect();
        let middle = flipped.len() / 2;
        flipped[middle] = if flipped[middle] == 'A' { 'B' } else { 'A' };
        let flipped = format!("{payload}.{}", flipped.into_iter().collect::<String>());
        let token = payload.strip_prefix("/api/approval-links/").unwrap();
        let json = String::from_utf8(Base64UrlSafeNoPadding::decode_to_vec(token, None).unwrap()).unwrap();
        assert!(json.contains(&task), "{json}");
        let other_task = Base64UrlSafeNoPadding::encode_to_string(json.replace(&task, "another-task")).unwrap();
        let other_task = format!("/api/approval-links/{other_task}.{signature}");
        let foreign = adapters::notify::links::LinkKey::new(b"another server's secret").unwrap();
        let (_, foreign) = foreign.issue(&task, 1, "ada", clock.now_ms() + 60_000).remove(0);
        for (link, what) in [(&flipped, "a flipped signature"), (&other_task, "another task id"), (&foreign, "another secret")] {
            let (status, body) = server.call_without_token("POST", link).await;
            assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{what}: {body}");
        }
        let (status, body) = server.call_without_token("POST", "/api/approval-links/nonsense").await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed")), "{body}");
        assert_eq!(task_status(&server, &ada, &task).await.0, "approval");

        // The Approve link, used twice at once with no API token: one use approves, the
        // other is told it was used.
        let (first, second) =
            tokio::join!(server.call_without_token("POST", &approve), server.call_without_token("POST", &approve));
        let (winner, loser) = if first.0 == 200 { (first, second) } else { (second, first) };
        assert_eq!(winner.0, 200, "{}", winner.1);
        assert_eq!(winner.1["task_id"], task.as_str());
        assert_eq!(winner.1["steps"][0]["status"], "running", "{}", winner.1);
        assert_eq!((loser.0, loser.1["error"]["code"].as_str()), (409, Some("already_used")), "{}", loser.1);
        assert_eq!(task_status(&server, &ada, &task).await, ("running".to_owned(), "running".to_owned()));
        let (status, body) = server.call_without_token("POST", &approve).await;
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("already_used")), "{body}");
        assert_eq!(body["error"]["message"], "this approval link was already used");
        // The Reject link of the same step: the step no longer waits.
        let (status, body) = server.call_without_token("POST", &reject).await;
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
        assert_eq!(body["error"]["message"], "step 1 of task ".to_owned() + &task + " is no longer waiting for approval");
        // The task goes on.
        server.report(&ada, &task, 1, "completed").await;
        assert_eq!(task_status(&server, &ada, &task).await, ("running".to_owned(), "completed".to_owned()));

        // A link past its expiry (24 h by default) says so, and decides nothing.
        let later = approval_task(&server, &ada, "Store").await;
        let (approve, _) = approval_links(&mut service, &later).await;
        clock.advance(24 * 3600 * 1000);
        let (status, body) = server.call_without_token("POST", &approve).await;
        assert_eq!((status, body["error"]["code"].as_str()), (410, Some("expired")), "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("this approval link expired at "), "{message}");
        assert_eq!(task_status(&server, &ada, &later).await.0, "approval");
        server.stop().await;
    }
}
