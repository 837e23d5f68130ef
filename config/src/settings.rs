//! The settings tree: one plain struct per section, its compiled-in defaults and its rules.
//!
//! Adding a section is adding a struct with `#[serde(default, deny_unknown_fields)]` and a
//! `Default` impl, a field on [`Settings`], a call to its `validate` if it has rules, and its
//! rows in the crate docs' table.

use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::de::{Error as _, Unexpected};
use serde::{Deserialize, Deserializer};

use crate::smtp::SmtpUrl;

/// Everything the `stepwise` server can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the server keeps its files, e.g. the SQLite database; must be absolute.
    /// Defaults to [`default_data_dir`].
    pub data_dir: PathBuf,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerSettings,
    /// The database.
    #[serde(default)]
    pub database: DatabaseSettings,
    /// Running tasks.
    #[serde(default)]
    pub runtime: RuntimeSettings,
    /// The HTTP and WebSocket API.
    #[serde(default)]
    pub api: ApiSettings,
    /// Notifying people of their tasks' progress.
    #[serde(default)]
    pub notifications: NotificationSettings,
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// The most verbose level that is logged.
    pub level: LogLevel,
    /// How each line is written.
    pub format: LogFormat,
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The default: one line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors: the event's fields, and the fields of
    /// the spans it happened in (an HTTP request's `request_id`).
    Json,
}

/// How much the server logs, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default: what an operator wants to see.
    #[default]
    Info,
    /// Details for finding problems.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level's name as written in the settings, e.g. `"info"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// The address the HTTP server binds; port 0 picks a free port.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// How long a graceful shutdown waits for open connections, in seconds.
    pub shutdown_timeout_s: u64,
    /// The URL other servers of a cluster and its operators reach this server at, as
    /// `GET /api/cluster` shows it; `None` means `http://` and the address it bound. Set it
    /// when `listen` is `0.0.0.0` or the server sits behind a proxy or NAT.
    pub advertise_url: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            shutdown_timeout_s: 10,
            advertise_url: None,
        }
    }
}

impl ServerSettings {
    fn validate(&self) -> Result<(), Violation> {
        let Some(url) = &self.advertise_url else { return Ok(()) };
        let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        match host {
            Some(host) if !host.is_empty() && !url.contains(char::is_whitespace) => Ok(()),
            _ => Err(Violation {
                key: "server.advertise_url",
                value: format!("{url:?}"),
                reason: "expected a URL like http://10.0.0.5:8080".to_owned(),
            }),
        }
    }
}

/// The `[database]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// A `sqlite://` or `postgres://` URL; `None` means the SQLite file
    /// `{data_dir}/stepwise.db` (see [`Settings::database_url`]).
    pub url: Option<String>,
    /// How many connections the pool keeps, 1 to 256.
    pub pool_size: u32,
    /// How long a request waits for a database connection before it answers 503
    /// `unavailable`, seconds, 1 to 300.
    pub acquire_timeout_s: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings { url: None, pool_size: 8, acquire_timeout_s: 5 }
    }
}

impl DatabaseSettings {
    fn validate(&self) -> Result<(), Violation> {
        in_range("database.pool_size", self.pool_size, 1, Some(256))?;
        in_range("database.acquire_timeout_s", self.acquire_timeout_s, 1, Some(300))
    }
}

/// The `[runtime]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// This server's name in task leases; `None` lets the runtime choose one.
    pub instance_id: Option<String>,
    /// How long a task lease lasts without renewal, in seconds, at least 3.
    ///
    /// Leases are renewed several times per period, so a shorter one would leave no room for
    /// a late renewal.
    pub lease_ttl_s: u64,
    /// How often step progress is written to the database, in milliseconds, 10 to 10000.
    pub progress_flush_ms: u64,
    /// How many of a failed step's last stderr lines are kept.
    pub stderr_tail_lines: usize,
    /// How many tasks may run on this server at once, 1 to 1000000; more wait in the queue
    /// for any server of the cluster with room. Paused tasks and those waiting for approval
    /// do not count.
    ///
    /// A running task costs an actor (kilobytes) and, for `exec` steps, a program: 1000
    /// bounds the programs a server may run at once well below a machine's process limits
    /// while leaving room for many tasks that wait on outside workers.
    pub max_running_tasks: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            instance_id: None,
            lease_ttl_s: 30,
            progress_flush_ms: 250,
            stderr_tail_lines: 20,
            max_running_tasks: 1000,
        }
    }
}

