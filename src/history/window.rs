//! One series' state in one window: what merges exactly across flushes, windows and series
//! (sums, extremes, the last value, the log sketch, bin counts), and the figures of SPEC §9
//! read out of it.
//!
//! The columns mean, per kind:
//! - counter: `count` (Σ value / rate);
//! - gauge: `last`, `lower` (min), `upper` (max), `n` (flushes seen);
//! - set: `upper` (the largest interval count), `sum` (Σ interval counts), `n` (intervals);
//! - timer, histogram, distribution: `count` (Σ 1/rate), `n` (raw values), `sum`,
//!   `sum_squares`, `lower`, `upper`, `sketch`, `bins`.

use crate::aggregate::distribution::{DistFigures, LogSketch, Percentile};
use crate::protocol::MetricKind;
use crate::record::Figures;

/// The mergeable state of one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub count: Option<f64>,
    pub n: Option<f64>,
    pub sum: Option<f64>,
    pub sum_squares: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub last: Option<f64>,
    pub sketch: Option<LogSketch>,
    /// `bin_<b>` names with their counts.
    pub bins: Vec<(String, u64)>,
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

fn pick(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

impl Window {
    /// The state one flush record's figures add to a window.
    pub fn from_figures(figures: &Figures) -> Window {
        match figures {
            Figures::Counter { count, .. } => Window {
                count: Some(*count),
                ..Window::default()
            },
            Figures::Gauge { value, .. } => Window {
                last: Some(*value),
                lower: Some(*value),
                upper: Some(*value),
                n: Some(1.0),
                ..Window::default()
            },
            Figures::Set { count, .. } => Window {
                upper: Some(*count),
                sum: Some(*count),
                n: Some(1.0),
                ..Window::default()
            },
            Figures::Dist { figures, .. } => Window::from_dist(figures),
        }
    }

    fn from_dist(figures: &DistFigures) -> Window {
        let sketch = figures.log_sketch().cloned();
        let Some(sketch) = sketch.filter(|s| !s.is_empty()) else {
            // Idle (or history was off when the interval's figures were made): its count.
            return Window {
                count: Some(figures.count()),
                ..Window::default()
            };
        };
        Window {
            count: Some(figures.count()),
            n: Some(sketch.len() as f64),
            sum: Some(figures.sum()),
            sum_squares: Some(figures.sum_squares()),
            lower: figures.lower(),
            upper: figures.upper(),
            last: None,
            sketch: Some(sketch),
            bins: figures
                .bin_counts()
                .map(|(name, count)| (name.to_string(), count))
                .collect(),
        }
    }

    /// Merges a later window (or a later flush of the same one) into this one.
    pub fn merge(&mut self, later: &Window) {
        self.count = add(self.count, later.count);
        self.n = add(self.n, later.n);
        self.sum = add(self.sum, later.sum);
        self.sum_squares = add(self.sum_squares, later.sum_squares);
        self.lower = pick(self.lower, later.lower, f64::min);
        self.upper = pick(self.upper, later.upper, f64::max);
        self.last = later.last.or(self.last);
        match (&mut self.sketch, &later.sketch) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.sketch = Some(theirs.clone()),
            _ => {}
        }
        for (name, count) in &later.bins {
            match self.bins.iter_mut().find(|(n, _)| n == name) {
                Some((_, c)) => *c = c.saturating_add(*count),
                None => self.bins.push((name.clone(), *count)),
            }
        }
    }

    /// The figure `stat` of a series of `kind` over this window; `span_s` is the time the
    /// window stands for (rates divide by it). `None` when the window has no such figure.
    pub fn figure(&self, kind: MetricKind, stat: &Stat, span_s: f64) -> Option<f64> {
        use MetricKind::*;
        match (kind, stat) {
            (Counter, Stat::Count) => self.count,
            (Counter, Stat::Rate) => self.count.map(|c| c / span_s),
            (Gauge, Stat::Value) => self.last,
            (Gauge, Stat::Min) => self.lower,
            (Gauge, Stat::Max) => self.upper,
            (Set, Stat::Count) => self.upper,
            (Set, Stat::Mean) => ratio(self.sum, self.n),
            (Counter | Gauge | Set, _) => None,
            (_, stat) => self.dist_figure(stat, span_s),
        }
    }

    fn dist_figure(&self, stat: &Stat, span_s: f64) -> Option<f64> {
        match stat {
            Stat::Count => return self.count,
            Stat::Rate | Stat::CountPs => return self.count.map(|c| c / span_s),
            _ => {}
        }
        let n = self.n.filter(|n| *n > 0.0)?;
        let (lower, upper) = (self.lower?, self.upper?);
        match stat {
            Stat::Lower | Stat::Min => Some(lower),
            Stat::Upper | Stat::Max => Some(upper),
            Stat::Sum => self.sum,
            Stat::SumSquares => self.sum_squares,
            Stat::Mean => self.sum.map(|s| s / n),
            Stat::Std => {
                let mean = self.sum? / n;
                Some((self.sum_squares? / n - mean * mean).max(0.0).sqrt())
            }
            Stat::Median => self.sketch.as_ref()?.median(lower, upper),
            Stat::Tail(p, at) => Some(self.sketch.as_ref()?.tail(p, lower, upper)?[*at]),
            Stat::Bin(name) => Some(
                self.bins
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0.0, |(_, c)| *c as f64),
            ),
            _ => None,
        }
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A figure a query asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Stat {
    Count,
    Rate,
    CountPs,
    Value,
    Min,
    Max,
    Lower,
    Upper,
    Sum,
    SumSquares,
    Mean,
    Median,
    Std,
    /// A percentile's figure: its position in [`Percentile::names`] order.
    Tail(Percentile, usize),
    /// `bin_<b>`, by name.
    Bin(String),
}

impl Stat {
    /// Reads a figure name (`count`, `rate`, `upper_95`, `lower_top10`, `bin_100`, ...).
    ///
    /// # Errors
    /// A message naming the figures understood.
    pub fn parse(name: &str) -> Result<Stat, String> {
        Ok(match name {
            "count" => Stat::Count,
            "rate" => Stat::Rate,
            "count_ps" => Stat::CountPs,
            "value" => Stat::Value,
            "min" => Stat::Min,
            "max" => Stat::Max,
            "lower" => Stat::Lower,
            "upper" => Stat::Upper,
            "sum" => Stat::Sum,
            "sum_squares" => Stat::SumSquares,
            "mean" => Stat::Mean,
            "median" => Stat::Median,
            "std" => Stat::Std,
            _ if name.starts_with("bin_") && name.len() > 4 => Stat::Bin(name.to_string()),
            _ => parse_tail(name).ok_or_else(|| {
                format!(
                    "unknown stat {name:?}: use count, rate, count_ps, value, min, max, lower, \
                     upper, sum, sum_squares, mean, median, std, a percentile's count_P, mean_P, \
                     upper_P, sum_P, sum_squares_P (lower_topP and the rest for a negative P, \
                     e.g. upper_95, upper_99_9, lower_top10), or bin_<b>"
                )
            })?,
        })
    }
}

fn parse_tail(name: &str) -> Option<Stat> {
    const PREFIXES: [&str; 6] = [
        "sum_squares_",
        "count_",
        "mean_",
        "upper_",
        "lower_",
        "sum_",
    ];
    let prefix = PREFIXES.iter().find(|p| name.starts_with(**p))?;
    let spelled = &name[prefix.len()..];
    let (negative, digits) = match spelled.strip_prefix("top") {
        Some(rest) => (true, rest),
        None => (false, spelled),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    let p: f64 = digits.replacen('_', ".", 1).parse().ok()?;
    let percentile = Percentile::new(if negative { -p } else { p }).ok()?;
    let at = percentile.names().iter().position(|n| n == name)?;
    Some(Stat::Tail(percentile, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_names_parse_into_their_figure() {
        let Ok(Stat::Tail(p, at)) = Stat::parse("upper_99_9") else {
            panic!("not a tail");
        };
        assert_eq!((p.value(), at), (99.9, 2));
        let Ok(Stat::Tail(p, at)) = Stat::parse("sum_squares_top10") else {
            panic!("not a tail");
        };
        assert_eq!((p.value(), at), (-10.0, 4));
        assert!(
            Stat::parse("upper_top10").is_err(),
            "a top percentile has lower_top"
        );
        assert!(Stat::parse("upper_").is_err());
        assert!(Stat::parse("p95").is_err());
        assert_eq!(Stat::parse("bin_inf"), Ok(Stat::Bin("bin_inf".into())));
    }

    fn timer(values: &[f64]) -> Window {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Window {
            count: Some(values.len() as f64),
            n: Some(values.len() as f64),
            sum: Some(values.iter().sum()),
            sum_squares: Some(values.iter().map(|v| v * v).sum()),
            lower: sorted.first().copied(),
            upper: sorted.last().copied(),
            last: None,
            sketch: Some(LogSketch::from_sorted(&sorted)),
            bins: vec![("bin_10".into(), 1)],
        }
    }

    #[test]
    fn merged_timer_windows_give_the_percentile_of_all_values() {
        // Nine fast intervals and one slow one: the mean of per-interval p95s is far from
        // the p95 of all values.
        let mut merged = Window::default();
        for i in 0..10 {
            let values: Vec<f64> = if i == 9 {
                (0..100).map(|v| 1000.0 + f64::from(v)).collect()
            } else {
                (0..100).map(|v| 1.0 + f64::from(v) / 100.0).collect()
            };
            merged.merge(&timer(&values));
        }
        let p95 = Stat::parse("upper_95").expect("stat");
        let got = merged.figure(MetricKind::Timer, &p95, 10.0).expect("p95");
        // Rank 950 of 1000: the 50th of the slow interval's values, 1049.
        assert!((got - 1049.0).abs() <= 1049.0 * 0.01, "{got}");
        assert_eq!(
            merged.figure(MetricKind::Timer, &Stat::Count, 10.0),
            Some(1000.0)
        );
        let bin = Stat::Bin("bin_10".into());
        assert_eq!(merged.figure(MetricKind::Timer, &bin, 10.0), Some(10.0));
    }

    #[test]
    fn gauges_keep_the_last_and_the_extremes() {
        let mut w = Window::default();
        for v in [5.0, -2.0, 3.0] {
            w.merge(&Window::from_figures(&Figures::Gauge {
                value: v,
                active: true,
            }));
        }
        let f = |s: Stat| w.figure(MetricKind::Gauge, &s, 60.0);
        assert_eq!(
            (f(Stat::Value), f(Stat::Min), f(Stat::Max)),
            (Some(3.0), Some(-2.0), Some(5.0))
        );
        assert_eq!(f(Stat::Count), None);
    }

    #[test]
    fn sets_keep_the_largest_and_the_mean_interval_count() {
        let mut w = Window::default();
        for c in [4.0, 10.0, 1.0] {
            w.merge(&Window::from_figures(&Figures::Set {
                count: c,
                active: true,
            }));
        }
        assert_eq!(w.figure(MetricKind::Set, &Stat::Count, 1.0), Some(10.0));
        assert_eq!(w.figure(MetricKind::Set, &Stat::Mean, 1.0), Some(5.0));
    }

    #[test]
    fn counters_sum_and_rate_divides_by_the_span() {
        let mut w = Window::default();
        for c in [4.0, 6.0] {
            w.merge(&Window::from_figures(&Figures::Counter {
                count: c,
                active: true,
            }));
        }
        assert_eq!(w.figure(MetricKind::Counter, &Stat::Rate, 20.0), Some(0.5));
    }
}
