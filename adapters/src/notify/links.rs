//! Approval links: the Approve and Reject actions of an `approval_needed` push message. Each
//! is `POST /api/approval-links/{token}`, and the token is the whole credential, so a phone's
//! service worker can decide without the API token: it names the task, the step, the
//! decision, the task's owner (whom the link acts as), when it expires and a random id, and
//! is signed with HMAC-SHA256 under a secret the first server makes and keeps in the
//! database (so every server sharing it verifies any server's links). A link works until
//! `notifications.approval_link_ttl_s` after it was made, and once: `db` records each used id.
//!
//! A token is `PAYLOAD.SIGNATURE`, both base64url without padding; the payload is JSON. The
//! signature covers the payload's text exactly as sent, so any change to it, to the
//! signature or to the secret makes the link [`LinkError::Forged`]; only then is the payload
//! read, and its expiry checked.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use db::Database;
use hmac::{Hmac, Mac};
use runtime::Control;
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The route's path without the token.
pub const PATH: &str = "/api/approval-links/";

/// The name the secret is stored under.
const SECRET_NAME: &str = "approval_links";

/// Bytes of a new secret.
const SECRET_BYTES: usize = 32;

/// Signed before the payload, so that no signature this key might make for another purpose
/// one day passes for a link's.
const CONTEXT: &[u8] = b"stepwise approval link\n";

/// The payload's format; a link of another version is refused as malformed.
const VERSION: u32 = 1;

/// Longer tokens are refused before any work: a real one is a few hundred characters.
const MAX_TOKEN_CHARS: usize = 2048;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// It is not shaped like a link at all.
    #[error("this is not an approval link")]
    Malformed,
    /// Its signature does not match: it was changed, or another server's secret signed it.
    #[error("this approval link is not valid: it was changed, or it was not made by this server")]
    Forged,
    /// It was genuine, and has expired.
    #[error("this approval link has expired")]
    Expired {
        /// When, ms since the epoch.
        expires_at: i64,
    },
}

/// Why the secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The stored secret does not decode.
    #[error("the stored approval-link secret is not {SECRET_BYTES} bytes of base64url")]
    BadSecret,
    /// The blocking pool is gone (the server is stopping).
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What a link decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkDecision {
    /// Approve the step.
    Approve,
    /// Reject it.
    Reject,
}

impl LinkDecision {
    /// Both, in the order a notification shows them.
    pub const ALL: [LinkDecision; 2] = [LinkDecision::Approve, LinkDecision::Reject];

    /// The name in payloads and in the notification's `actions`.
    pub fn name(self) -> &'static str {
        match self {
            LinkDecision::Approve => "approve",
            LinkDecision::Reject => "reject",
        }
    }

    /// The button's label.
    pub fn title(self) -> &'static str {
        match self {
            LinkDecision::Approve => "Approve",
            LinkDecision::Reject => "Reject",
        }
    }

    /// The runtime's control for it, for `step` only: what `POST
    /// /api/tasks/{id}/approve|reject` sends, bound to the step the link was made for.
    pub fn control(self, step: u32) -> Control {
        match self {
            LinkDecision::Approve => Control::Approve { step: Some(step), comment: None },
            LinkDecision::Reject => Control::Reject { step: Some(step), comment: None },
        }
    }
}

/// What a genuine, unexpired link says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalLink {
    /// The payload's format.
    v: u32,
    /// The link's own id (random), what using it records.
    pub id: String,
    /// The task.
    pub task_id: String,
    /// The step waiting for approval.
    pub step: u32,
    /// What using the link does.
    pub decision: LinkDecision,
    /// The task's owner.
    pub owner: String,
    /// When it stops working, ms since the epoch.
    pub expires_at: i64,
}

/// The server's key for signing and checking links.
#[derive(Clone)]
pub struct LinkKey {
    mac: HmacSha256,
}

