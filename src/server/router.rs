//! The receive path's per-thread state: parses the lines of each packet, works out each
//! metric line's series key body and hash once, and folds the samples into the shard that
//! owns the series. With a single shard that is free, lines are folded straight in under
//! one lock per packet. With a local table (several datagram threads or shards), counters
//! and distributions go into it, and the flusher moves them into the shards. Otherwise
//! samples wait in a batch per shard, folded in at the end of the receive cycle (or once
//! large) when that shard's lock is free; a batch grown past [`PENDING_SAMPLES`] or
//! [`PENDING_BYTES`] waits for the lock, which bounds its memory.

use std::sync::Arc;

use crate::aggregate::{
    Batch, KeyEncoder, LocalHandle, LocalTable, MAX_EVENTS, Shard, ShardHandle, TaggedEvent,
    shard_of,
};
use crate::protocol::{MetricLine, NextLine, ParseError, Parsed, Sample, next_line, parse_line};
use crate::telemetry::{LocalCounts, Telemetry};

/// A batch is folded in early, if its shard is free, once it holds this many samples or
/// arena bytes.
const BATCH_SAMPLES: usize = 1024;
const BATCH_BYTES: usize = 64 * 1024;
/// A batch this large is folded in even if that means waiting for its shard (a flush of a
/// very large shard, say): about 20 MB of samples and keys per router and shard at most,
/// given back once folded in (see [`Batch::clear`]).
const PENDING_SAMPLES: usize = 256 * 1024;
const PENDING_BYTES: usize = 8 * 1024 * 1024;

/// Parses and routes lines for one receive thread or connection.
pub struct Router {
    parser: LineParser,
    shards: Vec<ShardHandle>,
    batches: Vec<Batch>,
    /// The thread's own table for the kinds it keeps (see [`LocalTable`]), if it has one.
    local: Option<LocalHandle>,
    telemetry: Arc<Telemetry>,
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
    /// A router over `shards` (at least one).
    pub fn new(encoder: KeyEncoder, shards: Vec<ShardHandle>, telemetry: Arc<Telemetry>) -> Router {
        assert!(!shards.is_empty(), "a router needs a shard");
        Router {
            parser: LineParser {
                encoder,
                line: MetricLine::default(),
                key: Vec::with_capacity(256),
                counts: LocalCounts::default(),
                max_line: usize::MAX,
            },
            batches: shards.iter().map(|_| Batch::default()).collect(),
            shards,
            local: None,
            telemetry,
        }
    }

    /// Keeps counters and distributions in `local` between flushes; the flusher must drain
    /// it.
    #[must_use]
    pub fn with_local(mut self, local: LocalHandle) -> Router {
        self.local = Some(local);
        self
    }

    /// Lines longer than `max_line` bytes are dropped and counted as `too_long`.
    pub fn with_max_line(mut self, max_line: usize) -> Router {
        self.parser.max_line = max_line;
        self
    }

