//! The `[server]` section: listeners and the receive path, as the file spells them, their
//! defaults, and validation into [`ServerConfig`]. `src/config.rs` composes it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Invalid, at_least_one, at_most, between};

/// Listeners and the receive path.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub unix: Vec<PathBuf>,
    pub udp_sockets_per_address: usize,
    pub udp_recv_buffer_bytes: usize,
    pub udp_batch: usize,
    /// The longest a UDP listener waits between light receives, to gather datagrams.
    pub udp_coalesce: Duration,
    pub max_datagram_bytes: usize,
    pub tcp_max_line_bytes: usize,
    /// Receive threads per UDP socket; 0 picks one per shard, and at least two when the
    /// agent may run on two cores, with a single socket per address, else one (see
    /// [`ServerConfig::udp_threads`]).
    pub udp_threads_per_socket: usize,
    /// The permission bits of the Unix socket files (0o722: anyone may send).
    pub unix_mode: u32,
    pub shutdown_timeout: Duration,
}

impl ServerConfig {
    /// The receive threads each UDP socket gets when there are `shards` shards and the agent
    /// may run on `cores` cores.
    pub fn udp_threads(&self, shards: usize, cores: usize) -> usize {
        match self.udp_threads_per_socket {
            0 if self.udp_sockets_per_address > 1 => 1,
            0 => shards.max(cores.min(2)).max(1),
            n => n,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    udp: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    unix: Vec<PathBuf>,
    udp_sockets_per_address: toml::Spanned<usize>,
    udp_recv_buffer_bytes: usize,
    udp_batch: toml::Spanned<usize>,
    udp_coalesce_us: toml::Spanned<u64>,
    max_datagram_bytes: toml::Spanned<usize>,
    tcp_max_line_bytes: toml::Spanned<usize>,
    udp_threads_per_socket: toml::Spanned<usize>,
    unix_mode: toml::Spanned<u32>,
    shutdown_timeout_ms: u64,
}

impl Default for RawServer {
    fn default() -> RawServer {
        RawServer {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 8125))],
            tcp: Vec::new(),
            unix: Vec::new(),
            udp_sockets_per_address: toml::Spanned::new(0..0, 1),
            udp_recv_buffer_bytes: 8 * 1024 * 1024,
            udp_batch: toml::Spanned::new(0..0, 256),
            udp_coalesce_us: toml::Spanned::new(0..0, 5_000),
            max_datagram_bytes: toml::Spanned::new(0..0, 65_535),
            tcp_max_line_bytes: toml::Spanned::new(0..0, 65_536),
            udp_threads_per_socket: toml::Spanned::new(0..0, 0),
            unix_mode: toml::Spanned::new(0..0, 0o722),
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// The coalescing wait stays well under what a receive buffer can hold at high rates.
fn coalesce(value: &toml::Spanned<u64>) -> Result<Duration, Invalid> {
    match *value.get_ref() {
        us @ 0..=100_000 => Ok(Duration::from_micros(us)),
        _ => Err(Invalid::at(value, "udp_coalesce_us must be at most 100000")),
    }
}

impl RawServer {
    pub(crate) fn validate(self) -> Result<ServerConfig, Invalid> {
        Ok(ServerConfig {
            udp_sockets_per_address: at_least_one(
                &self.udp_sockets_per_address,
                "udp_sockets_per_address",
            )?,
            udp_batch: between(&self.udp_batch, "udp_batch", 1, 1024)?,
            udp_coalesce: coalesce(&self.udp_coalesce_us)?,
            max_datagram_bytes: between(&self.max_datagram_bytes, "max_datagram_bytes", 1, 65_535)?,
            tcp_max_line_bytes: at_least_one(&self.tcp_max_line_bytes, "tcp_max_line_bytes")?,
            udp_threads_per_socket: at_most(
                &self.udp_threads_per_socket,
                "udp_threads_per_socket",
                64,
            )?,
            udp: self.udp,
            tcp: self.tcp,
            unix: self.unix,
            udp_recv_buffer_bytes: self.udp_recv_buffer_bytes,
            unix_mode: match *self.unix_mode.get_ref() {
                mode @ 0..=0o777 => mode,
                _ => {
                    return Err(Invalid::at(
                        &self.unix_mode,
                        "unix_mode must be permission bits, at most 0o777",
                    ));
                }
            },
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
        })
    }
}
