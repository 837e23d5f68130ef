//! The tests' HTTP/1.1 client: hyper's (the one the server's notifier uses), for requests to
//! the server under test and to chromedriver. A fresh connection per request, so a test
//! sees each request's answer alone.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Body, Client, Request};

/// An answer to a request.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends `method path` to `address` with these headers and body (hyper adds `Host` and the
/// body's length); fails with why if there is no whole answer within `timeout`.
pub async fn send(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut request = Request::builder().method(method).uri(format!("http://{address}{path}"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_vec()));
    let request = request.body(body).map_err(|e| format!("{method} {path}: {e}"))?;
    let exchange = async {
        let response = Client::new().request(request).await?;
        let (head, body) = response.into_parts();
        Ok::<_, hyper::Error>((head, hyper::body::to_bytes(body).await?))
    };
    let (head, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {timeout:?}"))?
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let headers = head
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    Ok(Answer { status: head.status.as_u16(), headers, body: body.to_vec() })
}