    /// Handles one datagram (or one read of a stream): every line in it.
    pub fn handle_packet(&mut self, packet: &[u8]) {
        self.parser.counts.packets += 1;
        // One line buffer for the whole packet, its lifetime tied to the packet's.
        let mut parsed: MetricLine<'_> = std::mem::take(&mut self.parser.line).recycle();
        if let Some(local) = &self.local
            && let Some(mut table) = local.try_lock()
        {
            // Only a flush draining the table holds it; then everything goes to the shards.
            let mut split = Split {
                local: &mut table,
                rest: Batches {
                    shards: &self.shards,
                    batches: &mut self.batches,
                },
            };
            self.parser.packet_into(packet, &mut parsed, &mut split);
        } else if let [only] = self.shards.as_slice()
            && let Some(mut shard) = only.try_lock()
        {
            let pending = &mut self.batches[0];
            if !pending.is_empty() {
                shard.add(pending);
            }
            self.parser.packet_into(packet, &mut parsed, &mut *shard);
        } else {
            let mut batches = Batches {
                shards: &self.shards,
                batches: &mut self.batches,
            };
            self.parser.packet_into(packet, &mut parsed, &mut batches);
        }
        self.parser.line = parsed.recycle();
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

    /// Folds every sample waiting in a batch in, waiting for busy shards, and hands the
    /// counts to the shared telemetry (a local table's shares wait for the flusher). Call at
    /// the end of each read of a stream or datagram socket, and whenever a receive loop goes
    /// idle.
    pub fn flush(&mut self) {
        for (shard, batch) in self.shards.iter().zip(&mut self.batches) {
            if !batch.is_empty() {
                shard.lock().add(batch);
            }
        }
        self.telemetry.add(&mut self.parser.counts);
    }

    /// Like [`Router::flush`], but leaves a busy shard's samples waiting for the next call:
    /// the end of a busy receive cycle, where the next cycle is moments away.
    pub fn try_flush(&mut self) {
        for (shard, batch) in self.shards.iter().zip(&mut self.batches) {
            if !batch.is_empty()
                && let Some(mut shard) = shard.try_lock()
            {
                shard.add(batch);
            }
        }
        self.telemetry.add(&mut self.parser.counts);
    }

    /// True when samples wait for a busy shard.
    pub fn is_pending(&self) -> bool {
        self.batches.iter().any(|batch| !batch.is_empty())
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Where a parsed line's samples go: folded into the only shard, into a local table, or
/// batched per shard.
trait Target {
    /// Takes the samples of one metric line, whose key body is `body` with routing hash
    /// `hash`.
    fn metric(&mut self, body: &[u8], hash: u64, samples: &[Sample<'_>]);

    /// Takes one event or service check.
    fn event(&mut self, event: TaggedEvent);
}

impl Target for Shard {
    fn metric(&mut self, body: &[u8], hash: u64, samples: &[Sample<'_>]) {
        for sample in samples {
            self.fold(body, hash, sample);
        }
    }

    fn event(&mut self, event: TaggedEvent) {
        self.add_event(event);
    }
}

/// A router's batches, borrowed for one packet.
struct Batches<'a> {
    shards: &'a [ShardHandle],
    batches: &'a mut [Batch],
}

impl Target for Batches<'_> {
    fn metric(&mut self, body: &[u8], hash: u64, samples: &[Sample<'_>]) {
        let shard = shard_of(hash, self.batches.len());
        let batch = &mut self.batches[shard];
        batch.push_line(body, hash, samples);
        if batch.samples.len() >= PENDING_SAMPLES || batch.arena.len() >= PENDING_BYTES {
            self.shards[shard].lock().add(batch);
        } else if (batch.samples.len() >= BATCH_SAMPLES || batch.arena.len() >= BATCH_BYTES)
            && let Some(mut owner) = self.shards[shard].try_lock()
        {
            owner.add(batch);
        }
    }

    fn event(&mut self, event: TaggedEvent) {
        // Events are rare; shard 0 keeps them all so their order is kept. The shard keeps
        // at most MAX_EVENTS an interval, so no more need wait for it.
        let batch = &mut self.batches[0];
        batch.events.push(event);
        if batch.events.len() >= MAX_EVENTS {
            self.shards[0].lock().add(batch);
        }
    }
}

/// A thread's local table for the kinds it keeps, and its batches for the rest.
struct Split<'a> {
    local: &'a mut LocalTable,
    rest: Batches<'a>,
}

impl Target for Split<'_> {
    fn metric(&mut self, body: &[u8], hash: u64, samples: &[Sample<'_>]) {
        let taken = self.local.add(body, hash, samples);
        if let Some(rest) = samples.get(taken..)
            && !rest.is_empty()
        {
            self.rest.metric(body, hash, rest);
        }
    }

    fn event(&mut self, event: TaggedEvent) {
        self.rest.event(event);
    }
}

impl LineParser {
    /// Parses every line of `packet` into `parsed` in turn and hands their samples to
    /// `target`.
    fn packet_into<'p>(
        &mut self,
        packet: &'p [u8],
        parsed: &mut MetricLine<'p>,
        target: &mut impl Target,
    ) {
        let mut rest = packet;
        while let Some(next) = next_line(&mut rest, parsed) {
            self.counts.lines += 1;
            match next {
                NextLine::Parsed(len, _) if len > self.max_line => {
                    self.counts.bad_line(ParseError::TooLong);
                }
                NextLine::Parsed(_, Ok(())) => self.metric_into(parsed, target),
                NextLine::Parsed(_, Err(reason)) => self.counts.bad_line(reason),
                NextLine::Line(line) if line.len() > self.max_line => {
                    self.counts.bad_line(ParseError::TooLong);
                }
                NextLine::Line(line) => {
                    let outcome = parse_line(line, parsed);
                    self.line_into(outcome, parsed, target);
                }
            }
        }
    }

    /// Hands a parsed metric line's samples to `target`.
    fn metric_into(&mut self, parsed: &mut MetricLine<'_>, target: &mut impl Target) {
        let (body, hash) = self
            .encoder
            .body(parsed.name, &mut parsed.tags, &mut self.key);
        target.metric(body, hash, &parsed.samples);
    }

    /// Hands a parsed line's samples (or event) to `target`, or counts why it was dropped.
    fn line_into(
        &mut self,
        outcome: Result<Parsed, ParseError>,
        parsed: &mut MetricLine<'_>,
        target: &mut impl Target,
    ) {
        match outcome {
            Ok(Parsed::Metric) => self.metric_into(parsed, target),
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
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::aggregate::{RawData, ShardSnapshot, new_shards};
    use crate::config::Config;

    fn router(shards: usize) -> (Router, Vec<ShardHandle>) {
        let mut config = Config::default().aggregation;
        config.shards = shards;
        let telemetry = Arc::new(Telemetry::default());
        let handles = new_shards(&Arc::new(config), &telemetry);
        let encoder = KeyEncoder::new(Arc::from(Vec::new()));
        (Router::new(encoder, handles.clone(), telemetry), handles)
    }

    /// Counter sums by name over every shard's snapshot.
    fn counters(handles: &[ShardHandle]) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = handles
            .iter()
            .map(ShardHandle::snapshot)
            .flat_map(|snapshot: ShardSnapshot| snapshot.metrics)
            .filter_map(|m| match m.data {
                RawData::Counter { sum, .. } => Some((m.key.name().to_string(), sum)),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Holds `shard` on another thread from when this returns until `release` is sent
    /// (and `delay` has passed after it).
    fn hold(
        shard: &ShardHandle,
        delay: Duration,
    ) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let shard = shard.clone();
        let holder = std::thread::spawn(move || {
            let _guard = shard.lock();
            locked_tx.send(()).expect("the test waits");
            let _ = release_rx.recv();
            std::thread::sleep(delay);
        });
        locked_rx.recv().expect("the holder locks the shard");
        (release_tx, holder)
    }

    #[test]
    fn lines_for_a_busy_shard_wait_and_go_in_with_the_next_packet() {
        let (mut router, handles) = router(1);
        let (release, holder) = hold(&handles[0], Duration::ZERO);
        router.handle_packet(b"a:1|c\nb:2|c");
        router.try_flush();
        assert!(router.is_pending(), "try_flush leaves a busy shard alone");
        release.send(()).expect("holder waits");
        holder.join().expect("holder ends");
        router.handle_packet(b"a:3|c");
        assert!(
            !router.is_pending(),
            "the free shard took the waiting lines first"
        );
        assert_eq!(
            counters(&handles),
            vec![("a".to_string(), 4.0), ("b".to_string(), 2.0)]
        );
    }

    #[test]
    fn flush_waits_for_a_busy_shard() {
        let (mut router, handles) = router(2);
        let (release, holder) = hold(&handles[1], Duration::from_millis(20));
        let packet: String = (0..50).map(|i| format!("s{i}:1|c\n")).collect();
        router.handle_packet(packet.as_bytes());
        router.try_flush();
        assert!(router.is_pending(), "shard 1 is held, so some lines wait");
        release.send(()).expect("holder waits");
        router.flush();
        assert!(!router.is_pending());
        holder.join().expect("holder ends");
        let counted = counters(&handles);
        assert_eq!(counted.len(), 50);
        assert!(counted.iter().all(|(_, sum)| *sum == 1.0));
    }

    #[test]
    fn events_stop_waiting_for_a_busy_shard_at_the_interval_cap() {
        let (mut router, handles) = router(2);
        let (release, holder) = hold(&handles[0], Duration::from_millis(50));
        let events = "_e{1,1}:t|x\n".repeat(MAX_EVENTS - 1);
        router.handle_packet(events.as_bytes());
        assert!(router.is_pending(), "shard 0 is held: the events wait");
        release.send(()).expect("holder waits");
        router.handle_packet(b"_e{1,1}:t|x");
        assert!(
            !router.is_pending(),
            "the cap made the router wait and fold"
        );
        holder.join().expect("holder ends");
        assert_eq!(handles[0].snapshot().events.len(), MAX_EVENTS);
    }

    #[test]
    fn a_batch_past_its_bound_waits_for_its_shard() {
        let (mut router, handles) = router(1);
        let (release, holder) = hold(&handles[0], Duration::from_millis(50));
        let lines = "a:1|c\n".repeat(PENDING_SAMPLES - 1);
        router.handle_packet(lines.as_bytes());
        assert!(router.is_pending(), "the shard is held: the lines wait");
        // The holder lets go 50 ms after this; the line that reaches the bound must wait for
        // it rather than grow the batch further.
        release.send(()).expect("holder waits");
        router.handle_packet(b"a:1|c");
        assert!(
            !router.is_pending(),
            "the bound made the router wait and fold"
        );
        holder.join().expect("holder ends");
        assert_eq!(
            counters(&handles),
            vec![("a".to_string(), PENDING_SAMPLES as f64)]
        );
    }

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
