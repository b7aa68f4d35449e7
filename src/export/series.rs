//! The exported series of a [`View`], one at a time, for the outputs that build their own
//! wire format from them (remote write, OTLP): the same names, labels, merging and
//! cumulative totals `/metrics` writes.

use std::borrow::Cow;

use crate::aggregate::distribution::Shape;
use crate::export::name;
use crate::export::view::{CONFLICT, FamilyKind, INDEX, MERGE, View, bucket_observation};
use crate::record::{Figures, Metric};

/// One exported series.
#[derive(Debug, Clone)]
pub struct ExportedSeries<'v> {
    pub kind: FamilyKind,
    /// The family name: escaped or mapped, with `_total` for a counter.
    pub name: String,
    /// Mapped labels, then the tags (keys escaped) that no mapped label shadows; borrowed
    /// from the view where no escaping was needed (a million series are not copied).
    pub labels: Vec<(Cow<'v, str>, Cow<'v, str>)>,
    /// The StatsD series the figures of the last interval come from (the last of those
    /// that merged into this one, in record order).
    pub metric: &'v Metric,
    /// A counter's running total; a summary's or histogram's running `_sum` (exported
    /// unit) and `_count`.
    pub total: f64,
    pub sum: f64,
    pub count: f64,
    /// What a value is divided by for the exported unit (1000 for `ms` timers).
    pub divisor: f64,
    /// A histogram's running counts: (upper bound, cumulative count), `+Inf` left out.
    pub buckets: Vec<(f64, f64)>,
    /// A summary's quantiles of the last interval (quantile, value in the exported unit);
    /// NaN for an idle series.
    pub quantiles: Vec<(f64, f64)>,
}

