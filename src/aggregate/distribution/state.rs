//! The per-series state a shard owns ([`DistState`], fed on the hot path) and the snapshot it
//! hands to the flush thread at each flush ([`DistSnapshot`], turned into figures there).

use std::sync::Arc;

use super::figures::BinCounts;
use super::logsketch::LogSketch;
use super::sketch::Sketch;
use super::{Bins, DistFigures, DistributionConfig, Observe, Values, exact};

/// One series' samples for the current interval. Lives in an aggregator shard; `add` is on the
/// hot path (no allocation beyond amortized Vec growth).
#[derive(Debug, Default)]
pub struct DistState {
    /// Σ 1/rate.
    count: f64,
    samples: Samples,
    /// Raw values per bin (rates not applied), sized by the first `add` that had bins.
    bin_counts: Vec<u64>,
    /// The samples sent with a rate below 1, as (value, 1/rate - 1: what each stands for
    /// beyond itself), while the values are exact: `le` buckets and `_sum` count every value
    /// 1/rate times (SPEC §7.1). Boxed: most series never see a rate, and one word per
    /// series is cheaper than an empty `Vec`'s three.
    #[allow(clippy::box_collection)]
    sampled: Option<Box<Vec<(f64, f64)>>>,
}

/// The interval's values: raw while few, sketched beyond `exact_samples`.
#[derive(Debug)]
enum Samples {
    Exact(Vec<f64>),
    Sketch(Box<Sketch>),
}

impl Default for Samples {
    fn default() -> Samples {
        Samples::Exact(Vec::new())
    }
}

impl DistState {
    /// Records one sample: `1 / rate` into the count, the raw value into its bin and samples.
    ///
    /// Values arrive validated; should one not be finite it is ignored, and `-0` counts as 0.
    /// A rate outside `(0, 1]` counts as 1.
    pub fn add(&mut self, value: f64, rate: f64, bins: Option<&Bins>, exact_samples: usize) {
        let Some((value, rate)) = normalize(value, rate) else {
            return;
        };
        self.count += 1.0 / rate;
        if let Some(bins) = bins {
            self.count_bin(bins, value);
        }
        if rate < 1.0 && self.samples.stays_exact(exact_samples) {
            self.sampled
                .get_or_insert_default()
                .push((value, 1.0 / rate - 1.0));
        }
        self.samples.push(value, exact_samples);
    }

    /// Moves a receive thread's share of the interval in, as if each of its samples had
    /// been added here.
    pub fn absorb(&mut self, share: LocalDist, bins: Option<&Bins>, exact_samples: usize) {
        let LocalDist {
            count,
            values,
            sampled,
        } = share;
        self.count += count;
        if !sampled.is_empty()
            && self
                .samples
                .stays_exact((exact_samples + 1).saturating_sub(values.len()))
        {
            self.sampled.get_or_insert_default().extend(sampled);
        }
        if let Some(bins) = bins {
            for &value in &values {
                self.count_bin(bins, value);
            }
        }
        match &mut self.samples {
            // The commonest case, the first share of the interval: moved, not copied.
            Samples::Exact(mine) if mine.is_empty() && values.len() <= exact_samples => {
                *mine = values;
            }
            _ => {
                for value in values {
                    self.samples.push(value, exact_samples);
                }
            }
        }
    }

    /// True when no sample arrived this interval.
    pub fn is_empty(&self) -> bool {
        match &self.samples {
            Samples::Exact(values) => values.is_empty(),
            Samples::Sketch(_) => false,
        }
    }

    /// Moves the interval's samples out (cheap: moves vectors, no copy) and leaves the state
    /// empty for the next interval.
    pub fn take(&mut self) -> DistSnapshot {
        let DistState {
            count,
            samples,
            bin_counts,
            sampled,
        } = std::mem::take(self);
        DistSnapshot {
            count,
            samples,
            bin_counts,
            sampled,
        }
    }

    fn count_bin(&mut self, bins: &Bins, value: f64) {
        if self.bin_counts.len() < bins.bin_count() {
            self.bin_counts.resize(bins.bin_count(), 0);
        }
        if let Some(count) = self.bin_counts.get_mut(bins.index(value)) {
            *count = count.saturating_add(1);
        }
    }
}

