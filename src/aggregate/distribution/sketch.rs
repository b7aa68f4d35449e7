//! Histogram mode: exact running totals plus a bounded-memory sketch of every value, for a
//! series that got more than `exact_samples` values this interval. Order statistics (median,
//! percentile bounds) and percentile sums come from the sketch; see the module header.

use super::Percentile;
use super::figures::{Summary, Tail};
use super::magnitude::Magnitudes;

/// Running totals and the sketch of one series' values.
#[derive(Debug)]
pub(super) struct Sketch {
    n: u64,
    sum: CompensatedSum,
    sum_squares: CompensatedSum,
    lower: f64,
    upper: f64,
    /// Welford's running mean and sum of squared deviations, for `std`.
    running_mean: f64,
    m2: f64,
    zeros: u64,
    positive: Option<Magnitudes>,
    negative: Option<Magnitudes>,
}

impl Sketch {
    /// A sketch of `values` followed by `next`, each sign scaled once for its whole range.
    pub(super) fn from_values(values: &[f64], next: f64) -> Sketch {
        let all = || values.iter().copied().chain(std::iter::once(next));
        let mut sketch = Sketch {
            n: 0,
            sum: CompensatedSum::default(),
            sum_squares: CompensatedSum::default(),
            lower: f64::INFINITY,
            upper: f64::NEG_INFINITY,
            running_mean: 0.0,
            m2: 0.0,
            zeros: 0,
            positive: magnitudes_for(all().filter(|v| *v > 0.0)),
            negative: magnitudes_for(all().filter(|v| *v < 0.0).map(f64::abs)),
        };
        for v in all() {
            sketch.record(v);
        }
        sketch
    }

    /// Records one finite value.
    pub(super) fn record(&mut self, v: f64) {
        self.n += 1;
        self.sum.add(v);
        self.sum_squares.add(v * v);
        self.lower = self.lower.min(v);
        self.upper = self.upper.max(v);
        let delta = v - self.running_mean;
        self.running_mean += delta / self.n as f64;
        self.m2 += delta * (v - self.running_mean);
        if v > 0.0 {
            record_magnitude(&mut self.positive, v);
        } else if v < 0.0 {
            record_magnitude(&mut self.negative, -v);
        } else {
            self.zeros += 1;
        }
    }

    /// The summary and, per percentile in order, its tail (`None` where k = 0).
    pub(super) fn figures(&self, percentiles: &[Percentile]) -> (Summary, Vec<Option<Tail>>) {
        let ladder = self.ladder();
        let n = self.n as f64;
        let sum = self.sum.value();
        let summary = Summary {
            lower: self.lower,
            upper: self.upper,
            sum,
            sum_squares: self.sum_squares.value(),
            mean: sum / n,
            median: ladder.median(),
            std: (self.m2.max(0.0) / n).sqrt(),
        };
        let tails = percentiles.iter().map(|p| ladder.tail(p)).collect();
        (summary, tails)
    }

    /// The values recorded.
    pub(super) fn len(&self) -> u64 {
        self.n
    }

    /// How many values (by bucket read-back) satisfy `keep`, which holds for a prefix of
    /// the ascending values.
    pub(super) fn count_where(&self, keep: impl Fn(f64) -> bool) -> u64 {
        let ladder = self.ladder();
        let i = ladder.steps.partition_point(|s| keep(s.value));
        match i.checked_sub(1) {
            Some(last) => ladder.steps[last].end,
            None => 0,
        }
    }

    /// `V[rank]` (0-based), as the percentiles read it.
    pub(super) fn value_at(&self, rank: u64) -> f64 {
        self.ladder().value_at(rank)
    }

    /// Every value as its bucket reads back, ascending, with how many raw values it stands
    /// for; the first and the last are the exact extremes (a bucket gives one value up to
    /// each), so a receiver of these values gets `lower` and `upper` exactly.
    pub(super) fn weighted(&self) -> Vec<(f64, u64)> {
        let ladder = self.ladder();
        let mut out = Vec::with_capacity(ladder.steps.len() + 2);
        let mut left = self.n;
        for step in &ladder.steps {
            let count = step.count.min(left);
            if count > 0 {
                out.push((step.value, count));
                left -= count;
            }
        }
        if left > 0 {
            // Saturated bucket counters lost values: they go with the largest.
            out.push((self.upper, left));
        }
        if self.n >= 2 {
            take_one(&mut out, 0, self.lower, true);
            let last = out.len() - 1;
            take_one(&mut out, last, self.upper, false);
        }
        out
    }

    /// Every bucket in ascending value order: negatives, zeros, positives.
    fn ladder(&self) -> Ladder {
        Ladder::new(self.buckets(), self.n, self.lower, self.upper)
    }

