//! The query engine `tallyd query` and `GET /api/v1/query` share: parameters as text in
//! ([`QueryParams`]), validated once into a [`Query`], answered from a read-only store in
//! one read transaction (a consistent view while the agent writes).
//!
//! `--step` steps are aligned to multiples of the step since the Unix epoch, `--points N`
//! steps start at `from` (so there are N). Each series' windows
//! that start in a step are merged (exactly: sums, extremes, the last value, the sketch),
//! and the figure is read from the merged state. Without `--agg`, the series of a group are
//! merged the same way (a group's p95 is the p95 of all its values); with `--agg`, each
//! series' figure is taken, then combined across the group's series.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::Tier;
use super::store::{Store, StoreError, StoredSeries};
use super::time::{parse_duration_ms, parse_time};
use super::window::{Stat, Window};
use crate::glob::Glob;
use crate::protocol::MetricKind;

/// The most steps one query may ask for.
const MAX_STEPS: i64 = 100_000;

/// A query's parameters as the command line or the URL spell them.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pub metric: Option<String>,
    /// `KEY=VALUE` (or `KEY:VALUE`), all must hold.
    pub tags: Vec<String>,
    pub stat: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<String>,
    pub points: Option<String>,
    pub agg: Option<String>,
    pub group_by: Option<String>,
    pub list: bool,
}

/// A bad query or a store that cannot answer it.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter that is not valid (exit status 2, HTTP 400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the series of one group combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Avg,
    Sum,
    Min,
    Max,
    Last,
    Count,
}

impl Agg {
    fn parse(text: &str) -> Result<Agg, String> {
        Ok(match text {
            "avg" | "mean" => Agg::Avg,
            "sum" => Agg::Sum,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "last" => Agg::Last,
            "count" => Agg::Count,
            _ => {
                return Err(format!(
                    "bad agg {text:?}: use avg, sum, min, max, last or count"
                ));
            }
        })
    }
}

/// A validated query.
#[derive(Debug, Clone)]
pub struct Query {
    pub metric: Option<Glob>,
    pub tags: Vec<(String, String)>,
    /// `None`: each kind's main figure (counter `count`, gauge `value`, set `count`,
    /// timer `mean`).
    pub stat: Option<Stat>,
    /// Unix seconds, `from` inclusive, `to` exclusive.
    pub from: i64,
    pub to: i64,
    pub step: StepChoice,
    pub agg: Option<Agg>,
    pub group_by: Option<String>,
    pub list: bool,
    /// The time the query was made (retention is measured from it).
    pub now: i64,
}

/// How the step is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChoice {
    /// Seconds.
    Step(i64),
    /// As many steps over the range.
    Points(i64),
    /// The chosen tier's step.
    Tier,
}

/// One answer row: a step's start, its group's tag value when grouping, the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub time: i64,
    pub group: Option<String>,
    pub value: Option<f64>,
}

/// What a query answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Rows {
        /// The tag key grouped by.
        group_by: Option<String>,
        /// The tier read (its step) and the step used, in seconds.
        tier_step_s: i64,
        step_s: i64,
        rows: Vec<Row>,
    },
    List(Vec<StoredSeries>),
}

impl QueryParams {
    /// Validates the parameters; `now` in Unix seconds.
    ///
    /// # Errors
    /// [`QueryError::Invalid`] naming the parameter at fault.
    pub fn validate(&self, now: i64) -> Result<Query, QueryError> {
        let invalid = QueryError::Invalid;
        let metric = self
            .metric
            .as_deref()
            .map(|m| Glob::new(m).map_err(|e| invalid(format!("bad metric {m:?}: {e}"))))
            .transpose()?;
        let tags = self
            .tags
            .iter()
            .map(|t| {
                let (k, v) = t
                    .split_once('=')
                    .or_else(|| t.split_once(':'))
                    .ok_or_else(|| invalid(format!("bad tag {t:?}: use KEY=VALUE")))?;
                Ok((k.to_string(), v.to_string()))
            })
            .collect::<Result<_, QueryError>>()?;
        let stat = self
            .stat
            .as_deref()
            .map(|s| Stat::parse(s).map_err(invalid))
            .transpose()?;
        let from = match &self.from {
            Some(t) => parse_time(t, now).map_err(|e| invalid(format!("from: {e}")))?,
            None => now - 3600,
        };
        let to = match &self.to {
            Some(t) => parse_time(t, now).map_err(|e| invalid(format!("to: {e}")))?,
            None => now + 1,
        };
        if from >= to {
            return Err(invalid(format!("from ({from}) must be before to ({to})")));
        }
        let step = match (&self.step, &self.points) {
            (Some(_), Some(_)) => return Err(invalid("give step or points, not both".into())),
            (Some(s), None) => {
                let ms = parse_duration_ms(s).map_err(|e| invalid(format!("step: {e}")))?;
                if !ms.is_multiple_of(1000) {
                    return Err(invalid(format!("step {s:?} must be whole seconds")));
                }
                StepChoice::Step((ms / 1000) as i64)
            }
            (None, Some(p)) => match p.parse::<i64>() {
                Ok(n) if (1..=MAX_STEPS).contains(&n) => StepChoice::Points(n),
                _ => {
                    return Err(invalid(format!(
                        "bad points {p:?}: a whole number from 1 to {MAX_STEPS}"
                    )));
                }
            },
            (None, None) => StepChoice::Tier,
        };
        let agg = self
            .agg
            .as_deref()
            .map(|a| Agg::parse(a).map_err(invalid))
            .transpose()?;
        if let Some(g) = &self.group_by
            && g.is_empty()
        {
            return Err(invalid("group_by needs a tag key".into()));
        }
        Ok(Query {
            metric,
            tags,
            stat,
            from,
            to,
            step,
            agg,
            group_by: self.group_by.clone(),
            list: self.list,
            now,
        })
    }
}

