//! The encoder against real records (built by the flush path), decoded with the official
//! `opentelemetry-proto` messages: the bytes are OTLP's, not only ours.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Metric};
use prost::Message;

use super::{Encoder, Temporality};
use crate::config::Config;
use crate::export::PrometheusConfig;
use crate::export::view::View;

const T0: u64 = 1_700_000_000;

/// Encodes successive datagrams (one record each, 10 s apart) and decodes each flush's
/// requests.
fn flushes(
    toml: &str,
    temporality: Temporality,
    datagrams: &[&str],
    max: usize,
) -> Vec<Vec<ExportMetricsServiceRequest>> {
    let config = Config::from_toml(toml, std::path::Path::new("t.toml")).expect("valid");
    let mut encoder = Encoder::new(temporality, max);
    let mut previous: Option<View> = None;
    let mut out = Vec::new();
    for (i, lines) in datagrams.iter().enumerate() {
        let mut record = crate::flush::record_from_datagram(&config, lines);
        record.host = "web-7".into();
        record.timestamp = T0 + 10 * i as u64;
        record.interval_ms = 10_000;
        let view = View::build(
            previous.as_ref(),
            Arc::new(record),
            &PrometheusConfig::default(),
        );
        let mut bodies = Vec::new();
        encoder.encode(&view, &mut |b| bodies.push(b));
        out.push(
            bodies
                .iter()
                .map(|b| ExportMetricsServiceRequest::decode(&b[..]).expect("OTLP decodes"))
                .collect(),
        );
        previous = Some(view);
    }
    out
}

fn metrics(requests: &[ExportMetricsServiceRequest]) -> Vec<Metric> {
    requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| s.metrics.clone())
        .collect()
}

fn metric<'a>(metrics: &'a [Metric], name: &str) -> &'a Metric {
    metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
}

