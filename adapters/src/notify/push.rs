//! Web push (what phones and closed browser tabs get): the server's VAPID key pair, made on
//! first start and kept in the database so every server sharing it signs with the key
//! browsers subscribed with; subscriptions from the browser's `PushSubscription`; and
//! delivery with the `web-push` crate — the payload encrypted (aes128gcm) and under 4 KB,
//! with a TTL and an urgency, signed with a VAPID token whose audience is the endpoint's
//! origin, port included (RFC 8292; the crate's default drops the port). An approval's
//! message carries its signed Approve / Reject links ([`super::links`]). A `404` or `410`
//! from the push service removes the subscription.

use std::sync::Arc;

use db::Database;
use hyper::{Body, Request, Uri};
use jwt_simple::prelude::{Base64UrlSafeNoPadding, ES256KeyPair};
use jwt_simple::reexports::ct_codecs::{Decoder as _, Encoder as _};
use serde::Deserialize;
use web_push::{
    ContentEncoding, PartialVapidSignatureBuilder, SubscriptionInfo, Urgency, VapidSignatureBuilder,
    WebPushMessageBuilder,
};

use super::deliver::{self, Delivery, Inbox, Target, Throttle};
use super::links::LinkDecision;
use super::{endpoint, Notice, Shared};
use crate::mount::MountPath;

/// The largest plaintext payload: what `web-push` accepts, so that with the encryption's
/// overhead (about 100 bytes) a message stays under the 4 KB push services take.
const MAX_PAYLOAD_BYTES: usize = 3800;

/// Why push could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The stored key does not decode.
    #[error("the stored VAPID key is not a P-256 private key")]
    BadKey,
    /// The blocking pool is gone (the server is stopping).
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The server's VAPID key pair.
#[derive(Clone)]
pub struct Vapid {
    signer: PartialVapidSignatureBuilder,
    /// The public key, base64url (what `PushManager.subscribe` takes as
    /// `applicationServerKey`).
    pub public_key: String,
}

impl Vapid {
    /// The stored key pair, or a new one stored now (the first server to store wins).
    pub async fn load_or_create(db: &Arc<Database>, now: i64) -> Result<Vapid, PushError> {
        let fresh = Base64UrlSafeNoPadding::encode_to_string(ES256KeyPair::generate().to_bytes())
            .map_err(|_| PushError::BadKey)?;
        let db = Arc::clone(db);
        let stored = tokio::task::spawn_blocking(move || {
            let mut conn = db.conn()?;
            db::vapid_private_key(&mut conn, &fresh, now)
        })
        .await
        .map_err(|_| PushError::ShuttingDown)??;
        let signer = VapidSignatureBuilder::from_base64_no_sub(&stored).map_err(|_| PushError::BadKey)?;
        let public_key =
            Base64UrlSafeNoPadding::encode_to_string(signer.get_public_key()).map_err(|_| PushError::BadKey)?;
        Ok(Vapid { signer, public_key })
    }
}

/// A browser's `PushSubscription` as `JSON.stringify` gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PushSubscriptionJson {
    /// The push service's URL for this browser.
    pub endpoint: String,
    /// When the push service will end it (ms since the epoch), if it says.
    #[serde(default)]
    pub expiration_time: Option<f64>,
    /// The browser's keys.
    pub keys: PushKeys,
}

/// The keys of a `PushSubscription`, base64url.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    /// The browser's P-256 public key (65 bytes, uncompressed).
    pub p256dh: String,
    /// The shared authentication secret (16 bytes).
    pub auth: String,
}

impl PushSubscriptionJson {
    /// Checks that the keys decode to what they must be and that the endpoint may be used.
    pub fn validate(&self, allow_private: bool) -> Result<(), String> {
        endpoint::check_url(&self.endpoint, allow_private).map_err(|refused| format!("endpoint: {refused}"))?;
        let decode = |text: &str| Base64UrlSafeNoPadding::decode_to_vec(text.trim_end_matches('='), None).ok();
        match decode(&self.keys.p256dh) {
            Some(key) if key.len() == 65 && key[0] == 4 && on_p256(&key) => {}
            _ => return Err(
                "keys.p256dh: expected an uncompressed P-256 public key (65 bytes, a point of the curve), base64url"
                    .to_owned(),
            ),
        }
        match decode(&self.keys.auth) {
            Some(auth) if auth.len() == 16 => Ok(()),
            _ => Err("keys.auth: expected a 16-byte secret, base64url".to_owned()),
        }
    }
}

/// Whether `key` (uncompressed) is a point of P-256: anything else could never be encrypted
/// to, and every push to it would fail.
fn on_p256(key: &[u8]) -> bool {
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcPoint};
    use openssl::nid::Nid;
    let Ok(group) = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1) else { return false };
    let Ok(mut context) = BigNumContext::new() else { return false };
    // OpenSSL refuses an encoding whose point is not on the curve.
    EcPoint::from_bytes(&group, key, &mut context).is_ok()
}

