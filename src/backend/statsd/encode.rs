//! A record's active series as DogStatsD lines a receiving agent folds into the same
//! figures (SPEC §7.4): counters as their count, gauges as absolute writes, sets as their
//! members (a line each), distributions as every value packed with a rate that keeps the count.
//!
//! Lines are packed into datagrams of at most `max_datagram_bytes` (framed for
//! [`UdpTransport`](crate::backend::sender::udp::UdpTransport)), or written as a plain
//! stream for TCP, and a flush is cut into payloads of about 1 MiB between datagrams.

use crate::aggregate::SeriesKey;
use crate::aggregate::distribution::Values;
use crate::backend::sender::udp::frame;
use crate::protocol::MetricKind;
use crate::record::{Figures, Record};

/// A payload is cut after the datagram that takes it past this size.
pub const PAYLOAD_BYTES: usize = 1024 * 1024;

/// Turns records into StatsD payloads.
pub struct StatsdEncoder {
    /// Frame datagrams (UDP), or write one stream (TCP).
    datagrams: bool,
    /// The longest datagram (and, over TCP, the longest packed line).
    max_bytes: usize,
    payload_bytes: usize,
    numbers: zmij::Buffer,
    /// `<name>:` of the current series.
    head: Vec<u8>,
    /// `|#k:v,...` of the current series, or empty.
    tags: Vec<u8>,
    /// The line being packed.
    line: Vec<u8>,
    /// A number being written.
    number: Vec<u8>,
}

/// The payload being filled.
struct Out {
    payload: Vec<u8>,
    /// Where the open datagram's frame header is (UDP).
    frame_at: Option<usize>,
}

impl StatsdEncoder {
    /// An encoder packing datagrams (`datagrams`) or a stream, lines up to `max_bytes`.
    pub fn new(datagrams: bool, max_bytes: usize) -> StatsdEncoder {
        StatsdEncoder {
            datagrams,
            max_bytes: max_bytes.max(1),
            payload_bytes: PAYLOAD_BYTES,
            numbers: zmij::Buffer::new(),
            head: Vec::with_capacity(256),
            tags: Vec::with_capacity(256),
            line: Vec::with_capacity(max_bytes.min(65_536)),
            number: Vec::with_capacity(32),
        }
    }

    /// Cuts payloads after `bytes` instead of [`PAYLOAD_BYTES`] (tests).
    #[must_use]
    pub fn with_payload_bytes(mut self, bytes: usize) -> StatsdEncoder {
        self.payload_bytes = bytes.max(1);
        self
    }

    /// Encodes the active series of `record`, handing each payload to `push` in order.
    pub fn encode(&mut self, record: &Record, mut push: impl FnMut(Vec<u8>)) {
        let mut out = Out {
            payload: Vec::new(),
            frame_at: None,
        };
        let mut members = record.members.iter().peekable();
        for metric in record.metrics.iter().filter(|m| m.active()) {
            self.series(&metric.key);
            match &metric.figures {
                Figures::Counter { count, .. } => self.single(&mut out, *count, b"|c"),
                Figures::Gauge { value, .. } => self.gauge(&mut out, *value),
                Figures::Set { .. } => {
                    // Both lists are in record order: walk them together.
                    while members
                        .peek()
                        .is_some_and(|(key, _)| key.record_order(&metric.key).is_lt())
                    {
                        members.next();
                    }
                    if let Some((_, texts)) = members.next_if(|(key, _)| *key == metric.key) {
                        self.set(&mut out, texts);
                    }
                }
                Figures::Dist { figures, .. } => {
                    if let Some(values) = figures.values() {
                        let kind = metric.key.kind();
                        self.dist(&mut out, kind, figures.count(), values);
                    }
                }
            }
            if out.payload.len() >= self.payload_bytes {
                self.close(&mut out);
                push(std::mem::take(&mut out.payload));
            }
        }
        self.close(&mut out);
        if !out.payload.is_empty() {
            push(out.payload);
        }
    }

    /// Prepares `<name>:` and `|#tags` of one series. Tag keys and values come as our
    /// parser read them, so only what another spelling allowed (or a global tag from the
    /// config) can clash with DogStatsD's: `,` and `|` anywhere, `:` in keys, become `_`.
    fn series(&mut self, key: &SeriesKey) {
        self.head.clear();
        self.head.extend_from_slice(key.name().as_bytes());
        self.head.push(b':');
        self.tags.clear();
        for (i, (k, v)) in key.tags().enumerate() {
            self.tags
                .extend_from_slice(if i == 0 { b"|#" } else { b"," });
            escape_tag(k, true, &mut self.tags);
            if !v.is_empty() {
                self.tags.push(b':');
                escape_tag(v, false, &mut self.tags);
            }
        }
    }

    /// `<name>:<value><kind><tags>`.
    fn single(&mut self, out: &mut Out, value: f64, kind: &[u8]) {
        if !self.format(value) {
            return;
        }
        self.line.clear();
        self.line.extend_from_slice(&self.head);
        self.line.extend_from_slice(&self.number);
        self.line.extend_from_slice(kind);
        self.line.extend_from_slice(&self.tags);
        self.line.push(b'\n');
        self.put(out);
    }

