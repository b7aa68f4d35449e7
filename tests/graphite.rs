//! The Graphite output against a plaintext line receiver on loopback: the paths of a flush
//! arrive over one connection with the record's timestamp, and records queued while the
//! receiver is down arrive in order when it is back, within the queue bound.

mod common;

use std::time::{Duration, Instant};

use common::sink::LineSink;
use common::*;

fn graphite_config(addr: &str, extra: &str) -> String {
    format!(
        "[server]\nudp = [\"127.0.0.1:0\"]\nshutdown_timeout_ms = 5000\n\
         [aggregation]\nflush_interval_ms = 10000\n\
         [[backends]]\nkind = \"graphite\"\naddress = {addr:?}\nretry_initial_ms = 10\n\
         retry_max_ms = 50\n{extra}\n"
    )
}

/// The values of `stats_counts.<name>` lines until `n` have come (or the patience ran out).
fn counts(sink: &LineSink, name: &str, n: usize) -> Vec<u64> {
    let prefix = format!("stats_counts.{name} ");
    let deadline = Instant::now() + PATIENCE;
    let mut values = Vec::new();
    while values.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(line) = sink.next(left) else { break };
        if let Some(rest) = line.strip_prefix(&prefix) {
            let value = rest.split(' ').next().expect("a value");
            values.push(value.parse().expect("an integer count"));
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_arrives_as_etsy_paths_with_the_records_timestamp() {
    let sink = LineSink::start("127.0.0.1:0");
    let agent = start(&graphite_config(&sink.addr.to_string(), "")).await;
    agent.send(&["api.requests:5|c\nqueue.depth:3|g\nlat:10|ms|#env:prod\nusers:a|s"]);
    agent.wait_lines(4).await;
    let record = agent.flush().await;
    let ts = record["timestamp"].as_u64().expect("timestamp");
    let mut lines = Vec::new();
    while let Some(line) = sink.next(Duration::from_millis(500)) {
        lines.push(line);
        if lines.iter().any(|l| l.starts_with("stats.tallyd.series ")) {
            break;
        }
    }
    for want in [
        "stats.api.requests 0.5",
        "stats_counts.api.requests 5",
        "stats.gauges.queue.depth 3",
        "stats.timers.lat.upper_90;env=prod 10",
        "stats.sets.users.count 1",
    ] {
        let want = format!("{want} {ts}");
        assert!(lines.contains(&want), "{want} not in {lines:#?}");
    }
    for line in &lines {
        assert!(line.ends_with(&format!(" {ts}")), "{line}");
    }
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_queued_while_carbon_is_down_arrive_in_order_when_it_is_back() {
    let mut sink = LineSink::start("127.0.0.1:0");
    let agent = start(&graphite_config(&sink.addr.to_string(), "")).await;
    agent.send(&["orders:1|c"]);
    agent.wait_lines(1).await;
    agent.flush().await;
    assert_eq!(counts(&sink, "orders", 1), [1]);

    sink.stop();
    for i in 2..=6u64 {
        agent.send(&[&format!("orders:{i}|c")]);
        agent.wait_lines(i).await;
        agent.flush().await;
    }
    sink.restart();
    assert_eq!(counts(&sink, "orders", 5), [2, 3, 4, 5, 6]);
    assert_eq!(agent.running.telemetry().dropped_records_total(), 0);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_queue_drops_the_oldest_and_counts_them() {
    let mut sink = LineSink::start("127.0.0.1:0");
    let agent = start(&graphite_config(&sink.addr.to_string(), "max_pending = 2")).await;
    sink.stop();
    for i in 1..=6u64 {
        agent.send(&[&format!("orders:{i}|c")]);
        agent.wait_lines(i).await;
        agent.flush().await;
    }
    // Six one-payload records, room for two: the sender gives a failed payload back to the
    // queue between attempts, so four are dropped, the oldest first. Each flush only queues
    // the record to the backend thread: wait for the drops rather than read them at once.
    let deadline = Instant::now() + PATIENCE;
    while agent.running.telemetry().dropped_records_total() < 4 {
        assert!(Instant::now() < deadline, "four payloads are dropped");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sink.restart();
    assert_eq!(
        counts(&sink, "orders", 2),
        [5, 6],
        "the newest two, in order"
    );
    assert_eq!(agent.running.telemetry().dropped_records_total(), 4);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_record_reaches_carbon_at_shutdown() {
    let sink = LineSink::start("127.0.0.1:0");
    let agent = start(&graphite_config(&sink.addr.to_string(), "")).await;
    agent.send(&["last:7|c"]);
    agent.wait_lines(1).await;
    agent.finish().await;
    assert_eq!(counts(&sink, "last", 1), [7]);
}
