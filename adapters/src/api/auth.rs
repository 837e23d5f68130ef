//! Who is asking: bearer tokens (made by `stepwise token create`, stored as SHA-256 hashes)
//! checked against the database and trusted for `api.token_cache_s`, or, for an application
//! that embeds Stepwise, its own word ([`Authenticate`]); and a request rate per token or
//! per application user (a token bucket).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use db::Database;
use futures_util::future::LocalBoxFuture;
use runtime::Clock;
use sha2::{Digest, Sha256};

use super::error::{blocking_query, ApiError};
use super::ApiState;

/// Every token starts with this, so a leaked one is easy to spot in logs and scanners.
const TOKEN_PREFIX: &str = "sw_";

/// The Sec-WebSocket-Protocol entry that carries a token for browsers, which cannot set
/// headers on a WebSocket.
pub const WS_BEARER_PREFIX: &str = "bearer.";

/// Cached tokens kept before stale ones are swept out.
const CACHE_SWEEP_AT: usize = 10_000;

/// Users cached as known to exist before the cache is emptied.
const KNOWN_USERS_CAP: usize = 10_000;

/// The longest user name, as `stepwise token create` allows.
const MAX_USER_CHARS: usize = 100;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's name: the owner of the tasks they create.
    pub user: Arc<str>,
    /// What the request rate is counted by: the token's public id, or the user's name when
    /// the application signs its users in.
    pub rate_key: Arc<str>,
    /// The token's own request rate, if it has one (else `api.requests_per_second`).
    pub requests_per_second: Option<u32>,
}

/// How an application that embeds Stepwise tells who makes a request, in place of
/// Stepwise's API tokens: from its own session cookie, a header its proxy sets, anything
/// in the request. The name it answers is the user's, the owner of the tasks they create
/// and the only one who sees them (another user's task answers 404); a user is created in
/// Stepwise's database on first sight.
///
/// It is asked on every API request and WebSocket upgrade under the mount path, except the
/// OpenAPI document and approval links (whose signed token is the credential). The pages
/// themselves load without it, and then call the API with the browser's cookies.
pub trait Authenticate: Send + Sync + 'static {
    /// The user's name (1 to 100 characters), or why the request is refused: answered
    /// `401 {"error": {"code": "unauthorized", "message": <the refusal>}}`.
    fn authenticate<'a>(&'a self, req: &'a HttpRequest) -> LocalBoxFuture<'a, Result<String, Refusal>>;
}

/// An application's refusal of a request, said to the client as the 401's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// How requests are authenticated.
pub enum SignIn {
    /// Bearer tokens (`stepwise token create`): the stand-alone server, and the default.
    Tokens,
    /// The embedding application's own check.
    Application(Box<dyn Authenticate>),
}

impl SignIn {
    /// Whether the application signs its users in (so the pages have no token to ask for).
    pub fn by_application(&self) -> bool {
        matches!(self, SignIn::Application(_))
    }
}

/// A freshly made token: the secret shown once, its public id and the hash to store.
#[derive(Debug)]
pub struct NewToken {
    /// The public id, e.g. for `stepwise token revoke`.
    pub id: String,
    /// The token itself; never stored.
    pub secret: String,
    /// What is stored.
    pub hash: String,
}

impl NewToken {
    /// 48 random bits of id and 192 of secret.
    pub fn generate() -> NewToken {
        let id = format!("{:012x}", rand::random::<u64>() >> 16);
        let secret_bits: [u8; 24] = rand::random();
        let secret = format!("{TOKEN_PREFIX}{id}_{}", hex(&secret_bits));
        let hash = hash_token(&secret);
        NewToken { id, secret, hash }
    }
}

/// The stored form of a token: SHA-256, hex. Tokens are long random strings, so a fast
/// hash is enough (there is nothing to brute-force).
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    // Every request hashes its token: no formatting machinery per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

struct Cached {
    caller: Caller,
    checked_ms: i64,
}

struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Checks tokens (or asks the application) and rates.
pub struct Authenticator {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    sign_in: SignIn,
    cache_ms: i64,
    cache: Mutex<HashMap<String, Cached>>,
    /// The application's users known to have a row in `users`.
    known_users: Mutex<HashSet<Arc<str>>>,
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl Authenticator {
    /// Authenticates as `sign_in` says, trusts a checked token for `cache_s`, and allows
    /// each token or application user `rate_per_s` requests a second (or the token's own
    /// rate, if it has one) with `burst` more at once.
    pub fn new(
        db: Arc<Database>,
        clock: Arc<dyn Clock>,
        sign_in: SignIn,
        cache_s: u64,
        rate_per_s: u32,
        burst: u32,
    ) -> Authenticator {
        Authenticator {
            db,
            clock,
            sign_in,
            cache_ms: i64::try_from(cache_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            cache: Mutex::new(HashMap::new()),
            known_users: Mutex::new(HashSet::new()),
            rate_per_s: f64::from(rate_per_s.max(1)),
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How requests are authenticated.
    pub fn sign_in(&self) -> &SignIn {
        &self.sign_in
    }

    /// The user making `req` (a WebSocket upgrade when `websocket`), counted against their
    /// rate.
    pub async fn caller(&self, req: &HttpRequest, websocket: bool) -> Result<Caller, ApiError> {
        let caller = match &self.sign_in {
            SignIn::Tokens => self.token_caller(&request_token(req, websocket)?).await?,
            SignIn::Application(application) => self.application_caller(application.as_ref(), req).await?,
        };
        self.admit(&caller.rate_key, caller.requests_per_second)?;
        Ok(caller)
    }

    /// The user the application names, made a user of Stepwise's database on first sight
    /// (their notification preferences and push subscriptions hang on that row).
    async fn application_caller(&self, application: &dyn Authenticate, req: &HttpRequest) -> Result<Caller, ApiError> {
        let user = application.authenticate(req).await.map_err(|refusal| ApiError::Unauthorized(refusal.0))?;
        if user.is_empty() || user.chars().count() > MAX_USER_CHARS {
            tracing::error!(user, "the application's Authenticate named an unusable user");
            return Err(ApiError::Internal(format!(
                "the application named a user of {} characters; a user's name is 1 to {MAX_USER_CHARS}",
                user.chars().count()
            )));
        }
        let user: Arc<str> = user.into();
        let known = self.known_users.lock().unwrap_or_else(PoisonError::into_inner).contains(&user);
        if !known {
            let (db, name, now) = (Arc::clone(&self.db), user.to_string(), self.clock.now_ms());
            blocking_query(db, move |conn| db::ensure_user(conn, &name, now)).await?;
            let mut known = self.known_users.lock().unwrap_or_else(PoisonError::into_inner);
            if known.len() >= KNOWN_USERS_CAP {
                known.clear();
            }
            known.insert(Arc::clone(&user));
        }
        Ok(Caller { rate_key: Arc::clone(&user), user, requests_per_second: None })
    }

    /// The user a token belongs to, from the cache or the database.
    async fn token_caller(&self, token: &str) -> Result<Caller, ApiError> {
        let hash = hash_token(token);
        let now = self.clock.now_ms();
        if let Some(cached) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&hash) {
            if now - cached.checked_ms < self.cache_ms {
                return Ok(cached.caller.clone());
            }
        }
        let db = Arc::clone(&self.db);
        let lookup = hash.clone();
        let found = blocking_query(db, move |conn| db::token_user(conn, &lookup)).await?;
        let Some(found) = found else {
            self.cache.lock().unwrap_or_else(PoisonError::into_inner).remove(&hash);
            return Err(ApiError::Unauthorized("the token is unknown or revoked".to_owned()));
        };
        let caller = Caller {
            user: found.user.into(),
            rate_key: found.token_id.into(),
            requests_per_second: found.requests_per_second,
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_SWEEP_AT {
            let cache_ms = self.cache_ms;
            cache.retain(|_, c| now - c.checked_ms < cache_ms);
        }
        cache.insert(hash, Cached { caller: caller.clone(), checked_ms: now });
        Ok(caller)
    }

    /// Counts a request that carries no token (an approval link's) against the rate of the
    /// address it came from: behind a proxy, all of them share the proxy's.
    pub fn admit_address(&self, address: Option<std::net::SocketAddr>) -> Result<(), ApiError> {
        let key = address.map_or_else(|| "address:unknown".to_owned(), |address| format!("address:{}", address.ip()));
        self.admit(&Arc::from(key), None)
    }

    /// Counts a request against the rate of `key` (a token, a user or an address): its own
    /// `requests_per_second` if it has one, else the server's.
    fn admit(&self, key: &Arc<str>, requests_per_second: Option<u32>) -> Result<(), ApiError> {
        let now = self.clock.now_ms();
        let rate = requests_per_second.map_or(self.rate_per_s, |rate| f64::from(rate.max(1)));
        let capacity = rate + self.burst;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= BUCKET_SWEEP_AT {
            // Addresses are many: forget the buckets idle long enough to have refilled.
            buckets.retain(|_, bucket| now - bucket.at_ms < BUCKET_IDLE_MS);
        }
        let bucket = buckets.entry(Arc::clone(key)).or_insert(Bucket { tokens: capacity, at_ms: now });
        let elapsed_s = (now - bucket.at_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed_s * rate).min(capacity);
        bucket.at_ms = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let retry_after_s = ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64;
        Err(ApiError::RateLimited { retry_after_s })
    }
}

/// How many rate buckets are kept before idle ones are forgotten.
const BUCKET_SWEEP_AT: usize = 10_000;
/// A bucket untouched this long is full again at any rate a setting allows, ms.
const BUCKET_IDLE_MS: i64 = 10 * 60 * 1000;

/// Compares secrets in time independent of where they differ.
pub(crate) fn same_secret(sent: &[u8], secret: &[u8]) -> bool {
    sent.len() == secret.len() && sent.iter().zip(secret).fold(0u8, |differ, (a, b)| differ | (a ^ b)) == 0
}

/// The token of a request: `Authorization: Bearer …`, or for WebSocket upgrades a
/// `bearer.…` entry of `Sec-WebSocket-Protocol`. A token in the query string is refused:
/// URLs end up in logs.
pub(crate) fn request_token(req: &HttpRequest, websocket: bool) -> Result<String, ApiError> {
    let query = req.query_string();
    let in_query = query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        matches!(key, "token" | "access_token" | "bearer" | "auth")
    });
    if in_query {
        return Err(ApiError::Unauthorized(
            "a token in the query string is refused (URLs end up in logs); send Authorization: Bearer <token>"
                .to_owned(),
        ));
    }
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".to_owned()));
        }
        return Ok(token.trim().to_owned());
    }
    if websocket {
        let offered = req.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL).filter_map(|v| v.to_str().ok());
        if let Some(token) =
            offered.flat_map(|v| v.split(',')).map(str::trim).find_map(|p| p.strip_prefix(WS_BEARER_PREFIX))
        {
            return Ok(token.to_owned());
        }
    }
    let how = if websocket {
        "send Authorization: Bearer <token>, or offer the subprotocols `stepwise.v1, bearer.<token>`"
    } else {
        "send Authorization: Bearer <token>"
    };
    Err(ApiError::Unauthorized(format!("no token: {how}")))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("the API is not configured".to_owned()))?;
            state.auth.caller(&req, false).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_their_sha256_in_lowercase_hex() {
        // The FIPS 180-2 test vector: stored hashes must match any other SHA-256 tool's.
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let token = NewToken::generate();
        assert_eq!(token.hash, hash_token(&token.secret));
        assert!(token.secret.starts_with(&format!("sw_{}_", token.id)));
        assert_eq!(token.secret.len(), "sw_".len() + 12 + 1 + 48);
        assert_ne!(NewToken::generate().secret, token.secret);
    }
}