impl RuntimeSettings {
    fn validate(&self) -> Result<(), Violation> {
        in_range("runtime.lease_ttl_s", self.lease_ttl_s, 3, None)?;
        in_range("runtime.max_running_tasks", self.max_running_tasks, 1, Some(1_000_000))?;
        in_range("runtime.progress_flush_ms", self.progress_flush_ms, 10, Some(10_000))
    }
}

/// The `[api]` section: who may connect and how much they may ask.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Origins (`scheme://host[:port]`) whose pages may open WebSockets besides the
    /// server's own; `*` allows any. A list in the file, comma-separated in the variable.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub allowed_origins: Vec<String>,
    /// The step kinds a plan sent over the API may use. `exec` runs programs on the server,
    /// so it is left out unless the operator adds it.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub step_kinds: Vec<String>,
    /// Largest request body, in bytes, 1024 to 67108864.
    pub max_body_bytes: usize,
    /// Largest WebSocket frame a client may send, in bytes, 1024 to 16777216.
    pub max_frame_bytes: usize,
    /// Steps per task, at least 1.
    pub max_steps: usize,
    /// Substeps per step.
    pub max_substeps: usize,
    /// Characters in a title or a step or substep name, at least 1.
    pub max_title_chars: usize,
    /// Requests per second each token may make, sustained, at least 1.
    pub requests_per_second: u32,
    /// Requests a token may make at once above the sustained rate.
    pub request_burst: u32,
    /// Events a WebSocket client may fall behind before the rest are dropped and it gets a
    /// fresh snapshot, at least 8.
    pub ws_queue_events: usize,
    /// Seconds between WebSocket pings, at least 1.
    pub ws_heartbeat_s: u64,
    /// Seconds without any frame from a WebSocket client before it is disconnected; more
    /// than `ws_heartbeat_s`. Also how long the peer of any connection the stand-alone server
    /// accepts may leave its data unread or unacknowledged before the kernel drops the
    /// connection (TCP_USER_TIMEOUT): a client that stops reading cannot be pinged.
    pub ws_client_timeout_s: u64,
    /// Seconds a checked token is trusted without asking the database again: the longest a
    /// revocation takes to apply.
    pub token_cache_s: u64,
    /// The bearer token `GET /metrics` asks for; `None` (the default) serves no metrics.
    /// Apart from the users' tokens: a scraper sees figures about every user, and a user's
    /// token must not.
    pub metrics_token: Option<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            allowed_origins: Vec::new(),
            step_kinds: vec!["external".to_owned(), "wait".to_owned()],
            max_body_bytes: 1024 * 1024,
            max_frame_bytes: 64 * 1024,
            max_steps: 1000,
            max_substeps: 256,
            max_title_chars: 200,
            requests_per_second: 50,
            request_burst: 100,
            ws_queue_events: 256,
            ws_heartbeat_s: 15,
            ws_client_timeout_s: 45,
            token_cache_s: 10,
            metrics_token: None,
        }
    }
}

