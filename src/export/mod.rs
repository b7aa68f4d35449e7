//! What Prometheus-style outputs share (SPEC §7.1): the `[prometheus]` config section, name
//! and label escaping ([`name`]), statsd_exporter mapping files ([`mapping`]), the plan that
//! tells the flusher which series need `le` buckets or extra quantiles ([`ExportPlan`]), and
//! the cumulative view of successive records ([`view`]) that `/metrics` encodes
//! ([`exposition`]).

pub mod exposition;
pub mod mapping;
pub mod name;
pub mod series;
pub mod view;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::aggregate::distribution::{Bins, Observe, Shape};
use crate::protocol::MetricKind;
use mapping::{Mapped, Mapping, MappingError, Observer};

/// statsd_exporter's default histogram buckets, in the exported unit (seconds for timers).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How timers, histograms and distributions are exported when no mapping rule says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerType {
    /// Quantiles of the last interval, cumulative `_sum` and `_count`.
    #[default]
    Summary,
    /// Cumulative `le` buckets.
    Histogram,
}

/// The `[prometheus]` section as the file spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPrometheusConfig {
    /// A statsd_exporter mapping file (YAML), read at start and at reload.
    pub mapping_file: Option<toml::Spanned<PathBuf>>,
    /// `summary` (default) or `histogram`.
    pub timer_type: TimerType,
}

/// The `[prometheus]` section in force, shared with the outputs that read it at each flush
/// (remote write), so a reload's new mapping reaches them without restarting them.
pub type SharedPrometheus = Arc<std::sync::RwLock<PrometheusConfig>>;

/// The validated `[prometheus]` section.
#[derive(Debug, Clone, Default)]
pub struct PrometheusConfig {
    pub mapping_file: Option<PathBuf>,
    /// The compiled mapping, when a file is configured.
    pub mapping: Option<Arc<Mapping>>,
    pub timer_type: TimerType,
}

impl RawPrometheusConfig {
    /// Reads and compiles the mapping file. `base` resolves a relative path (the config
    /// file's folder).
    ///
    /// # Errors
    /// The mapping file's own error (its path, line and column) as a string, with the span
    /// of `mapping_file` in the config.
    pub fn validate(
        self,
        base: Option<&std::path::Path>,
    ) -> Result<PrometheusConfig, (std::ops::Range<usize>, String)> {
        let (mapping_file, mapping) = match self.mapping_file {
            None => (None, None),
            Some(spanned) => {
                let span = spanned.span();
                let path = spanned.into_inner();
                let path = match base {
                    Some(base) if path.is_relative() => base.join(path),
                    _ => path,
                };
                let mapping = Mapping::load(&path).map_err(|e| (span, mapping_message(&e)))?;
                (Some(path), Some(Arc::new(mapping)))
            }
        };
        Ok(PrometheusConfig {
            mapping_file,
            mapping,
            timer_type: self.timer_type,
        })
    }
}

fn mapping_message(error: &MappingError) -> String {
    format!("mapping file: {error}")
}

/// Shared plans for OTLP's bins, by divisor (its bits) and bounds.
type BinsPlans = Arc<std::sync::Mutex<Vec<(u64, Arc<Observe>)>>>;

/// Decides, once per series, what the flusher must observe for Prometheus-style outputs
/// beyond the record's figures: `le` buckets for histograms, quantiles a mapping asks for.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub prometheus: PrometheusConfig,
    /// Whether the mapping has a rule with an observer type (worked out once).
    mapping_observes: bool,
    /// An OTLP output is configured: series with `[[aggregation.histograms]]` bins also
    /// observe `le` counts at the bins' bounds (OTLP histograms), whatever Prometheus
    /// exports.
    pub otlp_bins: bool,
    /// The plans of series with bins and the default summary, shared by every series of
    /// the same bins and divisor (a million timers should not hold a million copies).
    bins_plans: BinsPlans,
    /// The default buckets, shared by every series that uses them, per divisor.
    default_seconds: Arc<Observe>,
    default_plain: Arc<Observe>,
}

impl ExportPlan {
    /// A plan for this `[prometheus]` section.
    pub fn new(prometheus: PrometheusConfig) -> ExportPlan {
        let default = |divisor| {
            Arc::new(Observe {
                shape: Shape::Buckets(Arc::from(DEFAULT_BUCKETS)),
                divisor,
                raw_buckets: None,
            })
        };
        let mapping_observes = prometheus
            .mapping
            .as_deref()
            .is_some_and(Mapping::sets_observers);
        ExportPlan {
            mapping_observes,
            prometheus,
            otlp_bins: false,
            bins_plans: Arc::default(),
            default_seconds: default(1000.0),
            default_plain: default(1.0),
        }
    }