    /// Every bucket as (read-back value, count), in ascending value order.
    pub(super) fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let negatives = self.negative.iter().flat_map(|m| m.buckets().rev());
        let negatives = negatives.map(|(m, count)| (-m, count));
        let zeros = Some((0.0, self.zeros)).filter(|(_, count)| *count > 0);
        let positives = self.positive.iter().flat_map(Magnitudes::buckets);
        negatives.chain(zeros).chain(positives)
    }
}

/// Moves one value of `out[at]` to an entry of its own, `value`, placed first (`front`) or
/// last.
fn take_one(out: &mut Vec<(f64, u64)>, at: usize, value: f64, front: bool) {
    let Some(entry) = out.get_mut(at) else {
        return;
    };
    if entry.0 == value {
        return;
    }
    entry.1 -= 1;
    let emptied = entry.1 == 0;
    if emptied {
        out.remove(at);
    }
    if front {
        out.insert(0, (value, 1));
    } else {
        out.push((value, 1));
    }
}

/// Magnitudes scaled for the range of `values` (all > 0), or `None` when there is none.
fn magnitudes_for(values: impl Iterator<Item = f64>) -> Option<Magnitudes> {
    let (min, max) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    (max > 0.0).then(|| Magnitudes::new(min, max)).flatten()
}

fn record_magnitude(slot: &mut Option<Magnitudes>, m: f64) {
    if slot.is_none() {
        *slot = Magnitudes::new(m, m);
    }
    if let Some(magnitudes) = slot {
        magnitudes.record(m);
    }
}

/// Neumaier's compensated sum: the running total stays within an ulp or so of the true sum.
#[derive(Debug, Default, Clone, Copy)]
struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        self.compensation += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }

    fn value(&self) -> f64 {
        // Once the sum overflows, the compensation is meaningless (inf - inf).
        if self.sum.is_finite() {
            self.sum + self.compensation
        } else {
            self.sum
        }
    }
}

/// One bucket: its read-back value, its count, and the count up to and including it.
#[derive(Debug, Clone, Copy)]
struct Step {
    value: f64,
    count: u64,
    end: u64,
}

/// The sketch's buckets in ascending order, for rank lookups and tail sums.
#[derive(Debug)]
struct Ladder {
    steps: Vec<Step>,
    n: u64,
    lower: f64,
    upper: f64,
}

impl Ladder {
    /// Clamps every bucket value into `[lower, upper]` (the exact extremes).
    fn new(buckets: impl Iterator<Item = (f64, u64)>, n: u64, lower: f64, upper: f64) -> Ladder {
        let mut end = 0_u64;
        let steps = buckets
            .map(|(value, count)| {
                end = end.saturating_add(count);
                let value = value.max(lower).min(upper);
                Step { value, count, end }
            })
            .collect();
        Ladder {
            steps,
            n,
            lower,
            upper,
        }
    }

    /// `V[rank]` (0-based). The first and last ranks are the exact extremes.
    fn value_at(&self, rank: u64) -> f64 {
        if rank == 0 {
            return self.lower;
        }
        if rank.saturating_add(1) >= self.n {
            return self.upper;
        }
        let i = self.steps.partition_point(|s| s.end <= rank);
        self.steps
            .get(i)
            .or(self.steps.last())
            .map_or(self.upper, |s| s.value)
    }

    fn median(&self) -> f64 {
        let mid = self.n / 2;
        match mid.checked_sub(1) {
            Some(below) if self.n.is_multiple_of(2) => {
                (self.value_at(below) + self.value_at(mid)) / 2.0
            }
            _ => self.value_at(mid),
        }
    }

    fn tail(&self, percentile: &Percentile) -> Option<Tail> {
        let k = percentile.covered(self.n);
        if k == 0 {
            return None;
        }
        let (bound, (sum, sum_squares)) = if percentile.is_bottom() {
            (self.value_at(k - 1), sums(self.steps.iter(), k))
        } else {
            (self.value_at(self.n - k), sums(self.steps.iter().rev(), k))
        };
        Some(Tail::new(k, bound, sum, sum_squares))
    }
}

