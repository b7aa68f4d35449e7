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

use super::wire::{CUMULATIVE, DELTA, Kind, Point, Resource, Writer};
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
        let resource = Resource {
            host: &record.host,
            version: env!("CARGO_PKG_VERSION"),
        };
        let mut writer = Writer::new(self.max_points);
        let mut scratch = Scratch::default();
        for (i, metric) in record.metrics.iter().enumerate() {
            let start = match self.temporality {
                Temporality::Cumulative => starts[i],
                Temporality::Delta => interval_start,
            };
            let times = Times {
                start,
                interval_start,
            };
            let raw_running = raw.get(raw_at[i]..).unwrap_or(&[]);
            let (unit, kind, temporality, point) =
                self.data(view, i, metric, times, raw_running, &mut scratch);
            writer.add(
                metric.key.name(),
                unit,
                kind,
                temporality,
                metric.key.tags(),
                time,
                &point,
                &resource,
                emit,
            );
        }
        let first_start = *self.first_start.get_or_insert(interval_start);
        for family in internal_families(view) {
            let name = format!("tallyd.{}", family.name);
            for (labels, value) in &family.samples {
                let (kind, temporality, start) = if family.counter {
                    (Kind::Sum, CUMULATIVE, first_start)
                } else {
                    (Kind::Gauge, 0, 0)
                };
                writer.add(
                    &name,
                    "",
                    kind,
                    temporality,
                    labels.iter().map(|(k, v)| (*k, v.as_str())),
                    time,
                    &Point::Number {
                        start,
                        value: *value,
                    },
                    &resource,
                    emit,
                );
            }
        }
        writer.finish(&resource, emit);
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

    /// One series' data point, and its metric's unit, kind and temporality.
    fn data<'s>(
        &self,
        view: &View,
        i: usize,
        metric: &Metric,
        times: Times,
        raw_running: &[f64],
        scratch: &'s mut Scratch,
    ) -> (&'static str, Kind, u64, Point<'s>) {
        let cumulative = self.temporality == Temporality::Cumulative;
        let temporality = if cumulative { CUMULATIVE } else { DELTA };
        let running = view.running(i);
        match &metric.figures {
            Figures::Counter { count, .. } => {
                let value = if cumulative { running.total } else { *count };
                let point = Point::Number {
                    start: times.start,
                    value,
                };
                ("", Kind::Sum, temporality, point)
            }
            Figures::Gauge { value, .. } => ("", Kind::Gauge, 0, gauge(*value)),
            Figures::Set { count, .. } => ("", Kind::Gauge, 0, gauge(*count)),
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
                match (observed.map(|o| (&o.plan.shape, o)), raw_observed(metric)) {
                    (Some((Shape::Buckets(bounds), observed)), _) => {
                        let (le_counts, count, sum) = if cumulative {
                            (running.buckets, running.count, running.total * divisor)
                        } else {
                            (&observed.values[..], figures.count(), interval_sum)
                        };
                        let point =
                            scratch.histogram(times.start, bounds, divisor, le_counts, count, sum);
                        (unit, Kind::Histogram, temporality, point)
                    }
                    (_, Some(observed)) => {
                        let bounds = observed.plan.raw_buckets.as_deref().unwrap_or(&[]);
                        let (le_counts, count, sum) = if cumulative {
                            (raw_running, running.count, running.total * divisor)
                        } else {
                            (&observed.raw_counts[..], figures.count(), interval_sum)
                        };
                        let point =
                            scratch.histogram(times.start, bounds, 1.0, le_counts, count, sum);
                        (unit, Kind::Histogram, temporality, point)
                    }
                    _ => {
                        scratch.quantiles.clear();
                        if metric.active() {
                            if let Some(median) = figures.median() {
                                scratch.quantiles.push((0.5, median));
                            }
                            let percentiles = &view.record().distribution.percentiles;
                            for (p, bound) in percentiles.iter().zip(figures.percentile_bounds()) {
                                if let (true, Some(v)) = (p.value() > 0.0, bound) {
                                    let q = (p.value() / 100.0 * 1e12).round() / 1e12;
                                    scratch.quantiles.push((q, v));
                                }
                            }
                        }
                        let point = Point::Summary {
                            start: times.interval_start,
                            count: round_count(figures.count()),
                            sum: interval_sum,
                            quantiles: &scratch.quantiles,
                        };
                        (unit, Kind::Summary, 0, point)
                    }
                }
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

/// A series' start times.
#[derive(Clone, Copy)]
struct Times {
    /// The start of a cumulative or delta point.
    start: u64,
    interval_start: u64,
}

fn gauge(value: f64) -> Point<'static> {
    Point::Number { start: 0, value }
}

/// Space the points of one flush are worked out in.
#[derive(Default)]
struct Scratch {
    bucket_counts: Vec<u64>,
    bounds: Vec<f64>,
    quantiles: Vec<(f64, f64)>,
}

impl Scratch {
    /// An explicit-bucket point from cumulative `le` counts (`v <= bound`): OTLP's buckets
    /// are `prev < v <= bound` and counted apart. `bounds` are divided by `divisor` (the
    /// exported unit): they are written in the unit received.
    fn histogram(
        &mut self,
        start: u64,
        bounds: &[f64],
        divisor: f64,
        le_counts: &[f64],
        count: f64,
        sum: f64,
    ) -> Point<'_> {
        let count = round_count(count);
        self.bucket_counts.clear();
        let mut below = 0u64;
        for &c in le_counts.iter().take(bounds.len()) {
            let c = round_count(c).min(count);
            self.bucket_counts.push(c.saturating_sub(below));
            below = below.max(c);
        }
        self.bucket_counts.resize(bounds.len(), 0);
        self.bucket_counts.push(count.saturating_sub(below));
        self.bounds.clear();
        self.bounds
            .extend(bounds.iter().map(|&b| unit_bound(b, divisor)));
        Point::Histogram {
            start,
            count,
            sum,
            bucket_counts: &self.bucket_counts,
            bounds: &self.bounds,
        }
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

fn secs_to_ns(secs: u64) -> u64 {
    secs.saturating_mul(1_000_000_000)
}
