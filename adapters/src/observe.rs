//! What the operator learns of each HTTP request. It gets an id: the client's
//! `X-Request-Id` if that is short and printable (a proxy's or a caller's own), else a fresh
//! one. The id goes back in the `X-Request-Id` header and in every JSON error body
//! ([`crate::api::error::error_body`]), and a tracing span (`request_id`) wraps the answer,
//! so every log line made while answering names it. One line is logged per request answered
//! (at debug; a 5xx at warn), and the request is counted with its latency by route pattern
//! in the metrics ([`crate::metrics::ApiMetrics::request`]).

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument as _;

use crate::api::error::with_request_id;
use crate::api::ApiState;
use crate::metrics::NO_ROUTE;

/// The header a request id comes and goes back in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a client.
const MAX_REQUEST_ID: usize = 64;

/// The middleware around every request (see the module's docs).
pub async fn requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let began = Instant::now();
    let id = request_id(&req);
    let span = tracing::error_span!("request", request_id = %id);
    // actix-web's handlers turn their errors into answers (inside this scope, so the bodies
    // carry the id); only a failing middleware would answer `Err`, and none of ours does.
    let answer = next.call(req).instrument(span.clone());
    let mut response = with_request_id(Arc::clone(&id), answer).await?.map_into_boxed_body();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    let (method, route, status) = (method_label(response.request().method()), route(&response), response.status());
    let seconds = began.elapsed().as_secs_f64();
    // Looked up after the answer: a scope's data (an embedded mount's) joins the request
    // only once the scope has routed it.
    if let Some(state) = response.request().app_data::<web::Data<ApiState>>() {
        state.metrics.request(method, &route, status.as_u16(), seconds);
    }
    span.in_scope(|| {
        let (path, ms) = (response.request().path(), seconds * 1000.0);
        match status.is_server_error() {
            true => tracing::warn!(method, path, route, status = status.as_u16(), ms, "answered"),
            false => tracing::debug!(method, path, route, status = status.as_u16(), ms, "answered"),
        }
    });
    Ok(response)
}

/// The client's request id if it is sane, else a fresh one.
fn request_id(req: &ServiceRequest) -> Arc<str> {
    let given = req.headers().get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok());
    match given.filter(|id| is_sane(id)) {
        Some(id) => id.into(),
        None => format!("{:016x}", rand::random::<u64>()).into(),
    }
}

/// Short and printable, without spaces: safe in a header, a log line and a JSON string.
fn is_sane(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len()) && id.bytes().all(|byte| byte.is_ascii_graphic())
}

/// The route pattern the request matched, or [`NO_ROUTE`].
fn route(response: &ServiceResponse) -> String {
    response.request().match_pattern().unwrap_or_else(|| NO_ROUTE.to_owned())
}

/// The method as a label: the standard ones by name, any other as `OTHER`, so made-up
/// methods make no series.
fn method_label(method: &Method) -> &'static str {
    static KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN.iter().find(|known| *known == method).map_or("OTHER", |known| known.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_request_ids_are_taken() {
        let cases = [
            ("abc-123", true),
            ("5f2c0a9e-41d3-b7a8", true),
            (&"x".repeat(MAX_REQUEST_ID), true),
            (&"x".repeat(MAX_REQUEST_ID + 1), false),
            ("", false),
            ("two words", false),
            ("tab\there", false),
            ("é", false),
        ];
        for (id, sane) in cases {
            assert_eq!(is_sane(id), sane, "{id:?}");
        }
    }

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
