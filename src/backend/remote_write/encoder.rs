//! Encodes a [`View`] as remote write 1.0 requests: every exported series of SPEC §7.1 as
//! one or more time series of one sample each (and the agent's own `tallyd_*` figures), labels sorted with `__name__` and
//! `instance`, cut into snappy-compressed (block format) `WriteRequest`s of at most
//! `max_samples` samples, and stale markers for the series the flush before exported and
//! this one does not.
//!
//! The protobuf is written by hand, straight into the request buffer, where prost messages
//! would cost a `String` per label and a `Vec` per series (the README's performance
//! section has the rate). The prost messages of [`super::proto`] decode what this writes
//! in the tests.

use std::hash::{BuildHasher, Hasher};

use super::proto::key;
use crate::export::exposition::internal_families;
use crate::export::series::ExportedSeries;
use crate::export::view::{FamilyKind, View};
use crate::record::Figures;

/// The stale marker: Prometheus's special NaN that ends a series.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Turns successive views into requests; remembers which series the last one exported.
pub struct Encoder {
    max_samples: usize,
    batch: Batch,
    /// Label-set hashes of the series the last encoded view exported, sorted.
    previous: Vec<u64>,
    /// Samples the last `encode` wrote, stale markers included.
    last_samples: usize,
}

/// The request being filled, and what this flush wrote so far.
struct Batch {
    body: Vec<u8>,
    samples: usize,
    /// Samples written this flush.
    total: usize,
    snappy: snap::raw::Encoder,
    /// Label-set hashes written this flush (sorted at its end: cheaper than a hash set's
    /// million scattered inserts).
    written: Vec<u64>,
    hasher: foldhash::fast::FixedState,
}

/// What one pass over a view writes.
#[derive(Clone, Copy)]
enum Pass<'a> {
    /// Every series with its value.
    Values,
    /// Stale markers for the series whose label hash is in the set.
    Stale(&'a [u64]),
}

impl Encoder {
    /// An encoder cutting requests at `max_samples` samples (at least 1).
    pub fn new(max_samples: usize) -> Encoder {
        let state = foldhash::fast::FixedState::with_seed(0x5eed_7a11);
        Encoder {
            max_samples: max_samples.max(1),
            batch: Batch {
                body: Vec::new(),
                samples: 0,
                total: 0,
                snappy: snap::raw::Encoder::new(),
                written: Vec::new(),
                hasher: state.clone(),
            },
            previous: Vec::new(),
            last_samples: 0,
        }
    }

    /// Samples the last [`Encoder::encode`] wrote, stale markers included.
    pub fn last_samples(&self) -> usize {
        self.last_samples
    }

    /// Encodes `view` (and stale markers for what `previous`, the view encoded last, had
    /// and this one lacks), all samples at `timestamp_ms`, labelled `instance = host`
    /// unless a series has its own; each full request goes to `emit`, compressed.
    pub fn encode(
        &mut self,
        view: &View,
        previous: Option<&View>,
        host: &str,
        timestamp_ms: i64,
        emit: &mut dyn FnMut(Vec<u8>),
    ) {
        let mut scratch = Scratch::new(host);
        self.batch.total = 0;
        self.batch.written.reserve(self.previous.len());
        view.for_each_series_unordered(|series| {
            self.series(series, &mut scratch, Pass::Values, timestamp_ms, emit);
        });
        self.internal(view, host, timestamp_ms, emit);
        self.batch.written.sort_unstable();
        let gone = missing(&self.previous, &self.batch.written);
        if let Some(previous) = previous.filter(|_| !gone.is_empty()) {
            previous.for_each_series_unordered(|series| {
                self.series(series, &mut scratch, Pass::Stale(&gone), timestamp_ms, emit);
            });
        }
        self.batch.finish(emit);
        self.last_samples = self.batch.total;
        // The stale pass wrote only markers, and pushed nothing.
        std::mem::swap(&mut self.previous, &mut self.batch.written);
        self.batch.written.clear();
    }

    /// Writes the agent's own figures, `tallyd_*`, as `/metrics` has them.
    fn internal(&mut self, view: &View, host: &str, ts: i64, emit: &mut dyn FnMut(Vec<u8>)) {
        for family in internal_families(view) {
            let total = if family.counter { "_total" } else { "" };
            let name = format!("tallyd_{}{total}", family.name);
            for (labels, value) in &family.samples {
                let mut labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                labels.push(("instance", host));
                labels.sort_by(|a, b| a.0.cmp(b.0));
                self.batch
                    .write(&name, &labels, None, *value, ts, Pass::Values);
                if self.batch.samples >= self.max_samples {
                    self.batch.finish(emit);
                }
            }
        }
    }

