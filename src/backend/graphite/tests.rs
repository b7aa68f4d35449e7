//! The Graphite paths of every row of SPEC §7.3's table, in both namespace modes, against
//! lines derived by hand from etsy statsd's `backends/graphite.js` and
//! `lib/process_metrics.js` (read from 0.9.0, the newest release on the npm registry;
//! SPEC names 0.10, whose source was not at hand).

use std::path::Path;

use super::*;
use crate::config::{BackendConfig, Config};
use crate::flush::record_from_datagram;

const TS: u64 = 1_700_000_000;

fn config(aggregation: &str) -> Config {
    // etsy's default percentThreshold, unless the test sets its own.
    let percentiles = if aggregation.contains("percentiles") {
        ""
    } else {
        "percentiles = [90]"
    };
    let text = format!(
        "backends = []\n[aggregation]\nflush_interval_ms = 10000\n{percentiles}\n{aggregation}\n"
    );
    Config::from_toml(&text, Path::new("test.toml")).expect("valid")
}

fn names(extra: &str) -> NameConfig {
    let text =
        format!("[[backends]]\nkind = \"graphite\"\naddress = \"127.0.0.1:2003\"\n{extra}\n");
    match Config::from_toml(&text, Path::new("test.toml"))
        .expect("valid")
        .backends
        .pop()
    {
        Some(BackendConfig::Graphite(graphite)) => graphite.names,
        other => panic!("not graphite: {other:?}"),
    }
}

/// The metric lines (not the agent's own) of one flush of `datagram`, in order.
fn lines_with(aggregation: &str, names_toml: &str, datagram: &str) -> Vec<String> {
    let mut record = record_from_datagram(&config(aggregation), datagram);
    record.timestamp = TS;
    let mut encoder = GraphiteEncoder::new(&names(names_toml));
    let mut out = Vec::new();
    encoder.encode(&record, |payload| out.extend_from_slice(&payload));
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .filter(|line| !line.contains(".tallyd.") && !line.starts_with("tallyd."))
        .map(str::to_string)
        .collect()
}

