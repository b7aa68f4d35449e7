//! Aggregation: per-core shard threads, each owning the series routed to it, fed by bounded
//! `crossbeam-channel` queues of [`Batch`]es. The flusher asks every shard for its snapshot.

mod batch;
pub mod distribution;
mod key;
mod shard;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

pub use batch::{Batch, BatchSample, TaggedEvent};
pub use key::{KeyEncoder, SeriesKey};
pub use shard::{Control, RawData, RawMetric, Shard, ShardSnapshot};

use crate::config::AggregationConfig;
use crate::telemetry::Telemetry;

/// The running shards: their queues and threads.
pub struct Shards {
    /// One data queue per shard; the receive path clones these into its routers.
    pub data_tx: Vec<Sender<Batch>>,
    /// One control queue per shard, used by the flusher.
    pub ctrl_tx: Vec<Sender<Control>>,
    pub threads: Vec<JoinHandle<()>>,
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
        let shard = Shard::new(config.clone(), telemetry.clone());
        let thread = std::thread::Builder::new()
            .name(format!("tallyd-shard-{id}"))
            .spawn(move || shard.run(data_rx, ctrl_rx))?;
        shards.data_tx.push(data_tx);
        shards.ctrl_tx.push(ctrl_tx);
        shards.threads.push(thread);
    }
    Ok(shards)
}
