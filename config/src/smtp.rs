//! `notifications.email.smtp_url`: which SMTP server the notifier hands mail to and how it
//! secures the connection. Parsed here, once, so that a bad URL is a configuration error
//! at start naming the key, and the notifier builds its transport from the typed result.
//!
//! The form is `smtp://[USER:PASSWORD@]HOST[:PORT][?tls=none|opportunistic|required]` or
//! `smtps://[USER:PASSWORD@]HOST[:PORT]`, with the user and password percent-encoded.

use std::fmt;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text: `smtp://` with no `tls` (or `tls=none`); for a relay on the same host or
    /// network.
    None,
    /// STARTTLS when the server offers it, plain text when it does not (`tls=opportunistic`).
    Opportunistic,
    /// STARTTLS or no mail at all (`tls=required`).
    Required,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// A parsed `notifications.email.smtp_url`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// The server's host name or IP address (without brackets).
    pub host: String,
    /// The port: as given, else 25 for plain `smtp://`, 587 with STARTTLS, 465 for `smtps://`.
    pub port: u16,
    /// The user name and password to log in with, decoded.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through Display, so the password never reaches a log by way of Debug either.
        write!(f, "SmtpUrl({self})")
    }
}

/// The URL with the password hidden: what logs and error messages may show.
impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls == SmtpTls::Implicit { "smtps" } else { "smtp" };
        write!(f, "{scheme}://")?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{user}:***@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        match self.tls {
            SmtpTls::Opportunistic => f.write_str("?tls=opportunistic"),
            SmtpTls::Required => f.write_str("?tls=required"),
            SmtpTls::None | SmtpTls::Implicit => Ok(()),
        }
    }
}

const EXPECTED: &str = "expected smtp://[USER:PASSWORD@]HOST[:PORT][?tls=none|opportunistic|required] or smtps://[USER:PASSWORD@]HOST[:PORT]";

impl SmtpUrl {
    /// Parses the setting's text; the error says what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<SmtpUrl, String> {
        let (implicit, rest) = match (text.strip_prefix("smtps://"), text.strip_prefix("smtp://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(EXPECTED.to_owned()),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(format!("a path is not allowed; {EXPECTED}"));
        }
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                let (user, password) =
                    userinfo.split_once(':').ok_or_else(|| "the user needs a password (USER:PASSWORD@)".to_owned())?;
                (Some((percent_decode(user)?, percent_decode(password)?)), host_port)
            }
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port)?;
        let tls = match (implicit, query) {
            (true, None) => SmtpTls::Implicit,
            (true, Some(_)) => return Err("smtps:// takes no query (its TLS is implicit)".to_owned()),
            (false, None) => SmtpTls::None,
            (false, Some(query)) => match query {
                "tls=none" => SmtpTls::None,
                "tls=opportunistic" => SmtpTls::Opportunistic,
                "tls=required" => SmtpTls::Required,
                _ => {
                    return Err(format!(
                        "unknown query {query:?}: expected tls=none, tls=opportunistic or tls=required"
                    ))
                }
            },
        };
        let default_port = match tls {
            SmtpTls::None => 25,
            SmtpTls::Opportunistic | SmtpTls::Required => 587,
            SmtpTls::Implicit => 465,
        };
        Ok(SmtpUrl { tls, host, port: port.unwrap_or(default_port), credentials })
    }
}

fn split_host_port(text: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(|| format!("unclosed [ in {text:?}"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(|| format!("expected :PORT after ], got {after:?}"))?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let valid_host = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        && !host.starts_with('-');
    if !valid_host {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(number) if number > 0 => Some(number),
            _ => return Err(format!("{port:?} is not a port (1 to 65535)")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Decodes `%XX` escapes (how a user name or password carries `@`, `:` or `/`).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let escape = text.get(index + 1..index + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok());
            let byte =
                escape.ok_or_else(|| "a % in the user or password is not followed by two hex digits".to_owned())?;
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "the user or password is not UTF-8 once decoded".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(tls: SmtpTls, host: &str, port: u16, credentials: Option<(&str, &str)>) -> SmtpUrl {
        let credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
        SmtpUrl { tls, host: host.to_owned(), port, credentials }
    }

    #[test]
    fn the_forms_parse_with_their_default_ports() {
        let cases = [
            ("smtp://127.0.0.1:2525", url(SmtpTls::None, "127.0.0.1", 2525, None)),
            ("smtp://mail.example.com", url(SmtpTls::None, "mail.example.com", 25, None)),
            ("smtp://mail.example.com/?tls=none", url(SmtpTls::None, "mail.example.com", 25, None)),
            ("smtp://mail.example.com?tls=required", url(SmtpTls::Required, "mail.example.com", 587, None)),
            (
                "smtp://mail.example.com:2587?tls=opportunistic",
                url(SmtpTls::Opportunistic, "mail.example.com", 2587, None),
            ),
            ("smtps://mail.example.com", url(SmtpTls::Implicit, "mail.example.com", 465, None)),
            ("smtps://[::1]:4650", url(SmtpTls::Implicit, "::1", 4650, None)),
            (
                "smtps://ops%40example.com:p%3Ass@mail.example.com",
                url(SmtpTls::Implicit, "mail.example.com", 465, Some(("ops@example.com", "p:ss"))),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(SmtpUrl::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_urls_say_why() {
        let cases = [
            ("http://mail.example.com", EXPECTED.to_owned()),
            ("smtp://", r#""" is not a host name or IP address"#.to_owned()),
            ("smtp://mail.example.com:0", r#""0" is not a port (1 to 65535)"#.to_owned()),
            ("smtp://mail.example.com:smtp", r#""smtp" is not a port (1 to 65535)"#.to_owned()),
            (
                "smtp://mail.example.com?tls=yes",
                r#"unknown query "tls=yes": expected tls=none, tls=opportunistic or tls=required"#.to_owned(),
            ),
            ("smtps://mail.example.com?tls=required", "smtps:// takes no query (its TLS is implicit)".to_owned()),
            ("smtp://ops@mail.example.com", "the user needs a password (USER:PASSWORD@)".to_owned()),
            ("smtp://mail.example.com/relay", format!("a path is not allowed; {EXPECTED}")),
            (
                "smtp://a:b%4@mail.example.com",
                "a % in the user or password is not followed by two hex digits".to_owned(),
            ),
        ];
        for (text, message) in cases {
            assert_eq!(SmtpUrl::parse(text), Err(message), "{text}");
        }
    }

    #[test]
    fn display_hides_the_password() {
        let parsed = SmtpUrl::parse("smtp://ops:secret@mail.example.com?tls=required").unwrap();
        assert_eq!(parsed.to_string(), "smtp://ops:***@mail.example.com:587?tls=required");
        assert!(!format!("{parsed:?}").contains("secret"));
        assert_eq!(SmtpUrl::parse("smtps://[::1]").unwrap().to_string(), "smtps://[::1]:465");
    }
}
