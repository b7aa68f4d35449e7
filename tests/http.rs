//! The HTTP push backend against a real HTTP server in the test process, on loopback: what
//! arrives, in which order, through an outage (with drops by count and by bytes), gzipped,
//! and at shutdown; and that a hanging endpoint delays nobody.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::receiver::HttpReceiver;
use common::*;
use serde_json::Value;

/// An agent with one http backend posting to `url` (plus `extra` keys for it), fast
/// retries, and the capture backend `start` adds.
fn http_config(url: &str, extra: &str) -> String {
    format!(
        "[server]\nudp = [\"127.0.0.1:0\"]\nshutdown_timeout_ms = 5000\n\
         [aggregation]\nflush_interval_ms = 60000\n\
         [[backends]]\nkind = \"http\"\nurl = {url:?}\nretry_initial_ms = 10\nretry_max_ms = 50\n{extra}\n"
    )
}

/// Sends `name:value|c`, waits for it, flushes; returns the captured record.
async fn flush_count(agent: &Agent, name: &str, value: u64, lines_so_far: u64) -> Value {
    agent.send(&[&format!("{name}:{value}|c")]);
    agent.wait_lines(lines_so_far + 1).await;
    agent.flush().await
}

/// `record` as text and back: parsing loses the last bit of some floats, so a body is
/// compared with the captured record after the same trip.
fn reparsed(record: &Value) -> Value {
    serde_json::from_str(&record.to_string()).expect("JSON")
}

