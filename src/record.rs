//! The flush record (SPEC §3): what every backend receives, and its JSON shape. Figures are
//! computed once on the flush thread; serialization streams straight into the writer.

use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::aggregate::distribution::{DistFigures, DistributionConfig};
use crate::aggregate::{SeriesKey, TaggedEvent};
use crate::protocol::MetricKind;
use crate::telemetry::Internal;

/// One flush: every series' figures, the interval's events, alert events and the agent's own
/// figures.
#[derive(Debug, Clone)]
pub struct Record {
    /// Unix seconds at the end of the interval.
    pub timestamp: u64,
    pub interval_ms: u64,
    pub host: String,
    /// Sorted by name, then tags, then type.
    pub metrics: Vec<Metric>,
    pub events: Vec<TaggedEvent>,
    pub alerts: Vec<AlertEvent>,
    /// The (rule, series) pairs firing after this flush, as `firing` alert objects (for the
    /// API and `tallyd_alerts_firing`; not part of the record's JSON).
    pub firing: Vec<AlertEvent>,
    pub internal: Internal,
    /// The distinct members of set series, each followed by `\n`, in record order: only
    /// when a `statsd` output forwards them (`AggregationConfig::forward`); not part of the
    /// record's JSON.
    pub members: Vec<(SeriesKey, String)>,
    /// Names the percentile figures of timers, histograms and distributions.
    pub distribution: Arc<DistributionConfig>,
}

/// One series' figures for one interval: three words, as a record may hold a million.
#[derive(Debug, Clone)]
pub struct Metric {
    pub key: SeriesKey,
    pub figures: Figures,
}

/// The figures of each metric kind. `active`: the series received a sample this interval
/// (kept beside the variant's tag, so it costs no space).
#[derive(Debug, Clone)]
pub enum Figures {
    /// The rate is the count over the record's interval, worked out where it is written.
    Counter {
        count: f64,
        active: bool,
    },
    Gauge {
        value: f64,
        active: bool,
    },
    Set {
        count: f64,
        active: bool,
    },
    Dist {
        figures: Box<DistFigures>,
        active: bool,
    },
}

/// An alert transition or reminder (SPEC §4), as the record's `alerts` carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    pub rule: String,
    pub severity: String,
    pub state: String,
    pub name: String,
    #[serde(serialize_with = "serialize_tag_pairs")]
    pub tags: Vec<(String, String)>,
    pub stat: String,
    pub op: String,
    #[serde(serialize_with = "serialize_number")]
    pub threshold: f64,
    #[serde(serialize_with = "serialize_optional_number")]
    pub value: Option<f64>,
    pub since: u64,
}

impl Metric {
    /// Calls `f(name, value)` for every figure, in record order; `record` is the one the
    /// metric belongs to (its interval and percentiles name and scale the figures).
    pub fn for_each_figure(&self, record: &Record, mut f: impl FnMut(&str, f64)) {
        match &self.figures {
            Figures::Counter { count, .. } => {
                f("count", *count);
                let interval = std::time::Duration::from_millis(record.interval_ms);
                f("rate", *count / interval.as_secs_f64());
            }
            Figures::Gauge { value, .. } => f("value", *value),
            Figures::Set { count, .. } => f("count", *count),
            Figures::Dist { figures, .. } => figures.for_each(&record.distribution, f),
        }
    }

    /// The series received a sample this interval.
    pub fn active(&self) -> bool {
        match self.figures {
            Figures::Counter { active, .. }
            | Figures::Gauge { active, .. }
            | Figures::Set { active, .. }
            | Figures::Dist { active, .. } => active,
        }
    }

    /// One figure by name (`count`, `upper_99`, ...), if the series has it this interval.
    pub fn figure(&self, record: &Record, stat: &str) -> Option<f64> {
        let mut found = None;
        self.for_each_figure(record, |name, value| {
            if found.is_none() && name == stat {
                found = Some(value);
            }
        });
        found
    }

    /// The metric kind.
    pub fn kind(&self) -> MetricKind {
        self.key.kind()
    }
}

/// A JSON number: integral values without a fraction (`42`, not `42.0`); non-finite values
/// (only reachable through overflowing sums) become `null`.
struct Number(f64);

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        let v = self.0;
        if v.is_finite() && v.fract() == 0.0 && v.abs() < EXACT {
            s.serialize_i64(v as i64)
        } else {
            s.serialize_f64(v)
        }
    }
}

fn serialize_number<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    Number(*value).serialize(s)
}

fn serialize_optional_number<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => Number(*v).serialize(s),
        None => s.serialize_none(),
    }
}

struct Tags<'a>(&'a SeriesKey);

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (key, value) in self.0.tags() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

fn serialize_tag_pairs<S: Serializer>(tags: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(tags.len()))?;
    for (key, value) in tags {
        map.serialize_entry(key, value)?;
    }
    map.end()
}

struct MetricJson<'a> {
    metric: &'a Metric,
    record: &'a Record,
}

impl Serialize for MetricJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let key = &self.metric.key;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("name", key.name())?;
        map.serialize_entry("type", key.kind().as_str())?;
        map.serialize_entry("tags", &Tags(key))?;
        let mut result = Ok(());
        self.metric.for_each_figure(self.record, |name, value| {
            if result.is_ok() {
                result = map.serialize_entry(name, &Number(value));
            }
        });
        result?;
        map.end()
    }
}

/// Keeps a metric in a filtered view of the record.
pub type MetricFilter<'a> = &'a (dyn Fn(&Metric) -> bool + Sync);

struct Metrics<'a> {
    record: &'a Record,
    keep: Option<MetricFilter<'a>>,
}

impl Serialize for Metrics<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = self.keep.is_none().then_some(self.record.metrics.len());
        let mut seq = s.serialize_seq(len)?;
        for metric in &self.record.metrics {
            if self.keep.is_some_and(|keep| !keep(metric)) {
                continue;
            }
            seq.serialize_element(&MetricJson {
                metric,
                record: self.record,
            })?;
        }
        seq.end()
    }
}

/// The record's JSON with only the metrics `keep` accepts (the API's filters).
pub struct Filtered<'a> {
    pub record: &'a Record,
    pub keep: MetricFilter<'a>,
}

impl Serialize for Filtered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_record(self.record, Some(self.keep), s)
    }
}

#[derive(Serialize)]
struct EventJson<'a, T: Serialize> {
    kind: &'static str,
    #[serde(flatten)]
    body: &'a T,
    #[serde(serialize_with = "serialize_tag_pairs")]
    tags: &'a [(String, String)],
}

impl Serialize for TaggedEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TaggedEvent::Event(body, tags) => EventJson {
                kind: "event",
                body,
                tags,
            }
            .serialize(s),
            TaggedEvent::ServiceCheck(body, tags) => EventJson {
                kind: "service_check",
                body,
                tags,
            }
            .serialize(s),
        }
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_record(self, None, s)
    }
}

fn serialize_record<S: Serializer>(
    record: &Record,
    keep: Option<MetricFilter<'_>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(7))?;
    map.serialize_entry("timestamp", &record.timestamp)?;
    map.serialize_entry("interval_ms", &record.interval_ms)?;
    map.serialize_entry("host", &record.host)?;
    map.serialize_entry("metrics", &Metrics { record, keep })?;
    map.serialize_entry("events", &record.events)?;
    map.serialize_entry("alerts", &record.alerts)?;
    map.serialize_entry("internal", &record.internal)?;
    map.end()
}
