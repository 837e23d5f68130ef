//! The one error type of this crate, and where a rejected value came from.

use std::fmt;
use std::path::PathBuf;

/// Why [`Settings::load`](crate::Settings::load) rejected the configuration.
///
/// Every message names the key (dotted, as in the TOML file), the offending value and the
/// layer it came from. Causes (I/O, TOML syntax) are part of the message rather than a
/// `source()`, so printing the error alone says everything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {cause}", path.display())]
    ReadFile {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        cause: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("invalid TOML in config file {}: {cause}", path.display())]
    ParseFile {
        /// The file that was read.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        cause: toml::de::Error,
    },
    /// A `STEPWISE_*` variable whose name cannot be turned into a key.
    #[error("environment variable {var} does not name a setting: {reason}")]
    EnvName {
        /// The variable's name.
        var: String,
        /// Why it cannot be mapped.
        reason: String,
    },
    /// A key that the settings tree does not have (often a typo).
    #[error("unknown key {key} ({origin}), expected one of: {expected}")]
    UnknownKey {
        /// The full dotted key, e.g. `server.lissen`.
        key: String,
        /// The keys allowed at that level, comma-separated.
        expected: String,
        /// Where the key was set.
        origin: Origin,
    },
    /// A value of the wrong kind, e.g. text where a number belongs.
    #[error("invalid type for {key}: expected {expected}, got {value} ({origin})")]
    InvalidType {
        /// The full dotted key.
        key: String,
        /// What the key takes, e.g. `an integer`.
        expected: String,
        /// The value as written in TOML syntax, e.g. `"lots"`.
        value: String,
        /// Where the value was set.
        origin: Origin,
    },
    /// A value of the right kind that is not allowed, e.g. out of range.
    #[error("invalid value for {key}: {value} ({reason}) ({origin})")]
    InvalidValue {
        /// The full dotted key.
        key: String,
        /// The value as written in TOML syntax, e.g. `"abc"` or `0`.
        value: String,
        /// What would be allowed, e.g. `expected 1 to 256`.
        reason: String,
        /// Where the value was set.
        origin: Origin,
    },
}

/// The layer a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled in.
    Default,
    /// The configuration file at this path.
    File(PathBuf),
    /// The environment variable of this name.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("from the defaults"),
            Origin::File(path) => write!(f, "from {}", path.display()),
            Origin::Env(var) => write!(f, "from {var}"),
        }
    }
}