fn lines(names_toml: &str, datagram: &str) -> Vec<String> {
    lines_with("", names_toml, datagram)
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

fn expect(lines: &[&str]) -> Vec<String> {
    sorted(lines.iter().map(|l| format!("{l} {TS}")).collect())
}

#[test]
fn legacy_counter_is_a_rate_under_the_global_prefix_and_a_count_under_stats_counts() {
    let got = lines("", "api.requests:1|c\napi.requests:2|c|@0.5");
    assert_eq!(
        sorted(got),
        expect(&["stats.api.requests 0.5", "stats_counts.api.requests 5"])
    );
}

#[test]
fn legacy_counter_without_flush_counts_is_only_the_rate() {
    let got = lines("flush_counts = false", "hits:3|c");
    assert_eq!(got, expect(&["stats.hits 0.3"]));
}

#[test]
fn legacy_mode_ignores_every_prefix() {
    // etsy 0.9+ `graphite_init`: the legacy namespaces are the fixed `stats`, `stats.timers`,
    // `stats.gauges`, `stats.sets` (and `stats_counts`), whatever the prefixes say.
    let datagram = "c:1|c\ng:2|g\ns:x|s\nt:4|ms";
    let fixed = sorted(lines("", datagram));
    for toml in [
        "global_prefix = \"edge\"\nprefix_counter = \"C\"\nprefix_timer = \"T\"\n\
         prefix_gauge = \"G\"\nprefix_set = \"S\"",
        "global_prefix = \"\"\nprefix_counter = \"\"\nprefix_timer = \"\"\n\
         prefix_gauge = \"\"\nprefix_set = \"\"",
    ] {
        assert_eq!(sorted(lines(toml, datagram)), fixed, "{toml}");
    }
    assert!(fixed.contains(&format!("stats.c 0.1 {TS}")));
    assert!(fixed.contains(&format!("stats_counts.c 1 {TS}")));
    assert!(fixed.contains(&format!("stats.gauges.g 2 {TS}")));
    assert!(fixed.contains(&format!("stats.sets.s.count 1 {TS}")));
    assert!(fixed.contains(&format!("stats.timers.t.upper 4 {TS}")));
}

#[test]
fn new_namespace_counter_is_rate_and_count_under_its_prefixes() {
    let got = lines("legacy_namespace = false", "api.requests:5|c");
    assert_eq!(
        sorted(got),
        expect(&[
            "stats.counters.api.requests.count 5",
            "stats.counters.api.requests.rate 0.5",
        ])
    );
    let got = lines(
        "legacy_namespace = false\nflush_counts = false",
        "api.requests:5|c",
    );
    assert_eq!(got, expect(&["stats.counters.api.requests.rate 0.5"]));
}

#[test]
fn gauges_are_under_gauges_in_both_modes() {
    assert_eq!(lines("", "q:17|g"), expect(&["stats.gauges.q 17"]));
    assert_eq!(
        lines("legacy_namespace = false", "q:-1.5|g"),
        expect(&["stats.gauges.q -1.5"])
    );
}

#[test]
fn sets_are_their_count_under_sets_in_both_modes() {
    let datagram = "u:a|s\nu:b|s\nu:a|s";
    assert_eq!(lines("", datagram), expect(&["stats.sets.u.count 2"]));
    assert_eq!(
        lines("legacy_namespace = false", datagram),
        expect(&["stats.sets.u.count 2"])
    );
}

fn timer_lines(head: &str, suffix: &str) -> Vec<String> {
    let figures = [
        ("count", "3"),
        ("count_ps", "0.3"),
        ("lower", "10"),
        ("upper", "30"),
        ("sum", "60"),
        ("sum_squares", "1400"),
        ("mean", "20"),
        ("median", "20"),
        ("std", "8.16496580927726"),
        ("count_90", "3"),
        ("mean_90", "20"),
        ("upper_90", "30"),
        ("sum_90", "60"),
        ("sum_squares_90", "1400"),
    ];
    sorted(
        figures
            .iter()
            .map(|(figure, value)| format!("{head}.{figure}{suffix} {value} {TS}"))
            .collect(),
    )
}

#[test]
fn timers_histograms_and_distributions_write_every_figure_under_timers() {
    for kind in ["ms", "h", "d"] {
        let datagram = format!("lat:10|{kind}\nlat:20|{kind}\nlat:30|{kind}");
        assert_eq!(
            sorted(lines("", &datagram)),
            timer_lines("stats.timers.lat", "")
        );
        assert_eq!(
            sorted(lines("legacy_namespace = false", &datagram)),
            timer_lines("stats.timers.lat", "")
        );
    }
}

#[test]
fn histogram_bins_are_nested_under_histogram() {
    let aggregation = "[[aggregation.histograms]]\nmetric = \"lat\"\nbins = [0.5, 15]";
    let got = lines_with(aggregation, "", "lat:10|ms\nlat:20|ms\nlat:30|ms");
    assert!(got.contains(&format!("stats.timers.lat.histogram.bin_0_5 0 {TS}")));
    assert!(got.contains(&format!("stats.timers.lat.histogram.bin_15 1 {TS}")));
    assert!(got.contains(&format!("stats.timers.lat.histogram.bin_inf 2 {TS}")));
}

#[test]
fn negative_percentiles_are_named_top() {
    let got = lines_with(
        "percentiles = [-50]",
        "",
        "lat:10|ms\nlat:20|ms\nlat:30|ms\nlat:40|ms",
    );
    assert!(got.contains(&format!("stats.timers.lat.lower_top50 30 {TS}")));
    assert!(got.contains(&format!("stats.timers.lat.mean_top50 35 {TS}")));
}

#[test]
fn new_namespace_uses_every_prefix_and_drops_empty_ones() {
    let datagram = "c:1|c\ng:2|g\ns:x|s\nt:4|ms";
    let toml = "legacy_namespace = false\nglobal_prefix = \"p\"\nprefix_counter = \"C\"\n\
                prefix_timer = \"T\"\nprefix_gauge = \"G\"\nprefix_set = \"S\"";
    let got = lines(toml, datagram);
    assert!(got.contains(&format!("p.C.c.rate 0.1 {TS}")));
    assert!(got.contains(&format!("p.C.c.count 1 {TS}")));
    assert!(got.contains(&format!("p.G.g 2 {TS}")));
    assert!(got.contains(&format!("p.S.s.count 1 {TS}")));
    assert!(got.contains(&format!("p.T.t.mean 4 {TS}")));

    let empty = "legacy_namespace = false\nglobal_prefix = \"\"\nprefix_counter = \"\"\n\
                 prefix_timer = \"\"\nprefix_gauge = \"\"\nprefix_set = \"\"";
    let got = lines(empty, datagram);
    assert!(got.contains(&format!("c.rate 0.1 {TS}")));
    assert!(got.contains(&format!("c.count 1 {TS}")));
    assert!(got.contains(&format!("g 2 {TS}")));
    assert!(got.contains(&format!("s.count 1 {TS}")));
    assert!(got.contains(&format!("t.mean 4 {TS}")));
}

#[test]
fn the_global_suffix_ends_every_path_in_both_modes() {
    let datagram = "c:1|c\ng:2|g\ns:x|s\nt:4|ms";
    let got = lines("global_suffix = \"sfx\"", datagram);
    assert!(got.contains(&format!("stats.c.sfx 0.1 {TS}")));
    assert!(got.contains(&format!("stats_counts.c.sfx 1 {TS}")));
    assert!(got.contains(&format!("stats.gauges.g.sfx 2 {TS}")));
    assert!(got.contains(&format!("stats.sets.s.count.sfx 1 {TS}")));
    assert!(got.contains(&format!("stats.timers.t.upper.sfx 4 {TS}")));
    let got = lines(
        "legacy_namespace = false\nglobal_suffix = \"sfx\"",
        datagram,
    );
    assert!(got.contains(&format!("stats.counters.c.rate.sfx 0.1 {TS}")));
    assert!(got.contains(&format!("stats.counters.c.count.sfx 1 {TS}")));
}

#[test]
fn tags_follow_the_whole_path_sorted_by_key() {
    let got = lines(
        "global_suffix = \"sfx\"",
        "req:1|c|#zone:eu,env:prod\nq;b=2;a=1:5|g",
    );
    assert!(got.contains(&format!("stats.req.sfx;env=prod;zone=eu 0.1 {TS}")));
    assert!(got.contains(&format!("stats_counts.req.sfx;env=prod;zone=eu 1 {TS}")));
    assert!(got.contains(&format!("stats.gauges.q.sfx;a=1;b=2 5 {TS}")));
}

#[test]
fn characters_graphite_forbids_in_tags_become_underscores() {
    let got = lines("", "g:1|g|#a!^b:~x;y,c:d=e");
    // Keys lose `!` `^` (and `=`, `;`); values lose `;` and a leading `~`; `=` in a value
    // is allowed.
    assert_eq!(got, expect(&["stats.gauges.g;a__b=_x_y;c=d=e 1"]));
}

#[test]
fn a_tag_without_value_is_left_out() {
    let got = lines("", "g:1|g|#canary,env:prod");
    assert_eq!(got, expect(&["stats.gauges.g;env=prod 1"]));
}

#[test]
fn names_are_sanitized_as_etsy_does_before_graphite_sees_them() {
    let got = lines("", "my  app/req é!:1|g");
    assert_eq!(got, expect(&["stats.gauges.my_app-req_ 1"]));
}

#[test]
fn idle_series_write_etsy_zero_figures() {
    let mut record = record_from_datagram(&config(""), "c:1|c\nt:1|ms\ns:a|s");
    record.timestamp = TS;
    for metric in &mut record.metrics {
        metric.figures = match &metric.figures {
            crate::record::Figures::Counter { .. } => crate::record::Figures::Counter {
                count: 0.0,
                active: false,
            },
            crate::record::Figures::Set { .. } => crate::record::Figures::Set {
                count: 0.0,
                active: false,
            },
            crate::record::Figures::Dist { .. } => crate::record::Figures::Dist {
                figures: Box::new(crate::aggregate::distribution::DistFigures::idle()),
                active: false,
            },
            other => other.clone(),
        };
    }
    let mut out = Vec::new();
    GraphiteEncoder::new(&NameConfig::default())
        .encode(&record, |payload| out.extend_from_slice(&payload));
    let text = String::from_utf8(out).expect("utf-8");
    let got: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("tallyd"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        sorted(got),
        expect(&[
            "stats.c 0",
            "stats.sets.s.count 0",
            "stats.timers.t.count 0",
            "stats.timers.t.count_ps 0",
            "stats_counts.c 0",
        ])
    );
}

#[test]
fn the_agents_own_figures_go_under_global_prefix_tallyd() {
    let mut record = record_from_datagram(&config(""), "c:1|c");
    record.timestamp = TS;
    record.internal.lines_received = 7;
    record.internal.bad_lines[0] = 2;
    for (toml, head) in [
        ("", "stats.tallyd."),
        (
            "legacy_namespace = false\nglobal_prefix = \"p\"",
            "p.tallyd.",
        ),
        ("global_prefix = \"\"", "tallyd."),
        ("global_prefix = \"edge\"", "edge.tallyd."),
    ] {
        let mut out = Vec::new();
        GraphiteEncoder::new(&names(toml))
            .encode(&record, |payload| out.extend_from_slice(&payload));
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains(&format!("\n{head}lines_received 7 {TS}\n")),
            "{text}"
        );
        assert!(text.contains(&format!("\n{head}series ")), "{text}");
        let reason = crate::protocol::ParseError::ALL[0].reason();
        assert!(
            text.contains(&format!("\n{head}bad_lines.{reason} 2 {TS}\n")),
            "{text}"
        );
    }
}