fn string_attrs(attrs: &[KeyValue]) -> Vec<(String, String)> {
    attrs
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(AnyValue::StringValue(s)) => s,
                other => panic!("a string attribute, not {other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn secs(s: u64) -> u64 {
    s * 1_000_000_000
}

#[test]
fn resource_names_host_and_service() {
    let got = flushes("", Temporality::Cumulative, &["a:1|c"], 2000);
    let resource = got[0][0].resource_metrics[0]
        .resource
        .as_ref()
        .expect("a resource");
    assert_eq!(
        string_attrs(&resource.attributes),
        [
            ("host.name".to_string(), "web-7".to_string()),
            ("service.name".to_string(), "tallyd".to_string())
        ]
    );
}

#[test]
fn counters_are_cumulative_monotonic_sums_with_a_fixed_start() {
    let got = flushes(
        "",
        Temporality::Cumulative,
        &["api.requests:2|c|#env:prod", "api.requests:3|c|#env:prod"],
        2000,
    );
    for (i, want) in [(0, 2.0), (1, 5.0)] {
        let all = metrics(&got[i]);
        let m = metric(&all, "api.requests");
        let Some(Data::Sum(sum)) = &m.data else {
            panic!("a Sum: {m:?}")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &sum.data_points[0];
        assert_eq!(p.value, Some(Value::AsDouble(want)));
        assert_eq!(
            p.start_time_unix_nano,
            secs(T0 - 10),
            "the first interval's start"
        );
        assert_eq!(p.time_unix_nano, secs(T0 + 10 * i as u64));
        assert_eq!(
            string_attrs(&p.attributes),
            [("env".to_string(), "prod".to_string())]
        );
    }
}

#[test]
fn delta_counters_carry_the_interval() {
    let got = flushes("", Temporality::Delta, &["a:2|c", "a:3|c"], 2000);
    let all = metrics(&got[1]);
    let Some(Data::Sum(sum)) = &metric(&all, "a").data else {
        panic!("a Sum")
    };
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Delta as i32
    );
    let p = &sum.data_points[0];
    assert_eq!(p.value, Some(Value::AsDouble(3.0)));
    assert_eq!(
        (p.start_time_unix_nano, p.time_unix_nano),
        (secs(T0), secs(T0 + 10))
    );
}

#[test]
fn gauges_and_sets_are_gauges_even_at_zero() {
    let got = flushes("", Temporality::Cumulative, &["q:0|g\nu:a|s\nu:b|s"], 2000);
    let all = metrics(&got[0]);
    for (name, want) in [("q", 0.0), ("u", 2.0)] {
        let Some(Data::Gauge(g)) = &metric(&all, name).data else {
            panic!("a Gauge")
        };
        assert_eq!(g.data_points[0].value, Some(Value::AsDouble(want)));
    }
}

#[test]
fn timers_are_summaries_in_milliseconds_over_the_interval() {
    let got = flushes(
        "[aggregation]\npercentiles = [90]\n",
        Temporality::Cumulative,
        &["api.latency:100|ms\napi.latency:300|ms"],
        2000,
    );
    let all = metrics(&got[0]);
    let m = metric(&all, "api.latency");
    assert_eq!(m.unit, "ms");
    let Some(Data::Summary(s)) = &m.data else {
        panic!("a Summary: {m:?}")
    };
    let p = &s.data_points[0];
    assert_eq!((p.count, p.sum), (2, 400.0));
    assert_eq!(
        (p.start_time_unix_nano, p.time_unix_nano),
        (secs(T0 - 10), secs(T0))
    );
    let q: Vec<(f64, f64)> = p
        .quantile_values
        .iter()
        .map(|q| (q.quantile, q.value))
        .collect();
    assert_eq!(q, [(0.5, 200.0), (0.9, 300.0)]);
}

#[test]
fn bucketed_timers_are_histograms_with_bounds_in_milliseconds() {
    let toml = "[prometheus]\ntimer_type = \"histogram\"\n[[aggregation.histograms]]\n\
                metric = \"lat\"\nbins = [100, 250]\n";
    let traffic = ["lat:100|ms\nlat:200|ms\nlat:900|ms", "lat:50|ms"];
    let got = flushes(toml, Temporality::Cumulative, &traffic, 2000);
    let all = metrics(&got[1]);
    let m = metric(&all, "lat");
    assert_eq!(m.unit, "ms");
    let Some(Data::Histogram(h)) = &m.data else {
        panic!("a Histogram: {m:?}")
    };
    assert_eq!(
        h.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let p = &h.data_points[0];
    assert_eq!(p.explicit_bounds, [100.0, 250.0]);
    // 100 and 50 in (-inf, 100], 200 in (100, 250], 900 above.
    assert_eq!(p.bucket_counts, [2, 1, 1]);
    assert_eq!(p.count, 4);
    assert!((p.sum.expect("a sum") - 1250.0).abs() < 1e-9);
    assert_eq!(p.start_time_unix_nano, secs(T0 - 10));

    let got = flushes(toml, Temporality::Delta, &traffic, 2000);
    let all = metrics(&got[1]);
    let Some(Data::Histogram(h)) = &metric(&all, "lat").data else {
        panic!("a Histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(p.bucket_counts, [1, 0, 0]);
    assert_eq!((p.count, p.sum), (1, Some(50.0)));
    assert_eq!(p.start_time_unix_nano, secs(T0));
}

#[test]
fn bins_alone_make_histograms_in_the_unit_received() {
    // No Prometheus histogram asked for: `/metrics` has a summary, OTLP a histogram at the
    // bins' bounds (`prev < v <= bound`, unlike the record's own `bin_*`).
    let toml = "[[aggregation.histograms]]\nmetric = \"lat\"\nbins = [100, 250]\n\
                [[backends]]\nkind = \"otlp\"\nurl = \"http://h/v1/metrics\"\n";
    let traffic = [
        "lat:100|ms\nlat:200|ms\nlat:900|ms",
        "lat:50|ms\nlat:250|ms",
    ];
    let got = flushes(toml, Temporality::Cumulative, &traffic, 2000);
    let all = metrics(&got[1]);
    let m = metric(&all, "lat");
    assert_eq!(m.unit, "ms");
    let Some(Data::Histogram(h)) = &m.data else {
        panic!("a Histogram: {m:?}")
    };
    let p = &h.data_points[0];
    assert_eq!(p.explicit_bounds, [100.0, 250.0]);
    // 100 and 50 <= 100; 200 and 250 in (100, 250]; 900 above.
    assert_eq!(p.bucket_counts, [2, 2, 1]);
    assert_eq!(p.count, 5);
    assert!((p.sum.expect("a sum") - 1500.0).abs() < 1e-9);

    let got = flushes(toml, Temporality::Delta, &traffic, 2000);
    let all = metrics(&got[1]);
    let Some(Data::Histogram(h)) = &metric(&all, "lat").data else {
        panic!("a Histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(p.bucket_counts, [1, 1, 0]);
    assert_eq!(p.count, 2);
    assert_eq!(p.start_time_unix_nano, secs(T0));
}

#[test]
fn names_are_kept_as_received_and_series_of_one_prometheus_name_stay_apart() {
    // `a.b` and `a_b` are one Prometheus series; in OTLP they are two metrics.
    let got = flushes("", Temporality::Cumulative, &["a.b:2|c\na_b:3|c"], 2000);
    let all = metrics(&got[0]);
    let value = |name| match &metric(&all, name).data {
        Some(Data::Sum(s)) => s.data_points[0].value,
        _ => None,
    };
    assert_eq!(value("a.b"), Some(Value::AsDouble(2.0)));
    assert_eq!(value("a_b"), Some(Value::AsDouble(3.0)));
}

#[test]
fn points_of_one_name_share_a_metric_and_requests_hold_at_most_max_points() {
    let lines: String = (0..5).map(|i| format!("c:1|c|#i:{i}\n")).collect();
    let got = flushes("", Temporality::Cumulative, &[&lines], 2);
    let points = |m: &Metric| match &m.data {
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Gauge(g)) => g.data_points.len(),
        _ => 0,
    };
    let mut c_points = Vec::new();
    for request in &got[0] {
        let all = metrics(std::slice::from_ref(request));
        assert!(
            all.iter().map(points).sum::<usize>() <= 2,
            "at most 2 points"
        );
        let c: Vec<&Metric> = all.iter().filter(|m| m.name == "c").collect();
        assert!(c.len() <= 1, "the points of one name share a metric");
        c_points.extend(c.iter().map(|m| points(m)));
    }
    assert_eq!(c_points, [2, 2, 1]);
}

#[test]
fn the_agents_own_figures_follow_as_tallyd_metrics() {
    let got = flushes("", Temporality::Delta, &["a:1|c", "a:1|c"], 2000);
    let all = metrics(&got[1]);
    let Some(Data::Sum(flushes)) = &metric(&all, "tallyd.flushes").data else {
        panic!("a Sum")
    };
    let p = &flushes.data_points[0];
    assert_eq!(p.value, Some(Value::AsDouble(2.0)), "cumulative");
    assert_eq!(p.start_time_unix_nano, secs(T0 - 10));
    let Some(Data::Sum(bad)) = &metric(&all, "tallyd.bad_lines").data else {
        panic!("a Sum")
    };
    assert!(
        bad.data_points
            .iter()
            .any(|p| string_attrs(&p.attributes)
                == [("reason".to_string(), "malformed".to_string())])
    );
    assert!(matches!(
        metric(&all, "tallyd.series").data,
        Some(Data::Gauge(_))
    ));
}

#[test]
fn a_series_that_returns_starts_again() {
    let got = flushes(
        "[aggregation]\nseries_ttl_ms = 0\n",
        Temporality::Cumulative,
        &["a:1|c", "b:1|c", "a:1|c"],
        2000,
    );
    let all = metrics(&got[2]);
    let Some(Data::Sum(sum)) = &metric(&all, "a").data else {
        panic!("a Sum")
    };
    let p = &sum.data_points[0];
    assert_eq!(p.value, Some(Value::AsDouble(1.0)), "a counter reset");
    assert_eq!(p.start_time_unix_nano, secs(T0 + 10), "a new start");
}

#[test]
fn the_config_reads_every_key_with_its_defaults() {
    let entry = |extra: &str| {
        let text = format!(
            "[[backends]]\nkind = \"otlp\"\nurl = \"http://collector:4318/v1/metrics\"\n{extra}"
        );
        let config = Config::from_toml(&text, std::path::Path::new("t.toml")).expect("valid");
        match config.backends.into_iter().next() {
            Some(crate::config::BackendConfig::Otlp(otlp)) => otlp,
            other => panic!("an otlp backend, not {other:?}"),
        }
    };
    let defaults = entry("");
    assert_eq!(defaults.temporality, Temporality::Cumulative);
    assert!(!defaults.gzip);
    assert_eq!(defaults.max_points_per_send, 2000);
    let set = entry("temporality = \"delta\"\ngzip = true\nmax_points_per_send = 5\n");
    assert_eq!(set.temporality, Temporality::Delta);
    assert!(set.gzip);
    assert_eq!(set.max_points_per_send, 5);
    let bad = Config::from_toml(
        "[[backends]]\nkind = \"otlp\"\nurl = \"http://h/\"\ntemporality = \"both\"\n",
        std::path::Path::new("t.toml"),
    );
    assert!(bad.is_err());
}
