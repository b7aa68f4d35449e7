//! Forwarded lines, and the round trip through our own parser: the figures a receiver
//! computes from them equal the sender's.

use std::path::Path;

use super::*;
use crate::backend::sender::udp::datagrams;
use crate::config::{BackendConfig, Config};
use crate::flush::record_from_datagram;
use crate::record::Figures;

/// A config whose statsd backend switches the keeping of values and members on.
fn config(aggregation: &str) -> Config {
    let text = format!(
        "[aggregation]\nflush_interval_ms = 10000\n{aggregation}\n\
         [[backends]]\nkind = \"statsd\"\naddress = \"127.0.0.1:9\"\n"
    );
    Config::from_toml(&text, Path::new("test.toml")).expect("valid")
}

/// The payloads of one flush of `datagram`.
fn payloads(aggregation: &str, datagram: &str, udp: bool, max: usize) -> Vec<Vec<u8>> {
    let record = record_from_datagram(&config(aggregation), datagram);
    let mut out = Vec::new();
    StatsdEncoder::new(udp, max).encode(&record, |p| out.push(p));
    out
}

/// The datagrams of one flush, as text.
fn sent(datagram: &str) -> Vec<String> {
    payloads("", datagram, true, 1432)
        .iter()
        .flat_map(|p| datagrams(p).map(|d| String::from_utf8(d.to_vec()).expect("utf-8")))
        .collect()
}