/// Σv and Σv² over the first `k` values the steps yield.
fn sums<'a>(steps: impl Iterator<Item = &'a Step>, k: u64) -> (f64, f64) {
    let (mut left, mut sum, mut squares) = (k, 0.0, 0.0);
    for step in steps {
        if left == 0 {
            break;
        }
        let taken = step.count.min(left);
        left -= taken;
        sum += step.value * taken as f64;
        squares += step.value * step.value * taken as f64;
    }
    (sum, squares)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(values: &[f64]) -> Sketch {
        let (last, head) = values.split_last().unwrap();
        Sketch::from_values(head, *last)
    }

    fn p(value: f64) -> Percentile {
        Percentile::new(value).unwrap()
    }

    fn assert_within(got: f64, want: f64, relative: f64) {
        assert!(
            (got - want).abs() <= relative * want.abs(),
            "{got} vs {want}"
        );
    }

    #[test]
    fn weighted_values_count_every_value_and_keep_the_extremes_exact() {
        let values: Vec<f64> = (1..=5000).map(|i| f64::from(i) * 0.37).collect();
        let s = sketch(&values);
        let weighted = s.weighted();
        assert_eq!(weighted.iter().map(|(_, w)| w).sum::<u64>(), 5000);
        assert_eq!(weighted.first(), Some(&(0.37, 1)));
        assert_eq!(weighted.last(), Some(&(5000.0 * 0.37, 1)));
        assert!(weighted.windows(2).all(|w| w[0].0 <= w[1].0), "ascending");
        let sum: f64 = weighted.iter().map(|(v, w)| v * *w as f64).sum();
        assert_within(sum, values.iter().sum(), 1e-3);
    }

    #[test]
    fn running_totals_are_exact() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let (s, _) = sketch(&values).figures(&[]);
        assert_eq!(
            (s.lower, s.upper, s.sum, s.mean),
            (1.0, 1000.0, 500_500.0, 500.5)
        );
        assert_eq!(s.sum_squares, 333_833_500.0);
        assert_within(s.std, 288.674_990_257_210_2, 1e-12);
    }

    #[test]
    fn median_and_percentiles_come_from_the_sketch_within_a_tenth_of_a_percent() {
        let values: Vec<f64> = (1..=1000).map(|i| f64::from(i) * 1.37).collect();
        let (s, tails) = sketch(&values).figures(&[p(90.0), p(-10.0), p(99.9)]);
        assert_within(s.median, (500.0 + 501.0) / 2.0 * 1.37, 1e-3);
        let [t90, top10, t999] = [tails[0].unwrap(), tails[1].unwrap(), tails[2].unwrap()];
        assert_within(t90.bound, 900.0 * 1.37, 1e-3);
        assert_eq!(t90.count, 900.0);
        assert_within(t90.sum, 405_450.0 * 1.37, 1e-3);
        assert_within(top10.bound, 901.0 * 1.37, 1e-3);
        assert_within(top10.sum, 95_050.0 * 1.37, 1e-3);
        assert_within(t999.bound, 999.0 * 1.37, 1e-3);
    }

    #[test]
    fn negatives_and_zeros_rank_below_positives() {
        let values = [5.0, -3.0, 0.0, -200.0, 0.0, 7.0, -0.5];
        let (s, tails) = sketch(&values).figures(&[p(30.0), p(60.0), p(-30.0)]);
        // sorted: -200 -3 -0.5 0 0 5 7
        assert_eq!((s.lower, s.upper, s.median), (-200.0, 7.0, 0.0));
        assert_within(tails[0].unwrap().bound, -3.0, 1e-3);
        assert_within(tails[1].unwrap().bound, 0.0, 1e-3);
        assert_within(tails[2].unwrap().bound, 5.0, 1e-3);
    }

    #[test]
    fn extremes_of_the_ladder_are_the_exact_lower_and_upper() {
        let values = [1.000_01, 3.3, 2.2, 9.876_54];
        let (_, tails) = sketch(&values).figures(&[p(100.0), p(-100.0)]);
        assert_eq!(tails[0].unwrap().bound, 9.876_54);
        assert_eq!(tails[1].unwrap().bound, 1.000_01);
    }

    #[test]
    fn compensated_sum_survives_cancellation() {
        let (s, _) = sketch(&[1e16, 1.0, -1e16, 1.0]).figures(&[]);
        assert_eq!(s.sum, 2.0);
    }

    #[test]
    fn overflowing_sums_are_infinite_not_nan() {
        let (s, _) = sketch(&[f64::MAX, f64::MAX, 1.0]).figures(&[]);
        assert_eq!(s.sum, f64::INFINITY);
        assert_eq!(s.sum_squares, f64::INFINITY);
        assert_eq!(s.upper, f64::MAX);
    }

    #[test]
    fn values_across_the_whole_f64_range_stay_ordered_and_clamped() {
        let mut values: Vec<f64> = (-300..=300).step_by(3).map(|e| 10f64.powi(e)).collect();
        values.extend(values.clone().iter().map(|v| -v));
        let (s, tails) = sketch(&values).figures(&[p(99.0), p(-1.0), p(50.0)]);
        // The largest value as this build computed it: `powi` may round differently when
        // the compiler folds it into a constant (release builds do).
        let largest = values.iter().copied().fold(0.0, f64::max);
        assert_eq!((s.lower, s.upper), (-largest, largest));
        for t in tails.iter().flatten() {
            assert!(t.bound >= s.lower && t.bound <= s.upper);
        }
        // k = round(0.99 * 402) = 398; V[397] is within 2^49 of the largest positive.
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        assert_within(tails[0].unwrap().bound, sorted[397], 1e-3);
    }
}