/// The urgency (RFC 8030) of each event: what needs a person now goes first.
fn urgency(event: &str) -> Urgency {
    match event {
        "approval_needed" | "task_failed" => Urgency::High,
        "task_complete" | "digest" => Urgency::Normal,
        _ => Urgency::Low,
    }
}

/// The decrypted payload the service worker reads: `title`, `body`, the task, its progress
/// page (a path under `mount`), the event, and `actions`: for an approval, `{"action",
/// "title", "url"}` of each link in `links`, else none. A body too long for
/// [`MAX_PAYLOAD_BYTES`] (a long digest) is cut, with an ellipsis.
pub fn payload(notice: &Notice, mount: &MountPath, links: &[(LinkDecision, String)]) -> Vec<u8> {
    let actions: Vec<serde_json::Value> = links
        .iter()
        .map(|(decision, url)| serde_json::json!({"action": decision.name(), "title": decision.title(), "url": url}))
        .collect();
    let mut text = notice.text.clone();
    loop {
        let json = serde_json::json!({
            "title": "Stepwise",
            "body": text,
            "event": notice.event,
            "task_id": notice.task_id,
            "url": mount.join(&format!("/tasks/{}", notice.task_id)),
            "actions": actions,
        })
        .to_string();
        if json.len() <= MAX_PAYLOAD_BYTES || text.is_empty() {
            return json.into_bytes();
        }
        // Escaping can make the JSON longer than the text, so cut by what is over and check
        // again.
        let over = json.len() - MAX_PAYLOAD_BYTES;
        let mut end = text.trim_end_matches('…').len().saturating_sub(over + '…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

/// One user's push messages in order, each to all their subscriptions at once.
pub(crate) async fn worker(shared: Arc<Shared>, vapid: Vapid, owner: Arc<str>, mut queue: Inbox<Notice>) {
    let mut throttle = Throttle::new(&shared);
    while let Some(batch) = throttle.next(&mut queue).await {
        let notice = deliver::digest(batch);
        let Some(db) = shared.db() else { return };
        let (user, reader) = (owner.to_string(), Arc::clone(&db));
        let subscriptions = tokio::task::spawn_blocking(move || {
            let mut conn = reader.conn()?;
            db::push_subscriptions(&mut conn, &user)
        })
        .await;
        let subscriptions = match subscriptions {
            Ok(Ok(subscriptions)) => subscriptions,
            Ok(Err(error)) => {
                tracing::warn!(%error, user = %owner, "cannot read push subscriptions");
                continue;
            }
            Err(_) => return,
        };
        if subscriptions.is_empty() {
            continue;
        }
        // One pair of links for all the user's devices: whichever decides first, decides.
        let content = payload(&notice, &shared.config.mount, &approval_links(&shared, &db, &owner, &notice).await);
        let sends =
            subscriptions.iter().map(|subscription| send(&shared, &vapid, &owner, &notice, &content, subscription));
        futures_util::future::join_all(sends).await;
    }
}

/// The Approve and Reject links of an approval's message, paths under the mount path; none
/// for other messages, or when the key cannot be read (logged): the message still tells, and
/// the page decides.
async fn approval_links(
    shared: &Shared,
    db: &Arc<Database>,
    owner: &str,
    notice: &Notice,
) -> Vec<(LinkDecision, String)> {
    let Some(step) = notice.approval_step else { return Vec::new() };
    let now = shared.clock.now_ms();
    match shared.config.link_key(db, now).await {
        Ok(key) => {
            let ttl_ms =
                i64::try_from(shared.settings().approval_link_ttl_s).map_or(i64::MAX, |s| s.saturating_mul(1000));
            let links = key.issue(&notice.task_id, step, owner, now.saturating_add(ttl_ms));
            links.into_iter().map(|(decision, path)| (decision, shared.config.mount.join(&path))).collect()
        }
        Err(error) => {
            tracing::warn!(%error, user = owner, task_id = notice.task_id, "no approval-link key; the push offers no Approve / Reject");
            Vec::new()
        }
    }
}

async fn send(
    shared: &Shared,
    vapid: &Vapid,
    owner: &str,
    notice: &Notice,
    content: &[u8],
    subscription: &db::PushSubscriptionRecord,
) {
    let shown =
        subscription.endpoint.parse::<Uri>().map_or_else(|_| "an invalid URL".to_owned(), |uri| endpoint::origin(&uri));
    let target = Target { owner, channel: "push", shown: &shown };
    let uri = match endpoint::check_url(&subscription.endpoint, shared.settings().allow_private_endpoints) {
        Ok(uri) => uri,
        Err(refused) => {
            deliver::record(shared, &target, notice, 1, "refused", Some(refused.0)).await;
            return;
        }
    };
    let info = SubscriptionInfo::new(&subscription.endpoint, &subscription.p256dh, &subscription.auth);
    let ttl = u32::try_from(shared.settings().push_ttl_s).unwrap_or(u32::MAX);
    let request = || -> Result<Request<Body>, String> {
        let mut signature = vapid.signer.clone().add_sub_info(&info);
        // RFC 8292: the audience is the endpoint's origin, port included.
        signature.add_claim("aud", endpoint::origin(&uri));
        signature.add_claim("sub", shared.settings().vapid_subject.as_str());
        let signature = signature.build().map_err(|e| format!("cannot sign the VAPID token: {e}"))?;
        let mut message = WebPushMessageBuilder::new(&info);
        message.set_payload(ContentEncoding::Aes128Gcm, content);
        message.set_ttl(ttl);
        message.set_urgency(urgency(notice.event));
        message.set_vapid_signature(signature);
        let message = message.build().map_err(|e| format!("cannot encrypt the message: {e}"))?;
        Ok(web_push::request_builder::build_request::<Body>(message))
    };
    let delivered = deliver::with_retries(shared, &target, notice, || deliver::http(shared, request(), true)).await;
    if delivered == Delivery::Gone {
        let Some(db) = shared.db() else { return };
        let (user, id) = (owner.to_owned(), subscription.id.clone());
        let removed = tokio::task::spawn_blocking(move || {
            let mut conn = db.conn()?;
            db::delete_push_subscription(&mut conn, &user, &id)
        })
        .await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(%error, user = owner, "cannot remove a push subscription the push service says is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_keys_are_checked() {
        let short = Notice {
            task_id: "t1".to_owned(),
            event: "task_started",
            text: "Your CRM task has started".to_owned(),
            approval_step: None,
        };
        let parsed: serde_json::Value = serde_json::from_slice(&payload(&short, &MountPath::root(), &[])).unwrap();
        assert_eq!(parsed["body"], "Your CRM task has started");
        assert_eq!(parsed["url"], "/tasks/t1");
        let mounted = payload(&short, &MountPath::new("/steps").unwrap(), &[]);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&mounted).unwrap()["url"], "/steps/tasks/t1");
        assert_eq!(parsed["actions"], serde_json::json!([]));
        let links = [(LinkDecision::Approve, "/a".repeat(200)), (LinkDecision::Reject, "/r".repeat(200))];
        for text in ["é\"".repeat(3000), "\u{1}".repeat(5000), "✅".repeat(2000)] {
            let long = Notice { task_id: "t1".to_owned(), event: "approval_needed", text, approval_step: Some(1) };
            let bytes = payload(&long, &MountPath::root(), &links);
            assert!(bytes.len() <= MAX_PAYLOAD_BYTES, "{}", bytes.len());
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(parsed["body"].as_str().unwrap().ends_with('…'));
            assert_eq!(
                parsed["actions"][0],
                serde_json::json!({"action": "approve", "title": "Approve", "url": links[0].1})
            );
            assert_eq!(parsed["actions"][1]["action"], "reject");
        }

        let keys = PushKeys {
            p256dh: "BLMbF9ffKBiWQLCKvTHb6LO8Nb6dcUh6TItC455vu2kElga6PQvUmaFyCdykxY2nOSSL3yKgfbmFLRTUaGv4yV8"
                .to_owned(),
            auth: "xS03Fi5ErfTNH_l9WHE9Ig".to_owned(),
        };
        let subscription = |endpoint: &str, keys: PushKeys| PushSubscriptionJson {
            endpoint: endpoint.to_owned(),
            expiration_time: None,
            keys,
        };
        assert!(subscription("https://push.example.com/x", keys.clone()).validate(false).is_ok());
        assert!(subscription("http://127.0.0.1:9/x", keys.clone()).validate(false).is_err());
        assert!(subscription("http://127.0.0.1:9/x", keys.clone()).validate(true).is_ok());
        let short_key = PushKeys { p256dh: "AAAA".to_owned(), ..keys.clone() };
        assert!(subscription("https://push.example.com/x", short_key).validate(false).is_err());
        // 0x04 then x = y = 0: the right length and form, but not a point of P-256.
        let origin = format!("B{}", "A".repeat(86));
        let off_curve = PushKeys { p256dh: origin, ..keys.clone() };
        let refused = subscription("https://push.example.com/x", off_curve).validate(false).unwrap_err();
        assert!(refused.contains("a point of the curve"), "{refused}");
        let long_auth = PushKeys { auth: "xS03Fi5ErfTNH_l9WHE9IgAA".to_owned(), ..keys };
        assert!(subscription("https://push.example.com/x", long_auth).validate(false).is_err());
    }
}
