//! The encoder against real records (built by the flush path), decoded with the prost
//! messages.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use super::proto::WriteRequest;
use super::{Encoder, STALE_NAN};
use crate::config::Config;
use crate::export::view::View;

/// One decoded sample: labels, value, timestamp.
type Sample = (BTreeMap<String, String>, f64, i64);

fn config(toml: &str) -> Config {
    Config::from_toml(toml, std::path::Path::new("t.toml")).expect("valid")
}

/// Encodes successive datagrams (one record each) and returns each flush's requests, decoded.
fn encode_flushes(toml: &str, datagrams: &[&str], max: usize) -> Vec<Vec<WriteRequest>> {
    let config = config(toml);
    let mut encoder = Encoder::new(max);
    let mut previous: Option<View> = None;
    let mut flushes = Vec::new();
    for (i, lines) in datagrams.iter().enumerate() {
        let mut record = crate::flush::record_from_datagram(&config, lines);
        record.host = "web-7".into();
        let view = View::build(previous.as_ref(), Arc::new(record), &config.prometheus);
        let mut bodies = Vec::new();
        encoder.encode(
            &view,
            previous.as_ref(),
            "web-7",
            1_000_000 + i as i64,
            &mut |b| bodies.push(b),
        );
        let requests = bodies
            .iter()
            .map(|b| {
                let plain = snap::raw::Decoder::new()
                    .decompress_vec(b)
                    .expect("snappy block format");
                WriteRequest::decode(&plain[..]).expect("a WriteRequest")
            })
            .collect();
        flushes.push(requests);
        previous = Some(view);
    }
    flushes
}

fn samples(requests: &[WriteRequest]) -> Vec<Sample> {
    let mut out = Vec::new();
    for request in requests {
        for series in &request.timeseries {
            let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(names, sorted, "labels sorted by name, no name twice");
            assert_eq!(series.samples.len(), 1);
            let labels = series
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            out.push((labels, series.samples[0].value, series.samples[0].timestamp));
        }
    }
    out
}

fn find<'a>(samples: &'a [Sample], name: &str, extra: &[(&str, &str)]) -> &'a Sample {
    samples
        .iter()
        .find(|(labels, _, _)| {
            labels.get("__name__").map(String::as_str) == Some(name)
                && extra
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} {extra:?} in {samples:?}"))
}

#[test]
fn counters_are_cumulative_with_name_instance_and_timestamp() {
    let flushes = encode_flushes(
        "",
        &["api.requests:2|c|#env:prod", "api.requests:3|c|#env:prod"],
        2000,
    );
    let first = samples(&flushes[0]);
    let (labels, value, ts) = find(&first, "api_requests_total", &[]);
    assert_eq!(*value, 2.0);
    assert_eq!(*ts, 1_000_000);
    assert_eq!(labels["env"], "prod");
    assert_eq!(labels["instance"], "web-7");
    assert_eq!(labels.len(), 3);
    let second = samples(&flushes[1]);
    assert_eq!(find(&second, "api_requests_total", &[]).1, 5.0);
}

#[test]
fn the_agents_own_figures_go_too() {
    // (The figures' values are `/metrics`' own, tested there.)
    let flushes = encode_flushes("", &["x:1|c", "x:1|c"], 2000);
    let got = samples(&flushes[0]);
    find(&got, "tallyd_lines_received_total", &[]);
    find(&got, "tallyd_series", &[]);
    let bad = find(&got, "tallyd_bad_lines_total", &[("reason", "malformed")]);
    assert_eq!(bad.0["instance"], "web-7");
    assert_eq!(find(&got, "tallyd_flushes_total", &[]).1, 1.0);
    let got = samples(&flushes[1]);
    assert_eq!(find(&got, "tallyd_flushes_total", &[]).1, 2.0);
}

#[test]
fn a_series_own_instance_label_wins() {
    let flushes = encode_flushes("", &["x:1|g|#instance:db-1"], 2000);
    let got = samples(&flushes[0]);
    assert_eq!(find(&got, "x", &[]).0["instance"], "db-1");
}

#[test]
fn gauges_and_sets_are_their_value_and_count() {
    let flushes = encode_flushes("", &["q:17|g\nu:a|s\nu:b|s\nu:a|s"], 2000);
    let got = samples(&flushes[0]);
    assert_eq!(find(&got, "q", &[]).1, 17.0);
    assert_eq!(find(&got, "u", &[]).1, 2.0);
}

#[test]
fn summaries_are_quantile_series_with_sum_and_count() {
    let flushes = encode_flushes(
        "[aggregation]\npercentiles = [90]\n",
        &["lat:100|ms\nlat:300|ms", "lat:200|ms"],
        2000,
    );
    let got = samples(&flushes[0]);
    assert_eq!(find(&got, "lat", &[("quantile", "0.5")]).1, 0.2);
    assert_eq!(find(&got, "lat", &[("quantile", "0.9")]).1, 0.3);
    assert_eq!(find(&got, "lat_sum", &[]).1, 0.4);
    assert_eq!(find(&got, "lat_count", &[]).1, 2.0);
    assert!(!find(&got, "lat_sum", &[]).0.contains_key("quantile"));
    let got = samples(&flushes[1]);
    assert!(
        (find(&got, "lat_sum", &[]).1 - 0.6).abs() < 1e-12,
        "cumulative"
    );
    assert_eq!(find(&got, "lat_count", &[]).1, 3.0);
}

