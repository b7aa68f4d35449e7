//! The Graphite output (SPEC §7.3): each record as plaintext lines `<path> <value> <ts>\n`
//! over one persistent TCP connection ([`TcpTransport`]) through the shared sender.
//!
//! Paths are etsy statsd's (`backends/graphite.js`), in both `legacy_namespace` modes;
//! the encoder ([`encode`]) writes a flush straight into payload buffers of about 1 MiB, so a
//! million-series record is a few hundred payloads the queue bounds and orders like any other.

mod encode;
mod number;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use self::encode::{GraphiteEncoder, Namespaces};
use super::config::{BackendInvalid, raw, take_queue};
use super::sender::tcp::TcpTransport;
use super::sender::{Outbox, QueueConfig};
use super::{Backend, BackendError};
use crate::record::Record;
use crate::telemetry::Telemetry;

const NAME: &str = "graphite";

/// The Graphite output's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphiteConfig {
    /// `host:port` of carbon's plaintext (line) receiver.
    pub address: String,
    pub names: NameConfig,
    /// Timeout, queue bounds and retry delays.
    pub queue: QueueConfig,
}

/// etsy statsd's naming options, under its meanings.
#[derive(Debug, Clone, PartialEq)]
pub struct NameConfig {
    pub legacy_namespace: bool,
    pub global_prefix: String,
    pub prefix_counter: String,
    pub prefix_timer: String,
    pub prefix_gauge: String,
    pub prefix_set: String,
    /// Appended as `.<suffix>` when not empty.
    pub global_suffix: String,
    /// Counters' counts too, not only their rates.
    pub flush_counts: bool,
}

impl Default for NameConfig {
    fn default() -> NameConfig {
        NameConfig {
            legacy_namespace: true,
            global_prefix: "stats".into(),
            prefix_counter: "counters".into(),
            prefix_timer: "timers".into(),
            prefix_gauge: "gauges".into(),
            prefix_set: "sets".into(),
            global_suffix: String::new(),
            flush_counts: true,
        }
    }
}

/// `kind = "graphite"` as the file spells it, less the queue keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraphiteConfig {
    address: String,
    #[serde(default = "yes")]
    legacy_namespace: bool,
    #[serde(default = "stats")]
    global_prefix: String,
    #[serde(default = "counters")]
    prefix_counter: String,
    #[serde(default = "timers")]
    prefix_timer: String,
    #[serde(default = "gauges")]
    prefix_gauge: String,
    #[serde(default = "sets")]
    prefix_set: String,
    #[serde(default)]
    global_suffix: String,
    #[serde(default = "yes")]
    flush_counts: bool,
}

fn yes() -> bool {
    true
}
fn stats() -> String {
    "stats".into()
}
fn counters() -> String {
    "counters".into()
}
fn timers() -> String {
    "timers".into()
}
fn gauges() -> String {
    "gauges".into()
}
fn sets() -> String {
    "sets".into()
}

/// Validates a graphite entry.
///
/// # Errors
/// What is wrong, at its key.
pub(super) fn validate(mut table: toml::Table) -> Result<GraphiteConfig, BackendInvalid> {
    let queue = take_queue(&mut table)?;
    let raw: RawGraphiteConfig = raw(table)?;
    check_address(&raw.address).map_err(|e| BackendInvalid::at("address", e))?;
    for (key, value) in [
        ("global_prefix", &raw.global_prefix),
        ("prefix_counter", &raw.prefix_counter),
        ("prefix_timer", &raw.prefix_timer),
        ("prefix_gauge", &raw.prefix_gauge),
        ("prefix_set", &raw.prefix_set),
        ("global_suffix", &raw.global_suffix),
    ] {
        if value
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b';')
        {
            return Err(BackendInvalid::at(
                key,
                format!("{key} may not hold whitespace, control characters or `;`"),
            ));
        }
    }
    Ok(GraphiteConfig {
        address: raw.address,
        names: NameConfig {
            legacy_namespace: raw.legacy_namespace,
            global_prefix: raw.global_prefix,
            prefix_counter: raw.prefix_counter,
            prefix_timer: raw.prefix_timer,
            prefix_gauge: raw.prefix_gauge,
            prefix_set: raw.prefix_set,
            global_suffix: raw.global_suffix,
            flush_counts: raw.flush_counts,
        },
        queue,
    })
}

/// A `host:port` (checked for shape only: names resolve when connecting).
///
/// # Errors
/// What is missing.
pub fn check_address(address: &str) -> Result<(), String> {
    let port = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .map(|(_, port)| port);
    match port.map(str::parse::<u16>) {
        Some(Ok(port)) if port != 0 => Ok(()),
        _ => Err(format!(
            "address must be host:port with a port from 1 to 65535, not {address:?}"
        )),
    }
}

/// Encodes records into its outbox.
pub struct GraphiteBackend {
    outbox: Outbox,
    encoder: GraphiteEncoder,
}

impl GraphiteBackend {
    /// Starts the sender for `config`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        config: &GraphiteConfig,
        telemetry: Arc<Telemetry>,
        shutdown_timeout: Duration,
    ) -> Result<GraphiteBackend, BackendError> {
        let transport = TcpTransport::new(config.address.clone());
        let outbox = Outbox::spawn(NAME, transport, &config.queue, telemetry, shutdown_timeout)?;
        Ok(GraphiteBackend {
            outbox,
            encoder: GraphiteEncoder::new(&config.names),
        })
    }
}

impl Backend for GraphiteBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        let outbox = &mut self.outbox;
        self.encoder.encode(record, |payload| outbox.push(payload));
        Ok(())
    }

    fn close(&mut self, deadline: Instant) -> Result<(), BackendError> {
        self.outbox.close(deadline)
    }
}

#[cfg(test)]
mod tests;
