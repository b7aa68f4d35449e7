//! A record as Graphite plaintext lines, named as etsy statsd's `backends/graphite.js`
//! names them. Everything that is the same for every line (namespaces, suffix, the
//! timestamp) is prepared once; a series' path and tags are written once per series into
//! scratch buffers that live as long as the encoder, so a flush allocates only its payloads.

use super::NameConfig;
use super::number::write_js;
use crate::aggregate::SeriesKey;
use crate::record::{Figures, Record};

/// A payload is cut after the series that takes it past this size.
pub const PAYLOAD_BYTES: usize = 1024 * 1024;

/// The path before a series' name, per kind, with its trailing `.` (empty when every part
/// of it is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Namespaces {
    /// Counters' rates (and, without `legacy_namespace`, their counts).
    pub counter: Vec<u8>,
    /// Counters' counts in legacy mode: etsy's fixed `stats_counts.`.
    pub counts: Vec<u8>,
    pub timer: Vec<u8>,
    pub gauge: Vec<u8>,
    pub set: Vec<u8>,
    /// The agent's own figures: `<global_prefix>.tallyd.`.
    pub internal: Vec<u8>,
}

impl Namespaces {
    /// etsy's `graphite_init`: with `legacy_namespace`, the fixed `stats` for counters and
    /// `stats.timers` / `.gauges` / `.sets` (no prefix used: etsy 0.9 and later hard-code
    /// them); without it, `<global_prefix>.<prefix_kind>`, an empty part dropped. The
    /// agent's own figures are `<global_prefix>.tallyd.` in both modes (SPEC §7.3).
    pub fn new(names: &NameConfig) -> Namespaces {
        let join = |parts: &[&str]| -> Vec<u8> {
            let mut out = Vec::new();
            for part in parts.iter().filter(|p| !p.is_empty()) {
                out.extend_from_slice(part.as_bytes());
                out.push(b'.');
            }
            out
        };
        let global = names.global_prefix.as_str();
        let internal = join(&[global, "tallyd"]);
        if names.legacy_namespace {
            Namespaces {
                counter: b"stats.".to_vec(),
                counts: b"stats_counts.".to_vec(),
                timer: b"stats.timers.".to_vec(),
                gauge: b"stats.gauges.".to_vec(),
                set: b"stats.sets.".to_vec(),
                internal,
            }
        } else {
            Namespaces {
                counter: join(&[global, &names.prefix_counter]),
                counts: join(&[global, &names.prefix_counter]),
                timer: join(&[global, &names.prefix_timer]),
                gauge: join(&[global, &names.prefix_gauge]),
                set: join(&[global, &names.prefix_set]),
                internal,
            }
        }
    }
}

/// Turns records into plaintext payloads.
pub struct GraphiteEncoder {
    ns: Namespaces,
    legacy: bool,
    flush_counts: bool,
    /// `.<global_suffix>`, or empty.
    suffix: Vec<u8>,
    payload_bytes: usize,
    numbers: zmij::Buffer,
    /// The current series' name, sanitized.
    name: Vec<u8>,
    /// The current series' `;key=value...`.
    tags: Vec<u8>,
    /// ` <timestamp>\n`.
    ts: Vec<u8>,
}

/// The parts of one line's path: `<head><name><tail><suffix><tags>`.
struct Path<'a> {
    head: &'a [u8],
    tail: &'a [u8],
}

impl GraphiteEncoder {
    /// An encoder for these naming options.
    pub fn new(names: &NameConfig) -> GraphiteEncoder {
        let suffix = if names.global_suffix.is_empty() {
            Vec::new()
        } else {
            let mut s = b".".to_vec();
            s.extend_from_slice(names.global_suffix.as_bytes());
            s
        };
        GraphiteEncoder {
            ns: Namespaces::new(names),
            legacy: names.legacy_namespace,
            flush_counts: names.flush_counts,
            suffix,
            payload_bytes: PAYLOAD_BYTES,
            numbers: zmij::Buffer::new(),
            name: Vec::with_capacity(256),
            tags: Vec::with_capacity(256),
            ts: Vec::with_capacity(24),
        }
    }

