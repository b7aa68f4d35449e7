//! A receive thread's local table. When several threads receive, or there are several
//! shards, each thread keeps its own share of the interval for counters, timers, histograms
//! and distributions, whose shares merge exactly: counters add, and a distribution's values
//! are all kept (up to `exact_samples` a thread) and joined at the flush. Folding into a table
//! no other thread touches costs no lock traffic between cores, where a shared shard costs
//! both threads a cache miss on every lock and series they share.
//!
//! The shards still own every series: at each flush the flusher drains every local table
//! into the shards ([`LocalTable::drain`], [`super::Shard::absorb`]) before it takes their
//! snapshots, so the live series count, idle emission and expiry work as if the samples had
//! gone straight to the shard. New series in the local tables and in the shards stay under
//! `max_series` together ([`Telemetry::reserve_local_series`]). Gauges (whose deltas and
//! absolute values do not merge) and sets go to the shards as before.

use super::distribution::LocalDist;
use super::key::{SeriesKey, route_hash, series_hash};
use super::table::{Entry, SeriesTable};
use super::{Shard, shard_of};
use std::sync::Arc;

use crate::config::AggregationConfig;
use crate::protocol::{MetricKind, Sample};
use crate::telemetry::Telemetry;

/// A thread's share of one series this interval. Each variant carries the number of the last
/// interval with a sample, as the shards' values do.
#[derive(Debug)]
enum Share {
    Counter { sum: f64, samples: u32, stamp: u32 },
    Dist { share: Box<LocalDist>, stamp: u32 },
}

// One series' share: 32 bytes besides its key's bytes (the README says so).
const _: () = assert!(std::mem::size_of::<Entry<Share>>() == 32);

impl Share {
    fn stamp(&self) -> u32 {
        match self {
            Share::Counter { stamp, .. } | Share::Dist { stamp, .. } => *stamp,
        }
    }
}

/// One series' share as the flusher moves it into its shard.
#[derive(Debug)]
pub enum DrainedData {
    Counter { sum: f64, samples: u32 },
    Dist(LocalDist),
}

impl DrainedData {
    /// The samples the share holds.
    pub fn samples(&self) -> u64 {
        match self {
            DrainedData::Counter { samples, .. } => u64::from(*samples),
            DrainedData::Dist(share) => share.samples() as u64,
        }
    }
}

/// One receive thread's shares of the interval.
#[derive(Debug)]
pub struct LocalTable {
    series: SeriesTable<Share>,
    /// The number of the interval in progress (the first is 1).
    interval: u32,
    max_series: usize,
    exact_samples: usize,
    telemetry: Arc<Telemetry>,
}

impl LocalTable {
    /// An empty table, holding at most `max_series` series and `exact_samples` values of
    /// one distribution an interval (more go to the shard).
    pub fn new(config: &AggregationConfig, telemetry: Arc<Telemetry>) -> LocalTable {
        LocalTable {
            series: SeriesTable::default(),
            interval: 1,
            max_series: config.max_series,
            exact_samples: config.distribution.exact_samples,
            telemetry,
        }
    }

