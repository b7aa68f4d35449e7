//! The Prometheus text exposition (0.0.4) and OpenMetrics 1.0 of a [`View`] (SPEC §7.1, §8),
//! written by hand into chunks: a million series stream out in bounded memory, with no
//! intermediate metric objects (a client library would copy every series into its own
//! registry first). No timestamps: every scrape between two flushes reads the same view.

use crate::aggregate::distribution::Shape;
use crate::export::name;
use crate::export::view::{
    CONFLICT, FAMILY_START, FamilyKind, INDEX, MERGE, View, bucket_observation, family_kind,
};
use crate::protocol::ParseError;
use crate::record::{Figures, Metric};

/// Bytes gathered before a chunk is handed to the sink.
const CHUNK: usize = 64 * 1024;

/// The two formats a scrape may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` names it (Prometheus asks for it first when it may), else
    /// the text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Writes the exposition of `view` in chunks of about 64 KiB; `sink` returns false to stop
/// (the client went away).
pub fn encode(view: &View, format: Format, sink: &mut dyn FnMut(Vec<u8>) -> bool) {
    let mut w = Writer {
        out: Vec::with_capacity(CHUNK + 4096),
        name: Vec::new(),
        labels: Vec::new(),
        format,
        number: zmij::Buffer::new(),
        sink,
        stopped: false,
    };
    let quantiles = Quantiles::of(view);
    let mut rows: Vec<usize> = Vec::new();
    let mut at = 0;
    while at < view.order.len() && !w.stopped {
        // One exported series: a row and the rows that merge into it.
        let end = at
            + 1
            + view.order[at + 1..]
                .iter()
                .take_while(|e| *e & MERGE != 0 && *e & CONFLICT == 0)
                .count();
        let entry = view.order[at];
        if entry & CONFLICT == 0 {
            rows.clear();
            rows.extend(
                view.order[at..end]
                    .iter()
                    .filter(|e| *e & CONFLICT == 0)
                    .map(|e| (e & INDEX) as usize),
            );
            w.series(view, &rows, &quantiles, entry & FAMILY_START != 0);
        }
        at = end;
        w.maybe_flush();
    }
    w.internal(view);
    if format == Format::OpenMetrics {
        w.out.extend_from_slice(b"# EOF\n");
    }
    w.finish();
}

/// The quantile labels of the configured positive percentiles, and the median's.
struct Quantiles {
    /// (label, index of the percentile in the config)
    labels: Vec<(String, usize)>,
}

impl Quantiles {
    fn of(view: &View) -> Quantiles {
        let labels = view
            .record()
            .distribution
            .percentiles
            .iter()
            .enumerate()
            .filter(|(_, p)| p.value() > 0.0)
            .map(|(i, p)| (quantile_label(p.value() / 100.0), i))
            .collect();
        Quantiles { labels }
    }
}

/// A quantile as a label value: `0.9`, `0.999` (rounded to 12 places, so 99.9 / 100 does not
/// print its binary tail).
pub fn quantile_label(q: f64) -> String {
    let rounded = (q * 1e12).round() / 1e12;
    let mut text = format!("{rounded}");
    if !text.contains('.') {
        text.push_str(".0");
    }
    text
}

struct Writer<'a> {
    out: Vec<u8>,
    /// The current series' base name, escaped (or mapped).
    name: Vec<u8>,
    /// The current series' labels, `k="v",...`, without braces.
    labels: Vec<u8>,
    format: Format,
    number: zmij::Buffer,
    sink: &'a mut dyn FnMut(Vec<u8>) -> bool,
    stopped: bool,
}

