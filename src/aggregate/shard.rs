//! One aggregator shard: a slice of the series (routed by hash, so a series lives in exactly
//! one shard), folded into by the receive threads one line or one batch at a time. At a
//! flush it swaps each series' interval state out (no copy) and hands the raw snapshot to the
//! flusher, which computes figures without holding the shard.

use std::hash::BuildHasher;
use std::sync::Arc;

use super::batch::{Batch, TaggedEvent};
use super::distribution::{Bins, DistSnapshot, DistState, Observe};
use super::key::{SeriesKey, series_hash};
use super::local::DrainedData;
use super::members::Members;
use super::table::{Entry, SeriesTable};
use crate::config::AggregationConfig;
use crate::protocol::{MetricKind, Sample};
use crate::telemetry::Telemetry;

/// Everything one shard held for one interval.
#[derive(Debug, Default)]
pub struct ShardSnapshot {
    pub metrics: Vec<RawMetric>,
    pub events: Vec<TaggedEvent>,
    /// Set series' member texts, each followed by `\n`, when a `statsd` output forwards
    /// them (`AggregationConfig::forward`); kept beside the metrics so these stay small.
    pub members: Vec<(SeriesKey, String)>,
}

/// One series' raw interval state: three words, as a million of them may be in flight at
/// once.
#[derive(Debug)]
pub struct RawMetric {
    pub key: SeriesKey,
    pub data: RawData,
}

/// The state a series hands over; figures are computed from it on the flush thread. Two
/// words: whether the series received a sample this interval (`active`) sits beside the
/// variant's tag.
#[derive(Debug)]
pub enum RawData {
    Counter {
        sum: f64,
        active: bool,
    },
    Gauge {
        value: f64,
        active: bool,
    },
    Set {
        count: u64,
        active: bool,
    },
    /// An active timer, histogram or distribution.
    Dist(Box<DistTake>),
    /// One without samples this interval, with what its export plan observes.
    DistIdle(Option<Arc<Observe>>),
}

/// An active distribution's interval: its samples, its bins and its export plan.
pub type DistTake = (DistSnapshot, Option<Arc<Bins>>, Option<Arc<Observe>>);

impl RawMetric {
    /// The series received a sample this interval.
    pub fn active(&self) -> bool {
        match self.data {
            RawData::Counter { active, .. }
            | RawData::Gauge { active, .. }
            | RawData::Set { active, .. } => active,
            RawData::Dist(_) => true,
            RawData::DistIdle(_) => false,
        }
    }
}

/// Events and service checks kept per interval; more are dropped and counted, so an event
/// flood cannot grow memory without bound.
pub const MAX_EVENTS: usize = 10_000;

/// A series' interval state, two words: counters and gauges inline, the rest boxed. Each
/// variant carries the number of the last interval with a sample (`stamp`; the current one
/// means active), which fits beside the tag.
#[derive(Debug)]
enum Value {
    Counter { sum: f64, stamp: u32 },
    Gauge { value: f64, stamp: u32 },
    Set { members: Box<Members>, stamp: u32 },
    Dist { slot: Box<DistSlot>, stamp: u32 },
}

impl Value {
    fn stamp(&self) -> u32 {
        match self {
            Value::Counter { stamp, .. }
            | Value::Gauge { stamp, .. }
            | Value::Set { stamp, .. }
            | Value::Dist { stamp, .. } => *stamp,
        }
    }
}

#[derive(Debug)]
struct DistSlot {
    state: DistState,
    bins: Option<Arc<Bins>>,
    /// What Prometheus-style outputs need of it beyond the figures (`le` buckets, quantiles).
    observe: Option<Arc<Observe>>,
}

// One series: 24 bytes besides its key's bytes.
const _: () = assert!(std::mem::size_of::<Entry<Value>>() == 24);

/// Hashes set members: SipHash under a key drawn at random for each shard, so 64-bit member
/// hashes collide only by chance (about 3e-8 for a million members in one interval), and a
/// sender cannot aim members at one slot of a set's table or one register of its sketch.
#[derive(Default)]
struct MemberHasher(std::hash::RandomState);