fn lines(datagram: &str) -> Vec<String> {
    let mut lines: Vec<String> = sent(datagram)
        .iter()
        .flat_map(|d| d.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_counter_is_one_line_with_its_count() {
    assert_eq!(lines("hits:1|c\nhits:2|c|@0.5"), ["hits:5|c"]);
}

#[test]
fn gauges_are_absolute_and_a_negative_one_is_set_through_zero() {
    assert_eq!(lines("q:5|g\nq:+2|g"), ["q:7|g"]);
    let datagrams = sent("t:-3.5|g");
    assert_eq!(datagrams, ["t:0|g\nt:-3.5|g\n"], "both in one datagram");
}

#[test]
fn sets_send_their_distinct_members_a_line_each() {
    assert_eq!(lines("u:a|s\nu:b|s\nu:a|s"), ["u:a|s", "u:b|s"]);
}

#[test]
fn timers_send_every_value_with_a_rate_that_keeps_the_count() {
    assert_eq!(lines("lat:3|ms\nlat:1|ms\nlat:2.5|ms"), ["lat:1:2.5:3|ms"]);
    // Three values counting 4 (one sent at @0.5): 3 / 4.
    assert_eq!(
        lines("lat:3|ms\nlat:1|ms|@0.5\nlat:2|ms"),
        ["lat:1:2:3|ms|@0.75"]
    );
    assert_eq!(lines("h:-1|h\nd:2|d"), ["d:2|d", "h:-1|h"]);
}

#[test]
fn tags_are_written_the_dogstatsd_way() {
    assert_eq!(
        lines("x:1|c|#env:prod,canary,url:a:b"),
        ["x:1|c|#canary,env:prod,url:a:b"]
    );
    assert_eq!(lines("y;zone=eu:1|g"), ["y:1|g|#zone:eu"]);
}

#[test]
fn global_tags_dogstatsd_cannot_carry_are_escaped() {
    let record = record_from_datagram(&config("global_tags = { \"a,b\" = \"c|d,e\" }"), "x:1|c");
    let mut out = Vec::new();
    StatsdEncoder::new(false, 1432).encode(&record, |p| out.extend(p));
    assert_eq!(String::from_utf8(out).expect("utf-8"), "x:1|c|#a_b:c_d_e\n");
}

#[test]
fn idle_series_are_not_forwarded() {
    let config = config("");
    let mut record = record_from_datagram(&config, "c:1|c\ng:1|g\nt:1|ms\ns:a|s");
    for metric in &mut record.metrics {
        metric.figures = match &metric.figures {
            Figures::Counter { .. } => Figures::Counter {
                count: 0.0,
                active: false,
            },
            Figures::Gauge { value, .. } => Figures::Gauge {
                value: *value,
                active: false,
            },
            Figures::Set { .. } => Figures::Set {
                count: 0.0,
                active: false,
            },
            Figures::Dist { .. } => Figures::Dist {
                figures: Box::new(crate::aggregate::distribution::DistFigures::idle()),
                active: false,
            },
        };
    }
    let mut out = Vec::new();
    StatsdEncoder::new(true, 1432).encode(&record, |p| out.push(p));
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn datagrams_stay_within_the_limit_and_lines_are_never_split() {
    let mut datagram = String::new();
    for i in 0..300 {
        datagram.push_str(&format!("lat:{i}.25|ms\ncounter.number.{i}:1|c\n"));
    }
    let all = payloads("", &datagram, true, 200);
    let mut values = 0;
    for payload in &all {
        for d in datagrams(payload) {
            assert!(d.len() <= 200, "{} bytes", d.len());
            assert_eq!(d.last(), Some(&b'\n'), "whole lines only");
            for line in std::str::from_utf8(d).expect("utf-8").lines() {
                if let Some(rest) = line.strip_prefix("lat:") {
                    values += rest.trim_end_matches("|ms").split(':').count();
                }
            }
        }
    }
    assert_eq!(values, 300);
}

#[test]
fn large_flushes_are_cut_into_payloads_between_datagrams() {
    let datagram: String = (0..2000).map(|i| format!("c.{i}:1|c\n")).collect();
    let record = record_from_datagram(&config(""), &datagram);
    let mut out = Vec::new();
    StatsdEncoder::new(true, 1432)
        .with_payload_bytes(4096)
        .encode(&record, |p| out.push(p));
    assert!(out.len() > 3);
    let lines: usize = out
        .iter()
        .flat_map(|p| datagrams(p))
        .map(|d| d.iter().filter(|&&b| b == b'\n').count())
        .sum();
    assert_eq!(lines, 2000);
}

/// What one flush of `sender`'s traffic, forwarded, makes a receiver compute: every
/// figure of every series, beside the sender's own.
fn round_trip(aggregation: &str, datagram: &str) -> (crate::record::Record, crate::record::Record) {
    let config = config(aggregation);
    let sent = record_from_datagram(&config, datagram);
    let mut text = Vec::new();
    StatsdEncoder::new(false, 1432).encode(&sent, |p| text.extend(p));
    let received = record_from_datagram(&config, std::str::from_utf8(&text).expect("utf-8"));
    (sent, received)
}

fn figures(record: &crate::record::Record) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for metric in &record.metrics {
        let series = format!("{}{:?}", metric.key.name(), metric.kind());
        metric.for_each_figure(record, |name, value| {
            out.push((series.clone(), name.to_string(), value));
        });
    }
    out
}

fn assert_same(sent: &crate::record::Record, received: &crate::record::Record, tolerance: f64) {
    let (a, b) = (figures(sent), figures(received));
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for ((series, name, want), (series_b, name_b, got)) in a.iter().zip(&b) {
        assert_eq!((series, name), (series_b, name_b));
        let bound = tolerance * want.abs().max(1e-300);
        assert!(
            (got - want).abs() <= bound.max(1e-12 * want.abs()),
            "{series} {name}: sent {want}, received {got}"
        );
    }
}

#[test]
fn a_receiver_computes_the_senders_figures() {
    let datagram = "c:1|c\nc:3|c|@0.1\ng:-4|g\ng2:+2.5|g\nu:a|s\nu:b|s\nu:a|s\n\
                    t:10|ms\nt:20|ms|@0.25\nt:30.5|ms\nt:0.001|ms\nh:-1:2:3|h|#k:v\n\
                    d:1e-7|d\nd:123456.789|d\nd:5|d|@0.3";
    let aggregation = "percentiles = [50, 90, -10, 99.9]\n[[aggregation.histograms]]\nmetric = \"t\"\nbins = [15, 25]";
    let (sent, received) = round_trip(aggregation, datagram);
    assert_same(&sent, &received, 1e-12);
}

#[test]
fn past_exact_samples_the_sketch_values_keep_the_figures_within_a_tenth_of_a_percent() {
    let datagram: String = (1..=3000)
        .map(|i| format!("t:{}|ms|@0.5\n", f64::from(i) * 1.37))
        .collect();
    let (sent, received) = round_trip("exact_samples = 100\npercentiles = [90, 99]", &datagram);
    assert_same(&sent, &received, 1e-3);
    let figure = |r: &crate::record::Record, f: &str| r.metrics[0].figure(r, f).expect("figure");
    // What does not come from the sketch is exact.
    for exact in ["count", "lower", "upper"] {
        assert_eq!(figure(&sent, exact), figure(&received, exact), "{exact}");
    }
}

#[test]
fn past_exact_set_members_the_first_members_are_forwarded() {
    let datagram: String = (0..50).map(|i| format!("u:m{i}|s\n")).collect();
    let (sent, received) = round_trip("exact_set_members = 10", &datagram);
    let count = |r: &crate::record::Record| r.metrics[0].figure(r, "count").expect("count");
    assert!(
        (count(&sent) - 50.0).abs() < 3.0,
        "an estimate: {}",
        count(&sent)
    );
    assert_eq!(count(&received), 10.0);
}

#[test]
fn without_a_statsd_backend_nothing_is_kept() {
    let config = Config::from_toml("[aggregation]\nflush_interval_ms = 1000\n", Path::new("t"))
        .expect("valid");
    assert!(!config.aggregation.forward);
    let record = record_from_datagram(&config, "t:1|ms\nu:a|s");
    assert!(record.members.is_empty());
    for metric in &record.metrics {
        if let Figures::Dist { figures, .. } = &metric.figures {
            assert!(figures.values().is_none());
        }
    }
}

#[test]
fn config_has_defaults_and_checks_its_keys() {
    let config = config("");
    let Some(BackendConfig::Statsd(statsd)) = config.backends.first() else {
        panic!("a statsd backend");
    };
    assert_eq!(statsd.protocol, Protocol::Udp);
    assert_eq!(statsd.max_datagram_bytes, 1432);
    for bad in [
        "address = \"h\"",
        "address = \"h:1\"\nprotocol = \"sctp\"",
        "address = \"h:1\"\nmax_datagram_bytes = 70000",
        "address = \"h:1\"\nport = 1",
    ] {
        let text = format!("[[backends]]\nkind = \"statsd\"\n{bad}\n");
        assert!(Config::from_toml(&text, Path::new("t")).is_err(), "{bad}");
    }
}

#[test]
fn the_example_statsd_block_uncommented_is_valid_and_spells_the_defaults() {
    let block = crate::config::example_block("statsd");
    let from_example = Config::from_toml(&block, Path::new("example.toml")).expect("valid");
    let defaults = Config::from_toml(
        "[[backends]]\nkind = \"statsd\"\naddress = \"127.0.0.1:8125\"\n",
        Path::new("d.toml"),
    )
    .expect("valid");
    assert_eq!(from_example.backends, defaults.backends);
}
