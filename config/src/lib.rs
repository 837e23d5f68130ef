//! The typed settings of the `stepwise` server, layered from compiled-in defaults, then an
//! optional TOML file, then `STEPWISE_*` environment variables, and validated once at start.
//! This crate only parses and validates: it reads the one file it is given and nothing else,
//! and never looks for files relative to the working directory. [`Settings::load`] takes the
//! environment as a list of pairs, so tests never touch the process environment.
//!
//! # Keys
//!
//! A variable names a key in upper case with `__` between levels (a single `_` stays inside
//! a key name): `STEPWISE_SERVER__LISTEN=127.0.0.1:0` sets `listen` in `[server]`. Variables
//! are text and are read as numbers or booleans where the key needs one (so is quoted text in
//! the file, e.g. `pool_size = "16"`). `STEPWISE_CONFIG` is not a setting: the binary reads
//! the file path from it. Any other `STEPWISE_*` variable that names no key is an error, so a
//! typo is never silently ignored.
//!
//! | key | default | environment variable | rule |
//! |---|---|---|---|
//! | `data_dir` | [`default_data_dir`] | `STEPWISE_DATA_DIR` | absolute path |
//! | `log.level` | `"info"` | `STEPWISE_LOG__LEVEL` | `error`, `warn`, `info`, `debug` or `trace` |
//! | `log.format` | `"text"` | `STEPWISE_LOG__FORMAT` | `text` or `json` (one JSON object per line, with the fields of its spans, e.g. `request_id`) |
//! | `server.listen` | `"127.0.0.1:8080"` | `STEPWISE_SERVER__LISTEN` | IP address and port |
//! | `server.shutdown_timeout_s` | `10` | `STEPWISE_SERVER__SHUTDOWN_TIMEOUT_S` | seconds |
//! | `server.advertise_url` | none: `http://` and the bound address | `STEPWISE_SERVER__ADVERTISE_URL` | `http://` or `https://` URL other servers reach this one at |
//! | `database.url` | none: `sqlite://{data_dir}/stepwise.db` | `STEPWISE_DATABASE__URL` | `sqlite://` or `postgres://` URL |
//! | `database.pool_size` | `8` | `STEPWISE_DATABASE__POOL_SIZE` | 1 to 256 |
//! | `database.acquire_timeout_s` | `5` | `STEPWISE_DATABASE__ACQUIRE_TIMEOUT_S` | seconds a request waits for a connection before answering 503 `unavailable`, 1 to 300 |
//! | `runtime.instance_id` | none: chosen by the runtime | `STEPWISE_RUNTIME__INSTANCE_ID` | text |
//! | `runtime.lease_ttl_s` | `30` | `STEPWISE_RUNTIME__LEASE_TTL_S` | seconds, at least 3 |
//! | `runtime.progress_flush_ms` | `250` | `STEPWISE_RUNTIME__PROGRESS_FLUSH_MS` | milliseconds, 10 to 10000 |
//! | `runtime.stderr_tail_lines` | `20` | `STEPWISE_RUNTIME__STDERR_TAIL_LINES` | lines |
//! | `runtime.max_running_tasks` | `1000` | `STEPWISE_RUNTIME__MAX_RUNNING_TASKS` | tasks running at once on this server, 1 to 1000000 (paused and approval-waiting ones do not count); more queue for any server with room |
//! | `api.allowed_origins` | `[]`: the server's own origin only | `STEPWISE_API__ALLOWED_ORIGINS` | origins or `*`; comma-separated in the variable |
//! | `api.step_kinds` | `["external", "wait"]` | `STEPWISE_API__STEP_KINDS` | kinds a plan sent over the API may use (`exec` runs programs on the server: add it deliberately); comma-separated in the variable |
//! | `api.max_body_bytes` | `1048576` | `STEPWISE_API__MAX_BODY_BYTES` | 1024 to 67108864 |
//! | `api.max_frame_bytes` | `65536` | `STEPWISE_API__MAX_FRAME_BYTES` | 1024 to 16777216 |
//! | `api.max_steps` | `1000` | `STEPWISE_API__MAX_STEPS` | at least 1 |
//! | `api.max_substeps` | `256` | `STEPWISE_API__MAX_SUBSTEPS` | count |
//! | `api.max_title_chars` | `200` | `STEPWISE_API__MAX_TITLE_CHARS` | at least 1 |
//! | `api.requests_per_second` | `50` | `STEPWISE_API__REQUESTS_PER_SECOND` | per token, at least 1 |
//! | `api.request_burst` | `100` | `STEPWISE_API__REQUEST_BURST` | requests above the rate |
//! | `api.ws_queue_events` | `256` | `STEPWISE_API__WS_QUEUE_EVENTS` | events, at least 8 |
//! | `api.ws_heartbeat_s` | `15` | `STEPWISE_API__WS_HEARTBEAT_S` | seconds, at least 1 |
//! | `api.ws_client_timeout_s` | `45` | `STEPWISE_API__WS_CLIENT_TIMEOUT_S` | seconds, more than the heartbeat; also how long any connection's peer may leave the server's data unread before it is dropped |
//! | `api.token_cache_s` | `10` | `STEPWISE_API__TOKEN_CACHE_S` | seconds |
//! | `api.metrics_token` | none: no metrics served | `STEPWISE_API__METRICS_TOKEN` | the bearer token `GET /metrics` asks for: at least 16 printable characters without spaces |
//! | `notifications.allow_private_endpoints` | `false` | `STEPWISE_NOTIFICATIONS__ALLOW_PRIVATE_ENDPOINTS` | `true` lets chat webhooks and push endpoints be `http` and on loopback or private addresses (checked on the address connected to) |
//! | `notifications.timeout_s` | `10` | `STEPWISE_NOTIFICATIONS__TIMEOUT_S` | seconds per delivery attempt, 1 to 300 |
//! | `notifications.max_attempts` | `3` | `STEPWISE_NOTIFICATIONS__MAX_ATTEMPTS` | 1 to 10 |
//! | `notifications.retry_backoff_ms` | `1000` | `STEPWISE_NOTIFICATIONS__RETRY_BACKOFF_MS` | milliseconds before the first retry (doubling), 1 to 600000 |
//! | `notifications.burst` | `10` | `STEPWISE_NOTIFICATIONS__BURST` | messages per user and channel per window before a digest, at least 1 |
//! | `notifications.digest_window_s` | `60` | `STEPWISE_NOTIFICATIONS__DIGEST_WINDOW_S` | seconds, at least 1 |
//! | `notifications.push_ttl_s` | `86400` | `STEPWISE_NOTIFICATIONS__PUSH_TTL_S` | seconds a push service keeps a message for an offline device, up to 2419200 |
//! | `notifications.vapid_subject` | `"mailto:stepwise@localhost"` | `STEPWISE_NOTIFICATIONS__VAPID_SUBJECT` | contact for push services: a `mailto:` or `https:` URL |
//! | `notifications.approval_link_ttl_s` | `86400` | `STEPWISE_NOTIFICATIONS__APPROVAL_LINK_TTL_S` | seconds the Approve / Reject links of an approval push work, 1 to 2592000 |
//! | `notifications.public_url` | none: `http://` and `server.listen` (`localhost` for an unspecified address) | `STEPWISE_NOTIFICATIONS__PUBLIC_URL` | `http(s)://host[:port][/prefix]`, what links in notifications point at |
//! | `notifications.email.smtp_url` | none: no email | `STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL` | `smtp://[USER:PASSWORD@]HOST[:PORT][?tls=none\|opportunistic\|required]` (STARTTLS; plain without `tls`) or `smtps://…` (implicit TLS); see [`SmtpUrl`] |
//! | `notifications.email.from` | `"Stepwise <stepwise@localhost>"` | `STEPWISE_NOTIFICATIONS__EMAIL__FROM` | an address or `Name <address>` |
//! | `notifications.email.long_task_seconds` | `600` | `STEPWISE_NOTIFICATIONS__EMAIL__LONG_TASK_SECONDS` | seconds: by default only tasks estimated at start to take longer get mail |
//! | `notifications.email.ca_file` | none: the system's roots only | `STEPWISE_NOTIFICATIONS__EMAIL__CA_FILE` | absolute path of a PEM file of certificates to trust for the SMTP server's TLS as well (a private CA, a self-signed relay); read at load |
//!
//! A file setting all of them:
//!
//! ```toml
//! data_dir = "/var/lib/stepwise"
//!
//! [log]
//! level = "info"
//! format = "text"
//!
//! [server]
//! listen = "127.0.0.1:8080"
//! shutdown_timeout_s = 10
//! advertise_url = "http://10.0.0.5:8080"
//!
//! [database]
//! url = "postgres://stepwise@localhost/stepwise"
//! pool_size = 8
//!
//! [runtime]
//! instance_id = "worker-1"
//! lease_ttl_s = 30
//! progress_flush_ms = 250
//! stderr_tail_lines = 20
//! max_running_tasks = 1000
//!
//! [api]
//! allowed_origins = ["https://tasks.example.com"]
//! step_kinds = ["external", "wait", "exec"]
//! max_body_bytes = 1048576
//! max_frame_bytes = 65536
//! max_steps = 1000
//! max_substeps = 256
//! max_title_chars = 200
//! requests_per_second = 50
//! request_burst = 100
//! ws_queue_events = 256
//! ws_heartbeat_s = 15
//! ws_client_timeout_s = 45
//! token_cache_s = 10
//! metrics_token = "3f6c0e1b9a2d4c8e7f5a1b3c"
//!
//! [notifications]
//! allow_private_endpoints = false
//! timeout_s = 10
//! max_attempts = 3
//! retry_backoff_ms = 1000
//! burst = 10
//! digest_window_s = 60
//! push_ttl_s = 86400
//! vapid_subject = "mailto:ops@example.com"
//! approval_link_ttl_s = 86400
//! public_url = "https://tasks.example.com"
//!
//! [notifications.email]
//! smtp_url = "smtp://stepwise:secret@mail.example.com:587?tls=required"
//! from = "Stepwise <stepwise@example.com>"
//! long_task_seconds = 600
//! ca_file = "/etc/stepwise/mail-ca.pem"
//! ```
//!
//! # Errors
//!
//! Every [`ConfigError`] names the dotted key, the value and where it came from, e.g.
//! `invalid type for database.pool_size: expected an integer, got "lots" (from
//! STEPWISE_DATABASE__POOL_SIZE)`.

mod de;
mod error;
mod load;
mod settings;
mod smtp;

pub use error::{ConfigError, Origin};
pub use settings::{
    default_data_dir, ApiSettings, DatabaseSettings, EmailSettings, LogFormat, LogLevel, LogSettings,
    NotificationSettings, RuntimeSettings, ServerSettings, Settings,
};
pub use smtp::{SmtpTls, SmtpUrl};
