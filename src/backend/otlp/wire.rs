//! Writes OTLP's protobuf by hand (opentelemetry-proto's `metrics/v1/metrics.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and the metrics service's
//! `ExportMetricsServiceRequest`, with their field numbers), straight from the record: no
//! message objects, no copy of a name or tag per point. prost messages cost a `String`
//! per attribute and freed each request again; `perf` put about 40 % of the encoder's time
//! in `malloc` and `free`. The tests decode every body with the official
//! `opentelemetry-proto` messages.

/// `AggregationTemporality`.
pub const DELTA: u64 = 1;
pub const CUMULATIVE: u64 = 2;

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

/// `Metric.data`'s cases, by field number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge = 5,
    Sum = 7,
    Histogram = 9,
    Summary = 11,
}

/// One data point's figures (the attributes and time come apart).
pub enum Point<'a> {
    /// A Gauge's or a Sum's value; `start` 0 for none.
    Number { start: u64, value: f64 },
    /// Bucket counts per bucket (one more than the bounds).
    Histogram {
        start: u64,
        count: u64,
        sum: f64,
        bucket_counts: &'a [u64],
        bounds: &'a [f64],
    },
    Summary {
        start: u64,
        count: u64,
        sum: f64,
        quantiles: &'a [(f64, f64)],
    },
}

/// The metric the points being written belong to.
#[derive(Debug, Clone, PartialEq)]
struct Head {
    name: String,
    unit: &'static str,
    kind: Kind,
    /// `aggregation_temporality` for Sums and Histograms (0: none).
    temporality: u64,
}

/// Fills requests of at most `max_points` points; hands each, encoded, to `emit`.
pub struct Writer {
    max_points: usize,
    points: usize,
    head: Option<Head>,
    /// The current metric's data points, each a `data_points` field.
    data: Vec<u8>,
    /// Scratch for one point.
    point: Vec<u8>,
    /// Scratch for one metric.
    metric: Vec<u8>,
    /// The request's `Metric` fields.
    metrics: Vec<u8>,
}

