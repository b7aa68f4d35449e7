//! What crosses a shard's queue: many samples at once, their keys packed into one byte arena,
//! so the receive path sends one message per shard per receive cycle instead of one per line.

use crate::protocol::{Event, MetricKind, ServiceCheck};

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
    /// How many input lines the batch carries (for `dropped_lines` when it cannot be queued).
    pub lines: u64,
}

impl Batch {
    /// True when the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.events.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.samples.clear();
        self.events.clear();
        self.lines = 0;
    }

    /// Roughly the memory the batch holds, for the queue's byte bound.
    pub fn weight(&self) -> usize {
        self.arena.capacity()
            + self.samples.capacity() * std::mem::size_of::<BatchSample>()
            + self.events.len() * 256
    }

    /// Appends the bytes of a set member and returns their range.
    pub fn push_member(&mut self, text: &str) -> (u32, u32) {
        let start = self.arena.len();
        self.arena.extend_from_slice(text.as_bytes());
        (start as u32, self.arena.len() as u32)
    }
}