impl LinkKey {
    /// A key over these secret bytes (the stored secret's, or a test's own).
    pub fn new(secret: &[u8]) -> Result<LinkKey, SecretError> {
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| SecretError::BadSecret)?;
        Ok(LinkKey { mac })
    }

    /// The stored key, or a new one stored now (the first server to store wins).
    pub async fn load_or_create(db: &Arc<Database>, now: i64) -> Result<LinkKey, SecretError> {
        let fresh = URL_SAFE_NO_PAD.encode(rand::random::<[u8; SECRET_BYTES]>());
        let db = Arc::clone(db);
        let stored = tokio::task::spawn_blocking(move || {
            let mut conn = db.conn()?;
            db::server_secret(&mut conn, SECRET_NAME, &fresh, now)
        })
        .await
        .map_err(|_| SecretError::ShuttingDown)??;
        match URL_SAFE_NO_PAD.decode(stored) {
            Ok(secret) if secret.len() == SECRET_BYTES => LinkKey::new(&secret),
            _ => Err(SecretError::BadSecret),
        }
    }

    /// The Approve and Reject links (paths on this server) for `step` of `owner`'s task,
    /// working until `expires_at` (ms since the epoch).
    pub fn issue(&self, task_id: &str, step: u32, owner: &str, expires_at: i64) -> Vec<(LinkDecision, String)> {
        LinkDecision::ALL
            .into_iter()
            .map(|decision| {
                let payload = serde_json::json!({
                    "v": VERSION,
                    "id": format!("{:032x}", rand::random::<u128>()),
                    "task_id": task_id,
                    "step": step,
                    "decision": decision.name(),
                    "owner": owner,
                    "expires_at": expires_at,
                });
                (decision, format!("{PATH}{}", self.sign(&payload.to_string())))
            })
            .collect()
    }

    /// `payload` (JSON text) as a signed token.
    pub fn sign(&self, payload: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// What `token` says, if this key signed it and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<ApprovalLink, LinkError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(LinkError::Malformed);
        }
        let (payload, signature) = token.split_once('.').ok_or(LinkError::Malformed)?;
        if payload.is_empty() || signature.is_empty() {
            return Err(LinkError::Malformed);
        }
        // A signature that does not even decode is as false as one that does not match.
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| LinkError::Forged)?;
        self.mac(payload).verify_slice(&signature).map_err(|_| LinkError::Forged)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| LinkError::Malformed)?;
        let link: ApprovalLink = serde_json::from_slice(&json).map_err(|_| LinkError::Malformed)?;
        if link.v != VERSION {
            return Err(LinkError::Malformed);
        }
        if now >= link.expires_at {
            return Err(LinkError::Expired { expires_at: link.expires_at });
        }
        Ok(link)
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(CONTEXT);
        mac.update(payload.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(key: &LinkKey, decision: LinkDecision, expires_at: i64) -> String {
        let links = key.issue("task-1", 3, "ada", expires_at);
        let (_, path) = links.into_iter().find(|(d, _)| *d == decision).unwrap();
        path.strip_prefix(PATH).unwrap().to_owned()
    }

    #[test]
    fn a_link_says_what_it_was_made_for_until_it_expires() {
        let key = LinkKey::new(b"secret").unwrap();
        let links = key.issue("task-1", 3, "ada", 1_000);
        let decisions: Vec<LinkDecision> = links.iter().map(|(d, _)| *d).collect();
        assert_eq!(decisions, [LinkDecision::Approve, LinkDecision::Reject]);
        assert!(links.iter().all(|(_, path)| path.starts_with("/api/approval-links/")));

        let approve = key.verify(links[0].1.strip_prefix(PATH).unwrap(), 999).unwrap();
        let reject = key.verify(links[1].1.strip_prefix(PATH).unwrap(), 0).unwrap();
        assert_eq!(
            (approve.task_id.as_str(), approve.step, approve.decision, approve.owner.as_str(), approve.expires_at),
            ("task-1", 3, LinkDecision::Approve, "ada", 1_000)
        );
        assert_eq!(reject.decision, LinkDecision::Reject);
        assert_ne!(approve.id, reject.id, "each link has its own id");
        assert_eq!(approve.id.len(), 32);
        assert_eq!(approve.decision.control(3), Control::Approve { step: Some(3), comment: None });
        assert_eq!(reject.decision.control(3), Control::Reject { step: Some(3), comment: None });

        // Expired from the millisecond it names.
        let token = token_of(&key, LinkDecision::Approve, 1_000);
        assert_eq!(key.verify(&token, 1_000), Err(LinkError::Expired { expires_at: 1_000 }));
        assert_eq!(key.verify(&token, 5_000), Err(LinkError::Expired { expires_at: 1_000 }));
    }

    #[test]
    fn changed_foreign_and_malformed_links_are_refused() {
        let key = LinkKey::new(b"secret").unwrap();
        let token = token_of(&key, LinkDecision::Approve, 1_000);
        let (payload, signature) = token.split_once('.').unwrap();

        // Any character of the signature flipped.
        for at in 0..signature.len() {
            let mut flipped = signature.as_bytes().to_vec();
            flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
            let forged = format!("{payload}.{}", String::from_utf8(flipped).unwrap());
            assert_eq!(key.verify(&forged, 0), Err(LinkError::Forged), "signature character {at}");
        }
        // Another task, step, owner or expiry in the payload, signature kept.
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        for (from, to) in [("task-1", "task-2"), ("\"step\":3", "\"step\":4"), ("ada", "bob"), ("1000", "9000")] {
            assert!(json.contains(from), "{json}");
            let changed = URL_SAFE_NO_PAD.encode(json.replace(from, to));
            assert_eq!(key.verify(&format!("{changed}.{signature}"), 0), Err(LinkError::Forged), "{from} → {to}");
        }
        // Signed with another secret.
        assert_eq!(LinkKey::new(b"another secret").unwrap().verify(&token, 0), Err(LinkError::Forged));
        // Not a link at all.
        let long = "a".repeat(MAX_TOKEN_CHARS + 1);
        for text in ["", ".", "abc", "abc.", ".abc", long.as_str()] {
            assert_eq!(key.verify(text, 0), Err(LinkError::Malformed), "{text:?}");
        }
        // Signed, but not a payload of this version: refused all the same.
        let other_version = key.sign(&json.replace("\"v\":1", "\"v\":2"));
        assert_eq!(key.verify(&other_version, 0), Err(LinkError::Malformed));
        let not_json = key.sign("approve everything");
        assert_eq!(key.verify(&not_json, 0), Err(LinkError::Malformed));
    }
}