    /// Cuts payloads after `bytes` instead of [`PAYLOAD_BYTES`] (tests).
    #[must_use]
    pub fn with_payload_bytes(mut self, bytes: usize) -> GraphiteEncoder {
        self.payload_bytes = bytes.max(1);
        self
    }

    /// Encodes `record`, handing each full payload (whole lines, about `PAYLOAD_BYTES`)
    /// to `push` in order.
    pub fn encode(&mut self, record: &Record, mut push: impl FnMut(Vec<u8>)) {
        self.ts.clear();
        self.ts.push(b' ');
        self.ts
            .extend_from_slice(itoa::Buffer::new().format(record.timestamp).as_bytes());
        self.ts.push(b'\n');
        let interval_s = std::time::Duration::from_millis(record.interval_ms).as_secs_f64();
        let capacity = self.payload_bytes + self.payload_bytes / 8;
        let mut buf = Vec::with_capacity(capacity.min(estimate(record)));
        for metric in &record.metrics {
            self.series(&metric.key);
            self.metric(&mut buf, record, &metric.figures, interval_s);
            if buf.len() >= self.payload_bytes {
                push(std::mem::replace(&mut buf, Vec::with_capacity(capacity)));
            }
        }
        self.internal(&mut buf, record);
        if !buf.is_empty() {
            push(buf);
        }
    }

    /// Prepares the name and tags of one series.
    fn series(&mut self, key: &SeriesKey) {
        self.name.clear();
        sanitize_name(key.name(), &mut self.name);
        self.tags.clear();
        // Keys come sorted; a tag without a value has no Graphite spelling (carbon refuses
        // empty values) and is left out.
        for (k, v) in key.tags() {
            if v.is_empty() || k.is_empty() {
                continue;
            }
            self.tags.push(b';');
            sanitize_tag(k, true, &mut self.tags);
            self.tags.push(b'=');
            sanitize_tag(v, false, &mut self.tags);
        }
    }

    fn metric(&mut self, buf: &mut Vec<u8>, record: &Record, figures: &Figures, interval_s: f64) {
        match figures {
            Figures::Counter { count, .. } => {
                let rate = *count / interval_s;
                let counter = std::mem::take(&mut self.ns.counter);
                let counts = std::mem::take(&mut self.ns.counts);
                if self.legacy {
                    self.line(
                        buf,
                        Path {
                            head: &counter,
                            tail: b"",
                        },
                        rate,
                    );
                    if self.flush_counts {
                        self.line(
                            buf,
                            Path {
                                head: &counts,
                                tail: b"",
                            },
                            *count,
                        );
                    }
                } else {
                    self.line(
                        buf,
                        Path {
                            head: &counter,
                            tail: b".rate",
                        },
                        rate,
                    );
                    if self.flush_counts {
                        self.line(
                            buf,
                            Path {
                                head: &counts,
                                tail: b".count",
                            },
                            *count,
                        );
                    }
                }
                self.ns.counter = counter;
                self.ns.counts = counts;
            }
            Figures::Gauge { value, .. } => {
                let head = std::mem::take(&mut self.ns.gauge);
                self.line(
                    buf,
                    Path {
                        head: &head,
                        tail: b"",
                    },
                    *value,
                );
                self.ns.gauge = head;
            }
            Figures::Set { count, .. } => {
                let head = std::mem::take(&mut self.ns.set);
                self.line(
                    buf,
                    Path {
                        head: &head,
                        tail: b".count",
                    },
                    *count,
                );
                self.ns.set = head;
            }
            Figures::Dist { figures, .. } => {
                let head = std::mem::take(&mut self.ns.timer);
                let mut tail = [0u8; 96];
                figures.for_each(&record.distribution, |figure, value| {
                    // etsy nests the bins under `histogram`: `<name>.histogram.bin_<b>`.
                    let nested: &[u8] = if figure.starts_with("bin_") {
                        b".histogram."
                    } else {
                        b"."
                    };
                    let len = nested.len() + figure.len();
                    if let Some(slot) = tail.get_mut(..len) {
                        slot[..nested.len()].copy_from_slice(nested);
                        slot[nested.len()..].copy_from_slice(figure.as_bytes());
                        self.line(
                            buf,
                            Path {
                                head: &head,
                                tail: &tail[..len],
                            },
                            value,
                        );
                    } else {
                        let mut long = nested.to_vec();
                        long.extend_from_slice(figure.as_bytes());
                        self.line(
                            buf,
                            Path {
                                head: &head,
                                tail: &long,
                            },
                            value,
                        );
                    }
                });
                self.ns.timer = head;
            }
        }
    }

