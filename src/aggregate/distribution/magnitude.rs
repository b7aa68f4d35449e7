//! One sign's magnitudes in an hdrhistogram: the f64 -> u64 mapping described in the module
//! header (a power-of-two scale per histogram, rebuilt when the exponent range widens).

use hdrhistogram::Histogram;

/// Significant decimal digits hdrhistogram keeps: buckets at most 1/1024 of their value wide.
const SIGFIG: u8 = 3;
/// Binary exponent the smallest magnitude scales to: scaled values start at 2^11 = 2048.
const LOW_EXP: i32 = 11;
/// Binary exponent the largest magnitude scales to at most: scaled values stay below 2^61.
const HIGH_EXP: i32 = 60;
/// Cap on a recorded integer, well inside hdrhistogram's auto-resize limit of 2^62 - 1.
const MAX_SCALED: u64 = 1 << 61;

/// Positive magnitudes recorded as `round(m * 2^shift)` in a 3-significant-figure histogram.
#[derive(Debug)]
pub(super) struct Magnitudes {
    hist: Histogram<u32>,
    shift: i32,
    min_exp: i32,
    max_exp: i32,
}

impl Magnitudes {
    /// An empty histogram scaled for magnitudes between `min` and `max` (both > 0).
    ///
    /// `None` only if hdrhistogram refused its constant parameters.
    pub(super) fn new(min: f64, max: f64) -> Option<Magnitudes> {
        let (min_exp, max_exp) = (exponent(min), exponent(max));
        Some(Magnitudes {
            hist: Histogram::new(SIGFIG).ok()?,
            shift: shift_for(min_exp, max_exp),
            min_exp,
            max_exp,
        })
    }

    /// Records one magnitude (> 0), rescaling first if it widens the exponent range.
    pub(super) fn record(&mut self, m: f64) {
        self.widen(exponent(m));
        record_n(&mut self.hist, to_integer(scale(m, self.shift)), 1);
    }

    /// (magnitude, count) of every non-empty bucket, ascending: bucket midpoints read back
    /// (the top bucket's midpoint may lie past `f64::MAX`; it reads back as `f64::MAX`).
    pub(super) fn buckets(&self) -> impl DoubleEndedIterator<Item = (f64, u64)> + '_ {
        let shift = self.shift;
        self.midpoints().map(move |(mid, count)| {
            let magnitude = scale(mid as f64, -shift).min(f64::MAX);
            (magnitude, u64::from(count))
        })
    }

    /// How many counters the histogram holds (its memory is 4 bytes each).
    #[cfg(test)]
    pub(super) fn counters(&self) -> usize {
        self.hist.distinct_values()
    }

    fn widen(&mut self, e: i32) {
        if (self.min_exp..=self.max_exp).contains(&e) {
            return;
        }
        self.min_exp = self.min_exp.min(e);
        self.max_exp = self.max_exp.max(e);
        let shift = shift_for(self.min_exp, self.max_exp);
        if shift != self.shift {
            self.rescale(shift);
        }
    }

    /// Rebuilds the histogram under a new shift by re-recording each bucket's midpoint.
    fn rescale(&mut self, shift: i32) {
        let Ok(mut fresh) = Histogram::<u32>::new(SIGFIG) else {
            return;
        };
        let by = shift - self.shift;
        for (mid, count) in self.midpoints() {
            record_n(&mut fresh, to_integer(scale(mid as f64, by)), count);
        }
        self.hist = fresh;
        self.shift = shift;
    }

    /// (midpoint, count) of every non-empty bucket in scaled units, ascending. Collected so
    /// the iterator can run backwards (negatives are read largest magnitude first).
    fn midpoints(&self) -> std::vec::IntoIter<(u64, u32)> {
        let points: Vec<(u64, u32)> = self
            .hist
            .iter_recorded()
            .map(|item| {
                let high = item.value_iterated_to();
                let low = self.hist.lowest_equivalent(high);
                let width = high.saturating_sub(low);
                (low + width / 2 + width % 2, item.count_at_value())
            })
            .collect();
        points.into_iter()
    }
}

/// The shift that puts `min_exp` at [`LOW_EXP`], unless `max_exp` would pass [`HIGH_EXP`].
fn shift_for(min_exp: i32, max_exp: i32) -> i32 {
    (LOW_EXP - min_exp).min(HIGH_EXP - max_exp)
}

/// Records without losing the count: out of range (never by construction) means clamp.
fn record_n(hist: &mut Histogram<u32>, value: u64, count: u32) {
    if hist.record_n(value, count).is_err() {
        hist.saturating_record_n(value, count);
    }
}

/// Rounds a scaled magnitude to the integer hdrhistogram records (NaN becomes 0).
fn to_integer(scaled: f64) -> u64 {
    (scaled.round() as u64).min(MAX_SCALED)
}