impl View {
    /// Calls `f` for every exported series, grouped by family, duplicates merged.
    pub fn for_each_series(&self, mut f: impl FnMut(&ExportedSeries<'_>)) {
        let percentiles = self.positive_percentiles();
        self.for_each_group(|rows| {
            if let (Some(&first), Some(&last)) = (rows.first(), rows.last()) {
                f(&self.series(rows, first, last, &percentiles));
            }
        });
    }

    /// Calls `f` for every exported series as [`View::for_each_series`] does, in no
    /// particular order: first the series that several StatsD series merge into, then the
    /// others in record order. For outputs that need no grouping by family (remote write):
    /// at a million series, walking the record in its own order rather than the families'
    /// saves a cache miss or two per series.
    pub fn for_each_series_unordered(&self, mut f: impl FnMut(&ExportedSeries<'_>)) {
        let percentiles = self.positive_percentiles();
        let mut alone = vec![false; self.record().metrics.len()];
        self.for_each_group(|rows| match rows {
            [] => {}
            [one] => alone[*one] = true,
            [first, .., last] => f(&self.series(rows, *first, *last, &percentiles)),
        });
        for (i, _) in alone.iter().enumerate().filter(|(_, alone)| **alone) {
            f(&self.series(&[i], i, i, &percentiles));
        }
    }

    /// The configured positive percentiles: (index in the config, quantile).
    fn positive_percentiles(&self) -> Vec<(usize, f64)> {
        self.record()
            .distribution
            .percentiles
            .iter()
            .enumerate()
            .filter(|(_, p)| p.value() > 0.0)
            .map(|(i, p)| (i, p.value() / 100.0))
            .collect()
    }

    /// Calls `f` with the record rows of every exported series (those that merge into it),
    /// in write order; conflicting rows are left out (a group may be left empty).
    fn for_each_group(&self, mut f: impl FnMut(&[usize])) {
        let mut at = 0;
        let mut rows: Vec<usize> = Vec::new();
        while at < self.order.len() {
            let end = at
                + 1
                + self.order[at + 1..]
                    .iter()
                    .take_while(|e| *e & MERGE != 0 && *e & CONFLICT == 0)
                    .count();
            rows.clear();
            rows.extend(
                self.order[at..end]
                    .iter()
                    .filter(|e| *e & CONFLICT == 0)
                    .map(|e| (e & INDEX) as usize),
            );
            at = end;
            f(&rows);
        }
    }

    fn series(
        &self,
        rows: &[usize],
        first: usize,
        last: usize,
        percentiles: &[(usize, f64)],
    ) -> ExportedSeries<'_> {
        let metric = &self.record().metrics[last];
        let (base, mapped) = self.base(first);
        let kind = crate::export::view::family_kind(metric);
        let suffix = match kind {
            FamilyKind::Counter => name::counter_suffix_of(base, mapped),
            _ => "",
        };
        // One allocation, with room for the suffix and the `_bucket`, `_count` an output
        // may add.
        let mut name = String::with_capacity(base.len() + 8);
        if mapped {
            name.push_str(base);
        } else {
            name::push_escaped_str(&mut name, base);
        }
        name.push_str(suffix);
        let mapped_labels = self.mapped_labels(first);
        let mut labels: Vec<(Cow<'_, str>, Cow<'_, str>)> =
            Vec::with_capacity(mapped_labels.len() + 4);
        labels.extend(
            mapped_labels
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str()))),
        );
        for (key, value) in self.record().metrics[first].key.tags() {
            if !mapped_labels
                .iter()
                .any(|(k, _)| name::same_escaped(k, key))
            {
                let key = if name::is_clean(key) {
                    Cow::Borrowed(key)
                } else {
                    Cow::Owned(name::escaped(key))
                };
                labels.push((key, Cow::Borrowed(value)));
            }
        }
        let divisor = crate::export::divisor(metric.kind());
        let total: f64 = rows.iter().map(|&i| self.totals[i].a).sum();
        let count: f64 = rows.iter().map(|&i| self.totals[i].b).sum();
        let mut series = ExportedSeries {
            kind,
            name,
            labels,
            metric,
            total,
            sum: total,
            count,
            divisor,
            buckets: Vec::new(),
            quantiles: Vec::new(),
        };
        if let Figures::Dist { figures, .. } = &metric.figures {
            match figures
                .observed()
                .map(|o| &o.plan.shape)
                .filter(|s| s.is_set())
            {
                Some(Shape::Buckets(bounds)) => {
                    let mut counts = vec![0.0; bounds.len()];
                    for &i in rows {
                        let Some(observed) = bucket_observation(&self.record().metrics[i]) else {
                            continue;
                        };
                        if observed.values.len() != bounds.len() {
                            continue;
                        }
                        let start = self.bucket_offsets.get(i).copied().unwrap_or(0) as usize;
                        for (c, v) in counts.iter_mut().zip(&self.buckets[start..]) {
                            *c += v;
                        }
                    }
                    series.buckets = bounds.iter().copied().zip(counts).collect();
                }
                Some(Shape::Quantiles(qs)) => {
                    let values = figures.observed().map(|o| &o.values[..]).unwrap_or(&[]);
                    series.quantiles = qs
                        .iter()
                        .zip(values)
                        .map(|(q, v)| (*q, if metric.active() { *v } else { f64::NAN }))
                        .collect();
                }
                None => {
                    let median = figures.median().map_or(f64::NAN, |m| m / divisor);
                    series.quantiles.push((0.5, median));
                    for &(p, q) in percentiles {
                        let v = figures.percentile_bounds().nth(p).flatten();
                        series
                            .quantiles
                            .push((q, v.map_or(f64::NAN, |v| v / divisor)));
                    }
                }
            }
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::Config;
    use crate::export::view::View;

    /// A view of one record built by the real flush path.
    fn view_of(lines: &str, toml: &str) -> View {
        let config = Config::from_toml(toml, std::path::Path::new("t.toml")).expect("valid");
        let record = crate::flush::record_from_datagram(&config, lines);
        View::build(None, Arc::new(record), &config.prometheus)
    }

    #[test]
    fn series_carry_names_labels_totals_and_quantiles() {
        let view = view_of(
            "a.b:2|c|#env:prod\na_b:3|c|#env:prod\nlat:100|ms\nlat:300|ms\n",
            "[aggregation]\npercentiles = [90]\n",
        );
        let mut seen = Vec::new();
        view.for_each_series(|s| {
            seen.push((
                s.name.clone(),
                s.labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
                s.total,
                s.count,
                s.quantiles.clone(),
            ))
        });
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(seen[0].0, "a_b_total");
        assert_eq!(seen[0].1, [("env".to_string(), "prod".to_string())]);
        assert_eq!(seen[0].2, 5.0, "the two StatsD series merged");
        assert_eq!(seen[1].0, "lat");
        assert_eq!(seen[1].3, 2.0);
        assert_eq!(seen[1].4, [(0.5, 0.2), (0.9, 0.3)]);
    }

    #[test]
    fn unordered_gives_the_same_series() {
        let view = view_of(
            "a.b:2|c|#env:prod\na_b:3|c|#env:prod\nlat:100|ms\nz:1|g\nb:1|c\nz:1|c\n",
            "",
        );
        let collect = |unordered: bool| {
            let mut seen = Vec::new();
            let mut push = |s: &super::ExportedSeries<'_>| {
                seen.push(format!("{} {:?} {} {}", s.name, s.labels, s.total, s.count))
            };
            if unordered {
                view.for_each_series_unordered(&mut push);
            } else {
                view.for_each_series(&mut push);
            }
            seen.sort();
            seen
        };
        assert_eq!(collect(true), collect(false));
        assert_eq!(
            collect(true).len(),
            5,
            "a.b and a_b merged: {:?}",
            collect(true)
        );
    }
}