/// Picks the tier SPEC §9 asks for: the finest whose retention covers the range at the
/// step (or, when none does, the one kept longest). Among tiers that cover it and whose
/// step divides the query's, the answer is the same from any (windows merge exactly), so
/// the coarsest of those is read: fewer rows.
pub fn choose_tier(tiers: &[Tier], from: i64, now: i64, step_s: Option<i64>) -> Option<Tier> {
    let covering: Vec<Tier> = tiers
        .iter()
        .copied()
        .filter(|t| now.saturating_sub(t.keep_s()) <= from)
        .collect();
    let longest = || tiers.iter().copied().max_by_key(|t| (t.keep_ms, t.step_ms));
    let Some(step_s) = step_s else {
        return covering.first().copied().or_else(longest);
    };
    let fitting: Vec<Tier> = covering
        .iter()
        .copied()
        .filter(|t| t.step_s() <= step_s)
        .collect();
    if let Some(dividing) = fitting.iter().rev().find(|t| step_s % t.step_s() == 0) {
        return Some(*dividing);
    }
    fitting
        .first()
        .or(covering.first())
        .copied()
        .or_else(longest)
}

/// Answers a query from the store at `path`.
///
/// # Errors
/// [`QueryError::Store`] when the store cannot be opened or read.
pub fn run(path: &Path, query: &Query) -> Result<Answer, QueryError> {
    let store = Store::open_read(path)?;
    store.begin_read()?;
    let answer = answer(&store, query);
    store.rollback();
    answer
}

