//! Alert rules as the agent uses them: compiled from the config once (glob, required tags,
//! condition), matched against series keys, and evaluated against a figure.

use std::time::Duration;

use serde::Deserialize;

use crate::aggregate::SeriesKey;
use crate::aggregate::distribution::{DistFigures, DistributionConfig};
use crate::config::HistogramRule;
use crate::glob::Glob;

/// A comparison operator of a rule's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    /// The series received no sample this interval (or left the record at most `for`
    /// flushes ago).
    #[serde(rename = "absent")]
    Absent,
}

impl Op {
    /// The spelling used in the config and in alert events.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Absent => "absent",
        }
    }

    /// Whether `value op threshold` holds (never for `absent`, which looks at activity).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
            Op::Absent => false,
        }
    }
}

/// How loud an alert is; also picks the log level of the `log` notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The spelling used in alert events.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Where a rule's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `tracing` event at the severity's level.
    Log,
    /// The webhook notifier at this index of `Config::notifiers`.
    Webhook(usize),
}

/// A validated alert rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub name: String,
    pub metric: Glob,
    /// Tags a series must carry, with these values; sorted by key.
    pub tags: Vec<(String, String)>,
    pub stat: String,
    pub op: Op,
    pub threshold: f64,
    /// Consecutive flushes the condition must hold before the rule fires (at least 1).
    pub for_flushes: u32,
    pub severity: Severity,
    pub notify: Vec<Target>,
    pub repeat_interval: Option<Duration>,
}

impl AlertRule {
    /// Whether the rule applies to this series (name pattern and required tags).
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.metric.matches(key.name()) && self.has_tags(key)
    }

    fn has_tags(&self, key: &SeriesKey) -> bool {
        self.tags
            .iter()
            .all(|(k, v)| key.tags().any(|(tk, tv)| tk == k && tv == v))
    }
}

/// Whether `stat` names a figure some series can have under this configuration: the
/// counter, gauge and set figures, every timer figure, the configured percentiles' figures,
/// and the configured bins.
pub fn is_known_stat(
    stat: &str,
    distribution: &DistributionConfig,
    histograms: &[HistogramRule],
) -> bool {
    // Counter, gauge and bin figures, besides the timer family's own.
    const OTHERS: [&str; 3] = ["rate", "value", "bin_inf"];
    OTHERS.contains(&stat)
        || DistFigures::FIXED.contains(&stat)
        || distribution
            .percentiles
            .iter()
            .any(|p| p.names().iter().any(|name| name == stat))
        || histograms
            .iter()
            .any(|rule| rule.bins.names().iter().any(|name| name == stat))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::distribution::Percentile;

    #[test]
    fn each_operator_compares_as_written() {
        assert!(Op::Gt.holds(2.0, 1.0) && !Op::Gt.holds(1.0, 1.0));
        assert!(Op::Ge.holds(1.0, 1.0) && !Op::Ge.holds(0.5, 1.0));
        assert!(Op::Lt.holds(0.5, 1.0) && !Op::Lt.holds(1.0, 1.0));
        assert!(Op::Le.holds(1.0, 1.0) && !Op::Le.holds(1.5, 1.0));
        assert!(Op::Eq.holds(1.0, 1.0) && !Op::Eq.holds(1.5, 1.0));
        assert!(Op::Ne.holds(1.5, 1.0) && !Op::Ne.holds(1.0, 1.0));
        assert!(!Op::Absent.holds(1.0, 1.0));
    }

    #[test]
    fn known_stats_follow_the_configured_percentiles() {
        let distribution = DistributionConfig {
            percentiles: vec![
                Percentile::new(99.9).unwrap(),
                Percentile::new(-10.0).unwrap(),
            ],
            exact_samples: 10,
            keep_values: false,
            history_sketch: false,
        };
        for stat in [
            "count",
            "rate",
            "value",
            "upper",
            "upper_99_9",
            "lower_top10",
            "bin_inf",
        ] {
            assert!(is_known_stat(stat, &distribution, &[]), "{stat}");
        }
        for stat in ["upper_90", "p99", "Count", "upper_top10"] {
            assert!(!is_known_stat(stat, &distribution, &[]), "{stat}");
        }
    }
}
