//! The remote_write output against a real HTTP server in the test process, on loopback:
//! the three headers and a body that decodes (snappy block, then protobuf) to the flush's
//! series; which answers are retried and which dropped; and an outage after which every
//! request arrives, in order.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;

use common::receiver::{HttpReceiver, Received};
use common::*;
use prost::Message;
use tallyd::backend::remote_write::proto::WriteRequest;

/// An agent (host `web-7`) with one remote_write backend posting to `url`, fast retries.
fn rw_config(url: &str, extra: &str) -> String {
    format!(
        "host = \"web-7\"\n[server]\nudp = [\"127.0.0.1:0\"]\nshutdown_timeout_ms = 5000\n\
         [aggregation]\nflush_interval_ms = 60000\n\
         [[backends]]\nkind = \"remote_write\"\nurl = {url:?}\nretry_initial_ms = 10\n\
         retry_max_ms = 50\n{extra}\n"
    )
}

/// Every sample of a request: the labels and the value.
fn decode(request: &Received) -> Vec<(BTreeMap<String, String>, f64)> {
    let plain = snap::raw::Decoder::new()
        .decompress_vec(&request.body)
        .expect("snappy block format");
    let write = WriteRequest::decode(&plain[..]).expect("a WriteRequest");
    write
        .timeseries
        .iter()
        .map(|ts| {
            let labels = ts
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            (labels, ts.samples[0].value)
        })
        .collect()
}

/// The value of the series named `name` in a request.
fn value(request: &Received, name: &str) -> Option<f64> {
    decode(request)
        .into_iter()
        .find(|(labels, _)| labels["__name__"] == name)
        .map(|(_, v)| v)
}

async fn flush_counter(agent: &Agent, value: u64, lines_so_far: u64) {
    agent.send(&[&format!("orders:{value}|c|#env:prod")]);
    agent.wait_lines(lines_so_far + 1).await;
    agent.flush().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_the_headers_and_the_flushs_series() {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let extra = "headers = { X-Scope-OrgID = \"fleet\" }";
    let agent = start(&rw_config(&receiver.url(), extra)).await;
    flush_counter(&agent, 3, 0).await;
    flush_counter(&agent, 4, 1).await;
    let first = receiver.next();
    assert_eq!(first.method, "POST");
    assert_eq!(first.header("Content-Encoding"), Some("snappy"));
    assert_eq!(first.header("Content-Type"), Some("application/x-protobuf"));
    assert_eq!(
        first.header("X-Prometheus-Remote-Write-Version"),
        Some("0.1.0")
    );
    assert_eq!(first.header("X-Scope-OrgID"), Some("fleet"));
    let samples = decode(&first);
    let (labels, v) = samples
        .iter()
        .find(|(l, _)| l["__name__"] == "orders_total")
        .expect("the counter");
    assert_eq!(*v, 3.0);
    assert_eq!(labels["instance"], "web-7");
    assert_eq!(labels["env"], "prod");
    assert_eq!(
        value(&receiver.next(), "orders_total"),
        Some(7.0),
        "cumulative"
    );
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_other_4xx_dropped() {
    // 503: retried. 429 without retry_on_429: dropped. 400: dropped.
    let receiver = HttpReceiver::answering("127.0.0.1:0", vec![503, 429, 400]);
    let agent = start(&rw_config(&receiver.url(), "")).await;
    for i in 0..3 {
        flush_counter(&agent, 1, i).await;
    }
    let got: Vec<Option<f64>> = (0..4)
        .map(|_| value(&receiver.next(), "orders_total"))
        .collect();
    // Flush 1 twice (503, then 429), flush 2 once (400), flush 3 delivered.
    assert_eq!(got, [Some(1.0), Some(1.0), Some(2.0), Some(3.0)]);
    assert!(receiver.requests.try_recv().is_err(), "nothing more");
    assert!(agent.running.telemetry().dropped_records_total() >= 2);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_429_retries_it() {
    let receiver = HttpReceiver::answering("127.0.0.1:0", vec![429]);
    let agent = start(&rw_config(&receiver.url(), "retry_on_429 = true")).await;
    flush_counter(&agent, 5, 0).await;
    let got: Vec<Option<f64>> = (0..2)
        .map(|_| value(&receiver.next(), "orders_total"))
        .collect();
    assert_eq!(got, [Some(5.0), Some(5.0)], "the same request again");
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_every_request_arrives_in_order() {
    // A port nothing listens on, for now.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let agent = start(&rw_config(&url, "")).await;
    for i in 0..5 {
        flush_counter(&agent, 1, i).await;
    }
    let receiver = HttpReceiver::start(&format!("127.0.0.1:{port}"));
    let got: Vec<Option<f64>> = (0..5)
        .map(|_| value(&receiver.next(), "orders_total"))
        .collect();
    assert_eq!(got, [Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(5.0)]);
    assert_eq!(agent.running.telemetry().dropped_records_total(), 0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_new_mapping_renames_what_follows() {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tallyd.toml");
    let mapping = dir.path().join("mapping.yml");
    let text = rw_config(&receiver.url(), "") + "[api]\nlisten = \"\"\n";
    std::fs::write(&path, &text).expect("write");
    let config = tallyd::config::Config::load(&path).expect("valid");
    let running = tallyd::app::start_from(config, Some(path.clone()), Vec::new())
        .await
        .expect("starts");
    let flush = |value: u64, lines: u64| {
        let running = &running;
        async move {
            send_udp(
                running.udp_addrs()[0],
                &[&format!("orders:{value}|c|#env:prod")],
            );
            let deadline = std::time::Instant::now() + PATIENCE;
            while running.telemetry().lines_total() < lines {
                assert!(std::time::Instant::now() < deadline, "lines arrive");
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            running.flush_now().await;
        }
    };
    flush(1, 1).await;
    assert_eq!(value(&receiver.next(), "orders_total"), Some(1.0));
    std::fs::write(
        &mapping,
        "mappings:\n  - match: \"orders\"\n    name: \"sales\"\n",
    )
    .expect("mapping");
    let with_mapping = text.replace(
        "[api]",
        &format!(
            "[prometheus]\nmapping_file = {:?}\n[api]",
            mapping.display().to_string()
        ),
    );
    std::fs::write(&path, with_mapping).expect("write");
    running.reload().await.expect("the reload is taken");
    flush(1, 2).await;
    let request = receiver.next();
    assert_eq!(
        value(&request, "sales_total"),
        Some(2.0),
        "the same backend, its totals kept"
    );
    let old = value(&request, "orders_total").expect("the old name once more");
    assert_eq!(old.to_bits(), 0x7ff0_0000_0000_0002, "its stale marker");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_queue_keeps_the_newest_and_counts_the_rest() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let agent = start(&rw_config(&url, "max_pending = 2")).await;
    for i in 0..5 {
        flush_counter(&agent, 1, i).await;
    }
    // Five requests for a queue of two: the sender holds one on the wire (retrying) and
    // two wait, so at least two of the five are dropped, the oldest waiting first.
    let receiver = HttpReceiver::start(&format!("127.0.0.1:{port}"));
    let mut got = Vec::new();
    while let Ok(request) = receiver
        .requests
        .recv_timeout(std::time::Duration::from_secs(2))
    {
        got.push(value(&request, "orders_total").expect("the counter"));
    }
    let dropped = agent.running.telemetry().dropped_records_total();
    assert_eq!(got.len() as u64 + dropped, 5, "{got:?}, {dropped} dropped");
    assert!(got.len() <= 3, "{got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert_eq!(got.last(), Some(&5.0), "the newest kept");
    agent.running.shutdown().await;
}
