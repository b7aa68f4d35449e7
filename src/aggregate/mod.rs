//! Aggregation: per-core shard threads, each owning the series routed to it, fed by bounded
//! `crossbeam-channel` queues of [`Batch`]es. The flusher asks every shard for its snapshot.

mod batch;
pub mod distribution;
mod key;
mod shard;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};

pub use batch::{Batch, BatchSample, TaggedEvent};
pub use key::{KeyEncoder, SeriesKey};
pub use shard::{Control, MAX_EVENTS, RawData, RawMetric, Shard, ShardSnapshot};

use crate::config::AggregationConfig;
use crate::telemetry::Telemetry;

/// Bytes of batches one shard's queue may hold, whatever their count: one packed 64 KB line
/// can carry 30 000 samples, so a bound in batches alone would not bound memory.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// The sending end of one shard's data queue, bounded in batches and in bytes.
#[derive(Clone)]
pub struct ShardQueue {
    tx: Sender<Batch>,
    bytes: Arc<AtomicUsize>,
}

impl ShardQueue {
    /// Queues a batch without waiting; gives it back when the queue is full (in batches or
    /// bytes) or closed.
    ///
    /// # Errors
    /// The batch, when it could not be queued.
    pub fn try_send(&self, batch: Batch) -> Result<(), Batch> {
        let weight = batch.weight();
        if self.bytes.fetch_add(weight, Ordering::Relaxed) + weight > MAX_QUEUED_BYTES {
            self.bytes.fetch_sub(weight, Ordering::Relaxed);
            return Err(batch);
        }
        match self.tx.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                self.bytes.fetch_sub(weight, Ordering::Relaxed);
                Err(batch)
            }
        }
    }
}

/// The running shards: their queues and threads.
pub struct Shards {
    /// One data queue per shard; the receive path clones these into its routers.
    pub data_tx: Vec<ShardQueue>,
    /// One control queue per shard, used by the flusher.
    pub ctrl_tx: Vec<Sender<Control>>,
    pub threads: Vec<JoinHandle<()>>,
}

/// A queue without a shard thread behind it, for benches and tests that feed a
/// [`Shard`] by hand: returns the queue and its receiving end.
pub fn detached_queue() -> (ShardQueue, crossbeam_channel::Receiver<Batch>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let queue = ShardQueue {
        tx,
        bytes: Arc::new(AtomicUsize::new(0)),
    };
    (queue, rx)
}

/// Starts `config.shards` shard threads with queues of `queue_batches` batches each.
///
/// # Errors
/// When a thread cannot be spawned.
pub fn spawn_shards(
    config: Arc<AggregationConfig>,
    telemetry: Arc<Telemetry>,
    queue_batches: usize,
) -> std::io::Result<Shards> {
    let mut shards = Shards {
        data_tx: Vec::new(),
        ctrl_tx: Vec::new(),
        threads: Vec::new(),
    };
    for id in 0..config.shards {
        let (data_tx, data_rx) = crossbeam_channel::bounded(queue_batches);
        let (ctrl_tx, ctrl_rx) = crossbeam_channel::bounded(1);
        let bytes = Arc::new(AtomicUsize::new(0));
        let shard = Shard::new(config.clone(), telemetry.clone()).with_queue_bytes(bytes.clone());
        let thread = std::thread::Builder::new()
            .name(format!("tallyd-shard-{id}"))
            .spawn(move || shard.run(data_rx, ctrl_rx))?;
        shards.data_tx.push(ShardQueue { tx: data_tx, bytes });
        shards.ctrl_tx.push(ctrl_tx);
        shards.threads.push(thread);
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(bytes: usize) -> Batch {
        Batch {
            arena: Vec::with_capacity(bytes),
            lines: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_queue_refuses_batches_beyond_its_byte_bound_and_frees_them_as_shards_take_them() {
        let (queue, rx) = detached_queue();
        let mut shard = Shard::new(
            Arc::new(crate::config::Config::default().aggregation),
            Arc::new(Telemetry::default()),
        )
        .with_queue_bytes(queue.bytes.clone());
        assert!(queue.try_send(batch_of(MAX_QUEUED_BYTES / 2)).is_ok());
        assert!(queue.try_send(batch_of(MAX_QUEUED_BYTES / 2 + 1)).is_err());
        shard.add(rx.try_recv().expect("queued"));
        assert_eq!(queue.bytes.load(Ordering::Relaxed), 0);
        assert!(queue.try_send(batch_of(MAX_QUEUED_BYTES / 2 + 1)).is_ok());
    }
}