#[test]
fn histograms_are_cumulative_buckets_with_inf_sum_and_count() {
    let flushes = encode_flushes(
        "[prometheus]\ntimer_type = \"histogram\"\n[[aggregation.histograms]]\n\
         metric = \"lat\"\nbins = [100, 250]\n",
        &["lat:100|ms\nlat:200|ms\nlat:900|ms", "lat:50|ms"],
        2000,
    );
    let got = samples(&flushes[0]);
    assert_eq!(find(&got, "lat_bucket", &[("le", "0.1")]).1, 1.0);
    assert_eq!(find(&got, "lat_bucket", &[("le", "0.25")]).1, 2.0);
    assert_eq!(find(&got, "lat_bucket", &[("le", "+Inf")]).1, 3.0);
    assert_eq!(find(&got, "lat_count", &[]).1, 3.0);
    assert!((find(&got, "lat_sum", &[]).1 - 1.2).abs() < 1e-12);
    let got = samples(&flushes[1]);
    assert_eq!(find(&got, "lat_bucket", &[("le", "0.1")]).1, 2.0);
    assert_eq!(find(&got, "lat_bucket", &[("le", "+Inf")]).1, 4.0);
}

#[test]
fn bins_for_otlp_leave_the_prometheus_summary_alone() {
    let flushes = encode_flushes(
        "[aggregation]\npercentiles = [90]\n[[aggregation.histograms]]\nmetric = \"lat\"\n\
         bins = [100]\n[[backends]]\nkind = \"otlp\"\nurl = \"http://h/\"\n",
        &["lat:100|ms\nlat:300|ms"],
        2000,
    );
    let got = samples(&flushes[0]);
    assert_eq!(find(&got, "lat", &[("quantile", "0.9")]).1, 0.3);
    assert_eq!(find(&got, "lat_count", &[]).1, 2.0);
    assert!(got.iter().all(|(l, _, _)| l["__name__"] != "lat_bucket"));
}

#[test]
fn requests_hold_at_most_max_samples() {
    let lines: String = (0..25).map(|i| format!("c{i}:1|c\n")).collect();
    let flushes = encode_flushes("", &[&lines], 10);
    let sizes: Vec<usize> = flushes[0].iter().map(|r| r.timeseries.len()).collect();
    let total: usize = sizes.iter().sum();
    assert!(total > 25, "the counters and the agent's own figures");
    assert!(sizes.iter().all(|&n| n <= 10), "{sizes:?}");
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&n| n == 10),
        "{sizes:?}"
    );
}

#[test]
fn a_series_gone_gets_one_stale_marker() {
    // `series_ttl_ms = 0`: each record holds only what its datagram sent.
    let flushes = encode_flushes(
        "[aggregation]\nseries_ttl_ms = 0\n",
        &["a:1|c\nb:1|g", "a:1|c", "a:1|c"],
        2000,
    );
    let second = samples(&flushes[1]);
    let (_, value, ts) = find(&second, "b", &[]);
    assert_eq!(value.to_bits(), STALE_NAN, "the stale marker's own NaN");
    assert_eq!(*ts, 1_000_001);
    assert_eq!(find(&second, "a_total", &[]).1, 2.0);
    let third = samples(&flushes[2]);
    assert!(
        third.iter().all(|(l, _, _)| l["__name__"] != "b"),
        "marked once"
    );
}

#[test]
fn empty_tag_values_are_left_out() {
    let flushes = encode_flushes("", &["x:1|c|#canary,env:prod"], 2000);
    let got = samples(&flushes[0]);
    let labels = &find(&got, "x_total", &[]).0;
    assert!(!labels.contains_key("canary"));
    assert_eq!(labels["env"], "prod");
}

#[test]
fn the_config_reads_every_key_with_its_defaults() {
    let entry = |extra: &str| {
        let text = format!(
            "[[backends]]\nkind = \"remote_write\"\nurl = \"http://vm:8428/api/v1/write\"\n{extra}"
        );
        match config(&text).backends.into_iter().next() {
            Some(crate::config::BackendConfig::RemoteWrite(rw)) => rw,
            other => panic!("a remote_write backend, not {other:?}"),
        }
    };
    let defaults = entry("");
    assert_eq!(defaults.max_samples_per_send, 2000);
    assert!(!defaults.retry_on_429);
    assert_eq!(defaults.queue.max_pending, super::DEFAULT_MAX_PENDING);
    let set = entry(
        "max_samples_per_send = 10\nretry_on_429 = true\nheaders = { X-Scope-OrgID = \"fleet\" }\n\
         max_pending = 7\ntimeout_ms = 100\n",
    );
    assert_eq!(set.max_samples_per_send, 10);
    assert!(set.retry_on_429);
    assert_eq!(
        set.headers,
        [("X-Scope-OrgID".to_string(), "fleet".to_string())]
    );
    assert_eq!(set.queue.max_pending, 7);
    let unknown = Config::from_toml(
        "[[backends]]\nkind = \"remote_write\"\nurl = \"http://h/\"\nbatch = 1\n",
        std::path::Path::new("t.toml"),
    );
    assert!(unknown.is_err(), "unknown keys are errors");
}

#[test]
fn the_config_turns_the_export_plan_on() {
    let c = config(
        "[api]\nlisten = \"\"\n[[backends]]\nkind = \"remote_write\"\nurl = \"http://h/\"\n",
    );
    assert!(
        c.aggregation.export.is_some(),
        "buckets must be observed for remote write"
    );
}