impl ApiSettings {
    fn validate(&self) -> Result<(), Violation> {
        in_range("api.max_body_bytes", self.max_body_bytes, 1024, Some(64 * 1024 * 1024))?;
        in_range("api.max_frame_bytes", self.max_frame_bytes, 1024, Some(16 * 1024 * 1024))?;
        in_range("api.max_steps", self.max_steps, 1, None)?;
        in_range("api.max_title_chars", self.max_title_chars, 1, None)?;
        in_range("api.requests_per_second", self.requests_per_second, 1, None)?;
        in_range("api.ws_queue_events", self.ws_queue_events, 8, None)?;
        in_range("api.ws_heartbeat_s", self.ws_heartbeat_s, 1, None)?;
        in_range("api.ws_client_timeout_s", self.ws_client_timeout_s, self.ws_heartbeat_s + 1, None)?;
        if let Some(token) = &self.metrics_token {
            let printable = token.bytes().all(|byte| byte.is_ascii_graphic());
            if token.len() < MIN_METRICS_TOKEN || !printable {
                return Err(Violation {
                    key: "api.metrics_token",
                    // A secret: only its length is shown.
                    value: format!("({} characters)", token.chars().count()),
                    reason: format!(
                        "expected at least {MIN_METRICS_TOKEN} printable characters without spaces, e.g. from `openssl rand -hex 24`"
                    ),
                });
            }
        }
        for origin in &self.allowed_origins {
            let well_formed = origin == "*"
                || (origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.trim_end_matches('/').split_once("://").is_some_and(|(_, host)| host.contains('/'));
            if !well_formed {
                return Err(Violation {
                    key: "api.allowed_origins",
                    value: format!("{origin:?}"),
                    reason: "expected an origin like https://app.example.com or *".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The shortest `api.metrics_token`: long enough not to be guessed over the network.
const MIN_METRICS_TOKEN: usize = 16;

/// The `[notifications]` section: how the notifier delivers to the endpoints users give
/// (chat webhooks) and how many messages a user gets before the rest become a digest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    /// Lets endpoints be plain `http` and on loopback, private or link-local addresses.
    /// Off by default: otherwise any user could make the server call into its own network.
    pub allow_private_endpoints: bool,
    /// Seconds one delivery attempt may take (connecting included), 1 to 300.
    pub timeout_s: u64,
    /// Attempts per message before giving up, 1 to 10.
    pub max_attempts: u32,
    /// Milliseconds before the first retry; each later retry waits twice as long. 1 to 600000.
    pub retry_backoff_ms: u64,
    /// Messages a user gets on one channel within `digest_window_s` before the rest are held
    /// and sent as one digest, at least 1.
    pub burst: u32,
    /// The throttling window, in seconds, at least 1.
    pub digest_window_s: u64,
    /// How long a push service keeps a message for a device that is offline, in seconds,
    /// up to 2419200 (4 weeks).
    pub push_ttl_s: u64,
    /// Who runs this server, for push services (the VAPID `sub` claim): `mailto:` or
    /// `https:`.
    pub vapid_subject: String,
    /// How long the Approve / Reject links of an approval push message work, in seconds,
    /// 1 to 2592000 (30 days).
    pub approval_link_ttl_s: u64,
    /// The server's address as people reach it (`http[s]://host[:port][/prefix]`), what links
    /// in notifications point at; `None` means `http://` and `server.listen` (with
    /// `localhost` for an unspecified address).
    pub public_url: Option<String>,
    /// The email channel.
    pub email: EmailSettings,
}

/// The `[notifications.email]` section: mail through an SMTP server the operator runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSettings {
    /// The SMTP server (see [`SmtpUrl`]); `None` switches email off.
    pub smtp_url: Option<String>,
    /// The sender, an address or `Name <address>`.
    pub from: String,
    /// A task is long, and so worth a mail by default, when its estimated duration at start
    /// is more than this many seconds.
    pub long_task_seconds: u64,
    /// A PEM file of certificates to trust for the SMTP server's TLS, besides the system's
    /// roots: for a mail relay with a private CA or a self-signed certificate. Absolute.
    pub ca_file: Option<PathBuf>,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            smtp_url: None,
            from: "Stepwise <stepwise@localhost>".to_owned(),
            long_task_seconds: 600,
            ca_file: None,
        }
    }
}

/// What starts each certificate in a PEM file.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

impl EmailSettings {
    /// The parsed `smtp_url`, if email is on.
    pub fn smtp(&self) -> Option<Result<SmtpUrl, String>> {
        self.smtp_url.as_deref().map(SmtpUrl::parse)
    }

    fn validate(&self) -> Result<(), Violation> {
        if let Some(Err(reason)) = self.smtp() {
            // The text as given may hold a password: show only what comes after it.
            let shown = self.smtp_url.as_deref().map_or_else(String::new, |url| match url.rsplit_once('@') {
                Some((_, host)) => format!("\"…@{host}\""),
                None => format!("{url:?}"),
            });
            return Err(Violation { key: "notifications.email.smtp_url", value: shown, reason });
        }
        if let Err(error) = self.from.parse::<lettre::message::Mailbox>() {
            return Err(Violation {
                key: "notifications.email.from",
                value: format!("{:?}", self.from),
                reason: format!(
                    "expected an address like stepwise@example.com or Stepwise <stepwise@example.com> ({error})"
                ),
            });
        }
        if let Some(path) = &self.ca_file {
            // Read now, so that a wrong path stops the server at start rather than every
            // mail later.
            let violation = |reason: String| Violation {
                key: "notifications.email.ca_file",
                value: format!("{:?}", path.display().to_string()),
                reason,
            };
            if !path.is_absolute() {
                return Err(violation("expected an absolute path".to_owned()));
            }
            let text = std::fs::read(path).map_err(|error| violation(format!("cannot read it: {error}")))?;
            if !text.windows(PEM_CERTIFICATE.len()).any(|window| window == PEM_CERTIFICATE.as_bytes()) {
                return Err(violation(format!("expected PEM certificates ({PEM_CERTIFICATE} …)")));
            }
        }
        Ok(())
    }
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            allow_private_endpoints: false,
            timeout_s: 10,
            max_attempts: 3,
            retry_backoff_ms: 1000,
            burst: 10,
            digest_window_s: 60,
            push_ttl_s: 86_400,
            vapid_subject: "mailto:stepwise@localhost".to_owned(),
            approval_link_ttl_s: 86_400,
            public_url: None,
            email: EmailSettings::default(),
        }
    }
}

impl NotificationSettings {
    fn validate(&self) -> Result<(), Violation> {
        in_range("notifications.timeout_s", self.timeout_s, 1, Some(300))?;
        in_range("notifications.max_attempts", self.max_attempts, 1, Some(10))?;
        in_range("notifications.retry_backoff_ms", self.retry_backoff_ms, 1, Some(600_000))?;
        in_range("notifications.burst", self.burst, 1, None)?;
        in_range("notifications.digest_window_s", self.digest_window_s, 1, None)?;
        in_range("notifications.push_ttl_s", self.push_ttl_s, 0, Some(2_419_200))?;
        in_range("notifications.approval_link_ttl_s", self.approval_link_ttl_s, 1, Some(2_592_000))?;
        if !(self.vapid_subject.starts_with("mailto:") || self.vapid_subject.starts_with("https://")) {
            return Err(Violation {
                key: "notifications.vapid_subject",
                value: format!("{:?}", self.vapid_subject),
                reason: "expected a mailto: or https: URL".to_owned(),
            });
        }
        if let Some(url) = &self.public_url {
            let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
            let well_formed = host.is_some_and(|rest| {
                let authority = rest.split('/').next().unwrap_or("");
                !authority.is_empty() && !authority.contains('@') && !rest.contains(['?', '#', ' '])
            });
            if !well_formed {
                return Err(Violation {
                    key: "notifications.public_url",
                    value: format!("{url:?}"),
                    reason: "expected an http or https URL like https://tasks.example.com, without query or fragment"
                        .to_owned(),
                });
            }
        }
        self.email.validate()
    }
}

impl Settings {
    /// The database URL to use: `database.url`, or else `sqlite://{data_dir}/stepwise.db`.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("stepwise.db").display()),
        }
    }

    /// Checks the rules that the types alone cannot express.
    pub(crate) fn validate(&self) -> Result<(), Violation> {
        // A relative data directory would depend on the working directory the server
        // happens to be started in.
        if !self.data_dir.is_absolute() {
            return Err(Violation {
                key: "data_dir",
                value: format!("{:?}", self.data_dir.display().to_string()),
                reason: "expected an absolute path".to_owned(),
            });
        }
        self.server.validate()?;
        self.database.validate()?;
        self.runtime.validate()?;
        self.api.validate()?;
        self.notifications.validate()
    }
}

