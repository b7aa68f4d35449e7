//! The receive path's per-thread state: parses the lines of each packet and works out each
//! metric line's series key body and hash once. With a single shard without a thread (a
//! one-core agent) the samples are folded straight into it, under a lock taken once per
//! packet. Otherwise they go into the batch of the shard that owns the series; batches are
//! sent at the end of each receive cycle (or when large), and a full queue drops the batch's
//! lines and counts them, so a receive thread never blocks.

use std::sync::{Arc, Mutex};

use crate::aggregate::{Batch, BatchSample, KeyEncoder, Shard, ShardQueue, TaggedEvent, lock};
use crate::protocol::{MetricLine, ParseError, Parsed, lines, parse_line};
use crate::telemetry::{LocalCounts, Telemetry};

/// A batch is sent early once it holds this many samples or arena bytes.
const BATCH_SAMPLES: usize = 1024;
const BATCH_BYTES: usize = 64 * 1024;

/// Parses and routes lines for one receive thread or connection.
pub struct Router {
    parser: LineParser,
    sink: Sink,
    telemetry: Arc<Telemetry>,
}

/// What a router hands its samples to.
enum Sink {
    /// The only shard, folded into directly.
    Direct(Arc<Mutex<Shard>>),
    /// One batch per shard queue.
    Queues {
        shards: Vec<ShardQueue>,
        batches: Vec<Batch>,
    },
}

/// The parsing half of a router: reused buffers and the line counts.
struct LineParser {
    encoder: KeyEncoder,
    line: MetricLine<'static>,
    key: Vec<u8>,
    counts: LocalCounts,
    max_line: usize,
}

impl Router {
    /// A router over the shards' data queues.
    pub fn new(encoder: KeyEncoder, shards: Vec<ShardQueue>, telemetry: Arc<Telemetry>) -> Router {
        let direct = match shards.as_slice() {
            [only] => only.direct().cloned(),
            _ => None,
        };
        let sink = match direct {
            Some(shard) => Sink::Direct(shard),
            None => Sink::Queues {
                batches: shards.iter().map(|_| Batch::default()).collect(),
                shards,
            },
        };
        Router {
            parser: LineParser {
                encoder,
                line: MetricLine::default(),
                key: Vec::with_capacity(256),
                counts: LocalCounts::default(),
                max_line: usize::MAX,
            },
            sink,
            telemetry,
        }
    }

    /// Lines longer than `max_line` bytes are dropped and counted as `too_long`.
    pub fn with_max_line(mut self, max_line: usize) -> Router {
        self.parser.max_line = max_line;
        self
    }

    /// Handles one datagram (or one read of a stream): every line in it.
    pub fn handle_packet(&mut self, packet: &[u8]) {
        self.parser.counts.packets += 1;
        match &mut self.sink {
            Sink::Direct(shard) => {
                let mut shard = lock(shard);
                for line in lines(packet) {
                    self.parser.line_into(line, &mut *shard);
                }
            }
            Sink::Queues { shards, batches } => {
                let mut queues = Queues { shards, batches };
                for line in lines(packet) {
                    self.parser.line_into(line, &mut queues);
                }
            }
        }
    }

    /// Parses one line (without its `\n`) and folds or queues its samples.
    pub fn handle_line(&mut self, line: &[u8]) {
        match &mut self.sink {
            Sink::Direct(shard) => self.parser.line_into(line, &mut *lock(shard)),
            Sink::Queues { shards, batches } => {
                self.parser.line_into(line, &mut Queues { shards, batches });
            }
        }
    }

    /// Counts a line dropped before parsing (too long, truncated).
    pub fn reject_line(&mut self, reason: ParseError) {
        self.parser.counts.lines += 1;
        self.parser.counts.bad_line(reason);
    }

    /// Counts lines dropped before parsing for a reason other than their content.
    pub fn drop_lines(&mut self, n: u64) {
        self.parser.counts.lines += n;
        self.parser.counts.dropped_lines += n;
    }

    /// Sends every non-empty batch and hands the counts to the shared telemetry. Call at the
    /// end of each receive cycle.
    pub fn flush(&mut self) {
        if let Sink::Queues { shards, batches } = &mut self.sink {
            let mut queues = Queues { shards, batches };
            for shard in 0..queues.batches.len() {
                if !queues.batches[shard].is_empty() {
                    queues.send(shard, &mut self.parser.counts);
                }
            }
        }
        self.telemetry.add(&mut self.parser.counts);
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Where a parsed line's samples go: folded into the only shard, or batched per shard.
trait Target {
    /// Takes the samples of one metric line, whose key body is `body` with routing hash
    /// `hash`.
    fn metric(&mut self, body: &[u8], hash: u64, line: &MetricLine<'_>, counts: &mut LocalCounts);

    /// Takes one event or service check.
    fn event(&mut self, event: TaggedEvent);
}

impl Target for Shard {
    fn metric(&mut self, body: &[u8], hash: u64, line: &MetricLine<'_>, _: &mut LocalCounts) {
        for sample in &line.samples {
            self.fold(body, hash, sample);
        }
    }

    fn event(&mut self, event: TaggedEvent) {
        self.add_event(event);
    }
}

/// The batches of a router with shard queues, borrowed for one packet.
struct Queues<'a> {
    shards: &'a [ShardQueue],
    batches: &'a mut [Batch],
}

impl Queues<'_> {
    fn send(&mut self, shard: usize, counts: &mut LocalCounts) {
        let batch = &mut self.batches[shard];
        let lines = batch.lines;
        if self.shards[shard].try_send(batch).is_err() {
            counts.dropped_lines += lines;
        }
    }
}

impl Target for Queues<'_> {
    fn metric(&mut self, body: &[u8], hash: u64, line: &MetricLine<'_>, counts: &mut LocalCounts) {
        let shard = shard_of(hash, self.batches.len());
        let batch = &mut self.batches[shard];
        let key_start = batch.arena.len() as u32;
        batch.arena.extend_from_slice(body);
        let key_end = batch.arena.len() as u32;
        for sample in &line.samples {
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
            self.send(shard, counts);
        }
    }

    fn event(&mut self, event: TaggedEvent) {
        // Events are rare; shard 0 carries them all so their order is kept.
        let batch = &mut self.batches[0];
        batch.events.push(event);
        batch.lines += 1;
    }
}

impl LineParser {
    /// Parses one line (without its `\n`) and hands its samples to `target`.
    fn line_into(&mut self, line: &[u8], target: &mut impl Target) {
        self.counts.lines += 1;
        if line.len() > self.max_line {
            self.counts.bad_line(ParseError::TooLong);
            return;
        }
        let mut parsed: MetricLine<'_> = std::mem::take(&mut self.line).recycle();
        match parse_line(line, &mut parsed) {
            Ok(Parsed::Metric) => {
                let (body, hash) = self
                    .encoder
                    .body(parsed.name, &mut parsed.tags, &mut self.key);
                target.metric(body, hash, &parsed, &mut self.counts);
            }
            Ok(Parsed::Event(mut event)) => {
                let tags = self.encoder.merge_owned(std::mem::take(&mut event.tags));
                target.event(TaggedEvent::Event(event, tags));
            }
            Ok(Parsed::ServiceCheck(mut check)) => {
                let tags = self.encoder.merge_owned(std::mem::take(&mut check.tags));
                target.event(TaggedEvent::ServiceCheck(check, tags));
            }
            Err(reason) => self.counts.bad_line(reason),
        }
        self.line = parsed.recycle();
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
