//! The HTTP API over real sockets (SPEC §7.1, §8): `/metrics` parsed back with a Prometheus
//! text parser and checked against the arithmetic, content negotiation, health, the token,
//! errors, `/api/v1/latest` filters, alerts, the event stream, reload and bad input.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::client::{self, Answer};
use common::{Agent, PATIENCE, base, start};

fn api(agent: &Agent) -> SocketAddr {
    agent.running.api_addr().expect("the API is on")
}

/// Flushes and waits until the API serves that flush.
async fn flush(agent: &Agent) {
    let before = flushes(agent);
    agent.flush().await;
    let deadline = Instant::now() + PATIENCE;
    while flushes(agent) <= before {
        assert!(Instant::now() < deadline, "the API never saw the flush");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn flushes(agent: &Agent) -> u64 {
    agent
        .running
        .api_state()
        .and_then(|s| s.view())
        .map_or(0, |v| v.flushes())
}

/// Every sample of a text exposition, by its name and sorted labels, parsed by a
/// Prometheus text parser (prometheus-parse), which fails on malformed lines.
fn samples(body: &str) -> HashMap<String, f64> {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                for b in buckets {
                    let mut l = labels.clone();
                    l.push(format!("le={}", b.less_than));
                    l.sort();
                    out.insert(format!("{}{{{}}}", sample.metric, l.join(",")), b.count);
                }
                continue;
            }
            prometheus_parse::Value::Summary(quantiles) => {
                for q in quantiles {
                    let mut l = labels.clone();
                    l.push(format!("quantile={}", q.quantile));
                    l.sort();
                    out.insert(format!("{}{{{}}}", sample.metric, l.join(",")), q.count);
                }
                continue;
            }
        };
        out.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    out
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:?}", sorted_keys(samples)))
}

fn sorted_keys(samples: &HashMap<String, f64>) -> Vec<&String> {
    let mut keys: Vec<_> = samples.keys().collect();
    keys.sort();
    keys
}