    /// What to observe for a timer, histogram or distribution `name` whose `[[aggregation.
    /// histograms]]` bins are `bins`; `None` for the default summary.
    pub fn observe_for(
        &self,
        name: &str,
        kind: MetricKind,
        bins: Option<&Bins>,
    ) -> Option<Arc<Observe>> {
        let plan = self.prometheus_observe_for(name, kind, bins);
        let Some(bins) = bins.filter(|_| self.otlp_bins) else {
            return plan;
        };
        if plan
            .as_ref()
            .is_some_and(|p| matches!(p.shape, Shape::Buckets(_)))
        {
            // OTLP sends the Prometheus buckets.
            return plan;
        }
        // OTLP wants a histogram from the bins where Prometheus has a summary.
        let divisor = divisor(kind);
        let Some(plan) = plan else {
            // The default summary: one plan per bins and divisor.
            let mut shared = self
                .bins_plans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let found = shared.iter().find(|(d, plan)| {
                *d == divisor.to_bits() && plan.raw_buckets.as_deref() == Some(bins.bounds())
            });
            if let Some((_, plan)) = found {
                return Some(plan.clone());
            }
            let plan = Arc::new(Observe {
                shape: Shape::Quantiles(Arc::from([])),
                divisor,
                raw_buckets: Some(Arc::from(bins.bounds())),
            });
            shared.push((divisor.to_bits(), plan.clone()));
            return Some(plan);
        };
        Some(Arc::new(Observe {
            shape: plan.shape.clone(),
            divisor,
            raw_buckets: Some(Arc::from(bins.bounds())),
        }))
    }

    /// What `/metrics` and remote write need observed.
    fn prometheus_observe_for(
        &self,
        name: &str,
        kind: MetricKind,
        bins: Option<&Bins>,
    ) -> Option<Arc<Observe>> {
        let divisor = divisor(kind);
        // Asked once per new timer series, on its receive thread: a mapping whose rules give
        // no observer type is not consulted at all.
        let mapping = self
            .prometheus
            .mapping
            .as_deref()
            .filter(|_| self.mapping_observes);
        let observer = match mapping.map(|m| m.apply(name, kind)) {
            Some(Mapped::Drop) => return None,
            Some(Mapped::Map(result)) => result.observer,
            Some(Mapped::Unmatched) | None => None,
        };
        let histogram = |buckets: Vec<f64>| {
            if !buckets.is_empty() {
                return Some(Arc::new(Observe {
                    shape: Shape::Buckets(buckets.into()),
                    divisor,
                    raw_buckets: None,
                }));
            }
            if let Some(bins) = bins {
                let bounds: Vec<f64> = bins.bounds().iter().map(|b| b / divisor).collect();
                return Some(Arc::new(Observe {
                    shape: Shape::Buckets(bounds.into()),
                    divisor,
                    raw_buckets: None,
                }));
            }
            Some(if divisor == 1.0 {
                self.default_plain.clone()
            } else {
                self.default_seconds.clone()
            })
        };
        match observer {
            Some(Observer::Histogram { buckets }) => histogram(buckets),
            Some(Observer::Summary { quantiles }) if !quantiles.is_empty() => {
                Some(Arc::new(Observe {
                    shape: Shape::Quantiles(quantiles.into()),
                    divisor,
                    raw_buckets: None,
                }))
            }
            Some(Observer::Summary { .. }) => None,
            None => match self.prometheus.timer_type {
                TimerType::Histogram => histogram(Vec::new()),
                TimerType::Summary => None,
            },
        }
    }
}

/// What a value of `kind` is divided by for Prometheus-style outputs: `ms` timers are
/// exported in seconds, as statsd_exporter does; histograms and distributions unscaled.
pub fn divisor(kind: MetricKind) -> f64 {
    match kind {
        MetricKind::Timer => 1000.0,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_bins_plans_are_shared_and_leave_prometheus_its_summary() {
        let mut plan = ExportPlan::new(PrometheusConfig::default());
        let bins = Bins::new(vec![10.0, 100.0]).expect("valid bins");
        assert!(
            plan.observe_for("a", MetricKind::Timer, Some(&bins))
                .is_none()
        );
        plan.otlp_bins = true;
        let a = plan
            .observe_for("a", MetricKind::Timer, Some(&bins))
            .expect("a plan for OTLP");
        let b = plan
            .observe_for("b", MetricKind::Timer, Some(&bins))
            .expect("a plan for OTLP");
        assert!(Arc::ptr_eq(&a, &b), "one plan for the same bins");
        assert!(!a.shape.is_set(), "Prometheus keeps its default summary");
        assert_eq!(a.raw_buckets.as_deref(), Some(&[10.0, 100.0][..]));
        let h = plan
            .observe_for("h", MetricKind::Histogram, Some(&bins))
            .expect("a plan for OTLP");
        assert!(!Arc::ptr_eq(&a, &h), "another divisor, another plan");
        assert!(plan.observe_for("c", MetricKind::Timer, None).is_none());
    }
}
