//! Encodes records as OTLP `ExportMetricsServiceRequest`s (SPEC §7.5): StatsD names and
//! values as received, tags as data-point attributes, counters as monotonic Sums, gauges
//! and sets as Gauges, timers, histograms and distributions as Summaries or, where `le`
//! buckets are observed, explicit-bucket Histograms; `ms` timers keep milliseconds. The
//! agent's own figures follow as `tallyd.<name>` (counters cumulative, whatever the
//! configured temporality).
//!
//! Every StatsD series is its own data point: the running totals come from the
//! [`View`] per record metric ([`View::running`]), before the merging that Prometheus
//! names need, so two StatsD series that map to one Prometheus series stay two OTLP
//! points. Start times of cumulative points are kept here, carried from record to record
//! as the view carries its totals; a series that expires and returns starts again.

use std::sync::Arc;

use super::proto::{
    self, AnyValue, Data, ExportMetricsServiceRequest, HistogramDataPoint, InstrumentationScope,
    KeyValue, NumberDataPoint, Resource, ResourceMetrics, ScopeMetrics, SummaryDataPoint,
    ValueAtQuantile,
};
use crate::aggregate::distribution::Shape;
use crate::export::exposition::internal_families;
use crate::export::view::View;
use crate::protocol::MetricKind;
use crate::record::{Figures, Metric, Record};

/// Cumulative (running totals since the series appeared) or delta (the interval's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Temporality {
    #[default]
    Cumulative,
    Delta,
}

/// Turns records into requests of at most `max_points` data points.
pub struct Encoder {
    temporality: Temporality,
    max_points: usize,
    /// Start of each series of the last record (Unix ns), parallel to its metrics.
    starts: Vec<u64>,
    /// Running `le` counts at the bins' bounds of each series of the last record that has
    /// them (see [`Observe::raw_buckets`]), flat, with where each series' start.
    raw: Vec<f64>,
    raw_at: Vec<usize>,
    last: Option<Arc<Record>>,
    /// The start of the first interval encoded: the agent's own counters count from there.
    first_start: Option<u64>,
}

/// The request being filled.
struct Batch<'r> {
    record: &'r Record,
    metrics: Vec<proto::Metric>,
    points: usize,
}

impl Encoder {
    pub fn new(temporality: Temporality, max_points: usize) -> Encoder {
        Encoder {
            temporality,
            max_points: max_points.max(1),
            starts: Vec::new(),
            raw: Vec::new(),
            raw_at: Vec::new(),
            last: None,
            first_start: None,
        }
    }

    /// Encodes the record of `view` into requests (protobuf, uncompressed), each handed to
    /// `emit`.
    pub fn encode(&mut self, view: &View, emit: &mut dyn FnMut(Vec<u8>)) {
        let record = view.record().clone();
        let time = secs_to_ns(record.timestamp);
        let interval_start = time.saturating_sub(record.interval_ms.saturating_mul(1_000_000));
        let Carried {
            starts,
            raw,
            raw_at,
        } = self.carry(&record, interval_start);
        let mut batch = Batch {
            record: &record,
            metrics: Vec::new(),
            points: 0,
        };
        for (i, metric) in record.metrics.iter().enumerate() {
            let start = match self.temporality {
                Temporality::Cumulative => starts[i],
                Temporality::Delta => interval_start,
            };
            let point = Point {
                attributes: attributes(metric),
                start,
                interval_start,
                time,
            };
            let raw_running = raw.get(raw_at[i]..).unwrap_or(&[]);
            let (unit, data) = self.data(view, i, metric, point, raw_running);
            batch.add(metric.key.name(), unit, data);
            if batch.points >= self.max_points {
                batch.finish(emit);
            }
        }
        let first_start = *self.first_start.get_or_insert(interval_start);
        for family in internal_families(view) {
            let name = format!("tallyd.{}", family.name);
            for (labels, value) in &family.samples {
                let point = NumberDataPoint {
                    attributes: labels.iter().map(|(k, v)| string_attribute(k, v)).collect(),
                    start_time_unix_nano: if family.counter { first_start } else { 0 },
                    time_unix_nano: time,
                    as_double: Some(*value),
                };
                let data = if family.counter {
                    Data::Sum(proto::Sum {
                        data_points: vec![point],
                        aggregation_temporality: proto::CUMULATIVE,
                        is_monotonic: true,
                    })
                } else {
                    gauge(point)
                };
                batch.add(&name, "", data);
                if batch.points >= self.max_points {
                    batch.finish(emit);
                }
            }
        }
        batch.finish(emit);
        self.starts = starts;
        self.raw = raw;
        self.raw_at = raw_at;
        self.last = Some(record);
    }

