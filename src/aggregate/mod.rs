//! Aggregation: shards, each owning the series whose hash routes to it, shared by the
//! receive threads and the flusher behind a lock. There are no shard threads: a receive
//! thread folds its own samples in, so a line never crosses threads. It takes a shard's lock
//! only when free ([`ShardHandle::try_lock`]); while another thread (or a flush) holds it,
//! the samples wait in the receive thread's batch, so ingest neither blocks on a flush nor
//! serializes on a busy shard.

mod batch;
pub mod distribution;
mod key;
mod members;
mod shard;

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

pub use batch::{Batch, BatchSample, TaggedEvent};
pub use key::{KeyEncoder, SeriesKey};
pub use shard::{MAX_EVENTS, RawData, RawMetric, Shard, ShardSnapshot};

use crate::config::AggregationConfig;
use crate::telemetry::Telemetry;

/// One shard as the receive threads and the flusher share it.
#[derive(Clone)]
pub struct ShardHandle(Arc<Mutex<Shard>>);

impl ShardHandle {
    /// Shares `shard`.
    pub fn new(shard: Shard) -> ShardHandle {
        ShardHandle(Arc::new(Mutex::new(shard)))
    }

    /// The shard, waiting while another thread holds it.
    pub fn lock(&self) -> MutexGuard<'_, Shard> {
        // A shard's state stays consistent across a panic elsewhere (none is expected).
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shard if no other thread holds it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Shard>> {
        match self.0.try_lock() {
            Ok(shard) => Some(shard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Ends the shard's interval and takes its snapshot.
    pub fn snapshot(&self) -> ShardSnapshot {
        self.lock().snapshot()
    }
}

/// `config.shards` empty shards.
pub fn new_shards(config: &Arc<AggregationConfig>, telemetry: &Arc<Telemetry>) -> Vec<ShardHandle> {
    (0..config.shards)
        .map(|_| ShardHandle::new(Shard::new(config.clone(), telemetry.clone())))
        .collect()
}