impl Writer<'_> {
    fn maybe_flush(&mut self) {
        if self.out.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.out, Vec::with_capacity(CHUNK + 4096));
            if !(self.sink)(chunk) {
                self.stopped = true;
            }
        }
    }

    fn finish(&mut self) {
        if !self.stopped && !self.out.is_empty() {
            let chunk = std::mem::take(&mut self.out);
            (self.sink)(chunk);
        }
    }

    /// `# TYPE <family> <type>`, the family name from `self.name` (the series' base name).
    fn type_line(&mut self, metric: &Metric, suffix: &str) {
        self.out.extend_from_slice(b"# TYPE ");
        self.out.extend_from_slice(&self.name);
        let kind = match family_kind(metric) {
            FamilyKind::Counter => {
                // Text names the counter family with its `_total`, OpenMetrics without.
                if self.format == Format::Text {
                    self.out.extend_from_slice(suffix.as_bytes());
                } else if suffix.is_empty() {
                    self.out.truncate(self.out.len() - "_total".len());
                }
                "counter"
            }
            FamilyKind::Gauge => "gauge",
            FamilyKind::Summary => "summary",
            FamilyKind::Histogram => "histogram",
        };
        self.out.push(b' ');
        self.out.extend_from_slice(kind.as_bytes());
        self.out.push(b'\n');
    }

    /// Renders the series' base name into `self.name` and its labels (mapped ones, then
    /// tags) into `self.labels`, once for all the lines of the series.
    fn prepare(&mut self, view: &View, i: usize) {
        let (base, mapped) = view.base(i);
        self.name.clear();
        if mapped {
            self.name.extend_from_slice(base.as_bytes());
        } else {
            name::push_escaped(&mut self.name, base);
        }
        self.labels.clear();
        let mapped_labels = view.mapped_labels(i);
        for (key, value) in mapped_labels {
            if !self.labels.is_empty() {
                self.labels.push(b',');
            }
            self.labels.extend_from_slice(key.as_bytes());
            self.labels.extend_from_slice(b"=\"");
            name::push_label_value(&mut self.labels, value);
            self.labels.push(b'"');
        }
        for (key, value) in view.record().metrics[i].key.tags() {
            if mapped_labels
                .iter()
                .any(|(k, _)| name::same_escaped(k, key))
            {
                continue;
            }
            if !self.labels.is_empty() {
                self.labels.push(b',');
            }
            name::push_escaped(&mut self.labels, key);
            self.labels.extend_from_slice(b"=\"");
            name::push_label_value(&mut self.labels, value);
            self.labels.push(b'"');
        }
    }

    /// One sample line: name, `suffix`, the labels plus `extra`, the value.
    fn line(&mut self, suffix: &str, extra: Option<(&str, &str)>, value: f64) {
        self.out.extend_from_slice(&self.name);
        self.out.extend_from_slice(suffix.as_bytes());
        match (self.labels.is_empty(), extra) {
            (true, None) => {}
            (empty, extra) => {
                self.out.push(b'{');
                self.out.extend_from_slice(&self.labels);
                if let Some((key, text)) = extra {
                    if !empty {
                        self.out.push(b',');
                    }
                    self.out.extend_from_slice(key.as_bytes());
                    self.out.extend_from_slice(b"=\"");
                    self.out.extend_from_slice(text.as_bytes());
                    self.out.push(b'"');
                }
                self.out.push(b'}');
            }
        }
        self.value(value);
    }

    /// The series of `rows` (merged: counters, sums, counts and buckets add up; a gauge's
    /// or a summary's quantiles are the last row's, the last in record order), with its
    /// family's `# TYPE` line first when it opens the family.
    fn series(&mut self, view: &View, rows: &[usize], quantiles: &Quantiles, opens: bool) {
        let first = rows[0];
        let last = *rows.last().unwrap_or(&first);
        let metric = &view.record().metrics[last];
        self.prepare(view, first);
        let (base, mapped) = view.base(first);
        let suffix = match metric.figures {
            Figures::Counter { .. } => name::counter_suffix_of(base, mapped),
            _ => "",
        };
        if opens {
            self.type_line(metric, suffix);
        }
        match &metric.figures {
            Figures::Counter { .. } => {
                let total: f64 = rows.iter().map(|&i| view.totals[i].a).sum();
                self.line(suffix, None, total);
            }
            Figures::Gauge { value, .. } => self.line("", None, *value),
            Figures::Set { count, .. } => self.line("", None, *count),
            Figures::Dist { figures, .. } => {
                let divisor = crate::export::divisor(metric.kind());
                let sum: f64 = rows.iter().map(|&i| view.totals[i].a).sum();
                let count: f64 = rows.iter().map(|&i| view.totals[i].b).sum();
                match figures
                    .observed()
                    .map(|o| &o.plan.shape)
                    .filter(|s| s.is_set())
                {
                    Some(Shape::Buckets(bounds)) => {
                        self.buckets(view, rows, bounds, count);
                    }
                    Some(Shape::Quantiles(qs)) => {
                        let values = figures.observed().map(|o| &o.values[..]).unwrap_or(&[]);
                        for (q, v) in qs.iter().zip(values) {
                            let label = quantile_label(*q);
                            let v = if metric.active() { *v } else { f64::NAN };
                            self.line("", Some(("quantile", &label)), v);
                        }
                    }
                    None => {
                        let median = figures.median().map_or(f64::NAN, |m| m / divisor);
                        self.line("", Some(("quantile", "0.5")), median);
                        let mut bounds = figures.percentile_bounds();
                        let mut at = 0;
                        for (label, p) in &quantiles.labels {
                            // Positive percentiles, in config order: skip to this one.
                            let v = bounds.nth(p - at).flatten();
                            at = p + 1;
                            self.line(
                                "",
                                Some(("quantile", label)),
                                v.map_or(f64::NAN, |v| v / divisor),
                            );
                        }
                    }
                }
                self.line("_sum", None, sum);
                self.line("_count", None, count);
            }
        }
    }

    fn buckets(&mut self, view: &View, rows: &[usize], bounds: &[f64], count: f64) {
        let mut counts = vec![0.0; bounds.len()];
        for &i in rows {
            let Some(observed) = bucket_observation(&view.record().metrics[i]) else {
                continue;
            };
            if observed.values.len() != bounds.len() {
                continue;
            }
            let start = bucket_start(view, i);
            for (c, v) in counts.iter_mut().zip(&view.buckets[start..]) {
                *c += v;
            }
        }
        for (le, c) in bounds.iter().zip(&counts) {
            let label = self.le_label(*le);
            self.line("_bucket", Some(("le", &label)), *c);
        }
        self.line("_bucket", Some(("le", "+Inf")), count);
    }

    fn le_label(&mut self, le: f64) -> String {
        let text = self.number.format(le).to_string();
        match self.format {
            Format::OpenMetrics if !text.contains(['.', 'e', 'E']) => format!("{text}.0"),
            _ => text,
        }
    }

    /// ` <value>\n`: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
    fn value(&mut self, v: f64) {
        self.out.push(b' ');
        if v.is_nan() {
            self.out.extend_from_slice(b"NaN");
        } else if v.is_infinite() {
            self.out
                .extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            let mut buf = itoa::Buffer::new();
            self.out.extend_from_slice(buf.format(v as i64).as_bytes());
        } else {
            self.out.extend_from_slice(self.number.format(v).as_bytes());
        }
        self.out.push(b'\n');
    }

    /// The agent's own figures, `tallyd_*`.
    fn internal(&mut self, view: &View) {
        for family in internal_families(view) {
            let kind = if family.counter { "counter" } else { "gauge" };
            self.internal_family(family.name, family.help, kind);
            for (labels, value) in &family.samples {
                self.out.extend_from_slice(b"tallyd_");
                self.out.extend_from_slice(family.name.as_bytes());
                if family.counter {
                    self.out.extend_from_slice(b"_total");
                }
                for (i, (key, value)) in labels.iter().enumerate() {
                    self.out.push(if i == 0 { b'{' } else { b',' });
                    self.out.extend_from_slice(key.as_bytes());
                    self.out.extend_from_slice(b"=\"");
                    name::push_label_value(&mut self.out, value);
                    self.out.push(b'"');
                }
                if !labels.is_empty() {
                    self.out.push(b'}');
                }
                self.value(*value);
            }
        }
    }

    fn internal_family(&mut self, name: &str, help: &str, kind: &str) {
        let total = if kind == "counter" && self.format == Format::Text {
            "_total"
        } else {
            ""
        };
        for line in [("HELP", help), ("TYPE", kind)] {
            self.out.extend_from_slice(b"# ");
            self.out.extend_from_slice(line.0.as_bytes());
            self.out.extend_from_slice(b" tallyd_");
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(total.as_bytes());
            self.out.push(b' ');
            self.out.extend_from_slice(line.1.as_bytes());
            self.out.push(b'\n');
        }
    }
}

