//! Aggregation: per-core shard threads, each owning the series routed to it, fed by bounded
//! `crossbeam-channel` queues of [`Batch`]es. The flusher asks every shard for its snapshot.
//! With a single shard (one core) there is no shard thread: receive threads fold their
//! batches in directly, under a lock taken once per batch, so a line never crosses threads.

mod batch;
pub mod distribution;
mod key;
mod shard;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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

/// The sending end of one shard's data queue, bounded in batches and in bytes; or, for a
/// single shard without a thread, the shard itself.
#[derive(Clone)]
pub struct ShardQueue(Queue);

#[derive(Clone)]
enum Queue {
    Channel {
        tx: Sender<Batch>,
        bytes: Arc<AtomicUsize>,
    },
    Direct(Arc<Mutex<Shard>>),
}

impl ShardQueue {
    /// Queues the batch without waiting (or folds it in, for a direct shard) and leaves
    /// `batch` empty for the next cycle; a direct shard leaves its buffers in place, so a
    /// one-core agent's receive thread reuses them instead of allocating.
    ///
    /// # Errors
    /// [`QueueFull`] when the queue is full (in batches or bytes) or closed: the batch's
    /// samples are not queued, and `batch` is emptied all the same.
    pub fn try_send(&self, batch: &mut Batch) -> Result<(), QueueFull> {
        let (tx, bytes) = match &self.0 {
            Queue::Channel { tx, bytes } => (tx, bytes),
            Queue::Direct(shard) => {
                lock(shard).add(batch);
                return Ok(());
            }
        };
        let weight = batch.weight();
        if bytes.fetch_add(weight, Ordering::Relaxed) + weight > MAX_QUEUED_BYTES {
            bytes.fetch_sub(weight, Ordering::Relaxed);
            batch.clear();
            return Err(QueueFull);
        }
        match tx.try_send(std::mem::take(batch)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(mut refused) | TrySendError::Disconnected(mut refused)) => {
                bytes.fetch_sub(weight, Ordering::Relaxed);
                refused.clear();
                *batch = refused;
                Err(QueueFull)
            }
        }
    }
}

impl ShardQueue {
    /// The shard itself when it has no thread (a one-core agent): the receive path folds
    /// lines straight into it.
    pub fn direct(&self) -> Option<&Arc<Mutex<Shard>>> {
        match &self.0 {
            Queue::Direct(shard) => Some(shard),
            Queue::Channel { .. } => None,
        }
    }
}

/// A shard's queue refused a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A shard's state stays consistent across a panic elsewhere (none is expected): take it.
pub fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the flusher reaches one shard.
pub enum ShardControl {
    /// A shard thread, through its control queue.
    Thread(Sender<Control>),
    /// A shard without a thread, behind a lock.
    Direct(Arc<Mutex<Shard>>),
}

impl ShardControl {
    /// Asks for the interval's snapshot (the final one when `last`), to be sent to `reply`.
    /// False when the shard is gone.
    pub fn request(&self, last: bool, reply: &Sender<ShardSnapshot>) -> bool {
        match self {
            ShardControl::Thread(ctrl) => {
                let control = if last {
                    Control::Final(reply.clone())
                } else {
                    Control::Flush(reply.clone())
                };
                ctrl.send(control).is_ok()
            }
            ShardControl::Direct(shard) => {
                let snapshot = lock(shard).snapshot();
                reply.send(snapshot).is_ok()
            }
        }
    }
}

/// The running shards: their queues and threads.
pub struct Shards {
    /// One data queue per shard; the receive path clones these into its routers.
    pub data_tx: Vec<ShardQueue>,
    /// How the flusher reaches each shard.
    pub control: Vec<ShardControl>,
    /// Shard threads (none for a single direct shard).
    pub threads: Vec<JoinHandle<()>>,
}

/// A queue without a shard thread behind it, for benches and tests that feed a
/// [`Shard`] by hand: returns the queue and its receiving end.
pub fn detached_queue() -> (ShardQueue, crossbeam_channel::Receiver<Batch>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let queue = ShardQueue(Queue::Channel {
        tx,
        bytes: Arc::new(AtomicUsize::new(0)),
    });
    (queue, rx)
}

/// Starts `config.shards` shard threads with queues of `queue_batches` batches each; a
/// single shard runs without a thread (see the module header).
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
        control: Vec::new(),
        threads: Vec::new(),
    };
    if config.shards == 1 {
        let shard = Arc::new(Mutex::new(Shard::new(config, telemetry)));
        shards
            .data_tx
            .push(ShardQueue(Queue::Direct(shard.clone())));
        shards.control.push(ShardControl::Direct(shard));
        return Ok(shards);
    }
    for id in 0..config.shards {
        let (data_tx, data_rx) = crossbeam_channel::bounded(queue_batches);
        let (ctrl_tx, ctrl_rx) = crossbeam_channel::bounded(1);
        let bytes = Arc::new(AtomicUsize::new(0));
        let shard = Shard::new(config.clone(), telemetry.clone()).with_queue_bytes(bytes.clone());
        let thread = std::thread::Builder::new()
            .name(format!("tallyd-shard-{id}"))
            .spawn(move || shard.run(data_rx, ctrl_rx))?;
        shards
            .data_tx
            .push(ShardQueue(Queue::Channel { tx: data_tx, bytes }));
        shards.control.push(ShardControl::Thread(ctrl_tx));
        shards.threads.push(thread);
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(queue: &ShardQueue) -> Arc<AtomicUsize> {
        match &queue.0 {
            Queue::Channel { bytes, .. } => bytes.clone(),
            Queue::Direct(_) => unreachable!("a detached queue is a channel"),
        }
    }

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
        .with_queue_bytes(bytes(&queue));
        assert!(queue.try_send(&mut batch_of(MAX_QUEUED_BYTES / 2)).is_ok());
        assert!(
            queue
                .try_send(&mut batch_of(MAX_QUEUED_BYTES / 2 + 1))
                .is_err()
        );
        shard.add(&mut rx.try_recv().expect("queued"));
        assert_eq!(bytes(&queue).load(Ordering::Relaxed), 0);
        assert!(
            queue
                .try_send(&mut batch_of(MAX_QUEUED_BYTES / 2 + 1))
                .is_ok()
        );
    }
}