/// `e` with `2^e <= m < 2^(e+1)`, for normal and subnormal `m > 0`.
pub(super) fn exponent(m: f64) -> i32 {
    let bits = m.abs().to_bits();
    let biased = (bits >> 52) as i32;
    if biased == 0 {
        // Subnormal: m = mantissa * 2^-1074.
        let mantissa = bits & ((1 << 52) - 1);
        63 - mantissa.leading_zeros() as i32 - 1074
    } else {
        biased - 1023
    }
}

/// `x * 2^e`, exact unless the result leaves f64's range (steps keep each factor finite).
pub(super) fn scale(mut x: f64, mut e: i32) -> f64 {
    const STEP: i32 = 1000;
    while e > STEP {
        x *= pow2(STEP);
        e -= STEP;
    }
    while e < -STEP {
        x *= pow2(-STEP);
        e += STEP;
    }
    x * pow2(e)
}

/// `2^e` for `-1022 <= e <= 1023`, built from its bits.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worst relative read-back error of the mapping: half a bucket plus the rounding.
    const BOUND: f64 = 1.0 / 2048.0 + 1.0 / 4096.0;

    fn read_back(m: &Magnitudes) -> Vec<f64> {
        m.buckets()
            .flat_map(|(v, c)| std::iter::repeat_n(v, c as usize))
            .collect()
    }

    fn assert_close(got: f64, want: f64) {
        let err = (got - want).abs() / want;
        assert!(err <= BOUND, "{got} vs {want}: relative error {err}");
    }

    #[test]
    fn exponent_of_normals_and_subnormals() {
        assert_eq!(exponent(1.0), 0);
        assert_eq!(exponent(1.999), 0);
        assert_eq!(exponent(2.0), 1);
        assert_eq!(exponent(0.75), -1);
        assert_eq!(exponent(f64::MAX), 1023);
        assert_eq!(exponent(f64::MIN_POSITIVE), -1022);
        assert_eq!(exponent(f64::MIN_POSITIVE / 2.0), -1023);
        assert_eq!(exponent(5e-324), -1074);
    }

    #[test]
    fn scale_is_an_exact_power_of_two_across_the_range() {
        assert_eq!(scale(5e-324, 1085), 2048.0);
        assert_eq!(scale(2048.0, -1085), 5e-324);
        assert_eq!(
            scale(f64::MAX, -1023 - 60),
            f64::MAX / 2f64.powi(1023) / 2f64.powi(60)
        );
        assert_eq!(scale(3.0, 0), 3.0);
    }

    #[test]
    fn one_value_reads_back_within_the_bound_at_any_magnitude() {
        for m in [
            5e-324,
            1e-300,
            1e-9,
            0.001,
            0.3,
            1.0,
            7.0,
            1234.5678,
            1e15,
            1e300,
            f64::MAX,
        ] {
            let mut mags = Magnitudes::new(m, m).unwrap();
            mags.record(m);
            assert_close(read_back(&mags)[0], m);
        }
    }

    #[test]
    fn smaller_value_later_rescales_without_losing_earlier_ones() {
        let mut mags = Magnitudes::new(1000.0, 1000.0).unwrap();
        let values = [1000.0, 1500.25, 999_999.0, 0.0001, 3.5e-7];
        for v in values {
            mags.record(v);
        }
        let mut sorted = values;
        sorted.sort_by(f64::total_cmp);
        for (got, want) in read_back(&mags).into_iter().zip(sorted) {
            assert_close(got, want);
        }
    }

    #[test]
    fn larger_value_later_keeps_the_window_precise() {
        let mut mags = Magnitudes::new(1.0, 1.0).unwrap();
        let values = [1.0, 2.5, 1e6, 1e12];
        for v in values {
            mags.record(v);
        }
        for (got, want) in read_back(&mags).into_iter().zip(values) {
            assert_close(got, want);
        }
    }

    #[test]
    fn memory_stays_bounded_over_the_whole_f64_range() {
        let mut mags = Magnitudes::new(1.0, 1.0).unwrap();
        for e in (-1074..=1023).step_by(7) {
            mags.record(scale(1.0, e));
        }
        mags.record(f64::MAX);
        mags.record(5e-324);
        assert!(mags.counters() <= 53 * 1024, "{} counters", mags.counters());
        let values = read_back(&mags);
        assert_eq!(values.len(), 2 + (-1074..=1023).step_by(7).count());
        assert_close(*values.last().unwrap(), f64::MAX);
        assert!(values.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn narrow_ranges_use_little_memory() {
        let mut mags = Magnitudes::new(1.0, 1.0).unwrap();
        for i in 1..=10_000 {
            mags.record(f64::from(i) / 10.0);
        }
        // 0.1 .. 1000 spans 14 binary orders: about 15 * 1024 counters.
        assert!(mags.counters() <= 16 * 1024, "{} counters", mags.counters());
    }
}
