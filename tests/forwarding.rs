//! StatsD forwarding over real loopback sockets: two edge agents forward their flushes to a
//! central agent (over UDP, and over TCP), and the central's figures equal, figure by
//! figure, those of one agent fed all of the traffic directly. And an outage of a TCP
//! receiver: what was forwarded meanwhile arrives, in order, when it is back.

mod common;

use std::time::{Duration, Instant};

use common::sink::LineSink;
use common::*;
use serde_json::Value;

/// The aggregation every agent of a test shares (`[aggregation]` keys).
const AGGREGATION: &str = "flush_interval_ms = 60000\npercentiles = [50, 90, 99, -10]\n\
                           [[aggregation.histograms]]\nmetric = \"api.latency\"\nbins = [15, 25]\n";

/// One agent: UDP and TCP on loopback (one receive thread, so a marker datagram is read
/// after everything before it), plus `backends`.
fn agent_config(backends: &str) -> String {
    let none = if backends.is_empty() {
        "backends = []\n"
    } else {
        ""
    };
    format!(
        "{none}[server]\nudp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\nudp_threads_per_socket = 1\n\
         shutdown_timeout_ms = 5000\n[aggregation]\n{AGGREGATION}\n{backends}\n"
    )
}

fn edge_config(address: &str, protocol: &str) -> String {
    agent_config(&format!(
        "[[backends]]\nkind = \"statsd\"\naddress = {address:?}\nprotocol = {protocol:?}\n\
         max_datagram_bytes = 16384\nretry_initial_ms = 10\nretry_max_ms = 50\n"
    ))
}

/// Each edge's share of the traffic: every kind, rates, tags; gauges apart per edge (a
/// gauge set on two hosts has no one value), everything else mixed.
fn traffic() -> [Vec<String>; 2] {
    let mut edges: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for i in 0..400u32 {
        let edge = &mut edges[(i % 2) as usize];
        edge.push(format!("api.latency:{}|ms", f64::from(i % 37) * 1.25 + 0.5));
        edge.push(format!("api.requests:{}|c|#env:prod", i % 5));
        if i % 3 == 0 {
            edge.push(format!("api.latency:{}|ms|@0.25", i % 11));
            edge.push("api.errors:1|c|@0.1".to_string());
        }
        edge.push(format!("payload.size:{}|h|#route:/a", i * 7 % 1000));
        edge.push(format!("cpu:{}|d|@0.5", f64::from(i) / 7.0 - 20.0));
        edge.push(format!("users:u{}|s", i % 150));
    }
    edges[0].push("temperature:-12.5|g".to_string());
    edges[0].push("queue.depth:40|g\nqueue.depth:-3|g".to_string());
    edges[1].push("disk.free:1e9|g|#mount:/".to_string());
    edges
}

/// Sends the lines in datagrams of 20.
fn send_lines(addr: std::net::SocketAddr, lines: &[String]) {
    for chunk in lines.chunks(20) {
        send_udp(addr, &[&chunk.join("\n")]);
    }
}

