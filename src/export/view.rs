//! The cumulative Prometheus view of successive flush records (SPEC §7.1): counters'
//! running totals, summaries' and histograms' running `_sum`, `_count` and buckets, the
//! mapping result of each series, and the order in which the series are written, grouped
//! by family with duplicates merged.
//!
//! State is kept parallel to the last record's metrics (same index), so a series costs 16
//! bytes of running totals (plus its buckets, and 8 bytes where a mapping file is loaded).
//! Each flush walks the new record against the old one in record order (both are sorted),
//! carrying every surviving series' totals forward; a series missing from the new record
//! has expired and starts again from 0 if it returns (a counter reset).

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::aggregate::distribution::{Observed, Shape};
use crate::export::PrometheusConfig;
use crate::export::mapping::{MapResult, Mapped, Mapping};
use crate::export::name;
use crate::record::{Figures, Metric, Record};

/// Flag bits on an order entry (the low bits are the metric's index in the record).
pub(super) const FAMILY_START: u32 = 1 << 31;
/// The row adds into the previous row's exported series (same name and labels).
pub(super) const MERGE: u32 = 1 << 30;
/// The row's kind conflicts with its family's: not written.
pub(super) const CONFLICT: u32 = 1 << 29;
pub(super) const INDEX: u32 = CONFLICT - 1;

/// Running totals of one series: a counter's total in `a`; a distribution's `_sum` (in
/// the exported unit) in `a` and `_count` in `b`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Totals {
    pub(super) a: f64,
    pub(super) b: f64,
}

/// The mapping's decision for one series, made when the series first appears and shared
/// by every later view: `None` when an `action: drop` rule matched.
#[derive(Debug)]
pub(super) struct SeriesMap {
    pub(super) result: Option<MapResult>,
}

/// The exported family kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FamilyKind {
    Counter,
    Gauge,
    Summary,
    Histogram,
}

/// The Prometheus view after one flush: what `/metrics` writes until the next.
#[derive(Debug)]
pub struct View {
    pub(super) record: Arc<Record>,
    pub(super) totals: Vec<Totals>,
    /// Running bucket counts of every histogram series, in record order.
    pub(super) buckets: Vec<f64>,
    /// Where each metric's buckets start in `buckets`; empty when there are none.
    pub(super) bucket_offsets: Vec<u32>,
    /// Per metric when a mapping is loaded (`None`: no rule matched); empty otherwise.
    pub(super) maps: Vec<Option<Arc<SeriesMap>>>,
    /// Per metric when a mapping is loaded: the flush count of its last sample, for the
    /// rules' `ttl`.
    pub(super) last_active: Vec<u64>,
    /// The write order: metric indices with flag bits.
    pub(super) order: Vec<u32>,
    /// The agent's own running totals (SPEC §7.1 `tallyd_*`).
    pub(super) internal: InternalTotals,
    pub(super) flushes: u64,
    /// The mapping `maps` were decided by.
    mapping: Option<Arc<Mapping>>,
}

/// The agent's own counters since start.
#[derive(Debug, Clone, Default)]
pub(super) struct InternalTotals {
    pub(super) packets: f64,
    pub(super) lines: f64,
    pub(super) bad: Vec<f64>,
    pub(super) dropped_lines: f64,
    pub(super) dropped_datagrams: f64,
    pub(super) dropped_series: f64,
    pub(super) dropped_events: f64,
    pub(super) dropped_records: f64,
    pub(super) backend_errors: f64,
    pub(super) notifier_errors: f64,
    pub(super) config_reloads: f64,
    pub(super) config_reload_failures: f64,
    pub(super) stream_clients_dropped: f64,
    pub(super) history_errors: f64,
    /// Every (rule, severity) that has fired since start, so a rule back to 0 shows 0.
    pub(super) alert_rules: Vec<(String, String)>,
}

impl View {
    /// Flushes since start, this one included.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// The record this view was built from.
    pub fn record(&self) -> &Arc<Record> {
        &self.record
    }

    /// The view after `record`: the totals carried forward from `previous` (the view of
    /// the flush before, if any) and advanced. When the mapping changed (a reload), every
    /// series is mapped again.
    pub fn build(previous: Option<&View>, record: Arc<Record>, config: &PrometheusConfig) -> View {
        let none = View {
            record: record.clone(),
            totals: Vec::new(),
            buckets: Vec::new(),
            bucket_offsets: Vec::new(),
            maps: Vec::new(),
            last_active: Vec::new(),
            order: Vec::new(),
            internal: InternalTotals::default(),
            flushes: 0,
            mapping: None,
        };
        let previous = previous.unwrap_or(&none);
        previous.next(record, config)
    }