    /// The start time of every series in `record` (carried from the last record, or the
    /// start of this interval for a series that just appeared), and its running `le`
    /// counts at its bins' bounds (this interval's added to those carried, when the bounds
    /// are the same).
    fn carry(&self, record: &Record, interval_start: u64) -> Carried {
        let old: &[Metric] = self.last.as_deref().map_or(&[], |r| &r.metrics);
        let mut old_i = 0;
        let n = record.metrics.len();
        let mut carried = Carried {
            starts: Vec::with_capacity(n),
            raw: Vec::new(),
            raw_at: Vec::with_capacity(n),
        };
        for metric in &record.metrics {
            let mut found = None;
            while let Some(prev) = old.get(old_i) {
                match prev.key.record_order(&metric.key) {
                    std::cmp::Ordering::Less => old_i += 1,
                    std::cmp::Ordering::Equal => {
                        found = Some(old_i);
                        old_i += 1;
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            let start = found.and_then(|i| self.starts.get(i).copied());
            carried.starts.push(start.unwrap_or(interval_start));
            let at = carried.raw.len();
            carried.raw_at.push(at);
            let Some(now) = raw_observed(metric) else {
                continue;
            };
            carried.raw.extend_from_slice(&now.raw_counts);
            let before = found
                .filter(|&i| {
                    raw_observed(&old[i])
                        .is_some_and(|o| o.plan.raw_buckets == now.plan.raw_buckets)
                })
                .and_then(|i| {
                    self.raw
                        .get(self.raw_at[i]..self.raw_at[i] + now.raw_counts.len())
                });
            if let Some(before) = before {
                for (c, b) in carried.raw[at..].iter_mut().zip(before) {
                    *c += b;
                }
            }
        }
        carried
    }

    /// One series' metric data (one data point) and unit.
    fn data(
        &self,
        view: &View,
        i: usize,
        metric: &Metric,
        point: Point,
        raw_running: &[f64],
    ) -> (&'static str, Data) {
        let cumulative = self.temporality == Temporality::Cumulative;
        let temporality = if cumulative {
            proto::CUMULATIVE
        } else {
            proto::DELTA
        };
        let running = view.running(i);
        match &metric.figures {
            Figures::Counter { count, .. } => {
                let value = if cumulative { running.total } else { *count };
                let data = Data::Sum(proto::Sum {
                    data_points: vec![point.number(true, value)],
                    aggregation_temporality: temporality,
                    is_monotonic: true,
                });
                ("", data)
            }
            Figures::Gauge { value, .. } => ("", gauge(point.number(false, *value))),
            Figures::Set { count, .. } => ("", gauge(point.number(false, *count))),
            Figures::Dist { figures, .. } => {
                let unit = if metric.kind() == MetricKind::Timer {
                    "ms"
                } else {
                    ""
                };
                // The view's figures are in the exported unit (seconds for `ms` timers):
                // back to the unit received.
                let divisor = crate::export::divisor(metric.kind());
                let interval_sum = figures.mean().map_or(0.0, |m| m * figures.count());
                let observed = figures
                    .observed()
                    .filter(|o| matches!(o.plan.shape, Shape::Buckets(_)));
                let data = match (observed.map(|o| (&o.plan.shape, o)), raw_observed(metric)) {
                    (Some((Shape::Buckets(bounds), observed)), _) => {
                        let (le_counts, count, sum) = if cumulative {
                            (running.buckets, running.count, running.total * divisor)
                        } else {
                            (&observed.values[..], figures.count(), interval_sum)
                        };
                        Data::Histogram(proto::Histogram {
                            data_points: vec![histogram_point(
                                point, bounds, divisor, le_counts, count, sum,
                            )],
                            aggregation_temporality: temporality,
                        })
                    }
                    (_, Some(observed)) => {
                        let bounds = observed.plan.raw_buckets.as_deref().unwrap_or(&[]);
                        let (le_counts, count, sum) = if cumulative {
                            (raw_running, running.count, running.total * divisor)
                        } else {
                            (&observed.raw_counts[..], figures.count(), interval_sum)
                        };
                        Data::Histogram(proto::Histogram {
                            data_points: vec![histogram_point(
                                point, bounds, 1.0, le_counts, count, sum,
                            )],
                            aggregation_temporality: temporality,
                        })
                    }
                    _ => {
                        let mut quantile_values = Vec::new();
                        if metric.active() {
                            if let Some(median) = figures.median() {
                                quantile_values.push(quantile(0.5, median));
                            }
                            let percentiles = &view.record().distribution.percentiles;
                            for (p, bound) in percentiles.iter().zip(figures.percentile_bounds()) {
                                if let (true, Some(v)) = (p.value() > 0.0, bound) {
                                    quantile_values.push(quantile(p.value() / 100.0, v));
                                }
                            }
                        }
                        Data::Summary(proto::Summary {
                            data_points: vec![SummaryDataPoint {
                                attributes: point.attributes,
                                start_time_unix_nano: point.interval_start,
                                time_unix_nano: point.time,
                                count: round_count(figures.count()),
                                sum: interval_sum,
                                quantile_values,
                            }],
                        })
                    }
                };
                (unit, data)
            }
        }
    }
}

/// What [`Encoder::carry`] carries from record to record.
struct Carried {
    starts: Vec<u64>,
    raw: Vec<f64>,
    raw_at: Vec<usize>,
}

/// A series' observation of `le` counts at its bins' bounds, in the unit received.
fn raw_observed(metric: &Metric) -> Option<&crate::aggregate::distribution::Observed> {
    match &metric.figures {
        Figures::Dist { figures, .. } => {
            figures.observed().filter(|o| o.plan.raw_buckets.is_some())
        }
        _ => None,
    }
}

/// What every data point of one series carries.
struct Point {
    attributes: Vec<KeyValue>,
    /// The start of a cumulative or delta point.
    start: u64,
    interval_start: u64,
    time: u64,
}

impl Point {
    /// A number point; with `start` its start time, else none (a gauge's).
    fn number(self, start: bool, value: f64) -> NumberDataPoint {
        NumberDataPoint {
            attributes: self.attributes,
            start_time_unix_nano: if start { self.start } else { 0 },
            time_unix_nano: self.time,
            as_double: Some(value),
        }
    }
}

fn gauge(point: NumberDataPoint) -> Data {
    Data::Gauge(proto::Gauge {
        data_points: vec![point],
    })
}

fn quantile(q: f64, value: f64) -> ValueAtQuantile {
    ValueAtQuantile {
        quantile: (q * 1e12).round() / 1e12,
        value,
    }
}

/// An explicit-bucket point from cumulative `le` counts (`v <= bound`, the exported unit):
/// OTLP's buckets are `prev < v <= bound` and counted apart.
fn histogram_point(
    point: Point,
    bounds: &[f64],
    divisor: f64,
    le_counts: &[f64],
    count: f64,
    sum: f64,
) -> HistogramDataPoint {
    let count = round_count(count);
    let mut bucket_counts = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0u64;
    for &c in le_counts.iter().take(bounds.len()) {
        let c = round_count(c).min(count);
        bucket_counts.push(c.saturating_sub(below));
        below = below.max(c);
    }
    bucket_counts.resize(bounds.len(), 0);
    bucket_counts.push(count.saturating_sub(below));
    HistogramDataPoint {
        attributes: point.attributes,
        start_time_unix_nano: point.start,
        time_unix_nano: point.time,
        count,
        sum: Some(sum),
        bucket_counts,
        explicit_bounds: bounds.iter().map(|&b| unit_bound(b, divisor)).collect(),
    }
}

/// A bound in the exported unit back in the unit received (`0.25` s -> `250` ms), without
/// the binary tail a multiplication may leave (`0.1 * 1000` is `100.00000000000001`).
fn unit_bound(bound: f64, divisor: f64) -> f64 {
    let v = bound * divisor;
    let clean = (v * 1e9).round() / 1e9;
    if clean / divisor == bound { clean } else { v }
}

/// OTLP counts are integers; a count with sample rates may not be.
fn round_count(c: f64) -> u64 {
    if c.is_finite() && c > 0.0 {
        c.round() as u64
    } else {
        0
    }
}

fn attributes(metric: &Metric) -> Vec<KeyValue> {
    metric
        .key
        .tags()
        .map(|(k, v)| string_attribute(k, v))
        .collect()
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            string_value: value.to_string(),
        }),
    }
}

