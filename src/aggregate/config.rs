//! The `[aggregation]` section: shards and the arithmetic, as the file spells them, their
//! defaults, and validation into [`AggregationConfig`]. `src/config.rs` composes it.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::distribution::{Bins, DistributionConfig, Observe, Percentile};
use crate::config::{Invalid, at_least_one, has_control};
use crate::glob::Glob;
use crate::protocol::MetricKind;

/// Shards and the arithmetic.
#[derive(Debug, Clone)]
pub struct AggregationConfig {
    pub flush_interval: Duration,
    pub shards: usize,
    pub distribution: DistributionConfig,
    pub gauge_deltas: bool,
    pub series_ttl: Duration,
    pub max_series: usize,
    /// Distinct members a set series counts exactly in one interval; beyond, its count is
    /// a HyperLogLog estimate.
    pub exact_set_members: usize,
    /// Sorted by key, keys unique.
    pub global_tags: Vec<(String, String)>,
    pub histograms: Vec<HistogramRule>,
    /// What Prometheus-style outputs need observed per series; `None` when none is on.
    pub export: Option<Arc<crate::export::ExportPlan>>,
    /// A `statsd` output forwards the series (SPEC §7.4): set members are kept beside their
    /// hashes, and `distribution.keep_values` keeps timer values, for it. Off, neither costs.
    pub forward: bool,
}

impl AggregationConfig {
    /// What the export plan observes for a new series (`None` without a plan or for
    /// counters, gauges and sets).
    pub fn observe_for(&self, name: &str, kind: MetricKind) -> Option<Arc<Observe>> {
        let plan = self.export.as_ref()?;
        plan.observe_for(name, kind, self.bins_for(name).map(|b| &**b))
    }

    /// Keeps (or stops keeping) what forwarding sends on: set members and timer values.
    pub fn set_forward(&mut self, forward: bool) {
        self.forward = forward;
        self.distribution.keep_values = forward;
    }

    /// The bins of the first histogram rule whose pattern matches `name`.
    pub fn bins_for(&self, name: &str) -> Option<&Arc<Bins>> {
        self.histograms
            .iter()
            .find(|rule| rule.metric.matches(name))
            .map(|rule| &rule.bins)
    }
}

/// Histogram bins for the timers, histograms and distributions whose name matches.
#[derive(Debug, Clone)]
pub struct HistogramRule {
    pub metric: Glob,
    pub bins: Arc<Bins>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAggregation {
    flush_interval_ms: toml::Spanned<u64>,
    shards: usize,
    percentiles: Vec<toml::Spanned<f64>>,
    exact_samples: toml::Spanned<usize>,
    gauge_deltas: bool,
    series_ttl_ms: u64,
    max_series: toml::Spanned<usize>,
    exact_set_members: toml::Spanned<usize>,
    global_tags: std::collections::BTreeMap<String, toml::Spanned<String>>,
    histograms: Vec<RawHistogram>,
}

impl Default for RawAggregation {
    fn default() -> RawAggregation {
        RawAggregation {
            flush_interval_ms: toml::Spanned::new(0..0, 10_000),
            shards: 0,
            percentiles: [90.0, 95.0, 99.0]
                .into_iter()
                .map(|p| toml::Spanned::new(0..0, p))
                .collect(),
            exact_samples: toml::Spanned::new(0..0, 10_000),
            gauge_deltas: true,
            series_ttl_ms: 300_000,
            max_series: toml::Spanned::new(0..0, 1_000_000),
            exact_set_members: toml::Spanned::new(0..0, 100_000),
            global_tags: Default::default(),
            histograms: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistogram {
    metric: toml::Spanned<String>,
    bins: toml::Spanned<Vec<f64>>,
}

// ---- validation: raw -> Config ----------------------------------------------------------------

/// The shards on `cores` cores: half of them, rounded up. A StatsD agent shares its host
/// with the applications that send to it. On the 2-core benchmark machine, with the load
/// generator on the same host, one shard counted 23-24 M packed lines/s flat out and two
/// 18-21 M: the shard state and locks passed between the cores. Receive threads, which
/// keep counters and distributions in tables of their own, scale past the shard count
/// (see [`ServerConfig::udp_threads`]).
pub(crate) fn auto_shards(cores: usize) -> usize {
    cores.div_ceil(2).max(1)
}

impl RawAggregation {
    pub(crate) fn validate(self) -> Result<AggregationConfig, Invalid> {
        if *self.flush_interval_ms.get_ref() == 0 {
            return Err(Invalid::at(
                &self.flush_interval_ms,
                "flush_interval_ms must be at least 1",
            ));
        }
        let percentiles = self
            .percentiles
            .iter()
            .map(|p| Percentile::new(*p.get_ref()).map_err(|e| Invalid::at(p, e)))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, p) in self.percentiles.iter().enumerate() {
            if self.percentiles[..i]
                .iter()
                .any(|q| q.get_ref() == p.get_ref())
            {
                return Err(Invalid::at(
                    p,
                    format!("percentile {} is listed twice", p.get_ref()),
                ));
            }
        }
        let mut global_tags = Vec::with_capacity(self.global_tags.len());
        for (key, value) in self.global_tags {
            if key.is_empty() || has_control(&key) || has_control(value.get_ref()) {
                return Err(Invalid::at(
                    &value,
                    format!(
                        "global tag {key:?}: keys must be non-empty, and neither key nor value may hold control characters"
                    ),
                ));
            }
            global_tags.push((key, value.into_inner()));
        }
        let histograms = self
            .histograms
            .into_iter()
            .map(RawHistogram::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let shards = match self.shards {
            0 => auto_shards(std::thread::available_parallelism().map_or(1, |n| n.get())),
            n => n,
        };
        Ok(AggregationConfig {
            flush_interval: Duration::from_millis(*self.flush_interval_ms.get_ref()),
            shards,
            distribution: DistributionConfig {
                percentiles,
                exact_samples: at_least_one(&self.exact_samples, "exact_samples")?,
                keep_values: false,
                history_sketch: false,
            },
            gauge_deltas: self.gauge_deltas,
            series_ttl: Duration::from_millis(self.series_ttl_ms),
            max_series: at_least_one(&self.max_series, "max_series")?,
            exact_set_members: at_least_one(&self.exact_set_members, "exact_set_members")?,
            global_tags,
            histograms,
            export: None,
            forward: false,
        })
    }
}

impl RawHistogram {
    fn validate(self) -> Result<HistogramRule, Invalid> {
        let metric = Glob::new(self.metric.get_ref()).map_err(|e| Invalid::at(&self.metric, e))?;
        let bins =
            Bins::new(self.bins.get_ref().clone()).map_err(|e| Invalid::at(&self.bins, e))?;
        Ok(HistogramRule {
            metric,
            bins: Arc::new(bins),
        })
    }
}