fn count(record: &Value, name: &str) -> f64 {
    fig(metric(record, name, "counter"), "count")
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Waits until the agent's backends have dropped `n` records since start.
async fn wait_dropped(agent: &Agent, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    while agent.running.telemetry().dropped_records_total() < n {
        assert!(Instant::now() < deadline, "{n} records are dropped");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Checks that the records delivered after an outage count `dropped` drops between them,
/// and that nothing else arrives.
fn assert_drops_reported(receiver: &HttpReceiver, delivered: &[&Value], dropped: u64) {
    let reported: u64 = delivered
        .iter()
        .map(|r| r["internal"]["dropped_records"].as_u64().expect("a count"))
        .sum();
    assert_eq!(reported, dropped, "each drop is counted in a later record");
    assert!(
        receiver.requests.try_recv().is_err(),
        "nothing else arrives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_whole_and_in_order() {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let agent = start(&http_config(&receiver.url(), "")).await;
    let mut captured = Vec::new();
    for i in 1..=3 {
        captured.push(flush_count(&agent, "orders", i, i - 1).await);
    }
    for (i, record) in captured.iter().enumerate() {
        let request = receiver.next();
        assert_eq!(request.method, "POST");
        assert_eq!(request.url, "/ingest");
        assert_eq!(request.header("Content-Type"), Some("application/json"));
        assert_eq!(request.header("Content-Encoding"), None);
        assert!(
            request
                .header("User-Agent")
                .is_some_and(|ua| ua.starts_with("tallyd/"))
        );
        let body = request.json();
        assert_eq!(body, reparsed(record), "the body is the record, whole");
        assert_close(count(&body, "orders"), (i + 1) as f64);
    }
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_queued_while_the_endpoint_is_down_arrive_in_order_when_it_is_back() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let agent = start(&http_config(&url, "")).await;
    for i in 1..=5 {
        let record = flush_count(&agent, "outage", i, i - 1).await;
        assert_close(count(&record, "outage"), i as f64);
    }
    let receiver = HttpReceiver::start(&format!("127.0.0.1:{port}"));
    let counts: Vec<f64> = (1..=5)
        .map(|_| count(&receiver.next().json(), "outage"))
        .collect();
    assert_eq!(counts, [1.0, 2.0, 3.0, 4.0, 5.0]);
    agent.running.shutdown().await;
    assert_close(count(&receiver.next().json(), "outage"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_and_a_later_record_counts_it() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let agent = start(&http_config(&url, "max_pending = 2")).await;
    for i in 1..=5 {
        let record = flush_count(&agent, "drops", i, i - 1).await;
        assert_close(count(&record, "drops"), i as f64);
    }
    // Five records into a queue of two: once the backend has taken them all, three were
    // dropped, and the endpoint comes back.
    wait_dropped(&agent, 3).await;
    let receiver = HttpReceiver::start(&format!("127.0.0.1:{port}"));
    // The two newest waited; the three oldest were dropped.
    let fourth = receiver.next().json();
    let fifth = receiver.next().json();
    assert_close(count(&fourth, "drops"), 4.0);
    assert_close(count(&fifth, "drops"), 5.0);
    agent.running.shutdown().await;
    let last = receiver.next().json();
    assert_close(count(&last, "drops"), 0.0);
    assert_drops_reported(&receiver, &[&fourth, &fifth, &last], 3);
}

/// Series in each padded record, so that its size dwarfs what varies between records.
const PAD_SERIES: u64 = 40;

/// Sends `bytes:value|c` and the same `PAD_SERIES` other counters, waits for them, flushes;
/// returns the captured record.
async fn flush_padded(agent: &Agent, value: u64, flushes_so_far: u64) -> Value {
    let mut lines: Vec<String> = (0..PAD_SERIES)
        .map(|n| format!("padding.series.{n:03}:1|c"))
        .collect();
    lines.push(format!("bytes:{value}|c"));
    agent.send(&[&lines.join("\n")]);
    agent
        .wait_lines((flushes_so_far + 1) * (PAD_SERIES + 1))
        .await;
    agent.flush().await
}

/// The size of a padded record's body, as one delivered to a live endpoint.
async fn padded_record_bytes() -> usize {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let agent = start(&http_config(&receiver.url(), "")).await;
    flush_padded(&agent, 1, 0).await;
    let bytes = receiver.next().body.len();
    agent.running.shutdown().await;
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_byte_budget_drops_the_oldest_and_a_later_record_counts_it() {
    // Room for two padded records and a half, and for a thousand by count: the bytes bind.
    let budget = padded_record_bytes().await * 5 / 2;
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let agent = start(&http_config(&url, &format!("max_pending_bytes = {budget}"))).await;
    for i in 1..=5 {
        let record = flush_padded(&agent, i, i - 1).await;
        assert_close(count(&record, "bytes"), i as f64);
    }
    wait_dropped(&agent, 3).await;
    let receiver = HttpReceiver::start(&format!("127.0.0.1:{port}"));
    let fourth = receiver.next();
    let fifth = receiver.next();
    assert!(
        fourth.body.len() + fifth.body.len() <= budget,
        "what waited fit the budget"
    );
    let (fourth, fifth) = (fourth.json(), fifth.json());
    assert_close(count(&fourth, "bytes"), 4.0);
    assert_close(count(&fifth, "bytes"), 5.0);
    agent.running.shutdown().await;
    let last = receiver.next().json();
    assert_close(count(&last, "bytes"), 0.0);
    assert_drops_reported(&receiver, &[&fourth, &fifth, &last], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_larger_than_the_byte_budget_are_still_sent_each_alone() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let agent = start(&http_config(&url, "max_pending_bytes = 1")).await;
    for i in 1..=3 {
        let record = flush_count(&agent, "huge", i, i - 1).await;
        assert_close(count(&record, "huge"), i as f64);
    }
    // Every record is over a one-byte budget: each new one drops the one waiting.
    wait_dropped(&agent, 2).await;
    let receiver = HttpReceiver::start(&format!("127.0.0.1:{port}"));
    let third = receiver.next().json();
    assert_close(count(&third, "huge"), 3.0);
    // With the endpoint up, an oversized record goes straight through.
    let fourth = flush_count(&agent, "huge", 4, 3).await;
    let delivered = receiver.next().json();
    assert_eq!(delivered, reparsed(&fourth));
    agent.running.shutdown().await;
    let last = receiver.next().json();
    assert_close(count(&last, "huge"), 0.0);
    assert_drops_reported(&receiver, &[&third, &delivered, &last], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_delay_the_json_file_backend() {
    // Connections complete in the listener's backlog, but nobody ever answers.
    let hanging = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/ingest", hanging.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.jsonl");
    let toml = format!(
        "[server]\nudp = [\"127.0.0.1:0\"]\nshutdown_timeout_ms = 500\n\
         [aggregation]\nflush_interval_ms = 60000\n\
         [[backends]]\nkind = \"http\"\nurl = {url:?}\ntimeout_ms = 60000\n\
         [[backends]]\nkind = \"json_file\"\npath = {:?}\n",
        path.display().to_string()
    );
    let agent = start(&toml).await;
    for i in 1..=5 {
        let started = Instant::now();
        flush_count(&agent, "hang", i, i - 1).await;
        wait_file_records(&path, i as usize, Duration::from_secs(2)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "flush {i} took {:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    agent.running.shutdown().await;
    // The http backend gives up at the shutdown deadline (0.5 s), not the 60 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(wait_file_records(&path, 6, PATIENCE).await, 6);
}

/// Waits (at most `patience`) until the JSON Lines file holds `n` records; returns how many.
async fn wait_file_records(path: &Path, n: usize, patience: Duration) -> usize {
    let deadline = Instant::now() + patience;
    loop {
        let lines = std::fs::read_to_string(path)
            .map(|text| text.lines().count())
            .unwrap_or(0);
        if lines >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "only {lines} of {n} records");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_decode_to_the_record() {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let agent = start(&http_config(&receiver.url(), "gzip = true")).await;
    let record = flush_count(&agent, "zipped", 7, 0).await;
    let request = receiver.next();
    assert_eq!(request.header("Content-Encoding"), Some("gzip"));
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert_eq!(&request.body[..2], &[0x1f, 0x8b], "a gzip stream");
    assert_eq!(request.json(), reparsed(&record));
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_record_is_delivered_at_shutdown() {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let agent = start(&http_config(&receiver.url(), "")).await;
    agent.send(&["last.words:3|c"]);
    agent.wait_lines(1).await;
    let captured = agent.finish().await;
    let delivered = receiver.next().json();
    assert_eq!(delivered, reparsed(&captured));
    assert_close(count(&delivered, "last.words"), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_are_retried_until_one_is_2xx() {
    let receiver = HttpReceiver::answering("127.0.0.1:0", vec![503, 500, 404]);
    let agent = start(&http_config(&receiver.url(), "")).await;
    let record = flush_count(&agent, "retried", 1, 0).await;
    let attempts: Vec<Value> = (0..4).map(|_| receiver.next().json()).collect();
    let record = reparsed(&record);
    assert!(
        attempts.iter().all(|body| body == &record),
        "the same record each time"
    );
    // The failures show in the next record.
    let next = flush_count(&agent, "retried", 2, 1).await;
    assert_eq!(next["internal"]["backend_errors"], 3);
    assert_eq!(receiver.next().json(), reparsed(&next));
    agent.running.shutdown().await;
}