impl Writer {
    pub fn new(max_points: usize) -> Writer {
        Writer {
            max_points: max_points.max(1),
            points: 0,
            head: None,
            data: Vec::new(),
            point: Vec::new(),
            metric: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// Adds one data point of metric `name`: to the metric being written when it has the
    /// same name, unit, kind and temporality, else to a new one.
    #[allow(clippy::too_many_arguments)]
    pub fn add<'t>(
        &mut self,
        name: &str,
        unit: &'static str,
        kind: Kind,
        temporality: u64,
        attributes: impl Iterator<Item = (&'t str, &'t str)>,
        time: u64,
        point: &Point<'_>,
        resource: &Resource<'_>,
        emit: &mut dyn FnMut(Vec<u8>),
    ) {
        let same = self.head.as_ref().is_some_and(|h| {
            h.name == name && h.unit == unit && h.kind == kind && h.temporality == temporality
        });
        if !same {
            self.close_metric();
            self.head = Some(Head {
                name: name.to_string(),
                unit,
                kind,
                temporality,
            });
        }
        self.point.clear();
        let attribute_field = match point {
            Point::Histogram { .. } => 9,
            _ => 7,
        };
        for (k, v) in attributes {
            key_value(&mut self.point, attribute_field, k, v);
        }
        match *point {
            Point::Number { start, value } => {
                fixed64_nonzero(&mut self.point, 2, start);
                fixed64(&mut self.point, 3, time);
                fixed64(&mut self.point, 4, value.to_bits());
            }
            Point::Histogram {
                start,
                count,
                sum,
                bucket_counts,
                bounds,
            } => {
                fixed64_nonzero(&mut self.point, 2, start);
                fixed64(&mut self.point, 3, time);
                fixed64(&mut self.point, 4, count);
                fixed64(&mut self.point, 5, sum.to_bits());
                field(&mut self.point, 6, LEN);
                varint(&mut self.point, 8 * bucket_counts.len() as u64);
                for c in bucket_counts {
                    self.point.extend_from_slice(&c.to_le_bytes());
                }
                if !bounds.is_empty() {
                    field(&mut self.point, 7, LEN);
                    varint(&mut self.point, 8 * bounds.len() as u64);
                    for b in bounds {
                        self.point.extend_from_slice(&b.to_le_bytes());
                    }
                }
            }
            Point::Summary {
                start,
                count,
                sum,
                quantiles,
            } => {
                fixed64_nonzero(&mut self.point, 2, start);
                fixed64(&mut self.point, 3, time);
                fixed64(&mut self.point, 4, count);
                fixed64(&mut self.point, 5, sum.to_bits());
                for (q, v) in quantiles {
                    field(&mut self.point, 6, LEN);
                    varint(&mut self.point, 18);
                    fixed64(&mut self.point, 1, q.to_bits());
                    fixed64(&mut self.point, 2, v.to_bits());
                }
            }
        }
        bytes(&mut self.data, 1, &self.point);
        self.points += 1;
        if self.points >= self.max_points {
            self.finish(resource, emit);
        }
    }

    /// Ends the metric being written: its fields go into the request.
    fn close_metric(&mut self) {
        let Some(head) = self.head.take() else {
            return;
        };
        self.metric.clear();
        string(&mut self.metric, 1, &head.name);
        if !head.unit.is_empty() {
            string(&mut self.metric, 3, head.unit);
        }
        let mut extra = Vec::new();
        if head.temporality != 0 {
            field(&mut extra, 2, VARINT);
            varint(&mut extra, head.temporality);
        }
        if head.kind == Kind::Sum {
            // is_monotonic: every Sum here is a counter.
            field(&mut extra, 3, VARINT);
            varint(&mut extra, 1);
        }
        field(&mut self.metric, head.kind as u32, LEN);
        varint(&mut self.metric, (self.data.len() + extra.len()) as u64);
        self.metric.extend_from_slice(&self.data);
        self.metric.extend_from_slice(&extra);
        self.data.clear();
        bytes(&mut self.metrics, 2, &self.metric);
    }

    /// Wraps the metrics so far in a request (resource, scope) and hands it to `emit`.
    pub fn finish(&mut self, resource: &Resource<'_>, emit: &mut dyn FnMut(Vec<u8>)) {
        self.close_metric();
        if self.metrics.is_empty() {
            return;
        }
        let mut head = Vec::with_capacity(256);
        // Resource { attributes }.
        let mut res = Vec::new();
        key_value(&mut res, 1, "host.name", resource.host);
        key_value(&mut res, 1, "service.name", "tallyd");
        // InstrumentationScope { name, version }.
        let mut scope = Vec::new();
        string(&mut scope, 1, "tallyd");
        string(&mut scope, 2, resource.version);
        let scope_metrics_len = field_len(scope.len()) + self.metrics.len();
        let resource_metrics_len = field_len(res.len()) + field_len(scope_metrics_len);
        // ExportMetricsServiceRequest.resource_metrics
        field(&mut head, 1, LEN);
        varint(&mut head, resource_metrics_len as u64);
        bytes(&mut head, 1, &res);
        field(&mut head, 2, LEN);
        varint(&mut head, scope_metrics_len as u64);
        bytes(&mut head, 1, &scope);
        let mut body = Vec::with_capacity(head.len() + self.metrics.len());
        body.extend_from_slice(&head);
        body.extend_from_slice(&self.metrics);
        self.metrics.clear();
        self.points = 0;
        emit(body);
    }
}

/// What every request says of its source.
pub struct Resource<'a> {
    pub host: &'a str,
    pub version: &'a str,
}

/// The bytes of a length-delimited field whose content is `len` bytes (key of one byte:
/// fields below 16).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn field(out: &mut Vec<u8>, number: u32, wire: u32) {
    varint(out, u64::from(number << 3 | wire));
}

fn bytes(out: &mut Vec<u8>, number: u32, content: &[u8]) {
    field(out, number, LEN);
    varint(out, content.len() as u64);
    out.extend_from_slice(content);
}

fn string(out: &mut Vec<u8>, number: u32, s: &str) {
    bytes(out, number, s.as_bytes());
}

fn fixed64(out: &mut Vec<u8>, number: u32, v: u64) {
    field(out, number, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A fixed64 field left out at 0, as proto3 does.
fn fixed64_nonzero(out: &mut Vec<u8>, number: u32, v: u64) {
    if v != 0 {
        fixed64(out, number, v);
    }
}

/// A `KeyValue { key, value: AnyValue { string_value } }` as field `number`.
fn key_value(out: &mut Vec<u8>, number: u32, key: &str, value: &str) {
    let any_len = field_len(value.len());
    let kv_len = field_len(key.len()) + field_len(any_len);
    field(out, number, LEN);
    varint(out, kv_len as u64);
    string(out, 1, key);
    field(out, 2, LEN);
    varint(out, any_len as u64);
    string(out, 1, value);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}
