//! Helpers shared by the integration tests: start the agent on loopback with a capture
//! backend, send real datagrams, wait on the agent's own counters, read records.
#![allow(dead_code)]

pub mod binary;
pub mod client;
pub mod receiver;
pub mod sink;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde_json::Value;
use tallyd::app::{self, Running};
use tallyd::backend::CaptureBackend;
use tallyd::config::Config;

/// How long any wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running agent and the records its capture backend receives.
pub struct Agent {
    pub running: Running,
    pub records: Receiver<Value>,
}

/// A config from TOML text (`[server]` on loopback port 0 unless the text sets one; the API
/// on a free loopback port unless the text has an `[api]` section).
pub fn config(toml: &str) -> Config {
    let text = if toml.contains("[api]") {
        toml.to_string()
    } else {
        format!("{toml}\n[api]\nlisten = \"127.0.0.1:0\"\n")
    };
    Config::from_toml(&text, Path::new("test.toml")).expect("test config is valid")
}

/// Starts the agent with `toml` plus a capture backend.
pub async fn start(toml: &str) -> Agent {
    let (capture, records) = CaptureBackend::new();
    let running = app::start(config(toml), vec![Box::new(capture)])
        .await
        .expect("agent starts");
    Agent { running, records }
}

/// The usual test config: UDP on an ephemeral loopback port, a long interval (tests flush by
/// hand), no console output, plus `extra` (which may add `[aggregation]` keys).
pub fn base(aggregation: &str) -> String {
    format!(
        "backends = []\n[server]\nudp = [\"127.0.0.1:0\"]\n[aggregation]\nflush_interval_ms = 60000\n{aggregation}\n"
    )
}

impl Agent {
    pub fn udp(&self) -> SocketAddr {
        self.running.udp_addrs()[0]
    }

    /// Sends one datagram per element to the first UDP address.
    pub fn send(&self, datagrams: &[&str]) {
        send_udp(self.udp(), datagrams);
    }

    /// Waits until the agent has received `lines` lines since start.
    pub async fn wait_lines(&self, lines: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.running.telemetry().lines_total() < lines {
            assert!(
                Instant::now() < deadline,
                "agent received {} of {lines} lines",
                self.running.telemetry().lines_total()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Flushes now and returns the record.
    pub async fn flush(&self) -> Value {
        self.running.flush_now().await;
        self.next_record()
    }

    /// The next record the capture backend received.
    pub fn next_record(&self) -> Value {
        self.records
            .recv_timeout(PATIENCE)
            .expect("a record arrives")
    }

    /// Shuts down and returns the final record.
    pub async fn finish(self) -> Value {
        self.running.shutdown().await;
        let mut last = None;
        while let Ok(record) = self.records.try_recv() {
            last = Some(record);
        }
        last.expect("the final flush produced a record")
    }
}

pub fn send_udp(addr: SocketAddr, datagrams: &[&str]) {
    let bind = if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let socket = UdpSocket::bind(bind).expect("client socket");
    for datagram in datagrams {
        socket.send_to(datagram.as_bytes(), addr).expect("send");
    }
}

/// The metric of `record` with this name, type and no tags.
pub fn metric<'a>(record: &'a Value, name: &str, kind: &str) -> &'a Value {
    metric_tagged(record, name, kind, &serde_json::json!({}))
}

/// The metric of `record` with this name, type and exact tag object.
pub fn metric_tagged<'a>(record: &'a Value, name: &str, kind: &str, tags: &Value) -> &'a Value {
    find(record, name, kind, tags).unwrap_or_else(|| {
        panic!(
            "no {kind} {name} {tags} in {}",
            serde_json::to_string_pretty(&record["metrics"]).unwrap_or_default()
        )
    })
}

pub fn find<'a>(record: &'a Value, name: &str, kind: &str, tags: &Value) -> Option<&'a Value> {
    record["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name && m["type"] == kind && &m["tags"] == tags)
}

/// A figure as f64.
pub fn fig(metric: &Value, figure: &str) -> f64 {
    metric[figure]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {figure} in {metric}"))
}

pub fn assert_close(got: f64, want: f64) {
    let tolerance = 1e-9 * want.abs().max(1.0);
    assert!((got - want).abs() <= tolerance, "got {got}, want {want}");
}