/// A shard's series and pending events.
pub struct Shard {
    series: SeriesTable<Value>,
    events: Vec<TaggedEvent>,
    config: Arc<AggregationConfig>,
    telemetry: Arc<Telemetry>,
    member_hasher: MemberHasher,
    /// The number of the interval in progress (the first is 1).
    interval: u32,
}

impl Shard {
    /// An empty shard.
    pub fn new(config: Arc<AggregationConfig>, telemetry: Arc<Telemetry>) -> Shard {
        Shard {
            series: SeriesTable::default(),
            events: Vec::new(),
            config,
            telemetry,
            member_hasher: MemberHasher::default(),
            interval: 1,
        }
    }

    /// Folds one batch into the series and leaves it empty, its buffers kept for reuse.
    pub fn add(&mut self, batch: &mut Batch) {
        self.add_events(&mut batch.events);
        for sample in &batch.samples {
            let body = batch
                .arena
                .get(sample.key_start as usize..sample.key_end as usize)
                .unwrap_or_default();
            let member = batch
                .arena
                .get(sample.member_start as usize..sample.member_end as usize)
                .and_then(|member| std::str::from_utf8(member).ok())
                .unwrap_or_default();
            let folded = Sample {
                kind: sample.kind,
                value: sample.value,
                signed: sample.signed,
                text: member,
                rate: sample.rate,
            };
            self.fold(body, sample.hash, &folded);
        }
        batch.clear();
    }

    /// Keeps the events of one receive cycle (up to [`MAX_EVENTS`] an interval; more are
    /// dropped and counted).
    pub fn add_events(&mut self, events: &mut Vec<TaggedEvent>) {
        let room = MAX_EVENTS.saturating_sub(self.events.len());
        if events.len() > room {
            let excess = events.len() - room;
            events.truncate(room);
            self.telemetry.dropped_events(excess as u64);
        }
        self.events.append(events);
    }

