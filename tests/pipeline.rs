//! End to end over real UDP on loopback: lines in, figures out of the flush record.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_kind_arrives_with_its_figures() {
    every_metric_kind(&base("shards = 2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_shard_and_receive_thread_give_the_same_figures() {
    // One thread and one shard: lines are folded straight into the shard.
    let toml = base("shards = 1").replace("[server]\n", "[server]\nudp_threads_per_socket = 1\n");
    every_metric_kind(&toml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receive_threads_on_one_shard_give_the_same_figures() {
    // Two threads: counters and timers wait in each thread's local table until the flush.
    let toml = base("shards = 1").replace("[server]\n", "[server]\nudp_threads_per_socket = 2\n");
    every_metric_kind(&toml).await;
}

/// Several senders at once into two receive threads (each with its own local table) while
/// the test flushes over and over: every counter sample and every timer value is in exactly
/// one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_threads_local_tables_lose_and_double_nothing_across_flushes() {
    const SENDERS: usize = 4;
    const ROUNDS: usize = 3;
    const DATAGRAMS: usize = 100;
    // Small exact_samples: timer values past it in one thread's interval go to the shard,
    // which then sketches; count, sum, lower and upper stay exact either way.
    let toml = base("shards = 2\nexact_samples = 50").replace(
        "[server]\n",
        "[server]\nudp_threads_per_socket = 2\nudp_batch = 8\n",
    );
    let agent = start(&toml).await;
    let addr = agent.udp();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let datagrams: Vec<String> = (0..DATAGRAMS)
                        .map(|i| {
                            // 10 lines: 4 counters over 20 series, 4 timer values over 3
                            // series, a gauge and a timer line with three values.
                            let mut lines = Vec::new();
                            for j in 0..4 {
                                lines.push(format!("c{}:{}|c", (i + j) % 20, sender + 1));
                                lines.push(format!("t{}:{}|ms", (i + j) % 3, i % 100));
                            }
                            lines.push(format!("g{sender}:{i}|g"));
                            lines.push(format!("multi:{round}:{i}:{sender}|ms"));
                            lines.join("\n")
                        })
                        .collect();
                    let refs: Vec<&str> = datagrams.iter().map(String::as_str).collect();
                    // Paced, so that a receive buffer at the usual rmem_max cap holds them.
                    for chunk in refs.chunks(10) {
                        send_udp(addr, chunk);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    // Flush over and over while the lines arrive, so that drains meet receive threads
    // folding into their tables.
    let mut records = Vec::new();
    while senders.iter().any(|sender| !sender.is_finished()) {
        records.push(agent.flush().await);
    }
    for sender in senders {
        sender.join().expect("sender ends");
    }
    agent
        .wait_lines((ROUNDS * SENDERS * DATAGRAMS * 10) as u64)
        .await;
    records.push(agent.finish().await);
    assert!(records.len() > 2, "flushed while sending");

    let total = |name: &str, kind: &str, figure: &str| -> f64 {
        records
            .iter()
            .filter_map(|r| find(r, name, kind, &json!({})))
            // An idle timer has no figures besides its counts.
            .filter_map(|m| m[figure].as_f64())
            .sum()
    };
    let all = |name: &str, kind: &str, figure: &str| -> Vec<f64> {
        records
            .iter()
            .filter_map(|r| find(r, name, kind, &json!({})))
            .filter_map(|m| m[figure].as_f64())
            .collect()
    };
    let sends = (ROUNDS * SENDERS * DATAGRAMS) as f64;
    let counter_sum: f64 = (0..20)
        .map(|i| total(&format!("c{i}"), "counter", "count"))
        .sum();
    // Each datagram adds 4 × (sender + 1): 4 × (1 + 2 + 3 + 4) per datagram index.
    assert_eq!(counter_sum, (ROUNDS * DATAGRAMS) as f64 * 4.0 * 10.0);
    let timer_count: f64 = (0..3)
        .map(|i| total(&format!("t{i}"), "timer", "count"))
        .sum();
    assert_eq!(timer_count, sends * 4.0);
    let timer_sum: f64 = (0..3)
        .map(|i| total(&format!("t{i}"), "timer", "sum"))
        .sum();
    let per_sender: usize = (0..DATAGRAMS).map(|i| 4 * (i % 100)).sum();
    assert_eq!(timer_sum, (ROUNDS * SENDERS * per_sender) as f64);
    assert_eq!(total("multi", "timer", "count"), sends * 3.0);
    let lowest = all("multi", "timer", "lower")
        .into_iter()
        .fold(f64::MAX, f64::min);
    let highest = all("multi", "timer", "upper")
        .into_iter()
        .fold(f64::MIN, f64::max);
    assert_eq!((lowest, highest), (0.0, (DATAGRAMS - 1) as f64));
    for sender in 0..SENDERS {
        // Rapid flushes age an idle series fast: look at every record that has the gauge.
        let values = all(&format!("g{sender}"), "gauge", "value");
        assert!(!values.is_empty(), "g{sender} reported");
        assert!(values.iter().all(|v| (0.0..DATAGRAMS as f64).contains(v)));
    }
    let dropped: u64 = records
        .iter()
        .map(|r| r["internal"]["dropped_series"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(dropped, 0);
}

async fn every_metric_kind(toml: &str) {
    let agent = start(toml).await;
    agent.send(&[
        "api.requests:40|c\napi.requests:1|c|@0.5",
        "queue.depth:17|g",
        "api.latency:10|ms\napi.latency:20:30|ms",
        "users.online:alice|s\nusers.online:bob|s\nusers.online:alice|s",
        "payload:-2.5|h\nsizes:4|d",
        "meter.hits:3|m",
    ]);
    agent.wait_lines(10).await;
    let record = agent.finish().await;

    let requests = metric(&record, "api.requests", "counter");
    assert_close(fig(requests, "count"), 42.0);
    assert_close(fig(requests, "rate"), 42.0 / 60.0);
    assert_close(fig(metric(&record, "queue.depth", "gauge"), "value"), 17.0);
    assert_close(fig(metric(&record, "users.online", "set"), "count"), 2.0);
    assert_close(fig(metric(&record, "meter.hits", "counter"), "count"), 3.0);

    let latency = metric(&record, "api.latency", "timer");
    for (figure, want) in [
        ("count", 3.0),
        ("count_ps", 3.0 / 60.0),
        ("lower", 10.0),
        ("upper", 30.0),
        ("sum", 60.0),
        ("sum_squares", 1400.0),
        ("mean", 20.0),
        ("median", 20.0),
        ("std", (200.0f64 / 3.0).sqrt()),
        ("count_90", 3.0),
        ("upper_90", 30.0),
        ("mean_90", 20.0),
    ] {
        assert_close(fig(latency, figure), want);
    }
    assert_close(fig(metric(&record, "payload", "histogram"), "lower"), -2.5);
    assert_close(fig(metric(&record, "sizes", "distribution"), "sum"), 4.0);

    assert_eq!(record["interval_ms"], 60000);
    assert!(record["timestamp"].as_u64().is_some());
    assert!(record["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(record["events"], json!([]));
    assert_eq!(record["alerts"], json!([]));
    assert_eq!(record["internal"]["packets_received"], 6);
    assert_eq!(record["internal"]["lines_received"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_counted_by_reason_and_good_lines_of_the_packet_still_count() {
    let agent = start(&base("")).await;
    agent.send(&[
        "good:1|c\nbad:x|c\nworse:1|q\n:1|c\nrate:1|c|@2\nlat:-1|ms\nfield:1|c|zz\ngood:2|c\r\n",
        "tags:1|c|#a:b|#c:d\n\n\n",
    ]);
    agent.wait_lines(9).await;
    let record = agent.finish().await;
    assert_close(fig(metric(&record, "good", "counter"), "count"), 3.0);
    let bad = &record["internal"]["bad_lines"];
    assert_eq!(bad["invalid_value"], 2);
    assert_eq!(bad["invalid_type"], 1);
    assert_eq!(bad["empty_name"], 1);
    assert_eq!(bad["invalid_sample_rate"], 1);
    assert_eq!(bad["unknown_field"], 1);
    assert_eq!(bad["invalid_tags"], 1);
    assert_eq!(record["metrics"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_in_three_spellings_name_one_series_and_clients_win_over_global_tags() {
    let agent = start(&base("global_tags = { env = \"prod\", dc = \"eu\" }")).await;
    agent.send(&[
        "hits:1|c|#region:x,env:dev",
        "hits;env=dev;region=x:2|c",
        "hits,region=x,env=dev:4|c",
        "hits:8|c",
        "hits:16|c|#env:dev,env:other,region:x",
    ]);
    agent.wait_lines(5).await;
    let record = agent.finish().await;
    let tagged = metric_tagged(
        &record,
        "hits",
        "counter",
        &json!({"dc": "eu", "env": "dev", "region": "x"}),
    );
    assert_close(fig(tagged, "count"), 23.0);
    let global_only = metric_tagged(
        &record,
        "hits",
        "counter",
        &json!({"dc": "eu", "env": "prod"}),
    );
    assert_close(fig(global_only, "count"), 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_persist_and_idle_series_expire_after_their_ttl() {
    for shards in [1, 2] {
        gauges_persist_and_expire(shards).await;
    }
}

async fn gauges_persist_and_expire(shards: usize) {
    // 60 s interval, 120 s ttl: emitted idle once (60 s idle), dropped at 120 s idle.
    let agent = start(&base(&format!("series_ttl_ms = 120000\nshards = {shards}"))).await;
    agent.send(&["depth:5|g\nhits:2|c\nlat:7|ms\nu:a|s"]);
    agent.wait_lines(4).await;
    let first = agent.flush().await;
    assert_close(fig(metric(&first, "depth", "gauge"), "value"), 5.0);

    agent.send(&["depth:+3|g"]);
    agent.wait_lines(5).await;
    let second = agent.flush().await;
    assert_close(fig(metric(&second, "depth", "gauge"), "value"), 8.0);
    assert_close(fig(metric(&second, "hits", "counter"), "count"), 0.0);
    assert_close(fig(metric(&second, "hits", "counter"), "rate"), 0.0);
    assert_close(fig(metric(&second, "u", "set"), "count"), 0.0);
    let idle_timer = metric(&second, "lat", "timer");
    assert_eq!(
        idle_timer,
        &json!({"name": "lat", "type": "timer", "tags": {}, "count": 0, "count_ps": 0})
    );

    let third = agent.flush().await;
    assert_close(fig(metric(&third, "depth", "gauge"), "value"), 8.0);
    assert!(
        find(&third, "hits", "counter", &json!({})).is_none(),
        "idle 120 s: dropped"
    );
    assert!(find(&third, "lat", "timer", &json!({})).is_none());
    assert_eq!(third["internal"]["series"], 1);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_service_checks_reach_the_record_with_global_tags() {
    let agent = start(&base("global_tags = { env = \"prod\" }")).await;
    agent.send(&[
        "_e{6,9}:deploy|v1\\nlive!|p:low|#team:web",
        "_sc|db.up|2|h:db-1|m:disk m\\: full",
    ]);
    agent.wait_lines(2).await;
    let record = agent.finish().await;
    let events = record["events"].as_array().expect("events list");
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0],
        json!({"kind": "event", "title": "deploy", "text": "v1\nlive!", "priority": "low",
               "tags": {"env": "prod", "team": "web"}})
    );
    assert_eq!(
        events[1],
        json!({"kind": "service_check", "name": "db.up", "status": 2, "hostname": "db-1",
               "message": "disk m: full", "tags": {"env": "prod"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_ticker_flushes_on_its_own() {
    let toml = "backends = []\n[server]\nudp = [\"127.0.0.1:0\"]\n[aggregation]\nflush_interval_ms = 100\n";
    let agent = start(toml).await;
    agent.send(&["tick:1|c"]);
    agent.wait_lines(1).await;
    let mut total = 0.0;
    for _ in 0..3 {
        let record = agent.next_record();
        assert_eq!(record["interval_ms"], 100);
        if let Some(m) = find(&record, "tick", "counter", &json!({})) {
            total += fig(m, "count");
        }
    }
    assert_close(total, 1.0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_bins_apply_to_matching_names() {
    let aggregation = "[[aggregation.histograms]]\nmetric = \"api.*\"\nbins = [0.5, 10]\n";
    let agent = start(&base(aggregation)).await;
    agent.send(&["api.lat:0.1:0.5:3:10:99|ms|@0.5\nother:1|ms"]);
    agent.wait_lines(2).await;
    let record = agent.finish().await;
    let lat = metric(&record, "api.lat", "timer");
    assert_close(fig(lat, "bin_0_5"), 1.0);
    assert_close(fig(lat, "bin_10"), 2.0);
    assert_close(fig(lat, "bin_inf"), 2.0);
    assert_close(fig(lat, "count"), 10.0);
    assert!(metric(&record, "other", "timer").get("bin_inf").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_series_beyond_max_series_are_dropped_and_counted() {
    let agent = start(&base("max_series = 2\nshards = 2")).await;
    // The first two series arrive alone and are admitted, by the latest at the flush that
    // moves the receive thread's counters into the shards, before the others are sent.
    agent.send(&["a:1|c\nb:1|c"]);
    agent.wait_lines(2).await;
    agent.running.flush_now().await;
    assert_eq!(agent.running.telemetry().series(), 2, "a and b admitted");
    agent.send(&["c:1|c\nd:1|g\na:1|c"]);
    agent.wait_lines(5).await;
    let record = agent.finish().await;
    assert_eq!(record["metrics"].as_array().map(Vec::len), Some(2));
    assert_eq!(record["internal"]["dropped_series"], 2);
    assert_eq!(record["internal"]["series"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_is_served() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    }
    let toml = "backends = []\n[server]\nudp = [\"[::1]:0\", \"127.0.0.1:0\"]\n";
    let agent = start(toml).await;
    let v6 = agent.running.udp_addrs()[0];
    assert!(v6.is_ipv6());
    send_udp(v6, &["six:6|c"]);
    send_udp(agent.running.udp_addrs()[1], &["six:4|c"]);
    agent.wait_lines(2).await;
    let record = agent.finish().await;
    assert_close(fig(metric(&record, "six", "counter"), "count"), 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuseport_sockets_share_one_address_and_lose_nothing() {
    let toml = "backends = []\n[server]\nudp = [\"127.0.0.1:0\"]\nudp_sockets_per_address = 3\nudp_batch = 4\n";
    let agent = start(toml).await;
    assert_eq!(
        agent.running.udp_addrs().len(),
        1,
        "three sockets, one address"
    );
    // Each datagram from a fresh source port, so the kernel spreads them over the sockets.
    for _ in 0..60 {
        agent.send(&["spread:1|c\nspread.lat:2|ms"]);
    }
    agent.wait_lines(120).await;
    let record = agent.finish().await;
    assert_close(fig(metric(&record, "spread", "counter"), "count"), 60.0);
    assert_close(fig(metric(&record, "spread.lat", "timer"), "count"), 60.0);
}

/// A backend that takes its time, so its 4-record queue fills.
struct SlowBackend {
    tx: crossbeam_channel::Sender<serde_json::Value>,
}

impl tallyd::backend::Backend for SlowBackend {
    fn name(&self) -> &str {
        "slow"
    }

    fn write(
        &mut self,
        record: &tallyd::record::Record,
    ) -> Result<(), tallyd::backend::BackendError> {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let _ = self
            .tx
            .send(serde_json::to_value(record).unwrap_or_default());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_record_waits_for_room_in_a_full_backend_queue() {
    let (tx, slow_rx) = crossbeam_channel::unbounded();
    let running = tallyd::app::start(config(&base("")), vec![Box::new(SlowBackend { tx })])
        .await
        .expect("starts");
    // Eight quick flushes overrun the slow backend's queue: some are skipped (and counted).
    for _ in 0..8 {
        running.flush_now().await;
    }
    send_udp(running.udp_addrs()[0], &["marker:1|c"]);
    let deadline = std::time::Instant::now() + PATIENCE;
    while running.telemetry().lines_total() < 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    running.shutdown().await;
    let records: Vec<serde_json::Value> = slow_rx.try_iter().collect();
    let last = records.last().expect("records");
    assert!(
        find(last, "marker", "counter", &json!({})).is_some(),
        "the final record reached the slow backend"
    );
    assert!(
        records.len() < 9,
        "the queue did overflow before the final flush"
    );
}
