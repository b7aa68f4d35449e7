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
            if entry & FAMILY_START != 0 {
                w.type_line(view, rows[0]);
            }
            w.series(view, &rows, &quantiles);
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
fn quantile_label(q: f64) -> String {
    let rounded = (q * 1e12).round() / 1e12;
    let mut text = format!("{rounded}");
    if !text.contains('.') {
        text.push_str(".0");
    }
    text
}

struct Writer<'a> {
    out: Vec<u8>,
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

    fn type_line(&mut self, view: &View, i: usize) {
        let metric = &view.record().metrics[i];
        let kind = family_kind(metric);
        self.out.extend_from_slice(b"# TYPE ");
        let (base, mapped) = view.base(i);
        self.name(base, mapped);
        let kind = match kind {
            FamilyKind::Counter => {
                if self.format == Format::Text {
                    self.out
                        .extend_from_slice(name::counter_suffix_of(base, mapped).as_bytes());
                } else if name::counter_suffix_of(base, mapped).is_empty() {
                    // OpenMetrics names the family without `_total`.
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

    fn name(&mut self, base: &str, mapped: bool) {
        if mapped {
            self.out.extend_from_slice(base.as_bytes());
        } else {
            name::push_escaped(&mut self.out, base);
        }
    }

    /// The series of `rows` (merged: counters, sums, counts and buckets add up; a gauge's
    /// or a summary's quantiles are the last row's, the last in record order).
    fn series(&mut self, view: &View, rows: &[usize], quantiles: &Quantiles) {
        let first = rows[0];
        let last = *rows.last().unwrap_or(&first);
        let metric = &view.record().metrics[last];
        let (base, mapped) = view.base(first);
        match &metric.figures {
            Figures::Counter { .. } => {
                let total: f64 = rows.iter().map(|&i| view.totals[i].a).sum();
                self.name(base, mapped);
                self.out
                    .extend_from_slice(name::counter_suffix_of(base, mapped).as_bytes());
                self.labels(view, first, None);
                self.value(total);
            }
            Figures::Gauge { value, .. } => {
                self.name(base, mapped);
                self.labels(view, first, None);
                self.value(*value);
            }
            Figures::Set { count, .. } => {
                self.name(base, mapped);
                self.labels(view, first, None);
                self.value(*count);
            }
            Figures::Dist { figures, .. } => {
                let divisor = crate::export::divisor(metric.kind());
                let sum: f64 = rows.iter().map(|&i| view.totals[i].a).sum();
                let count: f64 = rows.iter().map(|&i| view.totals[i].b).sum();
                match figures.observed().map(|o| &o.plan.shape) {
                    Some(Shape::Buckets(bounds)) => {
                        self.buckets(view, rows, bounds, count, base, mapped, first);
                    }
                    Some(Shape::Quantiles(qs)) => {
                        let values = figures.observed().map(|o| &o.values[..]).unwrap_or(&[]);
                        for (q, v) in qs.iter().zip(values) {
                            let label = quantile_label(*q);
                            self.name(base, mapped);
                            self.labels(view, first, Some(("quantile", &label)));
                            self.value(if metric.active() { *v } else { f64::NAN });
                        }
                    }
                    None => {
                        let median = figures.median().map_or(f64::NAN, |m| m / divisor);
                        self.name(base, mapped);
                        self.labels(view, first, Some(("quantile", "0.5")));
                        self.value(median);
                        for (label, p) in &quantiles.labels {
                            let v = figures.percentile_bounds().nth(*p).flatten();
                            self.name(base, mapped);
                            self.labels(view, first, Some(("quantile", label)));
                            self.value(v.map_or(f64::NAN, |v| v / divisor));
                        }
                    }
                }
                self.name(base, mapped);
                self.out.extend_from_slice(b"_sum");
                self.labels(view, first, None);
                self.value(sum);
                self.name(base, mapped);
                self.out.extend_from_slice(b"_count");
                self.labels(view, first, None);
                self.value(count);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn buckets(
        &mut self,
        view: &View,
        rows: &[usize],
        bounds: &[f64],
        count: f64,
        base: &str,
        mapped: bool,
        first: usize,
    ) {
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
            self.name(base, mapped);
            self.out.extend_from_slice(b"_bucket");
            self.labels(view, first, Some(("le", &label)));
            self.value(*c);
        }
        self.name(base, mapped);
        self.out.extend_from_slice(b"_bucket");
        self.labels(view, first, Some(("le", "+Inf")));
        self.value(count);
    }

    fn le_label(&mut self, le: f64) -> String {
        let text = self.number.format(le).to_string();
        match self.format {
            Format::OpenMetrics if !text.contains(['.', 'e', 'E']) => format!("{text}.0"),
            _ => text,
        }
    }

    /// `{mapped labels, tags, extra}`, or nothing when there are none.
    fn labels(&mut self, view: &View, i: usize, extra: Option<(&str, &str)>) {
        let metric: &Metric = &view.record().metrics[i];
        let mapped = view.mapped_labels(i);
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            out.push(if first { b'{' } else { b',' });
            first = false;
        };
        for (key, value) in mapped {
            sep(&mut self.out);
            self.out.extend_from_slice(key.as_bytes());
            self.out.extend_from_slice(b"=\"");
            name::push_label_value(&mut self.out, value);
            self.out.push(b'"');
        }
        for (key, value) in metric.key.tags() {
            if mapped.iter().any(|(k, _)| name::same_escaped(k, key)) {
                continue;
            }
            sep(&mut self.out);
            name::push_escaped(&mut self.out, key);
            self.out.extend_from_slice(b"=\"");
            name::push_label_value(&mut self.out, value);
            self.out.push(b'"');
        }
        if let Some((key, value)) = extra {
            sep(&mut self.out);
            self.out.extend_from_slice(key.as_bytes());
            self.out.extend_from_slice(b"=\"");
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        }
        if !first {
            self.out.push(b'}');
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
        let t = &view.internal;
        let record = view.record();
        let counters: [(&str, &str, f64); 13] = [
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
        for (name, help, value) in counters {
            self.internal_family(name, help, "counter");
            self.out.extend_from_slice(b"tallyd_");
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(b"_total");
            self.value(value);
        }
        self.internal_family("bad_lines", "Lines rejected, by reason.", "counter");
        for reason in ParseError::ALL {
            self.out
                .extend_from_slice(b"tallyd_bad_lines_total{reason=\"");
            self.out.extend_from_slice(reason.reason().as_bytes());
            self.out.extend_from_slice(b"\"}");
            self.value(t.bad.get(reason.index()).copied().unwrap_or(0.0));
        }
        self.internal_family("flushes", "Flushes since start.", "counter");
        self.out.extend_from_slice(b"tallyd_flushes_total");
        self.value(view.flushes as f64);
        let gauges: [(&str, &str, f64); 7] = [
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
        for (name, help, value) in gauges {
            self.internal_family(name, help, "gauge");
            self.out.extend_from_slice(b"tallyd_");
            self.out.extend_from_slice(name.as_bytes());
            self.value(value);
        }
        self.internal_family("alerts_firing", "Series firing, per alert rule.", "gauge");
        for (rule, severity) in &t.alert_rules {
            let firing = record
                .firing
                .iter()
                .filter(|e| &e.rule == rule && &e.severity == severity)
                .count();
            self.out.extend_from_slice(b"tallyd_alerts_firing{rule=\"");
            name::push_label_value(&mut self.out, rule);
            self.out.extend_from_slice(b"\",severity=\"");
            name::push_label_value(&mut self.out, severity);
            self.out.extend_from_slice(b"\"}");
            self.value(firing as f64);
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

/// Where metric `i`'s running buckets start in `view.buckets`: the bucket counts of the
/// histogram series before it, in record order.
fn bucket_start(view: &View, i: usize) -> usize {
    view.bucket_offsets.get(i).copied().unwrap_or(0) as usize
}
