//! Histogram bin bounds for one name pattern and their precomputed figure names
//! (`bin_<b>` per bound, then `bin_inf`).

/// Histogram bin bounds for one name pattern, strictly increasing and finite; names precomputed.
#[derive(Debug, Clone, PartialEq)]
pub struct Bins {
    bounds: Vec<f64>,
    names: Vec<String>,
}

impl Bins {
    /// Validates the bounds and spells the bin names (`-0` is spelled `0`).
    ///
    /// # Errors
    ///
    /// A message when the list is empty, a bound is not finite, or the bounds are not strictly
    /// increasing.
    pub fn new(bounds: Vec<f64>) -> Result<Bins, String> {
        if bounds.is_empty() {
            return Err("bins must list at least one bound".to_string());
        }
        if let Some(b) = bounds.iter().find(|b| !b.is_finite()) {
            return Err(format!("bin bound {b} is not a finite number"));
        }
        if let Some(pair) = bounds.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(format!(
                "bin bounds must be strictly increasing, but {} is followed by {}",
                pair[0], pair[1]
            ));
        }
        // `-0.0 + 0.0` is `+0.0`: a `-0` bound is zero, not negative.
        let bounds: Vec<f64> = bounds.into_iter().map(|b| b + 0.0).collect();
        let mut names: Vec<String> = bounds.iter().map(|b| bin_name(*b)).collect();
        names.push("bin_inf".to_string());
        Ok(Bins { bounds, names })
    }

    /// The bin of a value: `i` when `bounds[i-1] <= v < bounds[i]` (0 below the first bound),
    /// `bounds().len()` (`bin_inf`) at or above the last bound.
    pub fn index(&self, v: f64) -> usize {
        self.bounds.partition_point(|b| *b <= v)
    }

    /// The validated bounds, ascending.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// How many bins there are: one per bound plus `bin_inf`.
    pub fn bin_count(&self) -> usize {
        self.names.len()
    }

    /// The bin names in record order, `bin_inf` last.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// `bin_<b>`: the shortest decimal spelling of the bound with `.` as `_`.
fn bin_name(bound: f64) -> String {
    format!("bin_{}", format!("{bound}").replace('.', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins(bounds: &[f64]) -> Bins {
        Bins::new(bounds.to_vec()).unwrap()
    }

    #[test]
    fn names_spell_bounds_with_underscore_and_end_with_inf() {
        assert_eq!(
            bins(&[-5.0, 0.5, 10.0]).names(),
            ["bin_-5", "bin_0_5", "bin_10", "bin_inf"]
        );
        assert_eq!(
            bins(&[-0.25, 1e-7]).names(),
            ["bin_-0_25", "bin_0_0000001", "bin_inf"]
        );
    }

    #[test]
    fn minus_zero_bound_is_spelled_zero() {
        let b = bins(&[-1.0, -0.0, 1.0]);
        assert_eq!(b.names(), ["bin_-1", "bin_0", "bin_1", "bin_inf"]);
        assert!(b.bounds()[1].is_sign_positive());
    }

    #[test]
    fn first_bin_takes_everything_below_its_bound() {
        let b = bins(&[10.0, 100.0]);
        assert_eq!(b.index(-1e300), 0);
        assert_eq!(b.index(9.999), 0);
    }

    #[test]
    fn value_on_a_bound_belongs_to_the_bin_above() {
        let b = bins(&[10.0, 100.0]);
        assert_eq!(b.index(10.0), 1);
        assert_eq!(b.index(99.99), 1);
        assert_eq!(b.index(100.0), 2);
    }

    #[test]
    fn values_at_or_above_the_last_bound_go_to_inf() {
        let b = bins(&[10.0, 100.0]);
        assert_eq!(b.index(100.0), b.bin_count() - 1);
        assert_eq!(b.index(1e300), b.bin_count() - 1);
    }

    #[test]
    fn negative_bounds_and_zero_split_the_line() {
        let b = bins(&[-5.0, 0.0, 5.0]);
        assert_eq!(b.index(-6.0), 0);
        assert_eq!(b.index(-5.0), 1);
        assert_eq!(b.index(-0.001), 1);
        assert_eq!(b.index(0.0), 2);
        assert_eq!(b.index(-0.0), 2);
        assert_eq!(b.index(5.0), 3);
    }

    #[test]
    fn invalid_bounds_are_rejected() {
        assert!(Bins::new(vec![]).is_err());
        assert!(Bins::new(vec![1.0, 1.0]).is_err());
        assert!(Bins::new(vec![2.0, 1.0]).is_err());
        assert!(Bins::new(vec![1.0, f64::NAN]).is_err());
        assert!(Bins::new(vec![f64::INFINITY]).is_err());
        assert!(Bins::new(vec![-0.0, 0.0]).is_err());
    }

    #[test]
    fn nan_lookup_does_not_panic() {
        assert!(bins(&[1.0]).index(f64::NAN) <= 1);
    }
}
