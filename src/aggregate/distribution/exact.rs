//! Exact mode: every figure of SPEC §2 from the interval's raw values, sorted ascending.
//! Sums run in ascending order; the standard deviation takes two passes.

use super::Percentile;
use super::figures::{Summary, Tail};

/// lower, upper, sum, sum_squares, mean, median, std of sorted values; `None` when empty.
pub(super) fn summary(sorted: &[f64]) -> Option<Summary> {
    let (&lower, &upper) = (sorted.first()?, sorted.last()?);
    let n = sorted.len() as f64;
    let (sum, sum_squares) = sums(sorted);
    let mean = sum / n;
    Some(Summary {
        lower,
        upper,
        sum,
        sum_squares,
        mean,
        median: median(sorted),
        std: std(sorted, mean),
    })
}

/// The figures of one percentile, `None` when it covers no value (k = 0).
pub(super) fn tail(sorted: &[f64], percentile: &Percentile) -> Option<Tail> {
    let n = sorted.len();
    let k = usize::try_from(percentile.covered(n as u64)).ok()?;
    if k == 0 {
        return None;
    }
    let (covered, bound) = if percentile.is_bottom() {
        (sorted.get(..k)?, *sorted.get(k - 1)?)
    } else {
        (sorted.get(n - k..)?, *sorted.get(n - k)?)
    };
    let (sum, sum_squares) = sums(covered);
    Some(Tail::new(k as u64, bound, sum, sum_squares))
}

/// Σv and Σv², in the order given (ascending for sorted input).
fn sums(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((0.0, 0.0), |(sum, squares), v| (sum + v, squares + v * v))
}

/// The middle value, or the mean of the two middle values when n is even (NaN when empty).
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    let upper = sorted.get(mid).copied().unwrap_or(f64::NAN);
    let below = mid.checked_sub(1).and_then(|i| sorted.get(i));
    match below {
        Some(lower) if sorted.len().is_multiple_of(2) => (lower + upper) / 2.0,
        _ => upper,
    }
}

/// Population standard deviation: sqrt(Σ(v - mean)² / n), the mean computed first.
fn std(values: &[f64], mean: f64) -> f64 {
    let squared_diffs: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (squared_diffs / values.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(value: f64) -> Percentile {
        Percentile::new(value).unwrap()
    }

    #[test]
    fn median_of_odd_count_is_the_middle_value() {
        assert_eq!(summary(&[1.0, 2.0, 10.0]).unwrap().median, 2.0);
        assert_eq!(summary(&[7.0]).unwrap().median, 7.0);
    }

    #[test]
    fn median_of_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(summary(&[1.0, 2.0, 4.0, 10.0]).unwrap().median, 3.0);
        assert_eq!(summary(&[-1.0, 0.0]).unwrap().median, -0.5);
    }

    #[test]
    fn std_is_the_population_standard_deviation() {
        let s = summary(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.std, 2.0);
        assert_eq!(summary(&[3.0]).unwrap().std, 0.0);
    }

    #[test]
    fn summary_of_the_spec_example_record() {
        let s = summary(&[10.0, 20.0, 30.0]).unwrap();
        assert_eq!(
            (s.lower, s.upper, s.sum, s.sum_squares),
            (10.0, 30.0, 60.0, 1400.0)
        );
        assert_eq!((s.mean, s.median), (20.0, 20.0));
        assert!((s.std - 8.164_965_809_277_26).abs() < 1e-12);
    }

    #[test]
    fn empty_values_have_no_summary() {
        assert_eq!(summary(&[]), None);
    }

    #[test]
    fn bottom_percentile_covers_the_lowest_k() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let t = tail(&v, &p(90.0)).unwrap();
        assert_eq!(t, Tail::new(9, 9.0, 45.0, 285.0));
        assert_eq!(t.mean, 5.0);
    }

    #[test]
    fn fractional_percentile_rounds_k_half_up() {
        let v: Vec<f64> = (1..=5).map(f64::from).collect();
        // 99.9 % of 5 is 4.995 -> 5; 50 % of 5 is 2.5 -> 3.
        assert_eq!(tail(&v, &p(99.9)).unwrap().bound, 5.0);
        assert_eq!(tail(&v, &p(50.0)).unwrap(), Tail::new(3, 3.0, 6.0, 14.0));
    }

    #[test]
    fn top_percentile_covers_the_highest_k() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let t = tail(&v, &p(-20.0)).unwrap();
        assert_eq!(t, Tail::new(2, 9.0, 19.0, 181.0));
        let all = tail(&v, &p(-100.0)).unwrap();
        assert_eq!((all.bound, all.count, all.sum), (1.0, 10.0, 55.0));
    }

    #[test]
    fn percentile_covering_no_value_is_omitted() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(tail(&v, &p(10.0)), None);
        assert_eq!(tail(&v, &p(-12.4)), None);
    }

    #[test]
    fn single_value_is_every_percentile_figure() {
        for percentile in [1.0, 50.0, 99.9, -10.0] {
            assert_eq!(
                tail(&[4.0], &p(percentile)),
                Some(Tail::new(1, 4.0, 4.0, 16.0))
            );
        }
    }
}
