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
}

/// Buckets or quantiles.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Strictly increasing finite bounds; `+Inf` is implied.
    Buckets(Arc<[f64]>),
    /// Quantiles in (0, 1).
    Quantiles(Arc<[f64]>),
}

/// What was observed in one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub plan: Arc<Observe>,
    /// For buckets: the weighted count of values `<= bound`, one per bound (cumulative).
    /// For quantiles: the value at each quantile, in the exported unit.
    pub values: Vec<f64>,
}

impl Observe {
    /// Observes sorted exact values; `sampled` holds the values sent with a rate below 1
    /// and what each stands for beyond itself (1/rate - 1), so every value counts 1/rate
    /// times.
    pub(super) fn sorted(self: &Arc<Observe>, sorted: &[f64], sampled: &[(f64, f64)]) -> Observed {
        let n = sorted.len();
        let values = match &self.shape {
            Shape::Buckets(bounds) => bounds
                .iter()
                .map(|&le| {
                    let within = |v: f64| v / self.divisor <= le;
                    let extra: f64 = sampled
                        .iter()
                        .filter(|(v, _)| within(*v))
                        .map(|(_, w)| w)
                        .sum();
                    sorted.partition_point(|&v| within(v)) as f64 + extra
                })
                .collect(),
            Shape::Quantiles(qs) => qs
                .iter()
                .map(|&q| sorted.get(rank(q, n as u64) as usize).copied())
                .map(|v| v.map_or(f64::NAN, |v| v / self.divisor))
                .collect(),
        };
        Observed {
            plan: self.clone(),
            values,
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
        Observed {
            plan: self.clone(),
            values,
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
        Arc::new(Observe { shape, divisor })
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
    fn quantiles_take_the_rounded_rank() {
        let p = plan(Shape::Quantiles(Arc::from([0.5, 0.75, 0.01])), 1.0);
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        // round(5) = 5th, round(7.5) = 8th, round(0.1) = 0 -> the first.
        assert_eq!(p.sorted(&values, &[]).values, [5.0, 8.0, 1.0]);
    }
}