/// A setting that parsed but breaks a rule.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    /// The full dotted key.
    pub(crate) key: &'static str,
    /// The value in TOML syntax.
    pub(crate) value: String,
    /// What would be allowed.
    pub(crate) reason: String,
}

fn in_range<T: PartialOrd + Display>(key: &'static str, value: T, min: T, max: Option<T>) -> Result<(), Violation> {
    let too_high = max.as_ref().is_some_and(|max| value > *max);
    if value >= min && !too_high {
        return Ok(());
    }
    let reason = match max {
        Some(max) => format!("expected {min} to {max}"),
        None => format!("expected at least {min}"),
    };
    Err(Violation { key, value: value.to_string(), reason })
}

fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| D::Error::invalid_value(Unexpected::Str(&text), &"an address like 127.0.0.1:8080"))
}

/// A list from a TOML array, or from comma-separated text (how an environment variable
/// carries one).
fn list_or_comma_separated<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    Ok(match ListOrText::deserialize(deserializer)? {
        ListOrText::List(items) => items,
        ListOrText::Text(text) => {
            text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
        }
    })
}

/// The data directory used when neither the file nor `STEPWISE_DATA_DIR` sets one.
///
/// `env` looks up an environment variable. In order: `$XDG_DATA_HOME/stepwise`, then
/// `$HOME/.local/share/stepwise`, then `/var/lib/stepwise` (a system service often has no
/// home). Variables that are empty or hold a relative path are skipped, as the XDG base
/// directory specification asks, so the result never depends on the working directory.
pub fn default_data_dir(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(data_home) = absolute("XDG_DATA_HOME") {
        return data_home.join("stepwise");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local/share/stepwise");
    }
    PathBuf::from("/var/lib/stepwise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_data_dir_prefers_xdg_then_home_then_var_lib() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("XDG_DATA_HOME", "/data"), ("HOME", "/home/ada")], "/data/stepwise"),
            (&[("HOME", "/home/ada")], "/home/ada/.local/share/stepwise"),
            // Empty or relative values would make the directory depend on the working
            // directory; they are skipped.
            (&[("XDG_DATA_HOME", ""), ("HOME", "/home/ada")], "/home/ada/.local/share/stepwise"),
            (&[("XDG_DATA_HOME", "data"), ("HOME", "/home/ada")], "/home/ada/.local/share/stepwise"),
            (&[("HOME", "")], "/var/lib/stepwise"),
            (&[("HOME", "ada")], "/var/lib/stepwise"),
            (&[], "/var/lib/stepwise"),
        ];
        for (env, expected) in cases {
            let lookup = |name: &str| {
                let found = env.iter().find(|(var, _)| *var == name);
                found.map(|(_, value)| value.to_string())
            };
            assert_eq!(default_data_dir(lookup), PathBuf::from(expected), "{env:?}");
        }
    }

    #[test]
    fn database_url_defaults_to_sqlite_in_data_dir() {
        let cases = [
            (None, "/srv/stepwise", "sqlite:///srv/stepwise/stepwise.db"),
            (None, "/srv/stepwise/", "sqlite:///srv/stepwise/stepwise.db"),
            (Some("postgres://db/x"), "/srv/stepwise", "postgres://db/x"),
        ];
        for (url, data_dir, expected) in cases {
            let settings = Settings {
                data_dir: PathBuf::from(data_dir),
                log: LogSettings::default(),
                server: ServerSettings::default(),
                database: DatabaseSettings { url: url.map(str::to_owned), ..DatabaseSettings::default() },
                runtime: RuntimeSettings::default(),
                api: ApiSettings::default(),
                notifications: NotificationSettings::default(),
            };
            assert_eq!(settings.database_url(), expected);
        }
    }

    #[test]
    fn log_level_names_match_the_settings_words() {
        let levels = [LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug, LogLevel::Trace];
        for level in levels {
            let parsed = LogLevel::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(
                level.as_str(),
            ));
            assert_eq!(parsed, Ok(level));
        }
    }
}