fn answer(store: &Store, query: &Query) -> Result<Answer, QueryError> {
    let series: Vec<StoredSeries> = store
        .series()?
        .into_iter()
        .filter(|s| query.metric.as_ref().is_none_or(|g| g.matches(&s.name)))
        .filter(|s| {
            query
                .tags
                .iter()
                .all(|(k, v)| s.tags.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .collect();
    if query.list {
        return Ok(Answer::List(series));
    }
    let tiers = store.tiers()?;
    let span = query.to - query.from;
    let asked = match query.step {
        StepChoice::Step(s) => Some(s),
        StepChoice::Points(n) => Some((span + n - 1) / n),
        StepChoice::Tier => None,
    };
    let Some(tier) = choose_tier(&tiers, query.from, query.now, asked) else {
        return Err(QueryError::Invalid("the store has no tiers".into()));
    };
    let step_s = asked.unwrap_or(tier.step_s()).max(1);
    // `--step` aligns steps to multiples of the step since the epoch (5-minute steps start
    // at :00, :05, ...); `--points N` starts at `from`, so there are N of them.
    let first = match query.step {
        StepChoice::Points(_) => query.from,
        _ => query.from.div_euclid(step_s) * step_s,
    };
    let steps = (query.to - first + step_s - 1) / step_s;
    if steps > MAX_STEPS {
        return Err(QueryError::Invalid(format!(
            "{steps} steps: at most {MAX_STEPS}; use a longer step or fewer points"
        )));
    }
    // A window that began before the first step but reaches into it counts in the first
    // step (windows longer than the step, or not aligned to it); none past retention.
    let oldest = (first - tier.step_s() + 1).max(query.now.saturating_sub(tier.keep_s()));
    // Rates over a step divide by the step, or by the window where windows are longer.
    let span_s = step_s.max(tier.step_s()) as f64;

    // Few series: a lookup per window start each. Many: one range of the key for all.
    let mut found: HashMap<i64, BTreeMap<usize, (i64, Window)>> = HashMap::new();
    let mut put = |id: i64, start: i64, w: Window| {
        let at = ((start - first).max(0) / step_s) as usize;
        match found.entry(id).or_default().entry(at) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((start, w));
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                slot.0 = start;
                slot.1.merge(&w);
            }
        }
    };
    let tier_windows = (query.to - oldest) / tier.step_s().max(1);
    if series.len() as i64 * tier_windows <= 200_000 || series.len() <= 16 {
        for s in &series {
            store.windows(tier.step_ms, s.id, oldest, query.to, |start, w| {
                put(s.id, start, w)
            })?;
        }
    } else {
        let wanted: std::collections::HashSet<i64> = series.iter().map(|s| s.id).collect();
        let keep = |id: i64| wanted.contains(&id);
        store.windows_range(tier.step_ms, oldest, query.to, keep, |id, start, w| {
            put(id, start, w)
        })?;
    }

    let mut acc = Accumulator::new(query, steps as usize);
    for s in &series {
        let Some(kind) = kind_of(&s.kind) else {
            continue;
        };
        let Some(per_step) = found.remove(&s.id) else {
            continue;
        };
        let stat = match &query.stat {
            Some(stat) => stat.clone(),
            None => default_stat(kind),
        };
        let group = query.group_by.as_ref().map(|key| {
            s.tags
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        });
        acc.add(group, kind, &stat, span_s, per_step);
    }
    let rows = acc.rows(first, step_s);
    Ok(Answer::Rows {
        group_by: query.group_by.clone(),
        tier_step_s: tier.step_s(),
        step_s,
        rows,
    })
}

/// Each kind's figure when the query names none.
fn default_stat(kind: MetricKind) -> Stat {
    match kind {
        MetricKind::Counter | MetricKind::Set => Stat::Count,
        MetricKind::Gauge => Stat::Value,
        _ => Stat::Mean,
    }
}

fn kind_of(name: &str) -> Option<MetricKind> {
    MetricKind::ALL.into_iter().find(|k| k.as_str() == name)
}

/// A group's merged window in one step, with what reads its figure.
type Merged = (Window, MetricKind, Stat, f64);

/// Per group and step: merged state (no `--agg`) or per-series values (with one).
struct Accumulator<'q> {
    query: &'q Query,
    steps: usize,
    /// group -> per step: merged window, kind, stat, span.
    merged: BTreeMap<String, Vec<Option<Merged>>>,
    /// group -> per step: (latest window start, value) of each series.
    values: BTreeMap<String, Vec<Vec<(i64, f64)>>>,
}