fn secs_to_ns(secs: u64) -> u64 {
    secs.saturating_mul(1_000_000_000)
}

impl Batch<'_> {
    /// Adds a data point: to the last metric when it has the same name, unit and kind.
    fn add(&mut self, name: &str, unit: &'static str, data: Data) {
        self.points += 1;
        let data = match self.metrics.last_mut() {
            Some(last) if last.name == name && last.unit == unit => {
                match merge(&mut last.data, data) {
                    Ok(()) => return,
                    Err(data) => data,
                }
            }
            _ => data,
        };
        self.metrics.push(proto::Metric {
            name: name.to_string(),
            unit: unit.to_string(),
            data: Some(data),
        });
    }

    /// Wraps the metrics so far in a request and hands its bytes to `emit`.
    fn finish(&mut self, emit: &mut dyn FnMut(Vec<u8>)) {
        if self.metrics.is_empty() {
            return;
        }
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        string_attribute("host.name", &self.record.host),
                        string_attribute("service.name", "tallyd"),
                    ],
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "tallyd".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    metrics: std::mem::take(&mut self.metrics),
                }],
            }],
        };
        emit(prost::Message::encode_to_vec(&request));
        self.points = 0;
    }
}

/// Appends `data`'s points to `into` when both are the same kind (and temporality); gives
/// `data` back otherwise.
fn merge(into: &mut Option<Data>, data: Data) -> Result<(), Data> {
    let Some(into) = into.as_mut() else {
        return Err(data);
    };
    match (into, data) {
        (Data::Gauge(a), Data::Gauge(b)) => a.data_points.extend(b.data_points),
        (Data::Sum(a), Data::Sum(b)) if a.aggregation_temporality == b.aggregation_temporality => {
            a.data_points.extend(b.data_points)
        }
        (Data::Histogram(a), Data::Histogram(b))
            if a.aggregation_temporality == b.aggregation_temporality =>
        {
            a.data_points.extend(b.data_points)
        }
        (Data::Summary(a), Data::Summary(b)) => a.data_points.extend(b.data_points),
        (_, data) => return Err(data),
    }
    Ok(())
}
