//! Who is asking: bearer tokens (made by `stepwise token create`, stored as SHA-256 hashes)
//! checked against the database and trusted for `api.token_cache_s`, and a per-token
//! request rate (a token bucket).

use std::collections::HashMap;
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

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's name: the owner of the tasks they create.
    pub user: Arc<str>,
    /// The token's public id (the rate limit's key).
    pub token_id: Arc<str>,
    /// The token's own request rate, if it has one (else `api.requests_per_second`).
    pub requests_per_second: Option<u32>,
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

/// Checks tokens and rates.
pub struct Authenticator {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    cache_ms: i64,
    cache: Mutex<HashMap<String, Cached>>,
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl Authenticator {
    /// Trusts a checked token for `cache_s` and allows each token `rate_per_s` requests a
    /// second (or its own rate, if it has one) with `burst` more at once.
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>, cache_s: u64, rate_per_s: u32, burst: u32) -> Authenticator {
        Authenticator {
            db,
            clock,
            cache_ms: i64::try_from(cache_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            cache: Mutex::new(HashMap::new()),
            rate_per_s: f64::from(rate_per_s.max(1)),
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The user a token belongs to, from the cache or the database.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
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
            token_id: found.token_id.into(),
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

    /// Counts a request against the caller's rate.
    pub fn admit(&self, caller: &Caller) -> Result<(), ApiError> {
        let now = self.clock.now_ms();
        let rate = caller.requests_per_second.map_or(self.rate_per_s, |rate| f64::from(rate.max(1)));
        let capacity = rate + self.burst;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(Arc::clone(&caller.token_id)).or_insert(Bucket { tokens: capacity, at_ms: now });
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

/// Compares secrets in time independent of where they differ.
pub(crate) fn same_secret(sent: &[u8], secret: &[u8]) -> bool {
    sent.len() == secret.len() && sent.iter().zip(secret).fold(0u8, |differ, (a, b)| differ | (a ^ b)) == 0
}

/// The token of a request: `Authorization: Bearer …`, or for WebSocket upgrades a
/// `bearer.…` entry of `Sec-WebSocket-Protocol`. A token in the query string is refused:
/// URLs end up in logs.
pub fn request_token(req: &HttpRequest, websocket: bool) -> Result<String, ApiError> {
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
        let token = request_token(req, false);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("the API is not configured".to_owned()))?;
            let caller = state.auth.authenticate(&token?).await?;
            state.auth.admit(&caller)?;
            Ok(caller)
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
