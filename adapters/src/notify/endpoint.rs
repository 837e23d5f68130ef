//! Where the notifier may send: endpoints users give (chat webhooks) must be `https` on a
//! public address unless `notifications.allow_private_endpoints` is set. The address rule is
//! checked on the addresses actually connected to (the resolver refuses private ones), so a
//! name that resolves to an internal address, or changes what it resolves to after it was
//! saved, cannot reach the server's own network. The SMTP server email goes through is the
//! operator's choice, not a user's, so it is not held to this rule.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::connect::dns::Name;
use hyper::client::HttpConnector;
use hyper::Uri;
use hyper_tls::HttpsConnector;

/// The longest endpoint URL accepted.
const MAX_URL_CHARS: usize = 2000;

/// The HTTP client deliveries go through.
pub type Client = hyper::Client<HttpsConnector<HttpConnector<CheckedResolver>>, hyper::Body>;

/// Why an endpoint may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks what can be checked without connecting: a well-formed `https` URL (or `http` when
/// private endpoints are allowed) without credentials, whose host, if an IP address, is
/// public. Returns the parsed URI.
pub fn check_url(text: &str, allow_private: bool) -> Result<Uri, Refused> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(Refused(format!("the URL is longer than {MAX_URL_CHARS} characters")));
    }
    let uri: Uri = text.parse().map_err(|e| Refused(format!("{text:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_private => {}
        _ => return Err(Refused(format!("{text:?} is not an https URL"))),
    }
    let authority = uri.authority().ok_or_else(|| Refused(format!("{text:?} has no host")))?;
    if authority.as_str().contains('@') {
        return Err(Refused("the URL may not carry a user name or password".to_owned()));
    }
    // What follows the host (after an IPv6 literal's brackets) is a port, or nothing.
    let after_host = authority.as_str().rsplit(']').next().unwrap_or("");
    if after_host.contains(':') && authority.port_u16().is_none() {
        return Err(Refused(format!("{text:?} has an invalid port")));
    }
    if let Some(ip) = ip_literal(authority.host()) {
        if !allow_private && !is_public(ip) {
            return Err(Refused(format!("{ip} is not a public address")));
        }
    }
    Ok(uri)
}

/// What a log may show of an endpoint: its origin. Webhook paths often hold the secret that
/// lets anyone post, so they stay out of the log.
pub fn origin(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    uri.authority().map_or_else(|| scheme.to_owned(), |authority| format!("{scheme}://{authority}"))
}

fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local
/// (cloud metadata services live there), shared, documentation, multicast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b))
}

/// A resolver that answers only with addresses the settings allow, so the connector can
/// connect to nothing else.
#[derive(Debug, Clone, Copy)]
pub struct CheckedResolver {
    allow_private: bool,
}

impl hyper::service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let lookup = host.clone();
            // getaddrinfo blocks; port 0 because the connector sets the URL's port.
            let found: Vec<SocketAddr> = tokio::task::spawn_blocking(move || (lookup.as_str(), 0).to_socket_addrs())
                .await
                .map_err(|e| Box::new(e) as Self::Error)??
                .collect();
            let allowed: Vec<SocketAddr> =
                found.iter().copied().filter(|a| allow_private || is_public(a.ip())).collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(Box::new(Refused(format!("{host} resolves to no public address"))) as Self::Error);
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The client deliveries use: TLS through the system's roots, connections only to checked
/// addresses, `connect_timeout` per connection.
pub fn client(allow_private: bool, connect_timeout: Duration) -> Client {
    let mut http = HttpConnector::new_with_resolver(CheckedResolver { allow_private });
    // The TLS layer wraps it, so `https` URLs must pass through.
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    hyper::Client::builder().build(HttpsConnector::new_with_connector(http))
}

/// Whether `error`, or anything it was caused by, is a [`Refused`].
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused.0.clone());
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in
            ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]
        {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for private in ["::1", "::", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "2001:db8::1"] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_must_be_https_on_public_hosts_unless_allowed() {
        assert!(check_url("https://hooks.example.com/services/x", false).is_ok());
        assert!(check_url("http://hooks.example.com/x", false).is_err());
        assert!(check_url("https://127.0.0.1:8443/x", false).is_err());
        assert!(check_url("https://[::1]/x", false).is_err());
        assert!(check_url("https://user:pw@hooks.example.com/x", false).is_err());
        assert!(check_url("ftp://hooks.example.com/x", true).is_err());
        assert!(check_url("not a url", true).is_err());
        assert!(check_url("https://hooks.example.com:4000*", false).is_err(), "not a port");
        assert!(check_url("https://[2606:4700::1111]:8443/x", false).is_ok());
        assert!(check_url("http://127.0.0.1:9/x", true).is_ok());
        let uri = check_url("https://hooks.example.com:8443/secret", false).unwrap();
        assert_eq!(origin(&uri), "https://hooks.example.com:8443");
    }
}
