//! Layering: the file and the `STEPWISE_*` variables merged into one table, then parsed and
//! checked, with errors that say which layer a bad value came from.
//!
//! The compiled-in defaults are not part of the table: every section is `#[serde(default)]`,
//! so a key that no layer sets takes its struct's `Default`. Only `data_dir` is inserted,
//! because its default depends on the environment.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use toml::{Table, Value};

use crate::de::{DeError, ValueDeserializer};
use crate::settings::{default_data_dir, Settings, Violation};
use crate::{ConfigError, Origin};

/// Variables with this prefix are settings.
const ENV_PREFIX: &str = "STEPWISE_";
/// Variables the binary reads itself, not settings: the configuration file, and where and as
/// whom the client commands (`stepwise report`, `stepwise pause` …) reach a server. A shell
/// that exports them can still run `stepwise serve`.
const BINARY_VARS: [&str; 3] = ["STEPWISE_CONFIG", "STEPWISE_URL", "STEPWISE_TOKEN"];
/// Separates the levels of a key in a variable name: `STEPWISE_SERVER__LISTEN`.
const ENV_LEVEL_SEPARATOR: &str = "__";

impl Settings {
    /// Loads the defaults, then the TOML `file` if given, then the `STEPWISE_*` variables of
    /// `env`, and validates the result.
    ///
    /// `env` is the whole environment (the binary passes `std::env::vars()`); it also supplies
    /// `HOME` and `XDG_DATA_HOME` for [`default_data_dir`]. The file is the only thing read.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigError> {
        // Sorted, so that with several bad variables the same one is reported every time.
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut layers = Layers::default();
        if let Some(path) = file {
            layers.add_file(path)?;
        }
        for (var, value) in &env {
            layers.add_env(var, value)?;
        }
        if !layers.table.contains_key("data_dir") {
            let dir = default_data_dir(|name| env.get(name).cloned());
            let dir = dir.to_string_lossy().into_owned();
            layers.table.insert("data_dir".to_owned(), Value::String(dir));
        }
        layers.parse()
    }
}

/// The merged table, and the layer that set each key (at every level) in it.
#[derive(Default)]
struct Layers {
    table: Table,
    origins: BTreeMap<Vec<String>, Origin>,
}

impl Layers {
    fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = fs::read_to_string(path).map_err(|cause| ConfigError::ReadFile { path: path.to_owned(), cause })?;
        self.table = text.parse().map_err(|cause| ConfigError::ParseFile { path: path.to_owned(), cause })?;
        record_keys(&self.table, &[], &Origin::File(path.to_owned()), &mut self.origins);
        Ok(())
    }

    /// Sets the key that `var` names to the text `value`, if `var` is a setting.
    fn add_env(&mut self, var: &str, value: &str) -> Result<(), ConfigError> {
        let Some(name) = var.strip_prefix(ENV_PREFIX) else {
            return Ok(());
        };
        if BINARY_VARS.contains(&var) {
            return Ok(());
        }
        let bad_name = |reason: String| ConfigError::EnvName { var: var.to_owned(), reason };
        let key: Vec<String> = name.to_lowercase().split(ENV_LEVEL_SEPARATOR).map(str::to_owned).collect();
        if key.iter().any(String::is_empty) {
            return Err(bad_name(format!(
                "key {:?} has an empty level (levels are separated by {ENV_LEVEL_SEPARATOR})",
                key.join(".")
            )));
        }
        let origin = Origin::Env(var.to_owned());
        let mut table = &mut self.table;
        for depth in 1..key.len() {
            let section = &key[..depth];
            self.origins.entry(section.to_vec()).or_insert_with(|| origin.clone());
            let entry = table.entry(&section[depth - 1]).or_insert_with(|| Value::Table(Table::new()));
            let Value::Table(inner) = entry else {
                let (section, key) = (section.join("."), key.join("."));
                return Err(bad_name(format!("{section} is not a section, cannot set {key}")));
            };
            table = inner;
        }
        table.insert(key[key.len() - 1].clone(), Value::String(value.to_owned()));
        self.origins.insert(key, origin);
        Ok(())
    }

    fn parse(self) -> Result<Settings, ConfigError> {
        let root = Value::Table(self.table);
        let settings: Settings = serde_path_to_error::deserialize(ValueDeserializer(&root)).map_err(|err| {
            let key = err.path().iter().map_while(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            });
            describe(&root, &self.origins, key.collect(), err.into_inner())
        })?;
        settings.validate().map_err(|Violation { key, value, reason }| {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            ConfigError::InvalidValue { origin: origin(&self.origins, &path), key: key.to_owned(), value, reason }
        })?;
        Ok(settings)
    }
}

