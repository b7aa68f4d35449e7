//! The figures of one series for one interval, and the record order they are emitted in.
//! Built by [`DistSnapshot::figures`](super::DistSnapshot::figures) on the flush thread; read
//! by the flush record and the alert rules through [`DistFigures::for_each`].

use std::sync::Arc;

use super::logsketch::LogSketch;
use super::observe::{Observe, Observed, Shape};
use super::{Bins, DistributionConfig};

/// Every figure of one series for one interval.
#[derive(Debug, Clone)]
pub struct DistFigures {
    pub(super) count: f64,
    pub(super) count_ps: f64,
    /// `None` for an idle series.
    pub(super) summary: Option<Summary>,
    /// One entry per configured percentile, in config order; `None` where k = 0.
    pub(super) tails: Vec<Option<Tail>>,
    pub(super) bins: Option<BinCounts>,
    /// Buckets or quantiles an export plan asked for (SPEC §7.1); not part of the record's
    /// figures.
    pub(super) observed: Option<Box<Observed>>,
    /// Σ value/rate: the sum with every value counted 1/rate times, as Prometheus-style
    /// `_sum` wants it (exact while the values are; the mean times the count past that).
    pub(super) weighted_sum: f64,
    /// The interval's values, for a `statsd` output to forward (only with
    /// `DistributionConfig::keep_values`).
    pub(super) values: Option<Box<Values>>,
    /// The interval's values in a mergeable sketch, when history is on.
    pub(super) history: Option<Box<LogSketch>>,
}

/// One interval's values as forwarding sends them on (SPEC §7.4).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Every raw value, ascending.
    Exact(Vec<f64>),
    /// Past `exact_samples`: the sketch's values, ascending, each with how many raw values
    /// it stands for (the first and last are the exact `lower` and `upper`).
    Weighted(Vec<(f64, u64)>),
}

/// The figures over all of the interval's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Summary {
    pub(super) lower: f64,
    pub(super) upper: f64,
    pub(super) sum: f64,
    pub(super) sum_squares: f64,
    pub(super) mean: f64,
    pub(super) median: f64,
    pub(super) std: f64,
}

/// The five figures of one percentile over its k lowest (or highest) values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Tail {
    pub(super) count: f64,
    pub(super) mean: f64,
    /// `upper_P` (the k-th lowest value) or `lower_topP` (the k-th highest).
    pub(super) bound: f64,
    pub(super) sum: f64,
    pub(super) sum_squares: f64,
}

impl Tail {
    /// The figures of k values (k >= 1) whose sums are known.
    pub(super) fn new(k: u64, bound: f64, sum: f64, sum_squares: f64) -> Tail {
        let count = k as f64;
        Tail {
            count,
            mean: sum / count,
            bound,
            sum,
            sum_squares,
        }
    }
}

/// Bin counts with the bins that name them.
#[derive(Debug, Clone)]
pub(super) struct BinCounts {
    pub(super) bins: Arc<Bins>,
    /// Exactly `bins.bin_count()` entries.
    pub(super) counts: Vec<u64>,
}

impl DistFigures {
    /// The figures of a series that got no sample this interval: only count 0 and count_ps 0.
    pub fn idle() -> DistFigures {
        DistFigures {
            count: 0.0,
            count_ps: 0.0,
            summary: None,
            tails: Vec::new(),
            bins: None,
            observed: None,
            weighted_sum: 0.0,
            values: None,
            history: None,
        }
    }

    /// The figures of an idle series whose export plan observes buckets: their counts are
    /// 0 this interval (quantiles have no values to observe).
    pub fn idle_observed(observe: Option<&Arc<Observe>>) -> DistFigures {
        let mut figures = DistFigures::idle();
        if let Some(plan) = observe {
            let buckets = match &plan.shape {
                Shape::Buckets(bounds) => bounds.len(),
                Shape::Quantiles(_) => 0,
            };
            let raw = plan.raw_buckets.as_deref().map_or(0, <[f64]>::len);
            if buckets > 0 || raw > 0 {
                figures.observed = Some(Box::new(Observed {
                    plan: plan.clone(),
                    values: vec![0.0; buckets],
                    raw_counts: vec![0.0; raw],
                }));
            }
        }
        figures
    }

    /// Σ 1/rate over the interval.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// The sum of the interval's values; 0 for an idle series.
    pub fn sum(&self) -> f64 {
        self.summary.map_or(0.0, |s| s.sum)
    }

    /// Σ value/rate over the interval: each value counted 1/rate times.
    pub fn weighted_sum(&self) -> f64 {
        self.weighted_sum
    }

    /// The median, when the series got a sample.
    pub fn median(&self) -> Option<f64> {
        self.summary.map(|s| s.median)
    }

    /// The mean, when the series got a sample.
    pub fn mean(&self) -> Option<f64> {
        self.summary.map(|s| s.mean)
    }

    /// Per configured percentile (config order), its bound (`upper_P`, or `lower_topP` for
    /// a negative one), where k > 0.
    pub fn percentile_bounds(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        self.tails.iter().map(|t| t.map(|t| t.bound))
    }

