//! One aggregator shard: a thread that owns a slice of the series (routed by hash, so a series
//! lives in exactly one shard) and folds the batches of its queue into them. At a flush it
//! swaps each series' interval state out (no copy) and hands the raw snapshot to the flusher,
//! which computes figures off this thread.

use std::collections::HashMap;
use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, select};
use rustc_hash::{FxBuildHasher, FxHasher};

use super::batch::{Batch, BatchSample, TaggedEvent};
use super::distribution::{Bins, DistSnapshot, DistState};
use super::key::SeriesKey;
use crate::config::AggregationConfig;
use crate::protocol::MetricKind;
use crate::telemetry::Telemetry;

/// A request from the flusher.
#[derive(Debug)]
pub enum Control {
    /// Hand over the interval's snapshot and go on.
    Flush(Sender<ShardSnapshot>),
    /// Drain the queue until every sender is gone, hand over the last snapshot and stop.
    Final(Sender<ShardSnapshot>),
}

/// Everything one shard held for one interval.
#[derive(Debug, Default)]
pub struct ShardSnapshot {
    pub metrics: Vec<RawMetric>,
    pub events: Vec<TaggedEvent>,
}

/// One series' raw interval state.
#[derive(Debug)]
pub struct RawMetric {
    pub key: SeriesKey,
    /// The series received a sample this interval.
    pub active: bool,
    pub data: RawData,
}

/// The state a series hands over; figures are computed from it on the flush thread.
#[derive(Debug)]
pub enum RawData {
    Counter(f64),
    Gauge(f64),
    Set(u64),
    Dist(DistSnapshot, Option<Arc<Bins>>),
    DistIdle,
}

type MemberSet = HashSet<u64, BuildHasherDefault<FxHasher>>;

#[derive(Debug)]
enum State {
    Counter(f64),
    Gauge(f64),
    Set(MemberSet),
    Dist(DistState, Option<Arc<Bins>>),
}

#[derive(Debug)]
struct Series {
    state: State,
    active: bool,
    /// The flush number of the last interval with a sample.
    last_active: u64,
}

/// Hashes set members: a fixed-key SipHash, so 64-bit member hashes collide only by chance
/// (about 3e-8 for a million members in one interval).
#[derive(Default)]
struct MemberHasher(std::hash::BuildHasherDefault<std::hash::DefaultHasher>);

/// A shard's series and pending events.
pub struct Shard {
    series: HashMap<SeriesKey, Series, FxBuildHasher>,
    events: Vec<TaggedEvent>,
    config: Arc<AggregationConfig>,
    telemetry: Arc<Telemetry>,
    member_hasher: MemberHasher,
    flushes: u64,
}

impl Shard {
    /// An empty shard.
    pub fn new(config: Arc<AggregationConfig>, telemetry: Arc<Telemetry>) -> Shard {
        Shard {
            series: HashMap::default(),
            events: Vec::new(),
            config,
            telemetry,
            member_hasher: MemberHasher::default(),
            flushes: 0,
        }
    }

    /// Serves the queue and the flusher's requests until the final flush.
    pub fn run(mut self, data_rx: Receiver<Batch>, ctrl_rx: Receiver<Control>) {
        let mut data_open = true;
        loop {
            let control = if data_open {
                select! {
                    recv(data_rx) -> batch => {
                        match batch {
                            Ok(batch) => self.add(batch),
                            Err(_) => data_open = false,
                        }
                        continue;
                    }
                    recv(ctrl_rx) -> control => control,
                }
            } else {
                ctrl_rx.recv()
            };
            match control {
                Ok(Control::Flush(reply)) => {
                    // What is already queued belongs to the interval that is ending.
                    for _ in 0..data_rx.len() {
                        match data_rx.try_recv() {
                            Ok(batch) => self.add(batch),
                            Err(_) => break,
                        }
                    }
                    let _ = reply.send(self.snapshot());
                }
                Ok(Control::Final(reply)) => {
                    for batch in data_rx.iter() {
                        self.add(batch);
                    }
                    let _ = reply.send(self.snapshot());
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Folds one batch into the series.
    pub fn add(&mut self, mut batch: Batch) {
        self.events.append(&mut batch.events);
        for sample in &batch.samples {
            let (start, end) = (sample.key_start as usize, sample.key_end as usize);
            let Some(first) = batch.arena.get_mut(start) else {
                continue;
            };
            *first = sample.kind.code();
            let key = &batch.arena[start..end];
            let member = batch
                .arena
                .get(sample.member_start as usize..sample.member_end as usize)
                .unwrap_or_default();
            self.add_sample(key, member, sample);
        }
    }

    fn add_sample(&mut self, key: &[u8], member: &[u8], sample: &BatchSample) {
        if !self.series.contains_key(key) {
            if !self.telemetry.admit_series(self.config.max_series as u64) {
                return;
            }
            let key = SeriesKey::from_bytes(key);
            let state = self.new_state(&key);
            self.series.insert(
                key,
                Series {
                    state,
                    active: false,
                    last_active: self.flushes,
                },
            );
        }
        let Some(series) = self.series.get_mut(key) else {
            return;
        };
        series.active = true;
        match &mut series.state {
            State::Counter(sum) => *sum += sample.value / sample.rate,
            State::Gauge(value) => {
                if sample.signed && self.config.gauge_deltas {
                    *value += sample.value;
                } else {
                    *value = sample.value;
                }
            }
            State::Set(members) => {
                members.insert(self.member_hasher.0.hash_one(member));
            }
            State::Dist(state, bins) => state.add(
                sample.value,
                sample.rate,
                bins.as_deref(),
                self.config.distribution.exact_samples,
            ),
        }
    }

    fn new_state(&self, key: &SeriesKey) -> State {
        match key.kind() {
            MetricKind::Counter => State::Counter(0.0),
            MetricKind::Gauge => State::Gauge(0.0),
            MetricKind::Set => State::Set(MemberSet::default()),
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => State::Dist(
                DistState::default(),
                self.config.bins_for(key.name()).cloned(),
            ),
        }
    }

    /// Ends the interval: hands over every live series' state, drops series idle for
    /// `series_ttl`, and resets the interval state.
    pub fn snapshot(&mut self) -> ShardSnapshot {
        self.flushes += 1;
        let now = self.flushes;
        let interval_ms = self.config.flush_interval.as_millis();
        let ttl_ms = self.config.series_ttl.as_millis();
        let mut metrics = Vec::with_capacity(self.series.len());
        let mut expired = 0u64;
        self.series.retain(|key, series| {
            let active = std::mem::take(&mut series.active);
            if active {
                series.last_active = now;
            } else if u128::from(now - series.last_active) * interval_ms >= ttl_ms {
                expired += 1;
                return false;
            }
            let data = match &mut series.state {
                State::Counter(sum) => RawData::Counter(std::mem::take(sum)),
                State::Gauge(value) => RawData::Gauge(*value),
                State::Set(members) => RawData::Set(std::mem::take(members).len() as u64),
                State::Dist(state, bins) if active => RawData::Dist(state.take(), bins.clone()),
                State::Dist(..) => RawData::DistIdle,
            };
            metrics.push(RawMetric {
                key: key.clone(),
                active,
                data,
            });
            true
        });
        if expired > 0 {
            self.telemetry.release_series(expired);
        }
        ShardSnapshot {
            metrics,
            events: std::mem::take(&mut self.events),
        }
    }
}