impl Samples {
    /// Whether one more value is kept exact.
    fn stays_exact(&self, exact_samples: usize) -> bool {
        matches!(self, Samples::Exact(values) if values.len() < exact_samples)
    }

    fn push(&mut self, value: f64, exact_samples: usize) {
        match self {
            Samples::Sketch(sketch) => sketch.record(value),
            Samples::Exact(values) if values.len() < exact_samples => {
                push_bounded(values, value, exact_samples);
            }
            Samples::Exact(values) => {
                // One value too many: sketch them all and free the Vec.
                let sketch = Sketch::from_values(values, value);
                *self = Samples::Sketch(Box::new(sketch));
            }
        }
    }
}

/// A sample as the state keeps it: `None` for a value that is not finite, `-0` as 0, and a
/// rate outside `(0, 1]` as 1.
fn normalize(value: f64, rate: f64) -> Option<(f64, f64)> {
    if !value.is_finite() {
        return None;
    }
    let value = value + 0.0; // -0 + 0 is +0
    let rate = if rate > 0.0 && rate <= 1.0 { rate } else { 1.0 };
    Some((value, rate))
}

/// A receive thread's share of one series' interval, kept apart from the shard between
/// flushes: Σ 1/rate and the raw values, always exact and at most a cap, moved into the
/// shard's state at the flush by [`DistState::absorb`] (bins are counted there).
#[derive(Debug, Default)]
pub struct LocalDist {
    count: f64,
    values: Vec<f64>,
    /// As [`DistState`]'s: the samples sent with a rate below 1.
    sampled: Vec<(f64, f64)>,
}

impl LocalDist {
    /// Records one sample as [`DistState::add`] does; false, and nothing recorded, when the
    /// share already holds `cap` values.
    pub fn add(&mut self, value: f64, rate: f64, cap: usize) -> bool {
        if self.values.len() >= cap {
            return false;
        }
        if let Some((value, rate)) = normalize(value, rate) {
            self.count += 1.0 / rate;
            if rate < 1.0 {
                self.sampled.push((value, 1.0 / rate - 1.0));
            }
            push_bounded(&mut self.values, value, cap);
        }
        true
    }

    /// The values held.
    pub fn samples(&self) -> usize {
        self.values.len()
    }
}

/// Pushes with geometric growth that never allocates room past `limit` values.
fn push_bounded(values: &mut Vec<f64>, value: f64, limit: usize) {
    if values.len() == values.capacity() {
        let room = limit.saturating_sub(values.len()).max(1);
        values.reserve_exact(values.len().max(4).min(room));
    }
    values.push(value);
}

/// The raw samples of one interval, handed from the shard to the flush thread.
/// Send + 'static.
#[derive(Debug)]
pub struct DistSnapshot {
    count: f64,
    samples: Samples,
    bin_counts: Vec<u64>,
    #[allow(clippy::box_collection)]
    sampled: Option<Box<Vec<(f64, f64)>>>,
}

