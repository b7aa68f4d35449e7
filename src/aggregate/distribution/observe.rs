//! Prometheus-style observations of one series' interval (SPEC §7.1): `le` bucket counts
//! (`v <= bound`) and quantiles other than the configured percentiles. They are taken on
//! the flush thread from the sorted values (or the sketch) when the series' export plan asks
//! for them, since the raw values exist only during the flush. Counts are weighted by the
//! interval's average `1 / rate`, so that `+Inf` equals the series' `count`.

use std::sync::Arc;

use super::sketch::Sketch;

/// What an export plan asks of one series at every flush. Bounds and quantile values are in
/// the exported unit: a value `v` is compared as `v / divisor` (1000 for `ms` timers, which
/// Prometheus-style outputs export in seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Observe {
    pub shape: Shape,
    pub divisor: f64,
    /// `le` bounds in the unit received (not divided), for OTLP histograms where the
    /// Prometheus shape is not buckets: the series' `[[aggregation.histograms]]` bins.
    pub raw_buckets: Option<Arc<[f64]>>,
}

/// Buckets or quantiles.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Strictly increasing finite bounds; `+Inf` is implied.
    Buckets(Arc<[f64]>),
    /// Quantiles in (0, 1); none when only `raw_buckets` are asked for (Prometheus-style
    /// outputs then export their default summary).
    Quantiles(Arc<[f64]>),
}

impl Shape {
    /// Quantiles a mapping asked for, or buckets: not the default summary.
    pub fn is_set(&self) -> bool {
        !matches!(self, Shape::Quantiles(qs) if qs.is_empty())
    }
}

/// What was observed in one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub plan: Arc<Observe>,
    /// For buckets: the weighted count of values `<= bound`, one per bound (cumulative).
    /// For quantiles: the value at each quantile, in the exported unit.
    pub values: Vec<f64>,
    /// For `raw_buckets`: the weighted count of values `<= bound`, one per bound.
    pub raw_counts: Vec<f64>,
}

impl Observe {
    /// Observes sorted exact values; `sampled` holds the values sent with a rate below 1
    /// and what each stands for beyond itself (1/rate - 1), so every value counts 1/rate
    /// times.
    pub(super) fn sorted(self: &Arc<Observe>, sorted: &[f64], sampled: &[(f64, f64)]) -> Observed {
        let n = sorted.len();
        // How many values satisfy `within` (true for a prefix of the sorted values), each
        // counted 1/rate times.
        let count_where = |within: &dyn Fn(f64) -> bool| {
            let extra: f64 = sampled
                .iter()
                .filter(|(v, _)| within(*v))
                .map(|(_, w)| w)
                .sum();
            sorted.partition_point(|&v| within(v)) as f64 + extra
        };
        let values = match &self.shape {
            Shape::Buckets(bounds) => bounds
                .iter()
                .map(|&le| count_where(&|v| v / self.divisor <= le))
                .collect(),
            Shape::Quantiles(qs) => qs
                .iter()
                .map(|&q| sorted.get(rank(q, n as u64) as usize).copied())
                .map(|v| v.map_or(f64::NAN, |v| v / self.divisor))
                .collect(),
        };
        let raw_counts = self.raw_buckets.as_deref().map_or(Vec::new(), |bounds| {
            bounds.iter().map(|&le| count_where(&|v| v <= le)).collect()
        });
        Observed {
            plan: self.clone(),
            values,
            raw_counts,
        }
    }

    /// Observes a sketched interval (within the sketch's 0.1 %); past `exact_samples` no
    /// value keeps its rate, so each weighs the interval's mean, `count / n`.
    pub(super) fn sketched(self: &Arc<Observe>, sketch: &Sketch, count: f64) -> Observed {
        let n = sketch.len();
        let values = match &self.shape {
            Shape::Buckets(bounds) => {
                let weight = weight(count, n);
                bounds
                    .iter()
                    .map(|&le| sketch.count_where(|v| v / self.divisor <= le) as f64 * weight)
                    .collect()
            }
            Shape::Quantiles(qs) => qs
                .iter()
                .map(|&q| sketch.value_at(rank(q, n)) / self.divisor)
                .collect(),
        };
        let weight = weight(count, n);
        let raw_counts = self.raw_buckets.as_deref().map_or(Vec::new(), |bounds| {
            bounds
                .iter()
                .map(|&le| sketch.count_where(|v| v <= le) as f64 * weight)
                .collect()
        });
        Observed {
            plan: self.clone(),
            values,
            raw_counts,
        }
    }
}

/// The weight of one raw value: the interval's count over its values.
fn weight(count: f64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { count / n as f64 }
}

/// The 0-based rank of quantile `q` among `n` values: `round(q n)`-th value, as §2's
/// percentiles, and at least the first.
fn rank(q: f64, n: u64) -> u64 {
    let k = (q * n as f64).round() as u64;
    k.clamp(1, n.max(1)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(shape: Shape, divisor: f64) -> Arc<Observe> {
        Arc::new(Observe {
            shape,
            divisor,
            raw_buckets: None,
        })
    }

    #[test]
    fn buckets_count_values_at_or_below_each_bound() {
        let p = plan(Shape::Buckets(Arc::from([1.0, 2.0, 5.0])), 1.0);
        let got = p.sorted(&[0.5, 1.0, 1.5, 2.0, 9.0], &[]);
        assert_eq!(got.values, [2.0, 4.0, 4.0]);
    }

    #[test]
    fn timer_buckets_compare_in_seconds() {
        let p = plan(Shape::Buckets(Arc::from([0.1, 0.25])), 1000.0);
        // 100 ms is exactly 0.1 s: counted in le="0.1".
        let got = p.sorted(&[50.0, 100.0, 200.0, 300.0], &[]);
        assert_eq!(got.values, [2.0, 3.0]);
    }

    #[test]
    fn bucket_counts_carry_each_values_sample_rate() {
        // 0.5 sent at @0.5 stands for two, 0.7 at @0.25 for four, 3.0 at rate 1 for one.
        let p = plan(Shape::Buckets(Arc::from([0.6, 1.0])), 1.0);
        let got = p.sorted(&[0.5, 0.7, 3.0], &[(0.5, 1.0), (0.7, 3.0)]);
        assert_eq!(got.values, [2.0, 6.0]);
    }

    #[test]
    fn raw_buckets_count_in_the_unit_received() {
        let p = Arc::new(Observe {
            shape: Shape::Quantiles(Arc::from([])),
            divisor: 1000.0,
            raw_buckets: Some(Arc::from([100.0, 250.0])),
        });
        // Sent at @0.5: each value counts twice (stands for one more than itself).
        let values = [50.0, 100.0, 200.0, 300.0];
        let sampled: Vec<(f64, f64)> = values.iter().map(|v| (*v, 1.0)).collect();
        let got = p.sorted(&values, &sampled);
        assert_eq!(got.raw_counts, [4.0, 6.0]);
        assert!(got.values.is_empty());
        assert!(!p.shape.is_set());
    }

    #[test]
    fn quantiles_take_the_rounded_rank() {
        let p = plan(Shape::Quantiles(Arc::from([0.5, 0.75, 0.01])), 1.0);
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        // round(5) = 5th, round(7.5) = 8th, round(0.1) = 0 -> the first.
        assert_eq!(p.sorted(&values, &[]).values, [5.0, 8.0, 1.0]);
    }
}
