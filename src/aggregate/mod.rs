//! Aggregation: shards, each owning the series whose hash routes to it, shared by the
//! receive threads and the flusher behind a lock. There are no shard threads: a receive
//! thread folds its own samples in, so a line never crosses threads. It takes a shard's lock
//! only when free ([`ShardHandle::try_lock`]); while another thread (or a flush) holds it,
//! the samples wait in the receive thread's batch, so ingest neither blocks on a flush nor
//! serializes on a busy shard.

mod batch;
pub mod distribution;
mod key;
mod local;
mod members;
mod shard;
mod table;

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

pub use batch::{Batch, BatchSample, TaggedEvent};
pub use key::{KeyEncoder, SeriesKey};
pub use local::{Drained, LocalTable};
pub use shard::{MAX_EVENTS, RawData, RawMetric, Shard, ShardSnapshot};

use crate::config::AggregationConfig;
use crate::telemetry::Telemetry;

/// State that receive threads and the flusher share: a shard, or a receive thread's local
/// table.
pub struct Shared<T>(Arc<Mutex<T>>);

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
        Shared(Arc::new(Mutex::new(state)))
    }

    /// The state, waiting while another thread holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        // The state stays consistent across a panic elsewhere (none is expected).
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state if no other thread holds it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl Shared<Shard> {
    /// Ends the shard's interval and takes its snapshot.
    pub fn snapshot(&self) -> ShardSnapshot {
        self.lock().snapshot()
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
