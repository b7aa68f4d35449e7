//! The receive path's per-thread state: parses the lines of each packet, encodes each metric
//! line's series key once, and appends its samples to the batch of the shard that owns the
//! series. Batches are sent at the end of each receive cycle (or when large); a full queue
//! drops the batch's lines and counts them, so a receive thread never blocks.

use std::sync::Arc;

use crate::aggregate::{Batch, BatchSample, KeyEncoder, ShardQueue, TaggedEvent};
use crate::protocol::{MetricLine, Parsed, lines, parse_line};
use crate::telemetry::{LocalCounts, Telemetry};

/// A batch is sent early once it holds this many samples or arena bytes.
const BATCH_SAMPLES: usize = 1024;
const BATCH_BYTES: usize = 64 * 1024;

/// Parses and routes lines for one receive thread or connection.
pub struct Router {
    encoder: KeyEncoder,
    shards: Vec<ShardQueue>,
    batches: Vec<Batch>,
    line: MetricLine<'static>,
    key: Vec<u8>,
    counts: LocalCounts,
    telemetry: Arc<Telemetry>,
    max_line: usize,
}

impl Router {
    /// A router over the shards' data queues.
    pub fn new(encoder: KeyEncoder, shards: Vec<ShardQueue>, telemetry: Arc<Telemetry>) -> Router {
        let batches = shards.iter().map(|_| Batch::default()).collect();
        Router {
            encoder,
            shards,
            batches,
            line: MetricLine::default(),
            key: Vec::with_capacity(256),
            counts: LocalCounts::default(),
            telemetry,
            max_line: usize::MAX,
        }
    }

    /// Lines longer than `max_line` bytes are dropped and counted as `too_long`.
    pub fn with_max_line(mut self, max_line: usize) -> Router {
        self.max_line = max_line;
        self
    }

    /// Handles one datagram (or one read of a stream): every line in it.
    pub fn handle_packet(&mut self, packet: &[u8]) {
        self.counts.packets += 1;
        for line in lines(packet) {
            if line.len() > self.max_line {
                self.reject_line(crate::protocol::ParseError::TooLong);
            } else {
                self.handle_line(line);
            }
        }
    }

    /// Counts a line dropped before parsing (too long, truncated).
    pub fn reject_line(&mut self, reason: crate::protocol::ParseError) {
        self.counts.lines += 1;
        self.counts.bad_line(reason);
    }

    /// Counts lines dropped before parsing for a reason other than their content.
    pub fn drop_lines(&mut self, n: u64) {
        self.counts.lines += n;
        self.counts.dropped_lines += n;
    }

    /// Parses one line (without its `\n`) and queues its samples.
    pub fn handle_line(&mut self, line: &[u8]) {
        self.counts.lines += 1;
        let mut parsed: MetricLine<'_> = std::mem::take(&mut self.line).recycle();
        match parse_line(line, &mut parsed) {
            Ok(Parsed::Metric) => self.route_metric(&mut parsed),
            Ok(Parsed::Event(mut event)) => {
                let tags = self.encoder.merge_owned(std::mem::take(&mut event.tags));
                self.route_event(TaggedEvent::Event(event, tags));
            }
            Ok(Parsed::ServiceCheck(mut check)) => {
                let tags = self.encoder.merge_owned(std::mem::take(&mut check.tags));
                self.route_event(TaggedEvent::ServiceCheck(check, tags));
            }
            Err(reason) => self.counts.bad_line(reason),
        }
        self.line = parsed.recycle();
    }

    fn route_metric(&mut self, parsed: &mut MetricLine<'_>) {
        let (shard, hash, key_start, key_end) = if self.batches.len() == 1 {
            // One shard: the key goes straight into its batch.
            let arena = &mut self.batches[0].arena;
            let key_start = arena.len() as u32;
            let hash = self.encoder.encode(parsed.name, &mut parsed.tags, arena);
            (0, hash, key_start, arena.len() as u32)
        } else {
            self.key.clear();
            let hash = self
                .encoder
                .encode(parsed.name, &mut parsed.tags, &mut self.key);
            let shard = shard_of(hash, self.batches.len());
            let arena = &mut self.batches[shard].arena;
            let key_start = arena.len() as u32;
            arena.extend_from_slice(&self.key);
            (shard, hash, key_start, arena.len() as u32)
        };
        let batch = &mut self.batches[shard];
        for sample in &parsed.samples {
            let (member_start, member_end) = if sample.kind == crate::protocol::MetricKind::Set {
                batch.push_member(sample.text)
            } else {
                (0, 0)
            };
            batch.samples.push(BatchSample {
                hash,
                key_start,
                key_end,
                kind: sample.kind,
                value: sample.value,
                signed: sample.signed,
                rate: sample.rate,
                member_start,
                member_end,
            });
        }
        batch.lines += 1;
        if batch.samples.len() >= BATCH_SAMPLES || batch.arena.len() >= BATCH_BYTES {
            self.send(shard);
        }
    }

    fn route_event(&mut self, event: TaggedEvent) {
        // Events are rare; shard 0 carries them all so their order is kept.
        let batch = &mut self.batches[0];
        batch.events.push(event);
        batch.lines += 1;
    }

    /// Sends every non-empty batch and hands the counts to the shared telemetry. Call at the
    /// end of each receive cycle.
    pub fn flush(&mut self) {
        for shard in 0..self.batches.len() {
            if !self.batches[shard].is_empty() {
                self.send(shard);
            }
        }
        self.telemetry.add(&mut self.counts);
    }

    fn send(&mut self, shard: usize) {
        let batch = &mut self.batches[shard];
        let lines = batch.lines;
        if self.shards[shard].try_send(batch).is_err() {
            self.counts.dropped_lines += lines;
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Maps a hash onto `n` shards (multiply-shift: uses the hash's high bits).
fn shard_of(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_stays_in_range() {
        for hash in [0, 1, u64::MAX / 2, u64::MAX] {
            for n in 1..5 {
                assert!(shard_of(hash, n) < n);
            }
        }
        assert_eq!(shard_of(u64::MAX, 4), 3);
    }
}