    /// Takes the samples of one metric line, whose key body is `body` with routing hash
    /// `hash`, from the front for as long as their kind is kept here and there is room.
    /// Returns how many it took; the caller hands the rest to the shard.
    pub fn add(&mut self, body: &[u8], hash: u64, samples: &[Sample<'_>]) -> usize {
        let Some(kind) = samples.first().map(|s| s.kind).filter(|&k| kept_here(k)) else {
            return 0;
        };
        let Some(at) = self.find_or_insert(kind, body, hash) else {
            return 0;
        };
        let now = self.interval;
        let cap = self.exact_samples;
        let share = &mut self.series.get_mut(at).value;
        let mut taken = 0;
        for sample in samples {
            if sample.kind != kind {
                break;
            }
            match share {
                Share::Counter {
                    sum,
                    samples,
                    stamp,
                } => {
                    *sum += sample.value / sample.rate;
                    *samples = samples.saturating_add(1);
                    *stamp = now;
                }
                Share::Dist { share, stamp } => {
                    if !share.add(sample.value, sample.rate, cap) {
                        break;
                    }
                    *stamp = now;
                }
            }
            taken += 1;
        }
        taken
    }

    fn find_or_insert(&mut self, kind: MetricKind, body: &[u8], route_hash: u64) -> Option<usize> {
        let hash = series_hash(route_hash, kind);
        if let Some(at) = self.series.find(hash, kind, body) {
            return Some(at);
        }
        // Past `max_series` (the shards' series and the local tables' new ones together),
        // the samples go to the shards, which fold them in or count them as dropped.
        if !self.telemetry.reserve_local_series(self.max_series as u64) {
            return None;
        }
        let stamp = self.interval;
        let value = match kind {
            MetricKind::Counter => Share::Counter {
                sum: 0.0,
                samples: 0,
                stamp,
            },
            _ => Share::Dist {
                share: Box::default(),
                stamp,
            },
        };
        let key = SeriesKey::new(kind, body);
        self.series.insert(hash, Entry { key, value })
    }

    /// Ends the interval: moves every share that received a sample into its shard (each
    /// series' shard by its routing hash; `shards` holds them all, in order), and forgets
    /// the series that received none (the shards keep them). Afterwards, call
    /// [`Telemetry::clear_local_series`] once every table is drained.
    pub fn drain<S: std::ops::DerefMut<Target = Shard>>(&mut self, shards: &mut [S]) {
        let now = self.interval;
        self.interval = now.wrapping_add(1);
        self.series.retain(|entry| {
            if entry.value.stamp() != now {
                return false;
            }
            let data = match &mut entry.value {
                Share::Counter { sum, samples, .. } => DrainedData::Counter {
                    sum: std::mem::take(sum),
                    samples: std::mem::take(samples),
                },
                Share::Dist { share, .. } => DrainedData::Dist(std::mem::take(&mut **share)),
            };
            let route_hash = route_hash(entry.key.body());
            let count = shards.len();
            shards[shard_of(route_hash, count)].absorb(&entry.key, route_hash, data);
            true
        });
        self.series.shrink_if_sparse();
    }

    /// The series held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is held.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.series.len() == 0
    }
}