    /// An absolute write: a negative value after a `0`, both in one datagram, so that a
    /// receiver reading a sign as a delta (etsy) sets the gauge too.
    fn gauge(&mut self, out: &mut Out, value: f64) {
        if !self.format(value) {
            return;
        }
        self.line.clear();
        if value < 0.0 {
            self.line.extend_from_slice(&self.head);
            self.line.extend_from_slice(b"0|g");
            self.line.extend_from_slice(&self.tags);
            self.line.push(b'\n');
        }
        self.line.extend_from_slice(&self.head);
        self.line.extend_from_slice(&self.number);
        self.line.extend_from_slice(b"|g");
        self.line.extend_from_slice(&self.tags);
        self.line.push(b'\n');
        self.put(out);
    }

    /// The members, one line each (`<name>:<member>|s`): receivers without value packing
    /// (etsy statsd) read them too, and a member never splits.
    fn set(&mut self, out: &mut Out, texts: &str) {
        for member in texts.split_terminator('\n') {
            self.line.clear();
            self.line.extend_from_slice(&self.head);
            self.line.extend_from_slice(member.as_bytes());
            self.line.extend_from_slice(b"|s");
            self.line.extend_from_slice(&self.tags);
            self.line.push(b'\n');
            self.put(out);
        }
    }

    /// Every value (a sketch's value as many times as it stands for), packed, with the
    /// rate `n / count` when the interval's count is more than its n values.
    fn dist(&mut self, out: &mut Out, kind: MetricKind, count: f64, values: &Values) {
        let n = match values {
            Values::Exact(values) => values.len() as f64,
            Values::Weighted(values) => values.iter().map(|(_, w)| *w as f64).sum(),
        };
        if n == 0.0 {
            return;
        }
        let mut trailer = Vec::with_capacity(self.tags.len() + 32);
        trailer.push(b'|');
        trailer.extend_from_slice(match kind {
            MetricKind::Histogram => b"h",
            MetricKind::Distribution => b"d",
            _ => b"ms",
        });
        if count > n && count.is_finite() {
            let rate = n / count;
            trailer.extend_from_slice(b"|@");
            trailer.extend_from_slice(self.numbers.format_finite(rate).as_bytes());
        }
        trailer.extend_from_slice(&self.tags);
        trailer.push(b'\n');
        self.line.clear();
        let mut value_text = Vec::with_capacity(32);
        match values {
            Values::Exact(values) => {
                for &value in values {
                    if self.format(value) {
                        value_text.clone_from(&self.number);
                        self.pack(out, &value_text, &trailer);
                    }
                }
            }
            Values::Weighted(values) => {
                for &(value, weight) in values {
                    if self.format(value) {
                        value_text.clone_from(&self.number);
                        for _ in 0..weight {
                            self.pack(out, &value_text, &trailer);
                        }
                    }
                }
            }
        }
        self.finish_line(out, &trailer);
    }

    /// Adds one value to the line being packed, first ending it when the value would take
    /// it past the limit.
    fn pack(&mut self, out: &mut Out, value: &[u8], trailer: &[u8]) {
        if !self.line.is_empty()
            && self.line.len() + 1 + value.len() + trailer.len() > self.max_bytes
        {
            self.finish_line(out, trailer);
        }
        if self.line.is_empty() {
            self.line.extend_from_slice(&self.head);
        } else {
            self.line.push(b':');
        }
        self.line.extend_from_slice(value);
    }

    fn finish_line(&mut self, out: &mut Out, trailer: &[u8]) {
        if self.line.is_empty() {
            return;
        }
        self.line.extend_from_slice(trailer);
        self.put(out);
        self.line.clear();
    }

    /// Adds the whole lines in `self.line` to the open datagram, or to a new one when they
    /// do not fit (lines longer than a datagram go alone, whole).
    fn put(&mut self, out: &mut Out) {
        if self.datagrams {
            if let Some(at) = out.frame_at {
                let open = out.payload.len() - at - 4;
                if open + self.line.len() > self.max_bytes {
                    self.close(out);
                }
            }
            if out.frame_at.is_none() {
                out.frame_at = Some(out.payload.len());
                frame(&mut out.payload, 0);
            }
        }
        out.payload.extend_from_slice(&self.line);
    }

    /// Ends the open datagram: its frame header gets its length.
    fn close(&self, out: &mut Out) {
        if let Some(at) = out.frame_at.take() {
            let len = out.payload.len() - at - 4;
            let mut header = Vec::with_capacity(4);
            frame(&mut header, len);
            out.payload[at..at + 4].copy_from_slice(&header);
        }
    }

    /// Writes `value` into `self.number` as our parser reads it back exactly: integers
    /// plainly, others as the shortest text that round-trips. False for a value that is
    /// not finite (only overflowing sums), which is not sent.
    fn format(&mut self, value: f64) -> bool {
        self.number.clear();
        if !value.is_finite() {
            return false;
        }
        if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
            let mut ints = itoa::Buffer::new();
            self.number
                .extend_from_slice(ints.format(value as i64).as_bytes());
        } else {
            self.number
                .extend_from_slice(self.numbers.format_finite(value).as_bytes());
        }
        true
    }
}

/// A tag key or value with what DogStatsD's tag syntax cannot carry replaced by `_`.
fn escape_tag(text: &str, key: bool, out: &mut Vec<u8>) {
    for &b in text.as_bytes() {
        let clash = b == b',' || b == b'|' || (key && b == b':');
        out.push(if clash { b'_' } else { b });
    }
}
