//! One configured percentile: its value, the number of values it covers, and its five
//! precomputed figure names (`count_P`, `mean_P`, `upper_P` or `lower_topP`, `sum_P`,
//! `sum_squares_P`).

/// One configured percentile (90, 99.9, -10).
#[derive(Debug, Clone, PartialEq)]
pub struct Percentile {
    p: f64,
    names: [String; 5],
}

impl Percentile {
    /// Builds a percentile and spells its figure names.
    ///
    /// # Errors
    ///
    /// A message when `p` is 0, not finite, or `|p| > 100`.
    pub fn new(p: f64) -> Result<Percentile, String> {
        if !p.is_finite() || p == 0.0 || p.abs() > 100.0 {
            return Err(format!(
                "percentile {p} must be a non-zero number between -100 and 100"
            ));
        }
        let spelled = spell(p);
        let bound = if p > 0.0 { "upper" } else { "lower" };
        let names = [
            format!("count_{spelled}"),
            format!("mean_{spelled}"),
            format!("{bound}_{spelled}"),
            format!("sum_{spelled}"),
            format!("sum_squares_{spelled}"),
        ];
        Ok(Percentile { p, names })
    }

    /// The configured value, sign included.
    pub fn value(&self) -> f64 {
        self.p
    }

    /// The figure names in record order: count, mean, bound, sum, sum_squares.
    pub fn names(&self) -> &[String; 5] {
        &self.names
    }

    /// True for a bottom percentile (`p > 0`, the lowest values), false for a `top` one.
    pub fn is_bottom(&self) -> bool {
        self.p > 0.0
    }

    /// k: how many of `n` sorted values this percentile covers (0 means: emit nothing).
    ///
    /// `round(|p| / 100 * n)` evaluated in this order so it matches JavaScript's
    /// `Math.round(Math.abs(p) / 100 * n)` bit for bit (halves round up; the product is never
    /// negative). A single value is covered by every percentile, as in etsy statsd.
    pub fn covered(&self, n: u64) -> u64 {
        if n == 1 {
            return 1;
        }
        let k = (self.p.abs() / 100.0 * n as f64).round();
        (k as u64).min(n)
    }
}

/// P of SPEC §2: the shortest decimal spelling of `|p|`, `.` as `_`, negative as `top`.
fn spell(p: f64) -> String {
    let digits = format!("{}", p.abs()).replace('.', "_");
    if p < 0.0 {
        format!("top{digits}")
    } else {
        digits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: f64) -> Vec<String> {
        Percentile::new(p).unwrap().names().to_vec()
    }

    #[test]
    fn integer_percentile_names_have_no_fraction() {
        assert_eq!(
            names(90.0),
            [
                "count_90",
                "mean_90",
                "upper_90",
                "sum_90",
                "sum_squares_90"
            ]
        );
    }

    #[test]
    fn fractional_percentile_spells_dot_as_underscore() {
        assert_eq!(names(99.9)[2], "upper_99_9");
        assert_eq!(names(0.5)[0], "count_0_5");
    }

    #[test]
    fn negative_percentile_is_top_with_lower_bound() {
        assert_eq!(
            names(-10.0),
            [
                "count_top10",
                "mean_top10",
                "lower_top10",
                "sum_top10",
                "sum_squares_top10"
            ]
        );
        assert_eq!(names(-99.5)[2], "lower_top99_5");
    }

    #[test]
    fn zero_nan_infinite_and_beyond_hundred_are_rejected() {
        for p in [
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            100.5,
            -101.0,
        ] {
            assert!(Percentile::new(p).is_err(), "{p} accepted");
        }
    }

    #[test]
    fn hundred_and_minus_hundred_are_accepted() {
        assert_eq!(Percentile::new(100.0).unwrap().value(), 100.0);
        assert_eq!(Percentile::new(-100.0).unwrap().value(), -100.0);
    }

    #[test]
    fn covered_rounds_halves_up() {
        let median = Percentile::new(50.0).unwrap();
        assert_eq!(median.covered(3), 2); // 1.5 -> 2
        assert_eq!(Percentile::new(25.0).unwrap().covered(2), 1); // 0.5 -> 1
        assert_eq!(Percentile::new(95.0).unwrap().covered(10), 10); // 9.5 -> 10
    }

    #[test]
    fn covered_is_zero_when_too_few_values() {
        assert_eq!(Percentile::new(10.0).unwrap().covered(4), 0); // 0.4 -> 0
        assert_eq!(Percentile::new(-10.0).unwrap().covered(4), 0);
        assert_eq!(Percentile::new(10.0).unwrap().covered(0), 0);
    }

    #[test]
    fn covered_is_one_for_a_single_value() {
        assert_eq!(Percentile::new(10.0).unwrap().covered(1), 1);
        assert_eq!(Percentile::new(-1.0).unwrap().covered(1), 1);
    }

    #[test]
    fn covered_matches_the_javascript_formula() {
        // 99.9 / 100 * 5 is 4.995 in f64 arithmetic, which JavaScript rounds to 5.
        let p = Percentile::new(99.9).unwrap();
        assert_eq!(p.covered(5), (99.9_f64 / 100.0 * 5.0).round() as u64);
        assert_eq!(Percentile::new(100.0).unwrap().covered(7), 7);
        assert_eq!(Percentile::new(-100.0).unwrap().covered(7), 7);
    }
}