    /// Keeps one event (see [`Shard::add_events`]).
    pub fn add_event(&mut self, event: TaggedEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(event);
        } else {
            self.telemetry.dropped_events(1);
        }
    }

    /// Moves a receive thread's share of series `key` (routing hash `route_hash`) in, as if
    /// its samples had been folded here (see [`super::LocalTable`]); a share of a series
    /// `max_series` refuses is dropped, its samples counted.
    pub fn absorb(&mut self, key: &SeriesKey, route_hash: u64, data: DrainedData) {
        let Some(at) = self.find_or_insert_with(key.kind(), key.body(), route_hash, || key.clone())
        else {
            // The refusal counted one sample.
            self.telemetry
                .refuse_samples(data.samples().saturating_sub(1));
            return;
        };
        let now = self.interval;
        match (&mut self.series.get_mut(at).value, data) {
            (Value::Counter { sum, stamp }, DrainedData::Counter { sum: share, .. }) => {
                *sum += share;
                *stamp = now;
            }
            (Value::Dist { slot, stamp }, DrainedData::Dist(share)) => {
                let exact_samples = self.config.distribution.exact_samples;
                slot.state
                    .absorb(share, slot.bins.as_deref(), exact_samples);
                *stamp = now;
            }
            // A key names its kind, and shares are only kept for these two.
            _ => {}
        }
    }

    /// Folds one sample into the series with key body `body` (see [`super::KeyEncoder`])
    /// and routing hash `hash`, creating the series if new (and `max_series` allows). A set
    /// sample's member is its text.
    pub fn fold(&mut self, body: &[u8], hash: u64, sample: &Sample<'_>) {
        let Some(at) = self.find_or_insert(sample.kind, body, hash) else {
            return;
        };
        let now = self.interval;
        match &mut self.series.get_mut(at).value {
            Value::Counter { sum, stamp } => {
                *stamp = now;
                *sum += sample.value / sample.rate;
            }
            Value::Gauge { value, stamp } => {
                *stamp = now;
                if sample.signed && self.config.gauge_deltas {
                    *value += sample.value;
                } else {
                    *value = sample.value;
                }
            }
            Value::Set { members, stamp } => {
                *stamp = now;
                members.insert_text(
                    self.member_hasher.0.hash_one(sample.text.as_bytes()),
                    self.config.forward.then_some(sample.text),
                    self.config.exact_set_members,
                );
            }
            Value::Dist { slot, stamp } => {
                *stamp = now;
                slot.state.add(
                    sample.value,
                    sample.rate,
                    slot.bins.as_deref(),
                    self.config.distribution.exact_samples,
                );
            }
        }
    }

    /// The position of series `kind` with key body `body`, created if new; None when
    /// `max_series` refuses a new one.
    #[inline]
    fn find_or_insert(&mut self, kind: MetricKind, body: &[u8], route_hash: u64) -> Option<usize> {
        self.find_or_insert_with(kind, body, route_hash, || SeriesKey::new(kind, body))
    }

    /// Like [`Shard::find_or_insert`], a new series taking its key from `new_key`.
    #[inline]
    fn find_or_insert_with(
        &mut self,
        kind: MetricKind,
        body: &[u8],
        route_hash: u64,
        new_key: impl FnOnce() -> SeriesKey,
    ) -> Option<usize> {
        let hash = series_hash(route_hash, kind);
        if let Some(at) = self.series.find(hash, kind, body) {
            return Some(at);
        }
        if u32::try_from(self.series.len()).is_err() {
            self.telemetry.refuse_series();
            return None;
        }
        if !self.telemetry.admit_series(self.config.max_series as u64) {
            return None;
        }
        let key = new_key();
        let value = self.new_value(&key);
        self.series.insert(hash, Entry { key, value })
    }

    fn new_value(&self, key: &SeriesKey) -> Value {
        let stamp = self.interval;
        match key.kind() {
            MetricKind::Counter => Value::Counter { sum: 0.0, stamp },
            MetricKind::Gauge => Value::Gauge { value: 0.0, stamp },
            MetricKind::Set => Value::Set {
                members: Box::default(),
                stamp,
            },
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => Value::Dist {
                slot: Box::new(DistSlot {
                    state: DistState::default(),
                    bins: self.config.bins_for(key.name()).cloned(),
                    observe: self.config.observe_for(key.name(), key.kind()),
                }),
                stamp,
            },
        }
    }

    /// Takes a reloaded config (its histogram bins and export plan; the rest must not
    /// change) from the next interval: every timer, histogram and distribution gets its
    /// bins and plan again. Called between a snapshot and the next sample, so no interval
    /// mixes two bin layouts.
    pub fn reconfigure(&mut self, config: Arc<AggregationConfig>) {
        self.config = config;
        let config = &self.config;
        self.series.retain(|entry| {
            if let Value::Dist { slot, .. } = &mut entry.value {
                slot.bins = config.bins_for(entry.key.name()).cloned();
                slot.observe = config.observe_for(entry.key.name(), entry.key.kind());
            }
            true
        });
    }

    /// Ends the interval: hands over every live series' state, drops series idle for
    /// `series_ttl`, and resets the interval state.
    pub fn snapshot(&mut self) -> ShardSnapshot {
        let now = self.interval;
        // The ttl in whole intervals, capped at half the stamps' range so that an idle count
        // never wraps around before the series expires.
        let interval_ms = self.config.flush_interval.as_millis().max(1);
        let ttl = self.config.series_ttl.as_millis().div_ceil(interval_ms);
        let ttl = u32::try_from(ttl).unwrap_or(u32::MAX).min(u32::MAX / 2);
        let mut metrics = Vec::with_capacity(self.series.len());
        let mut expired = 0u64;
        let mut estimated_sets = 0u64;
        let mut texts = Vec::new();
        let forward = self.config.forward;
        self.series.retain(|entry| {
            let stamp = entry.value.stamp();
            let active = stamp == now;
            if !active && now.wrapping_sub(stamp) >= ttl {
                expired += 1;
                return false;
            }
            let data = match &mut entry.value {
                Value::Counter { sum, .. } => RawData::Counter {
                    sum: std::mem::take(sum),
                    active,
                },
                Value::Gauge { value, .. } => RawData::Gauge {
                    value: *value,
                    active,
                },
                Value::Set { members, .. } if forward => {
                    let (count, estimated, members) = members.take_with_texts();
                    estimated_sets += u64::from(estimated);
                    if !members.is_empty() {
                        texts.push((entry.key.clone(), members));
                    }
                    RawData::Set { count, active }
                }
                Value::Set { members, .. } => {
                    let (count, estimated) = members.take_count();
                    estimated_sets += u64::from(estimated);
                    RawData::Set { count, active }
                }
                Value::Dist { slot, .. } if active => RawData::Dist(Box::new((
                    slot.state.take(),
                    slot.bins.clone(),
                    slot.observe.clone(),
                ))),
                Value::Dist { slot, .. } => RawData::DistIdle(slot.observe.clone()),
            };
            metrics.push(RawMetric {
                key: entry.key.clone(),
                data,
            });
            true
        });
        self.interval = self.interval.wrapping_add(1);
        if expired > 0 {
            self.telemetry.release_series(expired);
        }
        if estimated_sets > 0 {
            self.telemetry.estimated_sets(estimated_sets);
        }
        // Many series expired: give the memory back.
        self.series.shrink_if_sparse();
        ShardSnapshot {
            metrics,
            events: std::mem::take(&mut self.events),
            members: texts,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aggregate::{BatchSample, KeyEncoder};
    use crate::config::Config;
    use crate::protocol::Tag;

    fn shard(edit: impl FnOnce(&mut AggregationConfig)) -> (Shard, Arc<Telemetry>) {
        let mut config = Config::default().aggregation;
        config.flush_interval = Duration::from_secs(10);
        edit(&mut config);
        let telemetry = Arc::new(Telemetry::default());
        (Shard::new(Arc::new(config), telemetry.clone()), telemetry)
    }

    /// One sample as a router batches it for a busy shard.
    fn sample(name: &str, kind: MetricKind, text: &str, rate: f64) -> Batch {
        let mut batch = Batch::default();
        let mut tags: Vec<Tag<'_>> = Vec::new();
        let hash = KeyEncoder::new(Arc::from(Vec::new())).encode(name, &mut tags, &mut batch.arena);
        let key_end = batch.arena.len() as u32;
        let (member_start, member_end) = batch.push_member(text);
        let value = if kind == MetricKind::Set {
            0.0
        } else {
            text.parse().expect("numeric test value")
        };
        batch.samples.push(BatchSample {
            hash,
            key_start: 0,
            key_end,
            kind,
            value,
            signed: text.starts_with(['+', '-']),
            rate,
            member_start,
            member_end,
        });
        batch
    }

    fn values(snapshot: &ShardSnapshot) -> Vec<(String, MetricKind, bool, String)> {
        let mut out: Vec<_> = snapshot
            .metrics
            .iter()
            .map(|m| {
                let data = match &m.data {
                    RawData::Counter { sum, .. } => format!("counter {sum}"),
                    RawData::Gauge { value, .. } => format!("gauge {value}"),
                    RawData::Set { count, .. } => format!("set {count}"),
                    RawData::Dist(..) => "dist".to_string(),
                    RawData::DistIdle(_) => "dist idle".to_string(),
                };
                (m.key.name().to_string(), m.key.kind(), m.active(), data)
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    #[test]
    fn counter_adds_value_over_rate_and_resets_each_interval() {
        let (mut shard, _) = shard(|_| {});
        shard.add(&mut sample("hits", MetricKind::Counter, "3", 0.5));
        shard.add(&mut sample("hits", MetricKind::Counter, "-1", 1.0));
        let first = shard.snapshot();
        assert_eq!(values(&first)[0].3, "counter 5");
        let second = shard.snapshot();
        assert_eq!(
            values(&second)[0],
            (
                "hits".into(),
                MetricKind::Counter,
                false,
                "counter 0".into()
            )
        );
    }

    #[test]
    fn gauge_deltas_apply_to_current_value_and_persist() {
        let (mut shard, _) = shard(|_| {});
        shard.add(&mut sample("depth", MetricKind::Gauge, "+4", 1.0));
        shard.add(&mut sample("depth", MetricKind::Gauge, "-1", 0.1));
        assert_eq!(values(&shard.snapshot())[0].3, "gauge 3");
        shard.add(&mut sample("depth", MetricKind::Gauge, "10", 1.0));
        shard.add(&mut sample("depth", MetricKind::Gauge, "+1", 1.0));
        assert_eq!(values(&shard.snapshot())[0].3, "gauge 11");
        let idle = values(&shard.snapshot());
        assert_eq!(
            idle[0],
            ("depth".into(), MetricKind::Gauge, false, "gauge 11".into())
        );
    }

    #[test]
    fn gauge_deltas_off_makes_signed_values_set() {
        let (mut shard, _) = shard(|c| c.gauge_deltas = false);
        shard.add(&mut sample("temp", MetricKind::Gauge, "7", 1.0));
        shard.add(&mut sample("temp", MetricKind::Gauge, "-5", 1.0));
        assert_eq!(values(&shard.snapshot())[0].3, "gauge -5");
    }

    #[test]
    fn set_counts_distinct_members_per_interval() {
        let (mut shard, _) = shard(|_| {});
        for member in ["a", "b", "a", "c", "b"] {
            shard.add(&mut sample("users", MetricKind::Set, member, 1.0));
        }
        assert_eq!(values(&shard.snapshot())[0].3, "set 3");
        assert_eq!(values(&shard.snapshot())[0].3, "set 0");
    }

    #[test]
    fn a_set_past_exact_set_members_is_estimated_and_counted() {
        let (mut shard, telemetry) = shard(|c| c.exact_set_members = 100);
        for i in 0..20_000 {
            shard.add(&mut sample(
                "visitors",
                MetricKind::Set,
                &format!("u{i}"),
                1.0,
            ));
        }
        let got = values(&shard.snapshot());
        let count: f64 = got[0]
            .3
            .trim_start_matches("set ")
            .parse()
            .expect("a count");
        // 0.8 % standard error; the member hasher's key is random, so allow five of them.
        assert!((count - 20_000.0).abs() < 800.0, "estimated {count}");
        assert_eq!(telemetry.take_interval().estimated_sets, 1);
        for member in ["a", "b", "a"] {
            shard.add(&mut sample("visitors", MetricKind::Set, member, 1.0));
        }
        assert_eq!(values(&shard.snapshot())[0].3, "set 2", "exact again");
        assert_eq!(telemetry.take_interval().estimated_sets, 0);
    }

    #[test]
    fn same_name_with_another_type_is_another_series() {
        let (mut shard, _) = shard(|_| {});
        shard.add(&mut sample("req", MetricKind::Counter, "1", 1.0));
        shard.add(&mut sample("req", MetricKind::Timer, "250", 1.0));
        let got = values(&shard.snapshot());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, MetricKind::Counter);
        assert_eq!(got[1].1, MetricKind::Timer);
        assert_eq!(got[1].3, "dist");
    }

    #[test]
    fn idle_series_are_emitted_until_ttl_then_dropped() {
        // 10 s interval, 30 s ttl: idle at flushes 2 and 3 (10 s, 20 s), dropped at 4 (30 s).
        let (mut shard, telemetry) = shard(|c| c.series_ttl = Duration::from_secs(30));
        shard.add(&mut sample("lat", MetricKind::Timer, "5", 1.0));
        assert_eq!(values(&shard.snapshot())[0].3, "dist");
        assert_eq!(values(&shard.snapshot())[0].3, "dist idle");
        assert_eq!(values(&shard.snapshot())[0].3, "dist idle");
        assert!(shard.snapshot().metrics.is_empty());
        assert_eq!(telemetry.take_interval().series, 0);
    }

    #[test]
    fn zero_ttl_drops_a_series_at_its_first_idle_flush() {
        let (mut shard, _) = shard(|c| c.series_ttl = Duration::ZERO);
        shard.add(&mut sample("g", MetricKind::Gauge, "1", 1.0));
        assert_eq!(shard.snapshot().metrics.len(), 1);
        assert!(shard.snapshot().metrics.is_empty());
    }

    #[test]
    fn a_sample_revives_an_idle_series_and_resets_its_ttl() {
        let (mut shard, _) = shard(|c| c.series_ttl = Duration::from_secs(20));
        shard.add(&mut sample("c", MetricKind::Counter, "1", 1.0));
        shard.snapshot();
        shard.snapshot(); // idle 10 s
        shard.add(&mut sample("c", MetricKind::Counter, "2", 1.0));
        assert_eq!(values(&shard.snapshot())[0].3, "counter 2");
        assert_eq!(shard.snapshot().metrics.len(), 1); // idle 10 s again
        assert!(shard.snapshot().metrics.is_empty()); // idle 20 s
    }

    #[test]
    fn samples_for_new_series_beyond_max_series_are_dropped_and_counted() {
        let (mut shard, telemetry) = shard(|c| c.max_series = 2);
        shard.add(&mut sample("a", MetricKind::Counter, "1", 1.0));
        shard.add(&mut sample("b", MetricKind::Counter, "1", 1.0));
        shard.add(&mut sample("c", MetricKind::Counter, "1", 1.0));
        shard.add(&mut sample("c", MetricKind::Counter, "1", 1.0));
        shard.add(&mut sample("a", MetricKind::Counter, "1", 1.0));
        let got = values(&shard.snapshot());
        assert_eq!(
            got.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(got[0].3, "counter 2");
        assert_eq!(telemetry.take_interval().dropped_series, 2);
    }

    #[test]
    fn events_beyond_the_interval_limit_are_dropped_and_counted() {
        use crate::protocol::ServiceCheck;
        let (mut shard, telemetry) = shard(|_| {});
        let check = TaggedEvent::ServiceCheck(
            ServiceCheck {
                name: "db".into(),
                status: 0,
                timestamp: None,
                hostname: None,
                message: None,
                tags: Vec::new(),
            },
            Vec::new(),
        );
        let mut batch = Batch {
            events: vec![check; MAX_EVENTS + 5],
            ..Default::default()
        };
        shard.add(&mut batch);
        assert_eq!(shard.snapshot().events.len(), MAX_EVENTS);
        assert_eq!(telemetry.take_interval().dropped_events, 5);
        assert!(shard.snapshot().events.is_empty());
    }

    mod reference {
        use super::*;
        use proptest::prelude::*;

        /// (series index, kind index, value text, rate)
        type Input = Vec<(u8, u8, i32, u8, bool)>;

        fn arb_input() -> impl Strategy<Value = Input> {
            proptest::collection::vec(
                (0u8..4, 0u8..3, -1000i32..1000, 1u8..=4, any::<bool>()),
                0..200,
            )
        }

        proptest! {
            /// Counters, gauges and sets from a shard equal a plain fold over the samples.
            #[test]
            fn shard_figures_match_a_plain_reference(input in arb_input(), deltas in any::<bool>()) {
                let (mut shard, _) = shard(|c| c.gauge_deltas = deltas);
                let mut counters = std::collections::BTreeMap::<String, f64>::new();
                let mut gauges = std::collections::BTreeMap::<String, f64>::new();
                let mut sets = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
                for (series, kind, value, rate_div, signed) in input {
                    let name = format!("s{series}");
                    let rate = 1.0 / f64::from(rate_div);
                    match kind {
                        0 => {
                            let text = value.to_string();
                            shard.add(&mut sample(&name, MetricKind::Counter, &text, rate));
                            *counters.entry(name).or_default() += f64::from(value) / rate;
                        }
                        1 => {
                            let text = if signed && value >= 0 { format!("+{value}") } else { value.to_string() };
                            let is_delta = deltas && text.starts_with(['+', '-']);
                            shard.add(&mut sample(&name, MetricKind::Gauge, &text, rate));
                            let gauge = gauges.entry(name).or_default();
                            if is_delta { *gauge += f64::from(value) } else { *gauge = f64::from(value) }
                        }
                        _ => {
                            let member = format!("m{}", value % 7);
                            shard.add(&mut sample(&name, MetricKind::Set, &member, rate));
                            sets.entry(name).or_default().insert(member);
                        }
                    }
                }
                let mut want: Vec<_> = counters.into_iter().map(|(n, v)| (n, MetricKind::Counter, true, format!("counter {v}")))
                    .chain(gauges.into_iter().map(|(n, v)| (n, MetricKind::Gauge, true, format!("gauge {v}"))))
                    .chain(sets.into_iter().map(|(n, v)| (n, MetricKind::Set, true, format!("set {}", v.len()))))
                    .collect();
                want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                prop_assert_eq!(values(&shard.snapshot()), want);
            }
        }
    }
}
