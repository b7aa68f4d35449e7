//! Aggregation: shards, each owning the series whose hash routes to it, shared by the
//! receive threads and the flusher behind a lock. There are no shard threads: a receive
//! thread folds its own samples in, so a line never crosses threads. It takes a shard's lock
//! only when free ([`ShardHandle::try_lock`]); while another thread (or a flush) holds it,
//! the samples wait in the receive thread's batch, so ingest neither blocks on a flush nor
//! serializes on a busy shard.

mod batch;
pub mod config;
pub mod distribution;
mod key;
mod local;
mod members;
mod shard;
mod table;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

pub use batch::{Batch, BatchSample, TaggedEvent};
pub use key::{KeyEncoder, SeriesKey};
pub use local::{DrainedData, LocalTable};
pub use shard::{MAX_EVENTS, RawData, RawMetric, Shard, ShardSnapshot};

use crate::config::AggregationConfig;
use crate::telemetry::Telemetry;

/// State that receive threads and the flusher share: a shard, or a receive thread's local
/// table.
pub struct Shared<T>(Arc<SharedInner<T>>);

struct SharedInner<T> {
    state: Mutex<T>,
    /// Set while the flusher waits for the lock: receive threads, which only ever try it,
    /// leave it alone meanwhile, so they cannot keep the flusher out between datagrams.
    wanted: AtomicBool,
}

/// One shard as the receive threads and the flusher share it.
pub type ShardHandle = Shared<Shard>;

/// A receive thread's local table as it and the flusher share it.
pub type LocalHandle = Shared<LocalTable>;

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    /// Shares `state`.
    pub fn new(state: T) -> Shared<T> {
        Shared(Arc::new(SharedInner {
            state: Mutex::new(state),
            wanted: AtomicBool::new(false),
        }))
    }

    /// The state, waiting while another thread holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        // The state stays consistent across a panic elsewhere (none is expected).
        self.0
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state, waiting for it ahead of [`Shared::try_lock`] callers: the flusher's way in.
    pub fn lock_first(&self) -> MutexGuard<'_, T> {
        self.0.wanted.store(true, Ordering::Relaxed);
        let guard = self.lock();
        self.0.wanted.store(false, Ordering::Relaxed);
        guard
    }

    /// The state if no other thread holds it or waits in [`Shared::lock_first`].
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        if self.0.wanted.load(Ordering::Relaxed) {
            return None;
        }
        match self.0.state.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl Shared<Shard> {
    /// Ends the shard's interval and takes its snapshot. Shares waiting in receive threads'
    /// local tables are not in it: the flusher moves those in first.
    pub fn snapshot(&self) -> ShardSnapshot {
        self.lock_first().snapshot()
    }

    /// [`Shared::snapshot`], then (under the same lock) a reloaded config for the next
    /// interval.
    pub fn snapshot_reconfigure(&self, config: Option<&Arc<AggregationConfig>>) -> ShardSnapshot {
        let mut shard = self.lock_first();
        let snapshot = shard.snapshot();
        if let Some(config) = config {
            shard.reconfigure(config.clone());
        }
        snapshot
    }
}

/// Maps a routing hash onto `n` shards (multiply-shift: uses the hash's high bits).
pub fn shard_of(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// `config.shards` empty shards.
pub fn new_shards(config: &Arc<AggregationConfig>, telemetry: &Arc<Telemetry>) -> Vec<ShardHandle> {
    (0..config.shards)
        .map(|_| ShardHandle::new(Shard::new(config.clone(), telemetry.clone())))
        .collect()
}
