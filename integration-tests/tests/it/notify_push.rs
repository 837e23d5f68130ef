//! Web push through the real server against a push service on 127.0.0.1 that does what a
//! real one does: checks the VAPID token (signature, audience with the port, expiry at most
//! 24 h) and hands the encrypted payload to the "browser", which decrypts it with its own
//! keys (the `ece` crate) as a browser would. Also: subscriptions validated, 404/410 removes
//! a subscription, 429 waits for Retry-After, and the VAPID key is kept in the database
//! (where a restarted server reads it).

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
use runtime::SystemClock;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api_support::ApiServer;
use crate::notify::{local, Server};
use crate::on_both_backends;
use crate::support::*;

/// What the push service received and the browser read.
#[derive(Debug)]
struct Pushed {
    /// The decrypted payload.
    payload: Value,
    ttl: String,
    urgency: String,
    at: Instant,
}

/// A browser's subscription and the push service behind it.
struct PushService {
    /// The PushSubscription JSON the browser would send.
    subscription: Value,
    pushes: mpsc::UnboundedReceiver<Pushed>,
}

impl PushService {
    /// A push service that expects tokens signed by `vapid_key` (base64url) and answers
    /// with `script` (status lines with headers), then `201 Created`.
    fn start(vapid_key: &str, script: Vec<&'static str>) -> PushService {
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

    async fn next(&mut self) -> Pushed {
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