impl DistSnapshot {
    /// Computes every figure (sorting happens here, on the flush thread). `interval_s` is the
    /// configured flush interval in seconds.
    pub fn figures(
        self,
        config: &DistributionConfig,
        bins: Option<Arc<Bins>>,
        observe: Option<&Arc<Observe>>,
        interval_s: f64,
    ) -> DistFigures {
        let DistSnapshot {
            count,
            samples,
            mut bin_counts,
            sampled,
        } = self;
        let sampled = sampled.as_deref().map_or(&[][..], |s| &s[..]);
        let observed;
        let weighted_sum;
        let values;
        let mut history = None;
        let (summary, tails) = match samples {
            Samples::Exact(mut sorted) => {
                sorted.sort_unstable_by(f64::total_cmp);
                let Some(summary) = exact::summary(&sorted) else {
                    return DistFigures::idle();
                };
                observed = observe.map(|plan| Box::new(plan.sorted(&sorted, sampled)));
                // Each value 1/rate times: the sampled ones stand for more than themselves.
                weighted_sum = summary.sum + sampled.iter().map(|(v, w)| v * w).sum::<f64>();
                if config.history_sketch {
                    history = Some(Box::new(LogSketch::from_sorted(&sorted)));
                }
                let tails = config
                    .percentiles
                    .iter()
                    .map(|p| exact::tail(&sorted, p))
                    .collect();
                // Moved, not copied: the sorted values would be dropped here otherwise.
                values = config.keep_values.then(|| Box::new(Values::Exact(sorted)));
                (summary, tails)
            }
            Samples::Sketch(sketch) => {
                observed = observe.map(|plan| Box::new(plan.sketched(&sketch, count)));
                values = config
                    .keep_values
                    .then(|| Box::new(Values::Weighted(sketch.weighted())));
                if config.history_sketch {
                    history = Some(Box::new(LogSketch::from_weighted(sketch.buckets())));
                }
                let (summary, tails) = sketch.figures(&config.percentiles);
                // Past exact_samples the rate of each value is not kept: the mean weight.
                weighted_sum = summary.mean * count;
                (summary, tails)
            }
        };
        let bins = bins.map(|bins| {
            bin_counts.resize(bins.bin_count(), 0);
            BinCounts {
                bins,
                counts: bin_counts,
            }
        });
        DistFigures {
            count,
            count_ps: count / interval_s,
            summary: Some(summary),
            tails,
            bins,
            observed,
            weighted_sum,
            values,
            history,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Percentile;
    use super::*;

    fn config(percentiles: &[f64], exact_samples: usize) -> DistributionConfig {
        DistributionConfig {
            percentiles: percentiles
                .iter()
                .map(|p| Percentile::new(*p).unwrap())
                .collect(),
            exact_samples,
            keep_values: false,
            history_sketch: false,
        }
    }

    #[test]
    fn sampled_values_weigh_their_own_rate_through_a_local_share_too() {
        use super::super::observe::{Observe, Shape};
        let config = config(&[90.0], 100);
        let plan = Arc::new(Observe {
            shape: Shape::Buckets(Arc::from([1.0, 10.0])),
            divisor: 1.0,
            raw_buckets: None,
        });
        let samples = [(0.5, 0.5), (5.0, 1.0), (20.0, 0.25), (0.7, 1.0)];
        // All straight into the shard's state.
        let mut direct = DistState::default();
        for (v, r) in samples {
            direct.add(v, r, None, config.exact_samples);
        }
        // Half through a receive thread's share, absorbed at the flush.
        let mut split = DistState::default();
        let mut share = LocalDist::default();
        for (v, r) in &samples[..2] {
            assert!(share.add(*v, *r, 100));
        }
        for (v, r) in &samples[2..] {
            split.add(*v, *r, None, config.exact_samples);
        }
        split.absorb(share, None, config.exact_samples);
        for mut state in [direct, split] {
            let figures = state.take().figures(&config, None, Some(&plan), 1.0);
            // 0.5 counts 2, 0.7 once, 5 once, 20 four times.
            let observed = figures.observed().expect("observed");
            assert_eq!(observed.values, [3.0, 4.0]);
            assert_eq!(figures.count(), 8.0);
            assert_eq!(figures.weighted_sum(), 0.5 * 2.0 + 0.7 + 5.0 + 20.0 * 4.0);
        }
    }

    /// Adds `(value, rate)` pairs and returns every emitted figure.
    fn run(
        samples: &[(f64, f64)],
        config: &DistributionConfig,
        bins: Option<Bins>,
        interval_s: f64,
    ) -> Vec<(String, f64)> {
        let bins = bins.map(Arc::new);
        let mut state = DistState::default();
        for (value, rate) in samples {
            state.add(*value, *rate, bins.as_deref(), config.exact_samples);
        }
        let mut out = Vec::new();
        let figures = state.take().figures(config, bins, None, interval_s);
        figures.for_each(config, |name, value| out.push((name.to_string(), value)));
        out
    }

    fn figure(figures: &[(String, f64)], name: &str) -> Option<f64> {
        figures.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    fn ones(values: &[f64]) -> Vec<(f64, f64)> {
        values.iter().map(|v| (*v, 1.0)).collect()
    }

    #[test]
    fn spec_example_record() {
        let figures = run(
            &ones(&[10.0, 30.0, 20.0]),
            &config(&[90.0], 100),
            None,
            10.0,
        );
        let names: Vec<&str> = figures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "count",
                "count_ps",
                "lower",
                "upper",
                "sum",
                "sum_squares",
                "mean",
                "median",
                "std",
                "count_90",
                "mean_90",
                "upper_90",
                "sum_90",
                "sum_squares_90"
            ]
        );
        let values: Vec<f64> = figures.iter().map(|(_, v)| *v).collect();
        let expected = [3.0, 0.3, 10.0, 30.0, 60.0, 1400.0, 20.0, 20.0];
        assert_eq!(values[..8], expected);
        assert!((values[8] - 8.165).abs() < 1e-3);
        assert_eq!(values[9..], [3.0, 20.0, 30.0, 60.0, 1400.0]);
    }

    #[test]
    fn rates_affect_count_only() {
        let figures = run(&[(10.0, 0.5), (20.0, 0.25)], &config(&[], 100), None, 2.0);
        assert_eq!(figure(&figures, "count"), Some(6.0));
        assert_eq!(figure(&figures, "count_ps"), Some(3.0));
        assert_eq!(figure(&figures, "sum"), Some(30.0));
        assert_eq!(figure(&figures, "mean"), Some(15.0)); // sum / n, not sum / count
    }

    #[test]
    fn k_zero_percentile_emits_nothing() {
        let figures = run(
            &ones(&[1.0, 2.0, 3.0, 4.0]),
            &config(&[10.0, 50.0], 100),
            None,
            1.0,
        );
        assert_eq!(figure(&figures, "count_10"), None);
        assert_eq!(figure(&figures, "upper_50"), Some(2.0));
    }

    #[test]
    fn single_value_fills_every_percentile() {
        let figures = run(&ones(&[4.0]), &config(&[10.0, -10.0], 100), None, 1.0);
        for name in [
            "upper_10",
            "mean_10",
            "sum_10",
            "lower_top10",
            "mean_top10",
            "sum_top10",
        ] {
            assert_eq!(figure(&figures, name), Some(4.0), "{name}");
        }
        assert_eq!(figure(&figures, "count_top10"), Some(1.0));
        assert_eq!(figure(&figures, "sum_squares_10"), Some(16.0));
        assert_eq!(figure(&figures, "median"), Some(4.0));
        assert_eq!(figure(&figures, "std"), Some(0.0));
    }

    #[test]
    fn bins_count_raw_values_whatever_the_rate() {
        let bins = Bins::new(vec![10.0, 100.0]).unwrap();
        let samples = [
            (5.0, 0.1),
            (10.0, 0.5),
            (99.0, 1.0),
            (100.0, 0.01),
            (1e9, 1.0),
        ];
        let figures = run(&samples, &config(&[], 100), Some(bins), 1.0);
        assert_eq!(figure(&figures, "bin_10"), Some(1.0));
        assert_eq!(figure(&figures, "bin_100"), Some(2.0));
        assert_eq!(figure(&figures, "bin_inf"), Some(2.0));
    }

    #[test]
    fn empty_bins_are_emitted_as_zero() {
        let bins = Bins::new(vec![-5.0, 0.5, 10.0]).unwrap();
        let figures = run(&ones(&[-7.0]), &config(&[], 100), Some(bins), 1.0);
        let tail: Vec<(&str, f64)> = figures[9..].iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(
            tail,
            [
                ("bin_-5", 1.0),
                ("bin_0_5", 0.0),
                ("bin_10", 0.0),
                ("bin_inf", 0.0)
            ]
        );
    }

    #[test]
    fn minus_zero_value_is_zero_in_bins_and_figures() {
        let bins = Bins::new(vec![-1.0, 0.0, 1.0]).unwrap();
        let figures = run(&ones(&[-0.0]), &config(&[], 100), Some(bins), 1.0);
        assert_eq!(figure(&figures, "bin_0"), Some(0.0));
        assert_eq!(figure(&figures, "bin_1"), Some(1.0));
        assert!(figure(&figures, "lower").unwrap().is_sign_positive());
    }

    #[test]
    fn bins_configured_at_flush_only_are_all_zero() {
        let mut state = DistState::default();
        state.add(3.0, 1.0, None, 10);
        let bins = Arc::new(Bins::new(vec![1.0]).unwrap());
        let config = config(&[], 10);
        let mut out = Vec::new();
        let figures = state.take().figures(&config, Some(bins), None, 1.0);
        figures.for_each(&config, |name, value| out.push((name.to_string(), value)));
        assert_eq!(figure(&out, "bin_1"), Some(0.0));
        assert_eq!(figure(&out, "bin_inf"), Some(0.0));
    }

    #[test]
    fn idle_state_yields_idle_figures() {
        let config = config(&[90.0], 10);
        let bins = Some(Arc::new(Bins::new(vec![1.0]).unwrap()));
        let mut state = DistState::default();
        assert!(state.is_empty());
        let mut names = Vec::new();
        let figures = state.take().figures(&config, bins, None, 10.0);
        figures.for_each(&config, |name, value| names.push((name.to_string(), value)));
        assert_eq!(
            names,
            [("count".to_string(), 0.0), ("count_ps".to_string(), 0.0)]
        );
    }

    #[test]
    fn take_leaves_the_state_empty_for_the_next_interval() {
        let mut state = DistState::default();
        state.add(1.0, 1.0, None, 10);
        assert!(!state.is_empty());
        let snapshot = state.take();
        assert!(state.is_empty());
        state.add(2.0, 1.0, None, 10);
        let config = config(&[], 10);
        let mut out = Vec::new();
        state
            .take()
            .figures(&config, None, None, 1.0)
            .for_each(&config, |name, value| out.push((name.to_string(), value)));
        assert_eq!(figure(&out, "sum"), Some(2.0));
        drop(snapshot);
    }

    #[test]
    fn more_than_exact_samples_switches_to_the_sketch_and_frees_the_vec() {
        let mut state = DistState::default();
        for v in 0..3 {
            state.add(f64::from(v), 1.0, None, 3);
        }
        assert!(matches!(&state.samples, Samples::Exact(v) if v.len() == 3));
        state.add(3.0, 1.0, None, 3);
        assert!(matches!(state.samples, Samples::Sketch(_)));
        assert!(!state.is_empty());
    }

    #[test]
    fn zero_exact_samples_sketches_from_the_first_value() {
        let figures = run(&ones(&[2.5]), &config(&[90.0], 0), None, 1.0);
        assert_eq!(figure(&figures, "count"), Some(1.0));
        assert_eq!(figure(&figures, "median"), Some(2.5));
        assert_eq!(figure(&figures, "upper_90"), Some(2.5));
    }

    #[test]
    fn exact_vec_never_allocates_past_exact_samples() {
        let mut state = DistState::default();
        for v in 0..10 {
            state.add(f64::from(v), 1.0, None, 10);
        }
        assert!(matches!(&state.samples, Samples::Exact(v) if v.capacity() == 10));
    }

    #[test]
    fn non_finite_values_and_bad_rates_do_not_poison_figures() {
        let samples = [
            (f64::NAN, 1.0),
            (f64::INFINITY, 1.0),
            (2.0, 0.0),
            (4.0, f64::NAN),
        ];
        let figures = run(&samples, &config(&[50.0], 100), None, 1.0);
        assert_eq!(figure(&figures, "count"), Some(2.0));
        assert_eq!(figure(&figures, "sum"), Some(6.0));
    }

    #[test]
    fn snapshot_is_send_and_static() {
        fn assert_send_static<T: Send + 'static>() {}
        assert_send_static::<DistSnapshot>();
        assert_send_static::<DistFigures>();
    }

    #[test]
    fn history_sketch_is_built_only_when_on_in_both_modes() {
        let values: Vec<f64> = (1..=1000).map(|i| f64::from(i) * 0.37).collect();
        for exact_samples in [10_000, 10] {
            let mut on = config(&[95.0], exact_samples);
            on.history_sketch = true;
            let off = config(&[95.0], exact_samples);
            let figures = |config: &DistributionConfig| {
                let mut state = DistState::default();
                for v in &values {
                    state.add(*v, 0.5, None, config.exact_samples);
                }
                state.take().figures(config, None, None, 10.0)
            };
            assert!(figures(&off).log_sketch().is_none());
            let with = figures(&on);
            let sketch = with.log_sketch().expect("built when on");
            // Raw values, not weighted by the rate.
            assert_eq!(sketch.len(), 1000);
            let want = values[949];
            let p95 = Percentile::new(95.0).expect("p");
            let got = sketch.tail(&p95, values[0], values[999]).expect("covered")[2];
            assert!(
                (got - want).abs() <= want * 0.01,
                "{exact_samples}: {got} vs {want}"
            );
        }
    }
}