    /// The interval's values, kept for forwarding.
    pub fn values(&self) -> Option<&Values> {
        self.values.as_deref()
    }

    /// The lowest value, when the series got a sample.
    pub fn lower(&self) -> Option<f64> {
        self.summary.map(|s| s.lower)
    }

    /// The highest value, when the series got a sample.
    pub fn upper(&self) -> Option<f64> {
        self.summary.map(|s| s.upper)
    }

    /// The sum of the squared values; 0 for an idle series.
    pub fn sum_squares(&self) -> f64 {
        self.summary.map_or(0.0, |s| s.sum_squares)
    }

    /// The bins' names (`bin_<b>`, `bin_inf`) with their counts, when bins are configured.
    pub fn bin_counts(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.bins.iter().flat_map(|b| {
            b.bins
                .names()
                .iter()
                .map(String::as_str)
                .zip(b.counts.iter().copied())
        })
    }

    /// The interval's mergeable sketch, built when history is on and the series got a
    /// sample.
    pub fn log_sketch(&self) -> Option<&LogSketch> {
        self.history.as_deref()
    }

    /// The buckets or quantiles an export plan asked for.
    pub fn observed(&self) -> Option<&Observed> {
        self.observed.as_deref()
    }

    /// The figures every active series of these kinds has, in record order (before the
    /// percentile and bin figures).
    pub const FIXED: [&'static str; 9] = [
        "count",
        "count_ps",
        "lower",
        "upper",
        "sum",
        "sum_squares",
        "mean",
        "median",
        "std",
    ];

    /// Calls `f(name, value)` for every figure in record order: count, count_ps, lower, upper,
    /// sum, sum_squares, mean, median, std, then per percentile (in config order) count_P,
    /// mean_P, upper_P (or lower_topP), sum_P, sum_squares_P (skipped where k = 0), then
    /// `bin_<b>`... and `bin_inf` when bins were configured. An idle series yields only count and
    /// count_ps.
    pub fn for_each(&self, config: &DistributionConfig, mut f: impl FnMut(&str, f64)) {
        f("count", self.count);
        f("count_ps", self.count_ps);
        let Some(s) = &self.summary else {
            return;
        };
        f("lower", s.lower);
        f("upper", s.upper);
        f("sum", s.sum);
        f("sum_squares", s.sum_squares);
        f("mean", s.mean);
        f("median", s.median);
        f("std", s.std);
        for (percentile, tail) in config.percentiles.iter().zip(&self.tails) {
            if let Some(t) = tail {
                let [count, mean, bound, sum, sum_squares] = percentile.names();
                f(count, t.count);
                f(mean, t.mean);
                f(bound, t.bound);
                f(sum, t.sum);
                f(sum_squares, t.sum_squares);
            }
        }
        if let Some(b) = &self.bins {
            for (name, count) in b.bins.names().iter().zip(&b.counts) {
                f(name, *count as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Percentile;
    use super::*;

    fn config(percentiles: &[f64]) -> DistributionConfig {
        DistributionConfig {
            percentiles: percentiles
                .iter()
                .map(|p| Percentile::new(*p).unwrap())
                .collect(),
            exact_samples: 10,
            keep_values: false,
            history_sketch: false,
        }
    }

    fn emitted(figures: &DistFigures, config: &DistributionConfig) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        figures.for_each(config, |name, value| out.push((name.to_string(), value)));
        out
    }

    #[test]
    fn idle_figures_are_only_count_and_count_ps_zero() {
        let config = config(&[90.0]);
        assert_eq!(
            emitted(&DistFigures::idle(), &config),
            [("count".to_string(), 0.0), ("count_ps".to_string(), 0.0)]
        );
    }

    #[test]
    fn figures_come_in_record_order_and_skip_uncovered_percentiles() {
        let summary = Summary {
            lower: 1.0,
            upper: 2.0,
            sum: 3.0,
            sum_squares: 5.0,
            mean: 1.5,
            median: 1.5,
            std: 0.5,
        };
        let figures = DistFigures {
            count: 2.0,
            count_ps: 0.2,
            summary: Some(summary),
            tails: vec![None, Some(Tail::new(2, 1.0, 3.0, 5.0))],
            bins: Some(BinCounts {
                bins: Arc::new(Bins::new(vec![1.5]).unwrap()),
                counts: vec![1, 1],
            }),
            observed: None,
            weighted_sum: 3.0,
            values: None,
            history: None,
        };
        let names: Vec<String> = emitted(&figures, &config(&[10.0, -99.9]))
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let expected = [
            "count",
            "count_ps",
            "lower",
            "upper",
            "sum",
            "sum_squares",
            "mean",
            "median",
            "std",
            "count_top99_9",
            "mean_top99_9",
            "lower_top99_9",
            "sum_top99_9",
            "sum_squares_top99_9",
            "bin_1_5",
            "bin_inf",
        ];
        assert_eq!(names, expected);
    }
}