/// Every figure of every series of a record, keyed by name, type and tags.
fn figures(record: &Value) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for metric in record["metrics"].as_array().expect("metrics") {
        let series = format!("{} {} {}", metric["name"], metric["type"], metric["tags"]);
        for (figure, value) in metric.as_object().expect("object") {
            if let Some(value) = value.as_f64() {
                out.push((series.clone(), figure.clone(), value));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

async fn forwarded_figures_equal_direct_ones(protocol: &str) {
    let central = start(&agent_config("")).await;
    let direct = start(&agent_config("")).await;
    let target = match protocol {
        "udp" => central.udp(),
        _ => central.running.tcp_addrs()[0],
    };
    let edges = [
        start(&edge_config(&target.to_string(), protocol)).await,
        start(&edge_config(&target.to_string(), protocol)).await,
    ];
    let traffic = traffic();
    let mut forwarded_lines = 0u64;
    for (edge, lines) in edges.iter().zip(&traffic) {
        send_lines(edge.udp(), lines);
        send_lines(direct.udp(), lines);
        let sent: u64 = lines.iter().map(|l| l.lines().count() as u64).sum();
        edge.wait_lines(sent).await;
    }
    for edge in edges {
        // Shutting down flushes the edge and waits until its sender has handed every
        // payload to the socket.
        let record = edge.finish().await;
        // What the central must have read before it flushes: a line per series (each
        // timer's values fit one 16 KiB line here), a set's a line per member, a negative
        // gauge's two.
        for metric in record["metrics"].as_array().expect("metrics") {
            forwarded_lines += match metric["type"].as_str() {
                Some("set") => fig(metric, "count") as u64,
                Some("gauge") if fig(metric, "value") < 0.0 => 2,
                _ => 1,
            };
        }
    }
    let direct_lines: u64 = traffic
        .iter()
        .flatten()
        .map(|l| l.lines().count() as u64)
        .sum();
    direct.wait_lines(direct_lines).await;
    central.wait_lines(forwarded_lines).await;
    let central_record = central.flush().await;
    assert_eq!(
        central_record["internal"]["lines_received"].as_u64(),
        Some(forwarded_lines),
        "the central read exactly the lines forwarded"
    );
    let direct_record = direct.flush().await;

    let (got, want) = (figures(&central_record), figures(&direct_record));
    assert_eq!(
        got.iter().map(|(s, f, _)| (s, f)).collect::<Vec<_>>(),
        want.iter().map(|(s, f, _)| (s, f)).collect::<Vec<_>>(),
        "the same series and figures"
    );
    for ((series, figure, got), (_, _, want)) in got.iter().zip(&want) {
        let tolerance = 1e-9 * want.abs().max(1.0);
        assert!(
            (got - want).abs() <= tolerance,
            "{series} {figure}: central {got}, direct {want}"
        );
    }
    assert!(got.len() > 60, "{} figures compared", got.len());
    central.finish().await;
    direct.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_agent_fed_over_udp_computes_what_one_agent_fed_everything_does() {
    forwarded_figures_equal_direct_ones("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_agent_fed_over_tcp_computes_what_one_agent_fed_everything_does() {
    forwarded_figures_equal_direct_ones("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_forwarded_while_the_tcp_receiver_is_down_arrive_in_order() {
    let mut sink = LineSink::start("127.0.0.1:0");
    let edge = start(&edge_config(&sink.addr.to_string(), "tcp")).await;
    sink.stop();
    for i in 1..=4u64 {
        edge.send(&[&format!("orders:{i}|c")]);
        edge.wait_lines(i).await;
        edge.flush().await;
    }
    sink.restart();
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < 4 && Instant::now() < deadline {
        if let Some(line) = sink.next(Duration::from_millis(100)) {
            got.push(line);
        }
    }
    assert_eq!(
        got,
        ["orders:1|c", "orders:2|c", "orders:3|c", "orders:4|c"]
    );
    edge.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statsd_backend_added_by_a_reload_forwards_timer_values_and_set_members() {
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tallyd.toml");
    std::fs::write(&path, agent_config("")).expect("write");
    let config = tallyd::config::Config::load(&path).expect("valid");
    assert!(
        !config.aggregation.forward,
        "nothing kept without forwarding"
    );
    let running = tallyd::app::start_from(config, Some(path.clone()), Vec::new())
        .await
        .expect("starts");
    let address = receiver.local_addr().expect("addr").to_string();
    std::fs::write(&path, edge_config(&address, "udp")).expect("write");
    running.reload().await.expect("reloaded");
    // The shards take the new config at the next flush.
    running.flush_now().await;
    send_udp(running.udp_addrs()[0], &["t:5|ms\nt:7|ms\nu:x|s\nu:y|s"]);
    let deadline = Instant::now() + PATIENCE;
    while running.telemetry().lines_total() < 4 {
        assert!(Instant::now() < deadline, "the lines arrive");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.flush_now().await;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < 3 && Instant::now() < deadline {
        if let Ok(n) = receiver.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            got.extend(text.lines().map(str::to_string));
        }
    }
    got.sort();
    assert_eq!(got, ["t:5:7|ms", "u:x|s", "u:y|s"]);
    running.shutdown().await;
}