#[test]
fn payloads_are_cut_between_whole_lines() {
    let datagram: String = (0..200).map(|i| format!("c{i}:1|c\n")).collect();
    let mut record = record_from_datagram(&config(""), &datagram);
    record.timestamp = TS;
    let mut whole = Vec::new();
    GraphiteEncoder::new(&NameConfig::default())
        .encode(&record, |payload| whole.extend_from_slice(&payload));
    let mut payloads = Vec::new();
    GraphiteEncoder::new(&NameConfig::default())
        .with_payload_bytes(1000)
        .encode(&record, |payload| payloads.push(payload));
    assert!(payloads.len() > 5, "{} payloads", payloads.len());
    for payload in &payloads {
        assert_eq!(payload.last(), Some(&b'\n'));
    }
    assert_eq!(payloads.concat(), whole);
}

/// One flush of etsy statsd (flushInterval 10000, percentThreshold [90], a histogram rule
/// for `api.latency` with bins [15, 25, 'inf']: etsy writes `bin_inf` only when asked,
/// SPEC §2 always) for this traffic writes, besides its own `statsd.*` figures,
/// exactly these lines (derived by hand from `process_metrics.js` and `graphite.js`).
#[test]
fn a_flush_matches_etsy_statsd_line_for_line() {
    let datagram = "api.requests:1|c\napi.requests:2|c|@0.5\nqueue.depth:17|g\n\
                    queue.depth:-2|g\napi.latency:10|ms\napi.latency:20|ms|@0.5\n\
                    api.latency:30|ms\nusers.online:a|s\nusers.online:b|s\nusers.online:a|s\n\
                    errors:1|c|@0.1";
    let aggregation = "[[aggregation.histograms]]\nmetric = \"api.latency\"\nbins = [15, 25]";
    let etsy = [
        "stats.api.requests 0.5",
        "stats_counts.api.requests 5",
        "stats.errors 1",
        "stats_counts.errors 10",
        "stats.gauges.queue.depth 15",
        "stats.sets.users.online.count 2",
        // count = 1 + 2 + 1 (20 was sampled at 0.5); n = 3 for everything else.
        "stats.timers.api.latency.count 4",
        "stats.timers.api.latency.count_ps 0.4",
        "stats.timers.api.latency.lower 10",
        "stats.timers.api.latency.upper 30",
        "stats.timers.api.latency.sum 60",
        "stats.timers.api.latency.sum_squares 1400",
        "stats.timers.api.latency.mean 20",
        "stats.timers.api.latency.median 20",
        "stats.timers.api.latency.std 8.16496580927726",
        "stats.timers.api.latency.count_90 3",
        "stats.timers.api.latency.mean_90 20",
        "stats.timers.api.latency.upper_90 30",
        "stats.timers.api.latency.sum_90 60",
        "stats.timers.api.latency.sum_squares_90 1400",
        "stats.timers.api.latency.histogram.bin_15 1",
        "stats.timers.api.latency.histogram.bin_25 1",
        "stats.timers.api.latency.histogram.bin_inf 1",
    ];
    assert_eq!(sorted(lines_with(aggregation, "", datagram)), expect(&etsy));
}