impl<'q> Accumulator<'q> {
    fn new(query: &'q Query, steps: usize) -> Accumulator<'q> {
        Accumulator {
            query,
            steps,
            merged: BTreeMap::new(),
            values: BTreeMap::new(),
        }
    }

    fn add(
        &mut self,
        group: Option<String>,
        kind: MetricKind,
        stat: &Stat,
        span_s: f64,
        per_step: BTreeMap<usize, (i64, Window)>,
    ) {
        let group = group.unwrap_or_default();
        if self.query.agg.is_none() {
            let slots = self
                .merged
                .entry(group)
                .or_insert_with(|| vec![None; self.steps]);
            for (at, (_, w)) in per_step {
                let Some(slot) = slots.get_mut(at) else {
                    continue;
                };
                match slot {
                    Some((mine, ..)) => mine.merge(&w),
                    None => *slot = Some((w, kind, stat.clone(), span_s)),
                }
            }
        } else {
            let slots = self
                .values
                .entry(group)
                .or_insert_with(|| vec![Vec::new(); self.steps]);
            for (at, (start, w)) in per_step {
                if let (Some(slot), Some(v)) = (slots.get_mut(at), w.figure(kind, stat, span_s)) {
                    slot.push((start, v));
                }
            }
        }
    }

    fn rows(self, first: i64, step_s: i64) -> Vec<Row> {
        let grouped = self.query.group_by.is_some();
        let time = |at: usize| first + at as i64 * step_s;
        let mut rows = Vec::new();
        match self.query.agg {
            None => {
                for (group, slots) in self.merged {
                    for (at, slot) in slots.into_iter().enumerate() {
                        let value =
                            slot.and_then(|(w, kind, stat, span)| w.figure(kind, &stat, span));
                        rows.push((time(at), grouped.then(|| group.clone()), value));
                    }
                }
            }
            Some(agg) => {
                for (group, slots) in self.values {
                    if slots.iter().all(Vec::is_empty) {
                        continue;
                    }
                    for (at, values) in slots.into_iter().enumerate() {
                        rows.push((
                            time(at),
                            grouped.then(|| group.clone()),
                            combine(agg, &values),
                        ));
                    }
                }
            }
        }
        // Time first, then group: one block of groups per step.
        rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        rows.into_iter()
            .map(|(time, group, value)| Row { time, group, value })
            .collect()
    }
}

fn combine(agg: Agg, values: &[(i64, f64)]) -> Option<f64> {
    if values.is_empty() {
        return match agg {
            Agg::Count => Some(0.0),
            _ => None,
        };
    }
    let n = values.len() as f64;
    let vs = values.iter().map(|(_, v)| *v);
    Some(match agg {
        Agg::Avg => vs.sum::<f64>() / n,
        Agg::Sum => vs.sum(),
        Agg::Min => vs.fold(f64::INFINITY, f64::min),
        Agg::Max => vs.fold(f64::NEG_INFINITY, f64::max),
        // The series whose last window in the step is the latest (the last listed on ties).
        Agg::Last => {
            values
                .iter()
                .fold((i64::MIN, f64::NAN), |best, &(t, v)| {
                    if t >= best.0 { (t, v) } else { best }
                })
                .1
        }
        Agg::Count => n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(step_s: u64, keep_s: u64) -> Tier {
        Tier {
            step_ms: step_s * 1000,
            keep_ms: keep_s * 1000,
        }
    }

    #[test]
    fn the_finest_tier_covering_the_range_answers() {
        let tiers = [
            tier(60, 7 * 86_400),
            tier(300, 30 * 86_400),
            tier(3600, 365 * 86_400),
        ];
        let now = 100 * 86_400;
        // The last hour at its own step: the minute tier.
        assert_eq!(choose_tier(&tiers, now - 3600, now, None), Some(tiers[0]));
        // Ten days back: the minute tier no longer covers it.
        assert_eq!(
            choose_tier(&tiers, now - 10 * 86_400, now, None),
            Some(tiers[1])
        );
        // Two years back: none covers it, the one kept longest answers.
        assert_eq!(
            choose_tier(&tiers, now - 700 * 86_400, now, None),
            Some(tiers[2])
        );
        // A 10 s step is finer than every tier: the finest that covers.
        assert_eq!(
            choose_tier(&tiers, now - 3600, now, Some(10)),
            Some(tiers[0])
        );
        // A 90 s step: only the minute tier fits.
        assert_eq!(
            choose_tier(&tiers, now - 3600, now, Some(90)),
            Some(tiers[0])
        );
        // Hour steps over a day: the hour tier gives the same answer with fewer rows.
        assert_eq!(
            choose_tier(&tiers, now - 86_400, now, Some(3600)),
            Some(tiers[2])
        );
    }

    #[test]
    fn parameters_are_validated_with_their_name() {
        let bad = |p: QueryParams| match p.validate(1_000_000) {
            Err(QueryError::Invalid(m)) => m,
            other => panic!("not invalid: {other:?}"),
        };
        let mut p = QueryParams {
            from: Some("yesterday".into()),
            ..QueryParams::default()
        };
        assert!(bad(p.clone()).starts_with("from:"));
        p.from = Some("-1h".into());
        p.to = Some("-2h".into());
        assert!(bad(p.clone()).contains("before"));
        p.to = None;
        p.agg = Some("median".into());
        assert!(bad(p.clone()).contains("agg"));
        p.agg = None;
        p.stat = Some("p95".into());
        assert!(bad(p.clone()).contains("unknown stat"));
        p.stat = None;
        p.step = Some("1m".into());
        p.points = Some("10".into());
        assert!(bad(p.clone()).contains("not both"));
        p.points = None;
        p.tags = vec!["env".into()];
        assert!(bad(p).contains("tag"));
    }

    #[test]
    fn aggregates_combine_series_values() {
        let vs = [(10, 1.0), (30, 5.0), (20, 3.0)];
        assert_eq!(combine(Agg::Avg, &vs), Some(3.0));
        assert_eq!(combine(Agg::Sum, &vs), Some(9.0));
        assert_eq!(combine(Agg::Min, &vs), Some(1.0));
        assert_eq!(combine(Agg::Max, &vs), Some(5.0));
        assert_eq!(combine(Agg::Last, &vs), Some(5.0));
        assert_eq!(combine(Agg::Count, &vs), Some(3.0));
        assert_eq!(combine(Agg::Count, &[]), Some(0.0));
        assert_eq!(combine(Agg::Avg, &[]), None);
    }
}
