//! StatsD forwarding (SPEC §7.4): each flush's active series sent on as DogStatsD lines to
//! another StatsD agent, over UDP datagrams ([`UdpTransport`]) or one TCP connection
//! ([`TcpTransport`]), through the shared sender. A central tallyd fed by many forwarding
//! hosts computes what one tallyd given all of their traffic would.
//!
//! Forwarding needs what a record does not otherwise carry: the interval's timer values and
//! set members. A config with a `statsd` backend switches their keeping on
//! (`AggregationConfig::forward`); without one they cost nothing.

mod encode;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use self::encode::StatsdEncoder;
use super::config::{BackendInvalid, raw, take_queue};
use super::graphite::check_address;
use super::sender::tcp::TcpTransport;
use super::sender::udp::UdpTransport;
use super::sender::{Outbox, QueueConfig};
use super::{Backend, BackendError};
use crate::record::Record;
use crate::telemetry::Telemetry;

const NAME: &str = "statsd";

/// How lines travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

/// The forwarding output's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsdConfig {
    /// `host:port` of the receiving agent.
    pub address: String,
    pub protocol: Protocol,
    /// The longest datagram (UDP) or packed line (TCP).
    pub max_datagram_bytes: usize,
    pub queue: QueueConfig,
}

/// `kind = "statsd"` as the file spells it, less the queue keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatsdConfig {
    address: String,
    #[serde(default = "udp")]
    protocol: Protocol,
    #[serde(default = "default_max_datagram_bytes")]
    max_datagram_bytes: usize,
}

fn udp() -> Protocol {
    Protocol::Udp
}

/// An Ethernet MTU's worth, less IP and UDP headers and room for options.
fn default_max_datagram_bytes() -> usize {
    1432
}

/// The largest datagram UDP carries.
const MAX_UDP: usize = 65_507;

/// Validates a statsd entry.
///
/// # Errors
/// What is wrong, at its key.
pub(super) fn validate(mut table: toml::Table) -> Result<StatsdConfig, BackendInvalid> {
    let queue = take_queue(&mut table)?;
    let raw: RawStatsdConfig = raw(table)?;
    check_address(&raw.address).map_err(|e| BackendInvalid::at("address", e))?;
    if !(64..=MAX_UDP).contains(&raw.max_datagram_bytes) {
        return Err(BackendInvalid::at(
            "max_datagram_bytes",
            format!("max_datagram_bytes must be from 64 to {MAX_UDP}"),
        ));
    }
    Ok(StatsdConfig {
        address: raw.address,
        protocol: raw.protocol,
        max_datagram_bytes: raw.max_datagram_bytes,
        queue,
    })
}

/// Encodes records into its outbox.
pub struct StatsdBackend {
    outbox: Outbox,
    encoder: StatsdEncoder,
}

impl StatsdBackend {
    /// Starts the sender for `config`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        config: &StatsdConfig,
        telemetry: Arc<Telemetry>,
        shutdown_timeout: Duration,
    ) -> Result<StatsdBackend, BackendError> {
        let address = config.address.clone();
        let (outbox, datagrams) = match config.protocol {
            Protocol::Udp => (
                Outbox::spawn(
                    NAME,
                    UdpTransport::new(address),
                    &config.queue,
                    telemetry,
                    shutdown_timeout,
                )?,
                true,
            ),
            Protocol::Tcp => (
                Outbox::spawn(
                    NAME,
                    TcpTransport::new(address),
                    &config.queue,
                    telemetry,
                    shutdown_timeout,
                )?,
                false,
            ),
        };
        Ok(StatsdBackend {
            outbox,
            encoder: StatsdEncoder::new(datagrams, config.max_datagram_bytes),
        })
    }
}

impl Backend for StatsdBackend {
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