    /// Writes the time series of one exported series.
    fn series(
        &mut self,
        series: &ExportedSeries<'_>,
        scratch: &mut Scratch<'_>,
        pass: Pass<'_>,
        ts: i64,
        emit: &mut dyn FnMut(Vec<u8>),
    ) {
        let labels = scratch.labels(series);
        let batch = &mut self.batch;
        let max = self.max_samples;
        let mut one = |name: &str, extra: Option<(&str, &str)>, value: f64| {
            batch.write(name, &labels, extra, value, ts, pass);
            if batch.samples >= max {
                batch.finish(emit);
            }
        };
        let name = series.name.as_str();
        match series.kind {
            FamilyKind::Counter => one(name, None, series.total),
            FamilyKind::Gauge => one(name, None, gauge_value(series)),
            FamilyKind::Summary => {
                for &(q, v) in &series.quantiles {
                    let label = scratch.quantile_label(q);
                    one(name, Some(("quantile", label)), v);
                }
                scratch.suffixed(name, "_sum", |n| one(n, None, series.sum));
                scratch.suffixed(name, "_count", |n| one(n, None, series.count));
            }
            FamilyKind::Histogram => {
                let bucket_name = format!("{name}_bucket");
                for &(le, c) in &series.buckets {
                    let label = scratch.le_label(le);
                    one(&bucket_name, Some(("le", label)), c);
                }
                one(&bucket_name, Some(("le", "+Inf")), series.count);
                scratch.suffixed(name, "_sum", |n| one(n, None, series.sum));
                scratch.suffixed(name, "_count", |n| one(n, None, series.count));
            }
        }
    }
}

/// A gauge's value, or a set's count.
fn gauge_value(series: &ExportedSeries<'_>) -> f64 {
    match &series.metric.figures {
        Figures::Gauge { value, .. } => *value,
        Figures::Set { count, .. } => *count,
        Figures::Counter { count, .. } => *count,
        Figures::Dist { figures, .. } => figures.count(),
    }
}

/// Per-flush scratch space: label spellings worked out once a flush.
struct Scratch<'h> {
    host: &'h str,
    quantiles: Vec<(u64, String)>,
    les: Vec<(u64, String)>,
    name: String,
}