/// Whether samples of `kind` are kept in the local tables.
fn kept_here(kind: MetricKind) -> bool {
    matches!(
        kind,
        MetricKind::Counter | MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::aggregate::{KeyEncoder, RawData, Shard, ShardSnapshot};
    use crate::config::Config;

    fn config(edit: impl FnOnce(&mut AggregationConfig)) -> Arc<AggregationConfig> {
        let mut config = Config::default().aggregation;
        config.flush_interval = Duration::from_secs(1);
        edit(&mut config);
        Arc::new(config)
    }

    /// The key body and routing hash of an untagged name.
    fn key(name: &str) -> (Vec<u8>, u64) {
        let mut body = Vec::new();
        let hash = KeyEncoder::new(Arc::from(Vec::new())).encode(name, &mut [], &mut body);
        (body, hash)
    }

    fn sample(kind: MetricKind, value: f64, rate: f64) -> Sample<'static> {
        Sample {
            kind,
            value,
            signed: false,
            text: "",
            rate,
        }
    }

    /// Drains `locals` into `shard` and takes its snapshot, as the flusher does.
    fn flush(shard: &mut Shard, locals: &mut [&mut LocalTable]) -> ShardSnapshot {
        for local in locals.iter_mut() {
            local.drain(&mut [&mut *shard]);
        }
        if let Some(local) = locals.first() {
            local.telemetry.clear_local_series();
        }
        shard.snapshot()
    }

    /// (key, figures) as text.
    type Figures = Vec<(String, String)>;

    /// Every series' figures as text, in key order.
    fn figures(snapshot: ShardSnapshot, config: &AggregationConfig) -> Figures {
        let mut out: Vec<(String, String)> = snapshot
            .metrics
            .into_iter()
            .map(|m| {
                let text = match m.data {
                    RawData::Counter { sum, active } => format!("counter {sum} {active}"),
                    RawData::Dist(dist) => {
                        let (snapshot, bins, _) = *dist;
                        let mut text = String::from("dist");
                        snapshot
                            .figures(&config.distribution, bins, None, 1.0)
                            .for_each(&config.distribution, |name, value| {
                                text.push_str(&format!(" {name}={value}"));
                            });
                        text
                    }
                    other => format!("{other:?}"),
                };
                (format!("{:?}", m.key), text)
            })
            .collect();
        out.sort();
        out
    }

    /// (series, kind: 0 counter / 1 timer / 2 histogram, value, rate 1/2^k, where: 0 the
    /// shard, 1 or 2 a local table)
    type Input = Vec<(u8, u8, i16, u8, u8)>;

    fn arb_input() -> impl Strategy<Value = Input> {
        proptest::collection::vec((0u8..4, 0u8..3, any::<i16>(), 0u8..3, 0u8..3), 0..300)
    }

    /// Feeds `input` to one shard directly, and split between the shard and two local
    /// tables; returns both flushes' figures over two intervals.
    fn run(input: &Input, exact_samples: usize) -> (Figures, Figures) {
        let config = config(|c| c.distribution.exact_samples = exact_samples);
        let telemetry = Arc::new(Telemetry::default());
        let mut whole = Shard::new(config.clone(), telemetry.clone());
        let mut split = Shard::new(config.clone(), Arc::new(Telemetry::default()));
        let mut locals = [
            LocalTable::new(&config, telemetry.clone()),
            LocalTable::new(&config, telemetry),
        ];
        let (mut want, mut got) = (Vec::new(), Vec::new());
        for half in input.chunks(input.len().div_ceil(2).max(1)) {
            for &(series, kind, value, rate, place) in half {
                let kind = [
                    MetricKind::Counter,
                    MetricKind::Timer,
                    MetricKind::Histogram,
                ][usize::from(kind)];
                let (body, hash) = key(&format!("s{series}"));
                let one = [sample(kind, f64::from(value), 0.5f64.powi(i32::from(rate)))];
                whole.fold(&body, hash, &one[0]);
                let taken = match place {
                    0 => 0,
                    n => locals[usize::from(n) - 1].add(&body, hash, &one),
                };
                if taken == 0 {
                    split.fold(&body, hash, &one[0]);
                }
            }
            want.extend(figures(whole.snapshot(), &config));
            let [a, b] = &mut locals;
            got.extend(figures(flush(&mut split, &mut [a, b]), &config));
        }
        (want, got)
    }

    proptest! {
        /// Counters and distributions split between the shard and two local tables flush
        /// to exactly the figures of one shard fed every sample.
        #[test]
        fn split_shares_flush_to_the_figures_of_one_shard(input in arb_input()) {
            let (want, got) = run(&input, 10_000);
            prop_assert_eq!(got, want);
        }

        /// With a small `exact_samples`, a local table takes that many values of a series an
        /// interval and the shard the rest; the shard sketches past the same total either
        /// way, so the exact figures agree.
        #[test]
        fn a_full_share_leaves_the_rest_to_the_shard(input in arb_input()) {
            let (want, got) = run(&input, 8);
            prop_assert_eq!(want.len(), got.len());
            for ((want_key, want), (got_key, got)) in want.iter().zip(&got) {
                prop_assert_eq!(want_key, got_key);
                // Counters, and distributions that stayed exact, match exactly; sketched
                // ones match on the figures the sketch keeps exactly.
                let keep = |text: &str| -> Vec<String> {
                    text.split(' ')
                        .filter(|f| {
                            let exact = ["count=", "count_ps=", "lower=", "upper=", "sum=", "sum_squares=", "mean="];
                            exact.iter().any(|p| f.starts_with(p)) || !f.contains('=')
                        })
                        .map(String::from)
                        .collect()
                };
                prop_assert_eq!(keep(want), keep(got));
            }
        }
    }

    #[test]
    fn a_share_idle_for_an_interval_is_forgotten_and_the_shard_keeps_the_series() {
        let config = config(|_| {});
        let telemetry = Arc::new(Telemetry::default());
        let mut shard = Shard::new(config.clone(), telemetry.clone());
        let mut local = LocalTable::new(&config, telemetry);
        let (body, hash) = key("hits");
        let one = [sample(MetricKind::Counter, 2.0, 1.0)];
        assert_eq!(local.add(&body, hash, &one), 1);
        let first = figures(flush(&mut shard, &mut [&mut local]), &config);
        assert_eq!(first[0].1, "counter 2 true");
        assert_eq!(local.len(), 1, "kept while active");
        let second = figures(flush(&mut shard, &mut [&mut local]), &config);
        assert_eq!(second[0].1, "counter 0 false", "the shard emits it idle");
        assert!(local.is_empty(), "the idle share is forgotten");
    }

    #[test]
    fn a_share_the_shard_refuses_counts_every_sample_as_dropped() {
        let config = config(|c| c.max_series = 1);
        let telemetry = Arc::new(Telemetry::default());
        let mut shard = Shard::new(config.clone(), telemetry.clone());
        let mut local = LocalTable::new(&config, telemetry.clone());
        let (b, b_hash) = key("b");
        let three = [
            sample(MetricKind::Timer, 1.0, 1.0),
            sample(MetricKind::Timer, 2.0, 1.0),
            sample(MetricKind::Timer, 3.0, 1.0),
        ];
        assert_eq!(local.add(&b, b_hash, &three), 3);
        // Meanwhile another series takes the shard's only place.
        let (a, a_hash) = key("a");
        shard.fold(&a, a_hash, &sample(MetricKind::Counter, 1.0, 1.0));
        let got = figures(flush(&mut shard, &mut [&mut local]), &config);
        assert_eq!(got.len(), 1);
        assert_eq!(telemetry.take_interval().dropped_series, 3);
        // The shard is full now: new series go to it (and are refused there), not here.
        let (c, c_hash) = key("c");
        assert_eq!(local.add(&c, c_hash, &three), 0);
    }

    #[test]
    fn new_series_in_every_local_table_and_the_shards_stay_under_max_series() {
        let config = config(|c| c.max_series = 10);
        let telemetry = Arc::new(Telemetry::default());
        let mut shard = Shard::new(config.clone(), telemetry.clone());
        let (a, a_hash) = key("in-the-shard");
        shard.fold(&a, a_hash, &sample(MetricKind::Counter, 1.0, 1.0));
        let mut locals = [
            LocalTable::new(&config, telemetry.clone()),
            LocalTable::new(&config, telemetry.clone()),
        ];
        let one = [sample(MetricKind::Counter, 1.0, 1.0)];
        let mut taken = 0;
        for i in 0..20 {
            let (body, hash) = key(&format!("s{i}"));
            taken += locals[i % 2].add(&body, hash, &one);
        }
        assert_eq!(taken, 9, "one place is the shard's");
        assert_eq!(locals[0].len() + locals[1].len(), 9);
        let [x, y] = &mut locals;
        let got = figures(flush(&mut shard, &mut [x, y]), &config);
        assert_eq!(got.len(), 10);
        assert_eq!(telemetry.take_interval().dropped_series, 0);
        // Known series still go to the local tables once the shards are full.
        let (body, hash) = key("s0");
        assert_eq!(locals[0].add(&body, hash, &one), 1);
    }

    #[test]
    fn histogram_bins_count_the_values_of_every_share() {
        let toml =
            "[aggregation]\n[[aggregation.histograms]]\nmetric = \"lat\"\nbins = [10, 100]\n";
        let parsed = Config::from_toml(toml, std::path::Path::new("t.toml")).expect("valid");
        let config = Arc::new(parsed.aggregation);
        let telemetry = Arc::new(Telemetry::default());
        let mut shard = Shard::new(config.clone(), telemetry.clone());
        let mut local = LocalTable::new(&config, telemetry);
        let (body, hash) = key("lat");
        shard.fold(&body, hash, &sample(MetricKind::Timer, 5.0, 1.0));
        let shares = [
            sample(MetricKind::Timer, 50.0, 1.0),
            sample(MetricKind::Timer, 500.0, 0.5),
            sample(MetricKind::Timer, 7.0, 1.0),
        ];
        assert_eq!(local.add(&body, hash, &shares), 3);
        let got = figures(flush(&mut shard, &mut [&mut local]), &config);
        let text = &got[0].1;
        for want in [" count=5 ", " bin_10=2 ", " bin_100=1 ", " bin_inf=1"] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }

    #[test]
    fn gauges_and_sets_are_left_to_the_shard() {
        let config = config(|_| {});
        let mut local = LocalTable::new(&config, Arc::new(Telemetry::default()));
        let (body, hash) = key("x");
        for kind in [MetricKind::Gauge, MetricKind::Set] {
            assert_eq!(local.add(&body, hash, &[sample(kind, 1.0, 1.0)]), 0);
        }
        assert!(local.is_empty());
    }

    #[test]
    fn a_line_past_the_share_cap_is_taken_in_part() {
        let config = config(|c| c.distribution.exact_samples = 3);
        let mut local = LocalTable::new(&config, Arc::new(Telemetry::default()));
        let (body, hash) = key("lat");
        let five = [sample(MetricKind::Timer, 1.0, 1.0); 5];
        assert_eq!(local.add(&body, hash, &five), 3);
        assert_eq!(
            local.add(&body, hash, &five[..1]),
            0,
            "full until the flush"
        );
        let mut shard = Shard::new(config.clone(), local.telemetry.clone());
        let got = figures(flush(&mut shard, &mut [&mut local]), &config);
        assert!(got[0].1.contains(" count=3 "), "{got:?}");
        assert_eq!(local.add(&body, hash, &five), 3, "room again");
    }
}