/// One family of the agent's own figures (SPEC §7.1 `tallyd_*`): `tallyd_<name>`, and
/// `_total` after it for a counter.
#[derive(Debug, Clone, PartialEq)]
pub struct InternalFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    /// Each sample's labels and value.
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// The agent's own figures after `view`'s flush, for every Prometheus-style output.
pub fn internal_families(view: &View) -> Vec<InternalFamily> {
    let t = &view.internal;
    let record = view.record();
    let one = |name, help, counter, value| InternalFamily {
        name,
        help,
        counter,
        samples: vec![(Vec::new(), value)],
    };
    let counters: [(&'static str, &'static str, f64); 13] = [
        (
            "packets_received",
            "Packets (datagrams, TCP chunks) received.",
            t.packets,
        ),
        ("lines_received", "StatsD lines received.", t.lines),
        (
            "dropped_lines",
            "Lines dropped on the receive path.",
            t.dropped_lines,
        ),
        (
            "dropped_datagrams",
            "Datagrams the kernel dropped at a UDP socket.",
            t.dropped_datagrams,
        ),
        (
            "dropped_series",
            "Samples of new series refused over max_series.",
            t.dropped_series,
        ),
        (
            "dropped_events",
            "Events and service checks over the interval's limit.",
            t.dropped_events,
        ),
        (
            "dropped_records",
            "Records a backend had to drop.",
            t.dropped_records,
        ),
        ("backend_errors", "Backend failures.", t.backend_errors),
        (
            "notifier_errors",
            "Alert events a notifier could not deliver.",
            t.notifier_errors,
        ),
        (
            "config_reloads",
            "Successful configuration reloads.",
            t.config_reloads,
        ),
        (
            "config_reload_failures",
            "Configuration reloads refused (invalid file).",
            t.config_reload_failures,
        ),
        (
            "stream_clients_dropped",
            "Event-stream clients disconnected for falling behind.",
            t.stream_clients_dropped,
        ),
        (
            "history_errors",
            "History store writes that failed.",
            t.history_errors,
        ),
    ];
    let mut families: Vec<InternalFamily> = counters
        .into_iter()
        .map(|(name, help, value)| one(name, help, true, value))
        .collect();
    families.push(InternalFamily {
        name: "bad_lines",
        help: "Lines rejected, by reason.",
        counter: true,
        samples: ParseError::ALL
            .iter()
            .map(|reason| {
                let n = t.bad.get(reason.index()).copied().unwrap_or(0.0);
                (vec![("reason", reason.reason().to_string())], n)
            })
            .collect(),
    });
    families.push(one(
        "flushes",
        "Flushes since start.",
        true,
        view.flushes as f64,
    ));
    let gauges: [(&'static str, &'static str, f64); 7] = [
        ("series", "Live series.", record.internal.series as f64),
        (
            "rss_bytes",
            "The agent's resident memory.",
            record.internal.rss_bytes as f64,
        ),
        (
            "cpu_seconds",
            "CPU time the agent has used since it started.",
            record.internal.cpu_seconds,
        ),
        (
            "uptime_seconds",
            "Seconds since the agent started.",
            record.internal.uptime_s,
        ),
        (
            "estimated_sets",
            "Set series whose last count is an estimate.",
            record.internal.estimated_sets as f64,
        ),
        (
            "flush_duration_seconds",
            "How long the last flush took.",
            record.internal.flush_duration_ms / 1000.0,
        ),
        (
            "last_flush_timestamp_seconds",
            "Unix time at the end of the last interval.",
            record.timestamp as f64,
        ),
    ];
    families.extend(
        gauges
            .into_iter()
            .map(|(name, help, value)| one(name, help, false, value)),
    );
    families.push(InternalFamily {
        name: "alerts_firing",
        help: "Series firing, per alert rule.",
        counter: false,
        samples: t
            .alert_rules
            .iter()
            .map(|(rule, severity)| {
                let firing = record
                    .firing
                    .iter()
                    .filter(|e| &e.rule == rule && &e.severity == severity)
                    .count();
                (
                    vec![("rule", rule.clone()), ("severity", severity.clone())],
                    firing as f64,
                )
            })
            .collect(),
    });
    families
}

/// Where metric `i`'s running buckets start in `view.buckets`: the bucket counts of the
/// histogram series before it, in record order.
fn bucket_start(view: &View, i: usize) -> usize {
    view.bucket_offsets.get(i).copied().unwrap_or(0) as usize
}