impl<'h> Scratch<'h> {
    fn new(host: &'h str) -> Scratch<'h> {
        Scratch {
            host,
            quantiles: Vec::new(),
            les: Vec::new(),
            name: String::new(),
        }
    }

    /// The series' labels sorted by name, without empty values (Prometheus reads an empty
    /// label as no label) or a repeated name (the first kept), `instance` added when
    /// missing. `__name__` and `le` or `quantile` are merged in as each sample is written.
    fn labels<'s>(&self, series: &'s ExportedSeries<'_>) -> Vec<(&'s str, &'s str)>
    where
        'h: 's,
    {
        let mut labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        labels.sort_by(|a, b| a.0.cmp(b.0));
        labels.dedup_by(|b, a| a.0 == b.0);
        if let Err(at) = labels.binary_search_by(|(k, _)| (*k).cmp("instance")) {
            labels.insert(at, ("instance", self.host));
        }
        labels
    }

    /// `quantile`'s label value (`0.99`), as `/metrics` spells it.
    fn quantile_label(&mut self, q: f64) -> &str {
        cached(
            &mut self.quantiles,
            q,
            crate::export::exposition::quantile_label,
        )
    }

    /// `le`'s label value, as `/metrics` (text format) spells it.
    fn le_label(&mut self, le: f64) -> &str {
        cached(&mut self.les, le, |le| {
            zmij::Buffer::new().format(le).to_string()
        })
    }

    /// Calls `f` with `name` + `suffix`.
    fn suffixed(&mut self, name: &str, suffix: &str, f: impl FnOnce(&str)) {
        self.name.clear();
        self.name.push_str(name);
        self.name.push_str(suffix);
        f(&self.name);
    }
}

/// A label spelling from a small per-flush cache (a configuration has few distinct bounds
/// and quantiles).
fn cached(cache: &mut Vec<(u64, String)>, v: f64, spell: impl Fn(f64) -> String) -> &str {
    let bits = v.to_bits();
    let at = match cache.iter().position(|(b, _)| *b == bits) {
        Some(at) => at,
        None => {
            cache.push((bits, spell(v)));
            cache.len() - 1
        }
    };
    &cache[at].1
}

impl Batch {
    /// Writes one time series of one sample: `labels` (sorted) with `__name__ = name` and
    /// `extra` merged in. In a stale pass, only a series whose label hash is listed, with
    /// the stale marker for value.
    fn write(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: f64,
        ts: i64,
        pass: Pass<'_>,
    ) {
        let special = [Some(("__name__", name)), extra];
        let special = special.iter().flatten();
        // Every label in name order: the specials replace a tag of the same name.
        let others = labels
            .iter()
            .filter(|(k, _)| *k != "__name__" && extra.is_none_or(|(e, _)| e != *k));
        let merged = || merge(special.clone().copied(), others.clone().copied());
        let mut labels_len = 0;
        for (k, v) in merged() {
            let m = label_len(k, v);
            labels_len += 1 + varint_len(m as u64) + m;
        }
        let value = match pass {
            Pass::Values => value,
            Pass::Stale(_) => f64::from_bits(STALE_NAN),
        };
        let sample_len = 1 + 8 + 1 + varint_len(ts as u64);
        let series_len = labels_len + 1 + varint_len(sample_len as u64) + sample_len;
        let start = self.body.len();
        self.body.push(key::LEN_1);
        push_varint(&mut self.body, series_len as u64);
        let labels_start = self.body.len();
        for (k, v) in merged() {
            self.body.push(key::LEN_1);
            push_varint(&mut self.body, label_len(k, v) as u64);
            push_str(&mut self.body, key::LEN_1, k);
            push_str(&mut self.body, key::LEN_2, v);
        }
        let mut hasher = self.hasher.build_hasher();
        hasher.write(&self.body[labels_start..]);
        let hash = hasher.finish();
        match pass {
            Pass::Values => {
                self.written.push(hash);
            }
            Pass::Stale(gone) => {
                if gone.binary_search(&hash).is_err() {
                    self.body.truncate(start);
                    return;
                }
            }
        }
        self.body.push(key::LEN_2);
        push_varint(&mut self.body, sample_len as u64);
        self.body.push(key::FIXED64_1);
        self.body.extend_from_slice(&value.to_le_bytes());
        self.body.push(key::VARINT_2);
        push_varint(&mut self.body, ts as u64);
        self.samples += 1;
        self.total += 1;
    }

    /// Compresses the request so far and hands it to `emit`.
    fn finish(&mut self, emit: &mut dyn FnMut(Vec<u8>)) {
        if self.samples == 0 {
            return;
        }
        // snappy's block format: the same bytes `snap::raw::Encoder::compress_vec` gives;
        // it fails only past 2^32 - 1 input bytes, which a request of a few thousand
        // samples cannot reach.
        match self.snappy.compress_vec(&self.body) {
            Ok(compressed) => emit(compressed),
            Err(e) => tracing::error!(error = %e, "remote_write: request not compressed"),
        }
        self.body.clear();
        self.samples = 0;
    }
}

/// The hashes of `before` not in `now` (both sorted).
fn missing(before: &[u64], now: &[u64]) -> Vec<u64> {
    let mut gone = Vec::new();
    let mut j = 0;
    for &h in before {
        while now.get(j).is_some_and(|&n| n < h) {
            j += 1;
        }
        if now.get(j) != Some(&h) {
            gone.push(h);
        }
    }
    gone
}

/// Two name-sorted label lists merged by name.
fn merge<'a>(
    a: impl Iterator<Item = (&'a str, &'a str)>,
    b: impl Iterator<Item = (&'a str, &'a str)>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    Merge {
        a: a.peekable(),
        b: b.peekable(),
    }
}

struct Merge<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'a, A, B> Iterator for Merge<A, B>
where
    A: Iterator<Item = (&'a str, &'a str)>,
    B: Iterator<Item = (&'a str, &'a str)>,
{
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.0 < x.0 => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// The encoded length of a Label message's body.
fn label_len(name: &str, value: &str) -> usize {
    1 + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(value.len() as u64)
        + value.len()
}

fn push_str(out: &mut Vec<u8>, key: u8, s: &str) {
    out.push(key);
    push_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}