/// Records `origin` for every key of `table`, at every level, below `prefix`.
fn record_keys(table: &Table, prefix: &[String], origin: &Origin, origins: &mut BTreeMap<Vec<String>, Origin>) {
    for (name, value) in table {
        let key = [prefix, std::slice::from_ref(name)].concat();
        if let Value::Table(inner) = value {
            record_keys(inner, &key, origin, origins);
        }
        origins.insert(key, origin.clone());
    }
}

/// The layer that set `key`, or else the nearest section above it.
fn origin(origins: &BTreeMap<Vec<String>, Origin>, key: &[String]) -> Origin {
    (0..=key.len()).rev().find_map(|len| origins.get(&key[..len])).cloned().unwrap_or(Origin::Default)
}

/// Turns a deserialization error at `key` into a message naming the key, value and layer.
fn describe(root: &Value, origins: &BTreeMap<Vec<String>, Origin>, key: Vec<String>, error: DeError) -> ConfigError {
    let value =
        key.iter().try_fold(root, |value, name| value.get(name)).map_or_else(|| "nothing".to_owned(), Value::to_string);
    match error {
        // The path already ends in the unknown key: it is recorded before the key is checked.
        DeError::UnknownField { expected } => {
            ConfigError::UnknownKey { origin: origin(origins, &key), key: key.join("."), expected: expected.join(", ") }
        }
        DeError::InvalidType { expected } => {
            ConfigError::InvalidType { origin: origin(origins, &key), key: key.join("."), expected, value }
        }
        DeError::InvalidValue { reason } => {
            ConfigError::InvalidValue { origin: origin(origins, &key), key: key.join("."), value, reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use super::*;
    use crate::{
        ApiSettings, DatabaseSettings, EmailSettings, LogFormat, LogLevel, LogSettings, NotificationSettings,
        RuntimeSettings, ServerSettings, SmtpTls,
    };

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(41),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Whatever the file and the variables say, loading gives settings or an error that
        /// says which; never a panic.
        #[test]
        fn any_file_and_variables_load_or_are_refused_with_a_reason(
            file in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "(\\[(server|database|runtime|api|log|notifications)\\]\n)?([a-z_]{1,20} = (\"[a-z0-9:/.]{0,12}\"|-?[0-9]{1,12}|true|\\[\\])\n){0,4}",
            ],
            variables in proptest::collection::vec(("STEPWISE_[A-Z_]{1,30}", "[ -~]{0,16}"), 0..4),
        ) {
            let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if let Err(message) = load(Some(&file), &variables) {
                proptest::prop_assert!(!message.is_empty());
            }
        }
    }

    /// Loads `file` (TOML text, written to a temporary file) and `env` with `HOME=/home/ada`;
    /// an error comes back as its message, the file's path replaced by `{file}`.
    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stepwise.toml");
        if let Some(text) = file {
            fs::write(&path, text).unwrap();
        }
        let env = [("HOME", "/home/ada")].iter().chain(env);
        let env = env.map(|(var, value)| (var.to_string(), value.to_string()));
        Settings::load(file.map(|_| path.as_path()), env)
            .map_err(|err| err.to_string().replace(&path.display().to_string(), "{file}"))
    }

    /// The documented defaults, written out rather than taken from the `Default` impls.
    fn defaults() -> Settings {
        Settings {
            data_dir: PathBuf::from("/home/ada/.local/share/stepwise"),
            log: LogSettings { level: LogLevel::Info, format: LogFormat::Text },
            server: ServerSettings {
                listen: "127.0.0.1:8080".parse().unwrap(),
                shutdown_timeout_s: 10,
                advertise_url: None,
            },
            database: DatabaseSettings { url: None, pool_size: 8, acquire_timeout_s: 5 },
            runtime: RuntimeSettings {
                instance_id: None,
                lease_ttl_s: 30,
                progress_flush_ms: 250,
                stderr_tail_lines: 20,
                max_running_tasks: 1000,
            },
            api: ApiSettings {
                allowed_origins: vec![],
                step_kinds: vec!["external".to_owned(), "wait".to_owned()],
                max_body_bytes: 1_048_576,
                max_frame_bytes: 65_536,
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
            },
            notifications: NotificationSettings {
                allow_private_endpoints: false,
                timeout_s: 10,
                max_attempts: 3,
                retry_backoff_ms: 1000,
                burst: 10,
                digest_window_s: 60,
                push_ttl_s: 86_400,
                vapid_subject: "mailto:stepwise@localhost".to_owned(),
                public_url: None,
                email: EmailSettings {
                    smtp_url: None,
                    from: "Stepwise <stepwise@localhost>".to_owned(),
                    long_task_seconds: 600,
                    ca_file: None,
                },
                approval_link_ttl_s: 86_400,
            },
        }
    }

    /// Variables given to [`load`].
    type Env = &'static [(&'static str, &'static str)];
    /// A file, variables, and how the settings differ from the defaults.
    type OverrideCase = (Option<&'static str>, Env, fn(&mut Settings));
    /// A file, variables, and the error message.
    type ErrorCase = (Option<&'static str>, Env, &'static str);

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        assert_eq!(load(None, &[]), Ok(defaults()));
    }

    #[test]
    fn a_file_can_set_every_key() {
        let file = r#"
            data_dir = "/srv/stepwise"
            [log]
            level = "trace"
            format = "json"
            [server]
            listen = "0.0.0.0:80"
            shutdown_timeout_s = 3
            advertise_url = "http://10.0.0.5:80"
            [database]
            url = "postgres://db/stepwise"
            pool_size = 16
            [runtime]
            instance_id = "worker-1"
            lease_ttl_s = 60
            progress_flush_ms = 100
            stderr_tail_lines = 5
            max_running_tasks = 50
            [api]
            allowed_origins = ["https://a.example", "http://127.0.0.1:3000"]
            step_kinds = ["exec"]
            max_body_bytes = 2048
            max_frame_bytes = 4096
            max_steps = 10
            max_substeps = 3
            max_title_chars = 20
            requests_per_second = 5
            request_burst = 0
            ws_queue_events = 8
            ws_heartbeat_s = 2
            ws_client_timeout_s = 5
            token_cache_s = 0
            metrics_token = "scrape-me-0123456789"
            [notifications]
            allow_private_endpoints = true
            timeout_s = 2
            max_attempts = 5
            retry_backoff_ms = 50
            burst = 3
            digest_window_s = 30
            push_ttl_s = 0
            vapid_subject = "https://ops.example.com"
            approval_link_ttl_s = 600
            public_url = "https://tasks.example.com/stepwise"
            [notifications.email]
            smtp_url = "smtps://ops:secret@mail.example.com"
            from = "ops@example.com"
            long_task_seconds = 60
        "#;
        let expected = Settings {
            data_dir: PathBuf::from("/srv/stepwise"),
            log: LogSettings { level: LogLevel::Trace, format: LogFormat::Json },
            server: ServerSettings {
                listen: addr("0.0.0.0:80"),
                shutdown_timeout_s: 3,
                advertise_url: Some("http://10.0.0.5:80".to_owned()),
            },
            database: DatabaseSettings {
                url: Some("postgres://db/stepwise".to_owned()),
                pool_size: 16,
                acquire_timeout_s: 5,
            },
            runtime: RuntimeSettings {
                instance_id: Some("worker-1".to_owned()),
                lease_ttl_s: 60,
                progress_flush_ms: 100,
                stderr_tail_lines: 5,
                max_running_tasks: 50,
            },
            api: ApiSettings {
                allowed_origins: vec!["https://a.example".to_owned(), "http://127.0.0.1:3000".to_owned()],
                step_kinds: vec!["exec".to_owned()],
                max_body_bytes: 2048,
                max_frame_bytes: 4096,
                max_steps: 10,
                max_substeps: 3,
                max_title_chars: 20,
                requests_per_second: 5,
                request_burst: 0,
                ws_queue_events: 8,
                ws_heartbeat_s: 2,
                ws_client_timeout_s: 5,
                token_cache_s: 0,
                metrics_token: Some("scrape-me-0123456789".to_owned()),
            },
            notifications: NotificationSettings {
                allow_private_endpoints: true,
                timeout_s: 2,
                max_attempts: 5,
                retry_backoff_ms: 50,
                burst: 3,
                digest_window_s: 30,
                push_ttl_s: 0,
                vapid_subject: "https://ops.example.com".to_owned(),
                public_url: Some("https://tasks.example.com/stepwise".to_owned()),
                email: EmailSettings {
                    smtp_url: Some("smtps://ops:secret@mail.example.com".to_owned()),
                    from: "ops@example.com".to_owned(),
                    long_task_seconds: 60,
                    ca_file: None,
                },
                approval_link_ttl_s: 600,
            },
        };
        assert_eq!(load(Some(file), &[]), Ok(expected));
    }

    #[test]
    fn layers_override_in_order() {
        let cases: &[OverrideCase] = &[
            (Some("[server]\nlisten = \"0.0.0.0:80\""), &[], |s| s.server.listen = addr("0.0.0.0:80")),
            // The variable wins over the file; the file's other keys stay.
            (
                Some("[server]\nlisten = \"0.0.0.0:80\"\nshutdown_timeout_s = 5"),
                &[("STEPWISE_SERVER__LISTEN", "127.0.0.1:0")],
                |s| {
                    s.server.listen = addr("127.0.0.1:0");
                    s.server.shutdown_timeout_s = 5;
                },
            ),
            (Some("data_dir = \"/srv/a\""), &[("STEPWISE_DATA_DIR", "/srv/b")], |s| {
                s.data_dir = PathBuf::from("/srv/b")
            }),
            (None, &[("STEPWISE_DATABASE__URL", "postgres://db/x")], |s| {
                s.database.url = Some("postgres://db/x".to_owned())
            }),
            (None, &[("STEPWISE_DATABASE__POOL_SIZE", "256")], |s| s.database.pool_size = 256),
            (None, &[("STEPWISE_LOG__LEVEL", "debug")], |s| s.log.level = LogLevel::Debug),
            (None, &[("STEPWISE_LOG__FORMAT", "json")], |s| s.log.format = LogFormat::Json),
            (Some("[log]\nformat = \"json\""), &[("STEPWISE_LOG__FORMAT", "text")], |s| s.log.format = LogFormat::Text),
            (None, &[("STEPWISE_API__METRICS_TOKEN", "0123456789abcdef")], |s| {
                s.api.metrics_token = Some("0123456789abcdef".to_owned())
            }),
            // Text that looks like a number stays text where the key takes text.
            (None, &[("STEPWISE_RUNTIME__INSTANCE_ID", "42")], |s| s.runtime.instance_id = Some("42".to_owned())),
            (None, &[("STEPWISE_RUNTIME__LEASE_TTL_S", "3")], |s| s.runtime.lease_ttl_s = 3),
            (None, &[("STEPWISE_RUNTIME__PROGRESS_FLUSH_MS", "10000")], |s| s.runtime.progress_flush_ms = 10_000),
            (None, &[("STEPWISE_RUNTIME__STDERR_TAIL_LINES", "0")], |s| s.runtime.stderr_tail_lines = 0),
            (None, &[("STEPWISE_RUNTIME__MAX_RUNNING_TASKS", "2")], |s| s.runtime.max_running_tasks = 2),
            (None, &[("STEPWISE_API__ALLOWED_ORIGINS", "https://a.example, *")], |s| {
                s.api.allowed_origins = vec!["https://a.example".to_owned(), "*".to_owned()]
            }),
            (None, &[("STEPWISE_API__REQUESTS_PER_SECOND", "7")], |s| s.api.requests_per_second = 7),
            (None, &[("STEPWISE_NOTIFICATIONS__ALLOW_PRIVATE_ENDPOINTS", "true")], |s| {
                s.notifications.allow_private_endpoints = true
            }),
            (None, &[("STEPWISE_NOTIFICATIONS__BURST", "2")], |s| s.notifications.burst = 2),
            (None, &[("STEPWISE_NOTIFICATIONS__PUBLIC_URL", "http://10.0.0.5:8080")], |s| {
                s.notifications.public_url = Some("http://10.0.0.5:8080".to_owned())
            }),
            (
                None,
                &[
                    ("STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL", "smtp://127.0.0.1:2525?tls=required"),
                    ("STEPWISE_NOTIFICATIONS__EMAIL__FROM", "Tasks <tasks@example.com>"),
                    ("STEPWISE_NOTIFICATIONS__EMAIL__LONG_TASK_SECONDS", "0"),
                ],
                |s| {
                    s.notifications.email = EmailSettings {
                        smtp_url: Some("smtp://127.0.0.1:2525?tls=required".to_owned()),
                        from: "Tasks <tasks@example.com>".to_owned(),
                        long_task_seconds: 0,
                        ca_file: None,
                    }
                },
            ),
            // A variable overrides one key of the file's email section; the others stay.
            (
                Some("[notifications.email]\nsmtp_url = \"smtp://mail.example.com\"\nlong_task_seconds = 5"),
                &[("STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL", "smtps://mail.example.com")],
                |s| {
                    s.notifications.email.smtp_url = Some("smtps://mail.example.com".to_owned());
                    s.notifications.email.long_task_seconds = 5;
                },
            ),
            (None, &[("STEPWISE_SERVER__SHUTDOWN_TIMEOUT_S", "+7")], |s| s.server.shutdown_timeout_s = 7),
            (None, &[("XDG_DATA_HOME", "/data")], |s| s.data_dir = PathBuf::from("/data/stepwise")),
            // Lower-case variable names map the same way.
            (None, &[("STEPWISE_server__Listen", "127.0.0.1:9")], |s| s.server.listen = addr("127.0.0.1:9")),
            // Not settings: the file's path, other programs' variables, a longer prefix.
            (None, &[("STEPWISE_CONFIG", "/etc/stepwise.toml"), ("PATH", "/bin"), ("STEPWISEX", "1")], |_| {}),
            (None, &[("STEPWISE_URL", "http://127.0.0.1:8080"), ("STEPWISE_TOKEN", "sw_x")], |_| {}),
        ];
        for (file, env, change) in cases {
            let mut expected = defaults();
            change(&mut expected);
            assert_eq!(load(*file, env), Ok(expected), "file {file:?}, env {env:?}");
        }
    }

    #[test]
    fn errors_name_the_key_the_value_and_the_layer() {
        let cases: &[ErrorCase] = &[
            (
                None,
                &[("STEPWISE_DATABASE__POOL_SIZE", "lots")],
                r#"invalid type for database.pool_size: expected an integer, got "lots" (from STEPWISE_DATABASE__POOL_SIZE)"#,
            ),
            (
                Some("[database]\npool_size = true"),
                &[],
                "invalid type for database.pool_size: expected an integer, got true (from {file})",
            ),
            (
                Some("[database]\npool_size = 2.5"),
                &[],
                "invalid type for database.pool_size: expected an integer, got 2.5 (from {file})",
            ),
            (
                None,
                &[("STEPWISE_DATABASE__POOL_SIZE", "-1")],
                r#"invalid value for database.pool_size: "-1" (expected an integer from 0 to 4294967295) (from STEPWISE_DATABASE__POOL_SIZE)"#,
            ),
            (
                Some("[server]\nlisten = \"abc\""),
                &[],
                r#"invalid value for server.listen: "abc" (expected an address like 127.0.0.1:8080) (from {file})"#,
            ),
            (
                Some("[server]\nlisten = \"127.0.0.1:1\""),
                &[("STEPWISE_SERVER__LISTEN", "localhost")],
                r#"invalid value for server.listen: "localhost" (expected an address like 127.0.0.1:8080) (from STEPWISE_SERVER__LISTEN)"#,
            ),
            (
                Some("[server]\nlisten = 8080"),
                &[],
                "invalid type for server.listen: expected a string, got 8080 (from {file})",
            ),
            (
                None,
                &[("STEPWISE_LOG__LEVEL", "verbose")],
                r#"invalid value for log.level: "verbose" (expected one of error, warn, info, debug, trace) (from STEPWISE_LOG__LEVEL)"#,
            ),
            (
                None,
                &[("STEPWISE_LOG__FORMAT", "logfmt")],
                r#"invalid value for log.format: "logfmt" (expected one of text, json) (from STEPWISE_LOG__FORMAT)"#,
            ),
            (
                Some("[log]\nformat = true"),
                &[],
                "invalid type for log.format: expected one of text, json, got true (from {file})",
            ),
            (
                Some("[log]\nlevel = 3"),
                &[],
                "invalid type for log.level: expected one of error, warn, info, debug, trace, got 3 (from {file})",
            ),
            (
                Some("log = \"debug\""),
                &[],
                r#"invalid type for log: expected a table of settings, got "debug" (from {file})"#,
            ),
            (
                Some("[runtime]\ninstance_id = 42"),
                &[],
                "invalid type for runtime.instance_id: expected a string, got 42 (from {file})",
            ),
        ];
        check_errors(cases);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let cases: &[ErrorCase] = &[
            (
                Some("[server]\nlissen = \"127.0.0.1:1\""),
                &[],
                "unknown key server.lissen (from {file}), expected one of: listen, shutdown_timeout_s, advertise_url",
            ),
            (
                Some("[notifications]\nsms = \"+15550100\""),
                &[],
                "unknown key notifications.sms (from {file}), expected one of: allow_private_endpoints, timeout_s, max_attempts, retry_backoff_ms, burst, digest_window_s, push_ttl_s, vapid_subject, approval_link_ttl_s, public_url, email",
            ),
            (
                None,
                &[("STEPWISE_NOTIFICATIONS__EMAIL__SMTP", "smtp://mail.example.com")],
                "unknown key notifications.email.smtp (from STEPWISE_NOTIFICATIONS__EMAIL__SMTP), expected one of: smtp_url, from, long_task_seconds, ca_file",
            ),
            (
                None,
                &[("STEPWISE_LOG__FMT", "json")],
                "unknown key log.fmt (from STEPWISE_LOG__FMT), expected one of: level, format",
            ),
            (
                None,
                &[("STEPWISE_FOO", "1")],
                "unknown key foo (from STEPWISE_FOO), expected one of: data_dir, log, server, database, runtime, api, notifications",
            ),
            (
                None,
                &[("STEPWISE_SERVER__PORT", "80")],
                "unknown key server.port (from STEPWISE_SERVER__PORT), expected one of: listen, shutdown_timeout_s, advertise_url",
            ),
            (
                None,
                &[("STEPWISE_SERVER_LISTEN", "127.0.0.1:1")],
                "unknown key server_listen (from STEPWISE_SERVER_LISTEN), expected one of: data_dir, log, server, database, runtime, api, notifications",
            ),
            (
                None,
                &[("STEPWISE_LIMITS__MAX_TASKS", "3")],
                "unknown key limits (from STEPWISE_LIMITS__MAX_TASKS), expected one of: data_dir, log, server, database, runtime, api, notifications",
            ),
            (
                None,
                &[("STEPWISE_SERVER____LISTEN", "127.0.0.1:1")],
                r#"environment variable STEPWISE_SERVER____LISTEN does not name a setting: key "server..listen" has an empty level (levels are separated by __)"#,
            ),
            (
                None,
                &[("STEPWISE_", "1")],
                r#"environment variable STEPWISE_ does not name a setting: key "" has an empty level (levels are separated by __)"#,
            ),
            (
                Some("data_dir = \"/srv\""),
                &[("STEPWISE_DATA_DIR__SUB", "1")],
                "environment variable STEPWISE_DATA_DIR__SUB does not name a setting: data_dir is not a section, cannot set data_dir.sub",
            ),
        ];
        check_errors(cases);
    }

    #[test]
    fn values_out_of_range_are_errors() {
        let cases: &[ErrorCase] = &[
            (
                Some("[database]\npool_size = 0"),
                &[],
                "invalid value for database.pool_size: 0 (expected 1 to 256) (from {file})",
            ),
            (
                None,
                &[("STEPWISE_DATABASE__POOL_SIZE", "257")],
                "invalid value for database.pool_size: 257 (expected 1 to 256) (from STEPWISE_DATABASE__POOL_SIZE)",
            ),
            (
                None,
                &[("STEPWISE_RUNTIME__LEASE_TTL_S", "2")],
                "invalid value for runtime.lease_ttl_s: 2 (expected at least 3) (from STEPWISE_RUNTIME__LEASE_TTL_S)",
            ),
            (
                Some("[runtime]\nmax_running_tasks = 0"),
                &[],
                "invalid value for runtime.max_running_tasks: 0 (expected 1 to 1000000) (from {file})",
            ),
            (
                Some("[runtime]\nprogress_flush_ms = 9"),
                &[],
                "invalid value for runtime.progress_flush_ms: 9 (expected 10 to 10000) (from {file})",
            ),
            (
                None,
                &[("STEPWISE_RUNTIME__PROGRESS_FLUSH_MS", "10001")],
                "invalid value for runtime.progress_flush_ms: 10001 (expected 10 to 10000) (from STEPWISE_RUNTIME__PROGRESS_FLUSH_MS)",
            ),
            (
                None,
                &[("STEPWISE_DATA_DIR", "data")],
                r#"invalid value for data_dir: "data" (expected an absolute path) (from STEPWISE_DATA_DIR)"#,
            ),
                    (
                None,
                &[("STEPWISE_API__ALLOWED_ORIGINS", "example.com")],
                r#"invalid value for api.allowed_origins: "example.com" (expected an origin like https://app.example.com or *) (from STEPWISE_API__ALLOWED_ORIGINS)"#,
            ),
            (
                None,
                &[("STEPWISE_SERVER__ADVERTISE_URL", "10.0.0.5:8080")],
                r#"invalid value for server.advertise_url: "10.0.0.5:8080" (expected a URL like http://10.0.0.5:8080) (from STEPWISE_SERVER__ADVERTISE_URL)"#,
            ),
            (
                Some("[api]\nws_heartbeat_s = 30\nws_client_timeout_s = 30"),
                &[],
                "invalid value for api.ws_client_timeout_s: 30 (expected at least 31) (from {file})",
            ),
            (
                None,
                &[("STEPWISE_API__METRICS_TOKEN", "short")],
                "invalid value for api.metrics_token: (5 characters) (expected at least 16 printable characters without spaces, e.g. from `openssl rand -hex 24`) (from STEPWISE_API__METRICS_TOKEN)",
            ),
            (
                Some("[api]\nmetrics_token = \"a long token with spaces\""),
                &[],
                "invalid value for api.metrics_token: (24 characters) (expected at least 16 printable characters without spaces, e.g. from `openssl rand -hex 24`) (from {file})",
            ),
            (
                None,
                &[("STEPWISE_NOTIFICATIONS__MAX_ATTEMPTS", "0")],
                "invalid value for notifications.max_attempts: 0 (expected 1 to 10) (from STEPWISE_NOTIFICATIONS__MAX_ATTEMPTS)",
            ),
            (
                None,
                &[("STEPWISE_NOTIFICATIONS__APPROVAL_LINK_TTL_S", "0")],
                "invalid value for notifications.approval_link_ttl_s: 0 (expected 1 to 2592000) (from STEPWISE_NOTIFICATIONS__APPROVAL_LINK_TTL_S)",
            ),
            (
                None,
                &[("STEPWISE_NOTIFICATIONS__VAPID_SUBJECT", "ops@example.com")],
                r#"invalid value for notifications.vapid_subject: "ops@example.com" (expected a mailto: or https: URL) (from STEPWISE_NOTIFICATIONS__VAPID_SUBJECT)"#,
            ),
            (
                None,
                &[("STEPWISE_NOTIFICATIONS__PUBLIC_URL", "tasks.example.com")],
                r#"invalid value for notifications.public_url: "tasks.example.com" (expected an http or https URL like https://tasks.example.com, without query or fragment) (from STEPWISE_NOTIFICATIONS__PUBLIC_URL)"#,
            ),
            (
                None,
                &[("STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL", "http://mail.example.com")],
                r#"invalid value for notifications.email.smtp_url: "http://mail.example.com" (expected smtp://[USER:PASSWORD@]HOST[:PORT][?tls=none|opportunistic|required] or smtps://[USER:PASSWORD@]HOST[:PORT]) (from STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL)"#,
            ),
            (
                Some("[notifications.email]\nsmtp_url = \"smtp://ops:secret@mail.example.com?tls=always\""),
                &[],
                r#"invalid value for notifications.email.smtp_url: "…@mail.example.com?tls=always" (unknown query "tls=always": expected tls=none, tls=opportunistic or tls=required) (from {file})"#,
            ),
            (
                None,
                &[("STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL", "smtp://mail.example.com:99999")],
                r#"invalid value for notifications.email.smtp_url: "smtp://mail.example.com:99999" ("99999" is not a port (1 to 65535)) (from STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL)"#,
            ),
            (
                None,
                &[("STEPWISE_NOTIFICATIONS__EMAIL__LONG_TASK_SECONDS", "ten minutes")],
                r#"invalid type for notifications.email.long_task_seconds: expected an integer, got "ten minutes" (from STEPWISE_NOTIFICATIONS__EMAIL__LONG_TASK_SECONDS)"#,
            ),
        ];
        check_errors(cases);
    }

    fn check_errors(cases: &[ErrorCase]) {
        for (file, env, message) in cases {
            assert_eq!(load(*file, env).as_ref().map_err(String::as_str), Err(*message), "file {file:?}, env {env:?}");
        }
    }

    #[test]
    fn a_bad_sender_is_an_error_and_the_smtp_url_parses() {
        let message = load(None, &[("STEPWISE_NOTIFICATIONS__EMAIL__FROM", "stepwise at example.com")]).unwrap_err();
        let prefix = r#"invalid value for notifications.email.from: "stepwise at example.com" (expected an address like stepwise@example.com or Stepwise <stepwise@example.com> ("#;
        assert!(message.starts_with(prefix), "{message}");
        assert!(message.ends_with(")) (from STEPWISE_NOTIFICATIONS__EMAIL__FROM)"), "{message}");

        let settings = load(None, &[("STEPWISE_NOTIFICATIONS__EMAIL__SMTP_URL", "smtp://127.0.0.1:2525")]).unwrap();
        let smtp = settings.notifications.email.smtp().unwrap().unwrap();
        assert_eq!((smtp.tls, smtp.host.as_str(), smtp.port), (SmtpTls::None, "127.0.0.1", 2525));
        assert!(load(None, &[]).unwrap().notifications.email.smtp().is_none(), "email is off by default");
    }

    #[test]
    fn the_smtp_ca_file_must_be_an_absolute_path_to_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n").unwrap();
        let with = |path: &Path| {
            let path = path.display().to_string();
            load(None, &[("STEPWISE_NOTIFICATIONS__EMAIL__CA_FILE", path.as_str())])
        };
        assert_eq!(with(&pem).unwrap().notifications.email.ca_file, Some(pem.clone()));

        let missing = dir.path().join("missing.pem");
        let cases = [
            (Path::new("ca.pem"), "expected an absolute path".to_owned()),
            (missing.as_path(), "cannot read it: No such file or directory (os error 2)".to_owned()),
            (key.as_path(), "expected PEM certificates (-----BEGIN CERTIFICATE----- …)".to_owned()),
        ];
        for (path, reason) in cases {
            let expected = format!(
                "invalid value for notifications.email.ca_file: {:?} ({reason}) (from STEPWISE_NOTIFICATIONS__EMAIL__CA_FILE)",
                path.display().to_string()
            );
            assert_eq!(with(path), Err(expected));
        }
    }

    #[test]
    fn a_file_that_is_not_toml_is_an_error_naming_it() {
        let message = load(Some("[server"), &[]).unwrap_err();
        assert!(message.starts_with("invalid TOML in config file {file}: "), "{message}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let err = Settings::load(Some(&path), []).unwrap_err();
        let prefix = format!("cannot read config file {}: ", path.display());
        assert!(err.to_string().starts_with(&prefix), "{err}");
    }
}
