//! The values the line grammar produces: metric kinds, samples, tags, events and service
//! checks. Metric lines borrow from the datagram; events and checks are rare and owned.

use serde::Serialize;

/// The kind of a metric series, as it appears in the flush record's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Counter,
    Gauge,
    Timer,
    Histogram,
    Distribution,
    Set,
}

impl MetricKind {
    /// The spelling used in the flush record.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Timer => "timer",
            MetricKind::Histogram => "histogram",
            MetricKind::Distribution => "distribution",
            MetricKind::Set => "set",
        }
    }

    /// A one-byte code, stable for the life of the process, used in series keys.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Every kind.
    pub const ALL: [MetricKind; 6] = [
        MetricKind::Counter,
        MetricKind::Gauge,
        MetricKind::Timer,
        MetricKind::Histogram,
        MetricKind::Distribution,
        MetricKind::Set,
    ];

    /// The inverse of [`MetricKind::code`].
    pub fn from_code(code: u8) -> Option<MetricKind> {
        Some(match code {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Timer,
            3 => MetricKind::Histogram,
            4 => MetricKind::Distribution,
            5 => MetricKind::Set,
            _ => return None,
        })
    }

    /// Timers, histograms and distributions share one arithmetic.
    pub fn is_distribution_like(self) -> bool {
        matches!(
            self,
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution
        )
    }
}

/// One `key:value` tag as sent; a tag without value has the value `""`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

/// One sample of a metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub kind: MetricKind,
    /// The numeric value; 0 for sets. Never NaN or infinite; `-0` is stored as `0`.
    pub value: f64,
    /// The value text began with `+` or `-` (a gauge delta when deltas are on).
    pub signed: bool,
    /// The value text as sent: the member for sets.
    pub text: &'a str,
    /// The sample rate, 0 < rate <= 1; 1 when absent.
    pub rate: f64,
}

/// A parsed metric line: one name, its tags as sent, one or more samples.
/// Reused across lines so the hot path does not allocate (see [`MetricLine::recycle`]).
#[derive(Debug, Default)]
pub struct MetricLine<'a> {
    pub name: &'a str,
    pub tags: Vec<Tag<'a>>,
    pub samples: Vec<Sample<'a>>,
}

impl MetricLine<'_> {
    /// Empties the line and hands its buffers to a line borrowing from another datagram,
    /// keeping their capacity.
    pub fn recycle<'b>(self) -> MetricLine<'b> {
        MetricLine {
            name: "",
            tags: recycle_vec(self.tags),
            samples: recycle_vec(self.samples),
        }
    }

    /// Clears the line for the next parse.
    pub fn clear(&mut self) {
        self.name = "";
        self.tags.clear();
        self.samples.clear();
    }
}

/// Reuses a vector's allocation for a type of the same layout (here: the same type with
/// another lifetime). In-place collection keeps the buffer.
fn recycle_vec<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("vector was cleared"))
        .collect()
}

/// A DogStatsD event (`_e{...}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub title: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_type: Option<String>,
    /// Tags as sent, in order (duplicates kept; the router applies first-wins).
    #[serde(skip)]
    pub tags: Vec<(String, String)>,
}

/// A DogStatsD service check (`_sc|...`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceCheck {
    pub name: String,
    /// 0 OK, 1 warning, 2 critical, 3 unknown.
    pub status: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Tags as sent, in order (duplicates kept; the router applies first-wins).
    #[serde(skip)]
    pub tags: Vec<(String, String)>,
}

/// What one line turned out to be.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A metric line; its content is in the `MetricLine` passed to the parser.
    Metric,
    Event(Event),
    ServiceCheck(ServiceCheck),
}