    fn next(&self, record: Arc<Record>, config: &PrometheusConfig) -> View {
        let flushes = self.flushes + 1;
        let remap = match (&self.mapping, &config.mapping) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, b) => a.is_some() != b.is_some(),
        };
        let n = record.metrics.len();
        let mut totals = Vec::with_capacity(n);
        let mut buckets = Vec::new();
        let with_maps = config.mapping.is_some();
        let mut maps = Vec::with_capacity(if with_maps { n } else { 0 });
        let mut last_active = Vec::with_capacity(if with_maps { n } else { 0 });
        let old = &self.record.metrics;
        let mut old_i = 0;
        let mut old_bucket = 0;
        for metric in &record.metrics {
            // Skip the old series that expired (ordered before this one).
            let mut carried = None;
            while let Some(prev) = old.get(old_i) {
                match prev.key.record_order(&metric.key) {
                    std::cmp::Ordering::Less => {
                        old_bucket += bucket_len(prev);
                        old_i += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        carried = Some((old_i, old_bucket));
                        old_bucket += bucket_len(prev);
                        old_i += 1;
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            let mut t = carried
                .and_then(|(i, _)| self.totals.get(i).copied())
                .unwrap_or_default();
            advance(&mut t, metric);
            totals.push(t);
            if let Some(observed) = bucket_observation(metric) {
                let len = observed.values.len();
                let start = buckets.len();
                buckets.extend_from_slice(&observed.values);
                // Same bounds as before: add the old running counts.
                if let Some((i, at)) = carried
                    && bucket_observation(&old[i]).is_some_and(|o| same_shape(o, observed))
                    && let Some(prev) = self.buckets.get(at..at + len)
                {
                    for (now, before) in buckets[start..].iter_mut().zip(prev) {
                        *now += before;
                    }
                }
            }
            if with_maps {
                let previous = carried.filter(|_| !remap).and_then(|(i, _)| {
                    let map = self.maps.get(i)?.clone();
                    Some((map, *self.last_active.get(i)?))
                });
                let (map, active) = match previous {
                    Some((map, active)) => (map, active),
                    None => (map_series(config, metric), flushes),
                };
                maps.push(map);
                last_active.push(if metric.active() { flushes } else { active });
            }
        }
        let mut bucket_offsets = Vec::new();
        if !buckets.is_empty() {
            let mut at = 0;
            for metric in &record.metrics {
                bucket_offsets.push(at as u32);
                at += bucket_len(metric);
            }
        }
        let mut internal = self.internal.clone();
        internal.add(&record);
        let mut view = View {
            record,
            totals,
            buckets,
            bucket_offsets,
            maps,
            last_active,
            order: Vec::new(),
            internal,
            flushes,
            mapping: config.mapping.clone(),
        };
        view.order = view.write_order();
        view
    }

    /// The exported family name's parts of metric `i`: its base name (mapped, or the
    /// StatsD name to escape) and whether it is mapped.
    pub(super) fn base(&self, i: usize) -> (&str, bool) {
        match self.mapped(i) {
            Some(result) => (result.name.as_str(), true),
            None => (self.record.metrics[i].key.name(), false),
        }
    }

    /// The mapped labels of metric `i`.
    pub(super) fn mapped_labels(&self, i: usize) -> &[(String, String)] {
        self.mapped(i).map_or(&[], |result| &result.labels)
    }

    fn mapped(&self, i: usize) -> Option<&MapResult> {
        self.maps.get(i)?.as_deref()?.result.as_ref()
    }

    /// Whether metric `i` is exported: not dropped by the mapping, not past its rule's ttl.
    fn exported(&self, i: usize) -> bool {
        let Some(Some(map)) = self.maps.get(i) else {
            return true;
        };
        let Some(result) = &map.result else {
            return false;
        };
        let Some(ttl) = result.ttl else {
            return true;
        };
        let since = self.last_active.get(i).copied().unwrap_or(self.flushes);
        let idle_ms = u128::from(self.flushes - since) * u128::from(self.record.interval_ms);
        idle_ms <= ttl.as_millis()
    }

    /// Groups the series by family (a hash of the family name), then by label set, so
    /// duplicates are adjacent and merge; rows whose kind differs from their family's first
    /// are marked as conflicts.
    fn write_order(&self) -> Vec<u32> {
        let state = foldhash::fast::FixedState::with_seed(0x7a11_d00d);
        let mut rows: Vec<(u64, u64, u32)> = Vec::with_capacity(self.record.metrics.len());
        let mut scratch = Vec::new();
        for (i, metric) in self.record.metrics.iter().enumerate() {
            if !self.exported(i) {
                continue;
            }
            let (base, mapped) = self.base(i);
            let mut family = state.build_hasher();
            if mapped {
                family.write(base.as_bytes());
            } else {
                name::hash_escaped(&mut family, base, &mut scratch);
            }
            if family_kind(metric) == FamilyKind::Counter {
                family.write(name::counter_suffix_of(base, mapped).as_bytes());
            }
            let mut labels = state.build_hasher();
            let mapped_labels = self.mapped_labels(i);
            for (key, value) in mapped_labels {
                labels.write(key.as_bytes());
                labels.write_u8(0xff);
                labels.write(value.as_bytes());
                labels.write_u8(0xfe);
            }
            for (key, value) in metric.key.tags() {
                if mapped_labels
                    .iter()
                    .any(|(k, _)| name::same_escaped(k, key))
                {
                    continue;
                }
                name::hash_escaped(&mut labels, key, &mut scratch);
                labels.write_u8(0xff);
                labels.write(value.as_bytes());
                labels.write_u8(0xfe);
            }
            rows.push((family.finish(), labels.finish(), i as u32));
        }
        rows.sort_unstable();
        let mut order = Vec::with_capacity(rows.len());
        let mut family_kind_now = FamilyKind::Counter;
        for (at, &(family, labels, i)) in rows.iter().enumerate() {
            let kind = family_kind(&self.record.metrics[i as usize]);
            let prev = at.checked_sub(1).map(|p| rows[p]);
            let mut entry = i;
            match prev {
                Some((f, _, _)) if f == family => {
                    if kind != family_kind_now {
                        entry |= CONFLICT;
                    } else if prev.is_some_and(|(_, l, _)| l == labels) {
                        entry |= MERGE;
                    }
                }
                _ => {
                    family_kind_now = kind;
                    entry |= FAMILY_START;
                }
            }
            order.push(entry);
        }
        order
    }
}

impl InternalTotals {
    fn add(&mut self, record: &Record) {
        let i = &record.internal;
        self.packets += i.packets_received as f64;
        self.lines += i.lines_received as f64;
        self.bad.resize(i.bad_lines.len(), 0.0);
        for (total, &n) in self.bad.iter_mut().zip(&i.bad_lines) {
            *total += n as f64;
        }
        self.dropped_lines += i.dropped_lines as f64;
        self.dropped_datagrams += i.dropped_datagrams as f64;
        self.dropped_series += i.dropped_series as f64;
        self.dropped_events += i.dropped_events as f64;
        self.dropped_records += i.dropped_records as f64;
        self.backend_errors += i.backend_errors as f64;
        self.notifier_errors += i.notifier_errors as f64;
        self.config_reloads += i.config_reloads as f64;
        self.config_reload_failures += i.config_reload_failures as f64;
        self.stream_clients_dropped += i.stream_clients_dropped as f64;
        self.history_errors += i.history_errors as f64;
        for event in &record.firing {
            let pair = (event.rule.clone(), event.severity.clone());
            if !self.alert_rules.contains(&pair) {
                self.alert_rules.push(pair);
            }
        }
    }
}

/// Advances a series' running totals by one interval.
fn advance(t: &mut Totals, metric: &Metric) {
    match &metric.figures {
        Figures::Counter { count, .. } => t.a += count,
        Figures::Dist { figures, .. } => {
            let divisor = crate::export::divisor(metric.kind());
            // `_sum` counts each value 1/rate times, as `_count` does: the mean times the count.
            if let Some(mean) = figures.mean() {
                t.a += mean * figures.count() / divisor;
            }
            t.b += figures.count();
        }
        Figures::Gauge { .. } | Figures::Set { .. } => {}
    }
}

/// The family kind a metric is exported as.
pub(super) fn family_kind(metric: &Metric) -> FamilyKind {
    match &metric.figures {
        Figures::Counter { .. } => FamilyKind::Counter,
        Figures::Gauge { .. } | Figures::Set { .. } => FamilyKind::Gauge,
        Figures::Dist { figures, .. } => match figures.observed().map(|o| &o.plan.shape) {
            Some(Shape::Buckets(_)) => FamilyKind::Histogram,
            _ => FamilyKind::Summary,
        },
    }
}

/// The interval's bucket counts of a histogram series.
pub(super) fn bucket_observation(metric: &Metric) -> Option<&Observed> {
    match &metric.figures {
        Figures::Dist { figures, .. } => figures
            .observed()
            .filter(|o| matches!(o.plan.shape, Shape::Buckets(_))),
        _ => None,
    }
}

fn bucket_len(metric: &Metric) -> usize {
    bucket_observation(metric).map_or(0, |o| o.values.len())
}

fn same_shape(a: &Observed, b: &Observed) -> bool {
    a.plan.shape == b.plan.shape
}

/// The mapping decision for a series that just appeared.
fn map_series(config: &PrometheusConfig, metric: &Metric) -> Option<Arc<SeriesMap>> {
    let mapping = config.mapping.as_deref()?;
    let result = match mapping.apply(metric.key.name(), metric.kind()) {
        Mapped::Unmatched => return None,
        Mapped::Drop => None,
        Mapped::Map(result) => Some(result),
    };
    Some(Arc::new(SeriesMap { result }))
}
