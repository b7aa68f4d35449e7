//! The `[[backends]]` entries: each output owns its raw section and validation beside its
//! code; this registry reads an entry's `kind` and hands the rest of the table to that
//! output. `src/config.rs` composes the list and turns a [`BackendInvalid`] into a
//! file:line:column error.

use serde::de::DeserializeOwned;

use super::sender::{QUEUE_KEYS, QueueConfig, RawQueueConfig};
use super::{console, graphite, http, json_file, otlp, remote_write, statsd};

/// One configured backend.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    Console { json: bool },
    JsonFile(json_file::JsonFileConfig),
    Http(http::HttpConfig),
    Graphite(graphite::GraphiteConfig),
    Statsd(statsd::StatsdConfig),
    RemoteWrite(remote_write::RemoteWriteConfig),
    Otlp(otlp::OtlpConfig),
}

impl BackendConfig {
    /// The name used in logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Console { .. } => "console",
            BackendConfig::JsonFile(_) => "json_file",
            BackendConfig::Http(_) => "http",
            BackendConfig::Graphite(_) => "graphite",
            BackendConfig::Statsd(_) => "statsd",
            BackendConfig::RemoteWrite(_) => "remote_write",
            BackendConfig::Otlp(_) => "otlp",
        }
    }

    /// The output needs what the export plan observes at each flush (`le` buckets, mapped
    /// quantiles), as `/metrics` does.
    pub fn needs_export(&self) -> bool {
        matches!(self, BackendConfig::RemoteWrite(_) | BackendConfig::Otlp(_))
    }

    /// An OTLP output: histogram bins need `le` counts observed for it too.
    pub fn is_otlp(&self) -> bool {
        matches!(self, BackendConfig::Otlp(_))
    }
}

/// What is wrong with one entry: at `key` (and below it, `sub`), or the entry as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInvalid {
    pub key: Option<String>,
    pub sub: Option<String>,
    pub message: String,
}

impl BackendInvalid {
    /// At the value of `key`.
    pub fn at(key: &str, message: impl std::fmt::Display) -> BackendInvalid {
        BackendInvalid {
            key: Some(key.to_string()),
            sub: None,
            message: message.to_string(),
        }
    }

    /// At the value of `key`'s entry `sub` (a header, say).
    pub fn at_sub(key: &str, sub: &str, message: impl std::fmt::Display) -> BackendInvalid {
        BackendInvalid {
            key: Some(key.to_string()),
            sub: Some(sub.to_string()),
            message: message.to_string(),
        }
    }

    /// At the entry itself.
    pub fn entry(message: impl std::fmt::Display) -> BackendInvalid {
        BackendInvalid {
            key: None,
            sub: None,
            message: message.to_string(),
        }
    }
}

/// The kinds, for error messages.
const KINDS: &str = "console, json_file, http, graphite, statsd, remote_write or otlp";

/// Validates one `[[backends]]` table.
///
/// # Errors
/// What is wrong and where.
pub fn validate(mut table: toml::Table) -> Result<BackendConfig, BackendInvalid> {
    let kind = match table.remove("kind") {
        Some(toml::Value::String(kind)) => kind,
        Some(_) => return Err(BackendInvalid::at("kind", format!("kind must be {KINDS}"))),
        None => return Err(BackendInvalid::entry(format!("missing `kind` ({KINDS})"))),
    };
    match kind.as_str() {
        "console" => console::validate(table).map(|json| BackendConfig::Console { json }),
        "json_file" => json_file::validate(table).map(BackendConfig::JsonFile),
        "http" => http::validate(table).map(BackendConfig::Http),
        "graphite" => graphite::validate(table).map(BackendConfig::Graphite),
        "statsd" => statsd::validate(table).map(BackendConfig::Statsd),
        "remote_write" => remote_write::validate(table).map(BackendConfig::RemoteWrite),
        "otlp" => otlp::validate(table).map(BackendConfig::Otlp),
        other => Err(BackendInvalid::at(
            "kind",
            format!("unknown backend kind {other:?}: use {KINDS}"),
        )),
    }
}

/// Reads an output's raw section from the rest of its table (unknown keys are errors).
///
/// # Errors
/// A wrong type or an unknown key, at the entry.
pub fn raw<T: DeserializeOwned>(table: toml::Table) -> Result<T, BackendInvalid> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| BackendInvalid::entry(e.message().trim()))
}

/// Takes the queue keys (`timeout_ms`, `max_pending`, ...) out of an output's table and
/// validates them, so every push output reads them the same way.
///
/// # Errors
/// A wrong type (at the entry) or a bad value (at its key).
pub fn take_queue(table: &mut toml::Table) -> Result<QueueConfig, BackendInvalid> {
    let mut queue = toml::Table::new();
    for key in QUEUE_KEYS {
        if let Some(value) = table.remove(key) {
            queue.insert(key.to_string(), value);
        }
    }
    let raw: RawQueueConfig = raw(queue)?;
    raw.validate()
        .map_err(|(key, message)| BackendInvalid::at(key, message))
}
