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

/// One series' running totals since it appeared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Running<'v> {
    /// A counter's total; a timer's, histogram's or distribution's `_sum` (exported unit:
    /// seconds for `ms` timers).
    pub total: f64,
    /// A timer's, histogram's or distribution's `_count`.
    pub count: f64,
    /// Running `le` counts (cumulative over the bounds, `+Inf` left out), when observed.
    pub buckets: &'v [f64],
}

/// The exported family kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
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

    /// The running totals of the record's metric `i` alone (not merged with others of the
    /// same Prometheus name), for outputs that keep StatsD identities (OTLP).
    pub fn running(&self, i: usize) -> Running<'_> {
        let t = self.totals.get(i).copied().unwrap_or_default();
        let buckets = match self.record.metrics.get(i).and_then(bucket_observation) {
            Some(observed) => {
                let start = self.bucket_offsets.get(i).copied().unwrap_or(0) as usize;
                self.buckets
                    .get(start..start + observed.values.len())
                    .unwrap_or(&[])
            }
            None => &[],
        };
        Running {
            total: t.a,
            count: t.b,
            buckets,
        }
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

    /// Whether metric `i` is exported: not dropped by the mapping, not idle past its
    /// rule's `ttl` (or, for a series no rule matched, the defaults' `ttl`, as
    /// statsd_exporter has it).
    fn exported(&self, i: usize) -> bool {
        let Some(map) = self.maps.get(i) else {
            return true;
        };
        let ttl = match map.as_deref() {
            Some(SeriesMap { result: None }) => return false,
            Some(SeriesMap {
                result: Some(result),
            }) => result.ttl,
            None => self.mapping.as_deref().and_then(Mapping::default_ttl),
        };
        let Some(ttl) = ttl else {
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
        group_rows(&mut rows, |i| self.record.metrics[i as usize].key.name());
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

/// Puts the rows (family hash, labels hash, metric index) in write order: each family's
/// rows together, and rows of one family with the same labels next to each other.
///
/// The rows come in record order (sorted by name), where that mostly holds already: the
/// rows of one StatsD name are adjacent, and only need sorting among themselves (a counter
/// `x` is family `x_total`, a gauge `x` family `x`). Kept in record order, a scrape reads
/// the record, the totals and the keys front to back; sorted by hash, it read them at
/// random, and cache misses took most of a million-series scrape. Only when some family's
/// rows are not adjacent (two names that escape alike, a mapping folding names together)
/// are all rows sorted by hash.
fn group_rows<'k>(rows: &mut [(u64, u64, u32)], name: impl Fn(u32) -> &'k str) {
    // The rows of one name, sorted among themselves.
    let mut start = 0;
    while start < rows.len() {
        let first = name(rows[start].2);
        let len = rows[start..]
            .iter()
            .take_while(|row| name(row.2) == first)
            .count();
        rows[start..start + len].sort_unstable();
        start += len;
    }
    if !grouped(rows) {
        rows.sort_unstable();
    }
}

/// Whether every family's rows are adjacent, and within a family, equal label sets too.
fn grouped(rows: &[(u64, u64, u32)]) -> bool {
    let mut done: hashbrown::HashSet<u64, foldhash::fast::FixedState> =
        hashbrown::HashSet::with_capacity_and_hasher(rows.len(), Default::default());
    let mut at = 0;
    while at < rows.len() {
        let family = rows[at].0;
        if !done.insert(family) {
            return false;
        }
        let run = rows[at..].iter().take_while(|row| row.0 == family).count();
        let members = &rows[at..at + run];
        // Equal label sets must be adjacent: each set may start only once in the run.
        if run > 1 {
            let mut starts: hashbrown::HashSet<u64, foldhash::fast::FixedState> =
                Default::default();
            for (k, row) in members.iter().enumerate() {
                let new_set = k == 0 || members[k - 1].1 != row.1;
                if new_set && !starts.insert(row.1) {
                    return false;
                }
            }
        }
        at += run;
    }
    true
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
            // `_sum` counts each value 1/rate times, as `_count` does.
            t.a += figures.weighted_sum() / divisor;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn view_of(lines: &str) -> View {
        let config = Config::from_toml("", std::path::Path::new("t.toml")).expect("valid");
        let record = crate::flush::record_from_datagram(&config, lines);
        View::build(None, Arc::new(record), &config.prometheus)
    }

    fn names(view: &View) -> Vec<(String, u32)> {
        view.order
            .iter()
            .map(|e| {
                let metric = &view.record.metrics[(e & INDEX) as usize];
                (
                    format!("{}:{:?}", metric.key.name(), metric.kind()),
                    e & !INDEX,
                )
            })
            .collect()
    }

    #[test]
    fn the_write_order_keeps_record_order_and_groups_a_names_kinds() {
        // x as a counter is family x_total, as a gauge family x: each family's rows together.
        let view = view_of("x:1|c|#t:a\nx:1|g|#t:a\nx:1|c|#t:b\ny:1|c\n");
        let order = names(&view);
        assert_eq!(order.len(), 4);
        assert_eq!(
            order[3].0, "y:Counter",
            "record order across names: {order:?}"
        );
        let kinds: Vec<&str> = order[..3].iter().map(|(n, _)| n.as_str()).collect();
        let gauge = kinds
            .iter()
            .position(|k| *k == "x:Gauge")
            .expect("the gauge");
        assert!(
            gauge == 0 || gauge == 2,
            "the two counters adjacent: {order:?}"
        );
        let starts = order.iter().filter(|(_, f)| f & FAMILY_START != 0).count();
        assert_eq!(starts, 3, "x_total, x and y_total: {order:?}");
    }

    #[test]
    fn names_that_escape_alike_apart_in_the_record_still_merge() {
        // a.b < a.c < a_b in the record: a.b and a_b are one series, not adjacent there.
        let view = view_of("a.b:1|c\na.c:1|c\na_b:2|c\n");
        let order = names(&view);
        let merged = order.iter().filter(|(_, f)| f & MERGE != 0).count();
        assert_eq!(merged, 1, "{order:?}");
        let at = order
            .iter()
            .position(|(_, f)| f & MERGE != 0)
            .expect("a merge");
        let pair = [&order[at - 1].0[..], &order[at].0[..]];
        assert!(
            pair.contains(&"a.b:Counter") && pair.contains(&"a_b:Counter"),
            "{order:?}"
        );
    }
}