    /// One line; non-finite values (only reachable through overflowing sums) are skipped,
    /// as Graphite cannot store them.
    fn line(&mut self, buf: &mut Vec<u8>, path: Path<'_>, value: f64) {
        if !value.is_finite() {
            return;
        }
        buf.extend_from_slice(path.head);
        buf.extend_from_slice(&self.name);
        buf.extend_from_slice(path.tail);
        buf.extend_from_slice(&self.suffix);
        buf.extend_from_slice(&self.tags);
        buf.push(b' ');
        write_js(buf, value, &mut self.numbers);
        buf.extend_from_slice(&self.ts);
    }

    /// The agent's own figures as `<global_prefix>.tallyd.<figure>` (and
    /// `.bad_lines.<reason>`), untagged.
    fn internal(&mut self, buf: &mut Vec<u8>, record: &Record) {
        let Ok(serde_json::Value::Object(internal)) = serde_json::to_value(&record.internal) else {
            return;
        };
        self.tags.clear();
        let head = std::mem::take(&mut self.ns.internal);
        for (key, value) in &internal {
            match value {
                serde_json::Value::Object(nested) => {
                    for (sub, value) in nested {
                        self.name.clear();
                        self.name.extend_from_slice(key.as_bytes());
                        self.name.push(b'.');
                        self.name.extend_from_slice(sub.as_bytes());
                        if let Some(v) = value.as_f64() {
                            self.line(
                                buf,
                                Path {
                                    head: &head,
                                    tail: b"",
                                },
                                v,
                            );
                        }
                    }
                }
                value => {
                    self.name.clear();
                    self.name.extend_from_slice(key.as_bytes());
                    if let Some(v) = value.as_f64() {
                        self.line(
                            buf,
                            Path {
                                head: &head,
                                tail: b"",
                            },
                            v,
                        );
                    }
                }
            }
        }
        self.ns.internal = head;
    }
}

/// A first buffer no larger than the record needs (small records stay small).
fn estimate(record: &Record) -> usize {
    record.metrics.len().saturating_mul(96).saturating_add(4096)
}

/// etsy statsd's key sanitizing (on by default, `keyNameSanitize`), which every name it
/// sends Graphite went through: runs of whitespace become `_`, `/` becomes `-`, and anything
/// else outside `[A-Za-z0-9_.-]` is removed.
fn sanitize_name(name: &str, out: &mut Vec<u8>) {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    if name.bytes().all(plain) {
        out.extend_from_slice(name.as_bytes());
        return;
    }
    let mut in_space = false;
    for c in name.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(b'_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        match c {
            '/' => out.push(b'-'),
            c if c.is_ascii() && plain(c as u8) => out.push(c as u8),
            _ => {}
        }
    }
}

/// A tag key or value with what Graphite 1.1 forbids replaced by `_`: `;` `!` `^` `=` in
/// keys, `;` and a leading `~` in values; whitespace too, which would end the path.
fn sanitize_tag(text: &str, key: bool, out: &mut Vec<u8>) {
    let forbidden =
        |c: char| c == ';' || c.is_whitespace() || (key && matches!(c, '!' | '^' | '='));
    let mut first = true;
    for c in text.chars() {
        if forbidden(c) || (!key && first && c == '~') {
            out.push(b'_');
        } else {
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
        first = false;
    }
}
