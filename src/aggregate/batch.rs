//! Samples waiting for a shard: many at once, their key bodies packed into one byte arena, so
//! a receive thread takes each shard's lock once per receive cycle instead of once per line.

use crate::protocol::{Event, MetricKind, Sample, ServiceCheck};

/// One sample in a [`Batch`]; its key and set member are ranges of the batch's arena.
#[derive(Debug, Clone, Copy)]
pub struct BatchSample {
    /// The key's routing hash ([`super::key::route_hash`]), so the shard need not hash again.
    pub hash: u64,
    pub key_start: u32,
    pub key_end: u32,
    pub kind: MetricKind,
    pub value: f64,
    pub signed: bool,
    pub rate: f64,
    pub member_start: u32,
    pub member_end: u32,
}

/// An event or service check with its final tags (client tags first-wins, globals merged).
#[derive(Debug, Clone, PartialEq)]
pub enum TaggedEvent {
    Event(Event, Vec<(String, String)>),
    ServiceCheck(ServiceCheck, Vec<(String, String)>),
}

/// A bundle of samples for one shard.
#[derive(Debug, Default)]
pub struct Batch {
    pub arena: Vec<u8>,
    pub samples: Vec<BatchSample>,
    pub events: Vec<TaggedEvent>,
}

impl Batch {
    /// True when the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.events.is_empty()
    }

    /// Empties the batch, keeping its buffers for the next receive cycle; one that grew far
    /// past a cycle's size (samples waited for a busy shard) gives the excess back.
    pub fn clear(&mut self) {
        const KEPT_SAMPLES: usize = 4096;
        const KEPT_BYTES: usize = 256 * 1024;
        self.arena.clear();
        self.samples.clear();
        self.events.clear();
        if self.samples.capacity() > 4 * KEPT_SAMPLES {
            self.samples.shrink_to(KEPT_SAMPLES);
        }
        if self.arena.capacity() > 4 * KEPT_BYTES {
            self.arena.shrink_to(KEPT_BYTES);
        }
        if self.events.capacity() > 64 {
            self.events.shrink_to(64);
        }
    }

    /// Appends the samples of one metric line whose key body is `body`, with routing hash
    /// `hash` (see [`super::KeyEncoder::body`]).
    pub fn push_line(&mut self, body: &[u8], hash: u64, samples: &[Sample<'_>]) {
        let key_start = self.arena.len() as u32;
        self.arena.extend_from_slice(body);
        let key_end = self.arena.len() as u32;
        for sample in samples {
            let (member_start, member_end) = if sample.kind == MetricKind::Set {
                self.push_member(sample.text)
            } else {
                (0, 0)
            };
            self.samples.push(BatchSample {
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
    }

    /// Appends the bytes of a set member and returns their range.
    pub fn push_member(&mut self, text: &str) -> (u32, u32) {
        let start = self.arena.len();
        self.arena.extend_from_slice(text.as_bytes());
        (start as u32, self.arena.len() as u32)
    }
}