#[test]
fn config_has_etsys_defaults_and_checks_the_address() {
    assert_eq!(names(""), NameConfig::default());
    for bad in ["nohost", ":2003", "h:0", "h:99999", "h:x"] {
        let text = format!("[[backends]]\nkind = \"graphite\"\naddress = {bad:?}\n");
        assert!(
            Config::from_toml(&text, Path::new("t.toml")).is_err(),
            "{bad} accepted"
        );
    }
    let text = "[[backends]]\nkind = \"graphite\"\naddress = \"h:1\"\nprefix = \"x\"\n";
    assert!(Config::from_toml(text, Path::new("t.toml")).is_err());
    let text = "[[backends]]\nkind = \"graphite\"\naddress = \"h:1\"\nglobal_prefix = \"a b\"\n";
    assert!(Config::from_toml(text, Path::new("t.toml")).is_err());
}

#[test]
fn the_example_graphite_block_uncommented_is_valid_and_spells_the_defaults() {
    let block = crate::config::example_block("graphite");
    let config = Config::from_toml(&block, Path::new("example.toml")).expect("valid block");
    let Some(BackendConfig::Graphite(graphite)) = config.backends.first() else {
        panic!("a graphite backend");
    };
    assert_eq!(graphite.names, NameConfig::default());
    let defaults = Config::from_toml(
        "[[backends]]\nkind = \"graphite\"\naddress = \"h:1\"\n",
        Path::new("d.toml"),
    )
    .expect("valid");
    let Some(BackendConfig::Graphite(default)) = defaults.backends.first() else {
        panic!("a graphite backend");
    };
    assert_eq!(graphite.queue, default.queue);
}