fn metrics(agent: &Agent) -> Answer {
    let answer = client::get(api(agent), "/metrics", &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_gauges_sets_and_timers_are_exported_cumulatively() {
    let agent = start(&base("percentiles = [90, 99]")).await;
    agent.send(&[
        "api.requests:3|c|#env:prod\napi.requests:1|c|@0.5|#env:prod\nqueue.depth:7|g\n\
         users:a|s\nusers:b|s\nusers:a|s\napi.latency:100|ms\napi.latency:300|ms\n\
         api.latency:200|ms\n5xx.count:1|c",
    ]);
    agent.wait_lines(10).await;
    flush(&agent).await;
    let first = metrics(&agent);
    assert_eq!(
        first.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let s = samples(&first.body);
    assert_eq!(value(&s, "api_requests_total{env=prod}"), 5.0);
    assert_eq!(value(&s, "_5xx_count_total{}"), 1.0);
    assert_eq!(value(&s, "queue_depth{}"), 7.0);
    assert_eq!(value(&s, "users{}"), 2.0);
    // ms in seconds; the median and the configured percentiles of the interval.
    assert_eq!(value(&s, "api_latency{quantile=0.5}"), 0.2);
    assert_eq!(value(&s, "api_latency{quantile=0.9}"), 0.3);
    assert_eq!(value(&s, "api_latency_count{}"), 3.0);
    assert!((value(&s, "api_latency_sum{}") - 0.6).abs() < 1e-12);

    // A second interval: counters and _sum/_count go on adding; the gauge stays.
    agent.send(&["api.requests:2|c|#env:prod\napi.latency:400|ms"]);
    agent.wait_lines(12).await;
    flush(&agent).await;
    let s = samples(&metrics(&agent).body);
    assert_eq!(value(&s, "api_requests_total{env=prod}"), 7.0);
    assert_eq!(value(&s, "api_latency_count{}"), 4.0);
    assert!((value(&s, "api_latency_sum{}") - 1.0).abs() < 1e-12);
    assert_eq!(value(&s, "api_latency{quantile=0.5}"), 0.4);
    assert_eq!(value(&s, "queue_depth{}"), 7.0);
    assert_eq!(value(&s, "tallyd_lines_received_total{}"), 12.0);
    assert_eq!(value(&s, "tallyd_flushes_total{}"), 2.0);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_count_values_at_or_below_each_bound_cumulatively() {
    let text = base("[[aggregation.histograms]]\nmetric = \"rpc\"\nbins = [100, 250]\n")
        + "[prometheus]\ntimer_type = \"histogram\"\n";
    let agent = start(&text).await;
    // 100 ms is exactly le="0.1"; one sample at @0.5 counts twice everywhere.
    agent.send(&["rpc:50|ms\nrpc:100|ms\nrpc:200|ms\nrpc:900|ms|@0.5\nsize:3|h"]);
    agent.wait_lines(5).await;
    flush(&agent).await;
    let s = samples(&metrics(&agent).body);
    // Each value counts 1/rate times: 900 ms at @0.5 stands for two, in +Inf only.
    assert_eq!(value(&s, "rpc{le=0.1}"), 2.0);
    assert_eq!(value(&s, "rpc{le=0.25}"), 3.0);
    assert_eq!(value(&s, "rpc{le=inf}"), 5.0);
    assert_eq!(value(&s, "rpc_count{}"), 5.0);
    // `h` values are not scaled; statsd_exporter's default buckets.
    assert_eq!(value(&s, "size{le=2.5}"), 0.0);
    assert_eq!(value(&s, "size{le=5}"), 1.0);
    agent.send(&["rpc:10|ms"]);
    agent.wait_lines(6).await;
    flush(&agent).await;
    let s = samples(&metrics(&agent).body);
    assert_eq!(value(&s, "rpc{le=0.1}"), 3.0);
    assert_eq!(value(&s, "rpc_count{}"), 6.0);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_is_negotiated_and_scrapes_between_flushes_agree() {
    let agent = start(&base("")).await;
    agent.send(&["jobs:2|c\nload:1.5|g"]);
    agent.wait_lines(2).await;
    flush(&agent).await;
    let om = client::get(
        api(&agent),
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"],
    );
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(
        om.body.contains("# TYPE jobs counter\njobs_total 2\n"),
        "{}",
        om.body
    );
    assert!(!om.body.contains("# TYPE jobs_total"), "{}", om.body);
    let text = metrics(&agent).body;
    assert!(
        text.contains("# TYPE jobs_total counter\njobs_total 2\n"),
        "{text}"
    );
    // More traffic before the next flush changes nothing: the answer is the flush's.
    agent.send(&["jobs:5|c"]);
    agent.wait_lines(3).await;
    assert_eq!(metrics(&agent).body, text);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_names_merge_counters_and_conflicting_kinds_are_left_out() {
    let agent = start(&base("")).await;
    // a.b and a_b escape to one series: their counts add. x as a gauge and as a timer
    // share the family `x`: the first kind in the family wins, the other is not written.
    agent.send(&["a.b:1|c\na_b:2|c\nx:1|g\nx:5|ms"]);
    agent.wait_lines(4).await;
    flush(&agent).await;
    let body = metrics(&agent).body;
    let s = samples(&body);
    assert_eq!(value(&s, "a_b_total{}"), 3.0);
    assert_eq!(body.matches("# TYPE x ").count(), 1, "{body}");
    assert_eq!(body.matches("# TYPE a_b_total ").count(), 1, "{body}");
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_errors_and_the_token() {
    let text = base("") + "[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n";
    let agent = start(&text).await;
    let addr = api(&agent);
    for path in ["/healthz", "/-/healthy", "/readyz", "/-/ready"] {
        assert_eq!(
            client::get(addr, path, &[]).status,
            200,
            "{path} needs no token"
        );
    }
    let denied = client::get(addr, "/metrics", &[]);
    assert_eq!(denied.status, 401);
    assert!(denied.json()["error"].is_string());
    assert_eq!(
        client::get(addr, "/metrics", &["Authorization: Bearer wrong"]).status,
        401
    );
    let auth = "Authorization: Bearer s3cret";
    assert_eq!(client::get(addr, "/metrics", &[auth]).status, 200);
    // Before the first flush there is no record yet.
    assert_eq!(client::get(addr, "/api/v1/latest", &[auth]).status, 503);
    let missing = client::get(addr, "/nowhere", &[auth]);
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    let wrong = client::request(addr, "DELETE", "/metrics", &[auth]);
    assert_eq!(wrong.status, 405);
    assert!(wrong.json()["error"].is_string());
    let bad = client::get(addr, "/api/v1/latest?colour=red", &[auth]);
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("colour")
    );
    let long = format!("/api/v1/latest?metric={}", "a".repeat(20_000));
    assert_eq!(client::get(addr, &long, &[auth]).status, 400);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_filters_by_glob_tag_and_type() {
    let agent = start(&base("")).await;
    agent.send(&["api.req:1|c|#env:prod\napi.req:1|c|#env:dev\napi.lat:3|ms|#env:prod\ndb.q:1|c"]);
    agent.wait_lines(4).await;
    flush(&agent).await;
    let addr = api(&agent);
    let all = client::get(addr, "/api/v1/latest", &[]).json();
    assert_eq!(all["metrics"].as_array().map(Vec::len), Some(4));
    for key in [
        "timestamp",
        "interval_ms",
        "host",
        "events",
        "alerts",
        "internal",
    ] {
        assert!(all.get(key).is_some(), "the record's {key}");
    }
    let some = client::get(
        addr,
        "/api/v1/latest?metric=api.*&tag=env:prod&type=counter",
        &[],
    );
    let metrics = some.json()["metrics"].clone();
    assert_eq!(metrics.as_array().map(Vec::len), Some(1), "{metrics}");
    assert_eq!(metrics[0]["name"], "api.req");
    assert_eq!(metrics[0]["tags"]["env"], "prod");
    assert_eq!(
        client::get(addr, "/api/v1/latest?type=meter", &[]).status,
        400
    );
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_firing_now_and_the_firing_gauge() {
    let text = base("")
        + "[[alerts]]\nname = \"deep\"\nmetric = \"queue.*\"\nstat = \"value\"\nop = \">\"\n\
           threshold = 10\nseverity = \"critical\"\n";
    let agent = start(&text).await;
    agent.send(&["queue.a:50|g\nqueue.b:1|g"]);
    agent.wait_lines(2).await;
    flush(&agent).await;
    let firing = client::get(api(&agent), "/api/v1/alerts", &[]).json();
    let firing = firing.as_array().expect("an array").clone();
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["rule"], "deep");
    assert_eq!(firing[0]["name"], "queue.a");
    assert_eq!(firing[0]["state"], "firing");
    let s = samples(&metrics(&agent).body);
    assert_eq!(
        value(&s, "tallyd_alerts_firing{rule=deep,severity=critical}"),
        1.0
    );
    // Resolved: the gauge goes back to 0 and nothing fires.
    agent.send(&["queue.a:2|g"]);
    agent.wait_lines(3).await;
    flush(&agent).await;
    assert_eq!(client::get(api(&agent), "/api/v1/alerts", &[]).body, "[]");
    let s = samples(&metrics(&agent).body);
    assert_eq!(
        value(&s, "tallyd_alerts_firing{rule=deep,severity=critical}"),
        0.0
    );
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_each_record_and_alert_event() {
    let text = base("")
        + "[[alerts]]\nname = \"hot\"\nmetric = \"temp\"\nstat = \"value\"\nop = \">\"\n\
           threshold = 10\n";
    let agent = start(&text).await;
    let mut stream = TcpStream::connect(api(&agent)).expect("connect");
    stream
        .write_all(b"GET /api/v1/stream?metric=temp HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("request");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut reader = BufReader::new(stream);
    // Wait for the stream's opening comment, so the subscription exists before the flush.
    let mut line = String::new();
    while !line.contains("tallyd stream") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "stream closed"
        );
    }
    agent.send(&["temp:30|g\nother:1|c"]);
    agent.wait_lines(2).await;
    flush(&agent).await;
    let mut events = Vec::new();
    while events.len() < 2 {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "stream closed"
        );
        if let Some(data) = line.trim().strip_prefix("data: ") {
            events.push(serde_json::from_str::<serde_json::Value>(data).expect("JSON data"));
        }
    }
    let record = &events[0];
    assert_eq!(
        record["metrics"].as_array().map(Vec::len),
        Some(1),
        "filtered"
    );
    assert_eq!(record["metrics"][0]["name"], "temp");
    assert_eq!(events[1]["rule"], "hot");
    assert_eq!(events[1]["state"], "firing");
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_a_silent_client_do_not_stop_the_api() {
    let agent = start(&base("")).await;
    let addr = api(&agent);
    let garbage = client::raw(addr, b"\x00\x01 not http at all\r\n\r\n");
    assert_eq!(garbage.status, 400);
    // A header flood: far more than the 64 KiB a head may take.
    let mut flood = b"GET /metrics HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..5_000 {
        flood.extend_from_slice(format!("X-Flood-{i}: {}\r\n", "v".repeat(40)).as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    let flooded = std::panic::catch_unwind(|| client::raw(addr, &flood));
    if let Ok(answer) = flooded {
        assert!(answer.status == 431 || answer.status == 400, "{answer:?}");
    }
    // A client that connects and says nothing holds no one up.
    let _silent = TcpStream::connect(addr).expect("connect");
    agent.send(&["ok:1|c"]);
    agent.wait_lines(1).await;
    flush(&agent).await;
    let s = samples(&metrics(&agent).body);
    assert_eq!(value(&s, "ok_total{}"), 1.0);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_takes_new_alert_rules_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tallyd.toml");
    let api_section = "[api]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&path, base("") + api_section).expect("write");
    let config = tallyd::config::Config::load(&path).expect("valid");
    let (capture, records) = tallyd::backend::CaptureBackend::new();
    let running = tallyd::app::start_from(config, Some(path.clone()), vec![Box::new(capture)])
        .await
        .expect("starts");
    let addr = running.api_addr().expect("api");
    let rule =
        "[[alerts]]\nname = \"any\"\nmetric = \"g\"\nstat = \"value\"\nop = \">\"\nthreshold = 0\n";
    std::fs::write(&path, base("") + api_section + rule).expect("write");
    let answer = client::request(addr, "POST", "/-/reload", &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    common::send_udp(running.udp_addrs()[0], &["g:1|g"]);
    let deadline = Instant::now() + PATIENCE;
    while running.telemetry().lines_total() < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.flush_now().await;
    let record = records.recv_timeout(PATIENCE).expect("record");
    assert_eq!(record["alerts"][0]["rule"], "any", "{record}");
    // A broken file: 400 with the line and column, and the agent runs on unchanged.
    std::fs::write(&path, "[aggregation]\nflush_interval_ms = \"soon\"\n").expect("write");
    let refused = client::request(addr, "POST", "/-/reload", &[]);
    assert_eq!(refused.status, 400);
    let message = refused.json()["error"].as_str().unwrap_or("").to_string();
    assert!(message.contains("tallyd.toml:2:"), "{message}");
    let get = client::get(addr, "/-/reload", &[]);
    assert_eq!(get.status, 405);
    running.flush_now().await;
    let record = records.recv_timeout(PATIENCE).expect("record");
    assert_eq!(
        record["internal"]["config_reloads"], 0,
        "counted in its interval"
    );
    assert_eq!(record["internal"]["config_reload_failures"], 1);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statsd_exporter_mapping_names_labels_drops_and_buckets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mapping = dir.path().join("mapping.yml");
    std::fs::write(
        &mapping,
        r#"mappings:
- match: test.dispatcher.*.*.*
  name: dispatcher_events_total
  labels:
    processor: $1
    action: $2
    outcome: $3
    job: test_dispatcher
- match: checkout.*.latency
  observer_type: histogram
  histogram_options:
    buckets: [0.01, 0.1, 1]
  name: checkout_latency_seconds
  labels:
    region: $1
- match: noise.*
  action: drop
  name: dropped
"#,
    )
    .expect("mapping");
    let text = base("")
        + &format!(
            "[prometheus]\nmapping_file = {:?}\n",
            mapping.display().to_string()
        );
    let agent = start(&text).await;
    agent.send(&["test.dispatcher.FooProcessor.send.success:1|c\n\
         test.dispatcher.FooProcessor.send.success:2|c\n\
         checkout.eu.latency:5|ms\ncheckout.eu.latency:50|ms\ncheckout.eu.latency:500|ms\n\
         noise.x:1|c\nplain.name:4|g"]);
    agent.wait_lines(7).await;
    flush(&agent).await;
    let body = metrics(&agent).body;
    let s = samples(&body);
    assert_eq!(
        value(
            &s,
            "dispatcher_events_total{action=send,job=test_dispatcher,outcome=success,processor=FooProcessor}"
        ),
        3.0
    );
    assert_eq!(
        value(&s, "checkout_latency_seconds{le=0.01,region=eu}"),
        1.0
    );
    assert_eq!(value(&s, "checkout_latency_seconds{le=0.1,region=eu}"), 2.0);
    assert_eq!(value(&s, "checkout_latency_seconds{le=1,region=eu}"), 3.0);
    assert_eq!(value(&s, "checkout_latency_seconds_count{region=eu}"), 3.0);
    assert_eq!(value(&s, "plain_name{}"), 4.0);
    assert!(!body.contains("noise"), "dropped by the mapping: {body}");
    // The record keeps the StatsD names.
    let latest = client::get(api(&agent), "/api/v1/latest?metric=checkout.*", &[]).json();
    assert_eq!(latest["metrics"][0]["name"], "checkout.eu.latency");
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_mapping_file_is_a_config_error_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mapping = dir.path().join("mapping.yml");
    std::fs::write(
        &mapping,
        "mappings:\n- match: a.*\n  name: x\n  match_type: fuzzy\n",
    )
    .expect("mapping");
    let text = format!(
        "[prometheus]\nmapping_file = {:?}\n",
        mapping.display().to_string()
    );
    let error = tallyd::config::Config::from_toml(&text, std::path::Path::new("t.toml"))
        .expect_err("invalid mapping");
    let message = error.to_string();
    assert!(message.starts_with("t.toml:2:"), "{message}");
    assert!(message.contains("mapping.yml:4:"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_that_never_reads_is_disconnected_and_counted() {
    let text = base("") + "[api]\nlisten = \"127.0.0.1:0\"\nstream_queue = 1\n";
    let agent = start(&text).await;
    // A record of about a MiB, so the socket buffers fill within some flushes.
    let lines: Vec<String> = (0..10_000)
        .map(|i| format!("series.number.{i}:1|c"))
        .collect();
    for chunk in lines.chunks(100) {
        agent.send(&[&chunk.join("\n")]);
    }
    agent.wait_lines(10_000).await;
    let mut silent = TcpStream::connect(api(&agent)).expect("connect");
    silent
        .write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("request");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut dropped = 0;
    for _ in 0..5000 {
        let record = agent.flush().await;
        dropped += record["internal"]["stream_clients_dropped"]
            .as_u64()
            .unwrap_or(0);
        if dropped > 0 || Instant::now() > deadline {
            break;
        }
    }
    assert_eq!(dropped, 1, "the silent client was cut off, once");
    // Flushes and the API go on.
    assert_eq!(client::get(api(&agent), "/healthz", &[]).status, 200);
    drop(silent);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mappings_default_ttl_retires_idle_series_from_metrics_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mapping = dir.path().join("mapping.yml");
    std::fs::write(&mapping, "defaults:\n  ttl: 30s\nmappings: []\n").expect("mapping");
    let text = base("")
        + &format!(
            "[prometheus]\nmapping_file = {:?}\n",
            mapping.display().to_string()
        );
    let agent = start(&text).await;
    agent.send(&["brief:1|g"]);
    agent.wait_lines(1).await;
    flush(&agent).await;
    assert!(metrics(&agent).body.contains("\nbrief 1\n"));
    // Idle for one 60 s interval: past the 30 s ttl, gone from /metrics, still in the record.
    flush(&agent).await;
    assert!(!metrics(&agent).body.contains("brief"));
    let latest = client::get(api(&agent), "/api/v1/latest?metric=brief", &[]).json();
    assert_eq!(latest["metrics"][0]["value"], 1);
    agent.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_an_unchanged_backend_and_starts_a_new_one() {
    use common::receiver::HttpReceiver;
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tallyd.toml");
    let out = dir.path().join("out.jsonl");
    let http = format!(
        "[[backends]]\nkind = \"http\"\nurl = {:?}\n",
        receiver.url()
    );
    let head = "[server]\nudp = [\"127.0.0.1:0\"]\n[api]\nlisten = \"127.0.0.1:0\"\n\
                [aggregation]\nflush_interval_ms = 60000\n";
    std::fs::write(&path, format!("{head}{http}")).expect("write");
    let config = tallyd::config::Config::load(&path).expect("valid");
    let running = tallyd::app::start_from(config, Some(path.clone()), Vec::new())
        .await
        .expect("starts");
    common::send_udp(running.udp_addrs()[0], &["before:1|c"]);
    let deadline = Instant::now() + PATIENCE;
    while running.telemetry().lines_total() < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.flush_now().await;
    let first = receiver.next().json();
    assert_eq!(first["metrics"][0]["name"], "before");
    // The same http entry plus a file: the http backend runs on, the file starts.
    let file = format!(
        "[[backends]]\nkind = \"json_file\"\npath = {:?}\n",
        out.display().to_string()
    );
    std::fs::write(&path, format!("{head}{http}{file}")).expect("write");
    running.reload().await.expect("reloaded");
    common::send_udp(running.udp_addrs()[0], &["after:1|c"]);
    while running.telemetry().lines_total() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.flush_now().await;
    let second = receiver.next().json();
    assert!(
        second["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .any(|m| m["name"] == "after"),
        "{second}"
    );
    running.shutdown().await;
    let lines = std::fs::read_to_string(&out).expect("the new backend wrote");
    assert!(lines.contains("\"after\""), "{lines}");
    // It started after the first flush: it has the second one and the final one.
    assert_eq!(lines.lines().count(), 2, "{lines}");
    // Two flushes and the final one went to the http receiver: no record lost or repeated.
    let last = receiver.next().json();
    assert_eq!(
        last["internal"]["config_reloads"], 0,
        "counted in the second flush"
    );
    assert_eq!(second["internal"]["config_reloads"], 1);
}
