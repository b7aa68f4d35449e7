//! Rule evaluation: which rules apply to a series is worked out once, when the series first
//! appears (exact names through a map, globs and tags once), and cached while the series
//! lives; each flush then costs one lookup per series. State is kept only for (rule, series)
//! pairs whose condition holds or that are firing; once the series has left the record, for a
//! bounded time, or while an `absent` alert fires (up to a bound).

use std::collections::HashMap;
use std::time::Instant;

use rustc_hash::FxBuildHasher;

use super::notifier::Notifiers;
use super::rule::{AlertRule, Op};
use crate::aggregate::SeriesKey;
use crate::record::{AlertEvent, Metric, Record};

/// Firing `absent` pairs kept after their series left the record, waiting for a sample to
/// resolve them: about 100 bytes each.
const MAX_GONE_FIRING: usize = 100_000;

/// The state of one (rule, series) pair.
#[derive(Debug, Clone, Copy)]
struct PairState {
    /// Consecutive flushes the condition has held.
    holding: u32,
    firing: bool,
    /// Unix seconds when it started firing.
    since: u64,
    /// The flush number of the last firing event (first or reminder).
    last_sent: u64,
    /// The flush number when the series was last in the record.
    seen: u64,
    /// The value the condition last saw.
    value: Option<f64>,
}

/// Evaluates the rules against each record and notifies.
pub struct Alerter {
    rules: Vec<AlertRule>,
    /// Rules with an exact metric name, by that name.
    exact: HashMap<String, Vec<u32>>,
    /// Rules with a `*` pattern.
    globs: Vec<u32>,
    /// The rules that apply to each live series.
    matches: HashMap<SeriesKey, Box<[u32]>, FxBuildHasher>,
    states: HashMap<(u32, SeriesKey), PairState, FxBuildHasher>,
    flushes: u64,
    /// Firing `absent` pairs kept once their series left the record ([`MAX_GONE_FIRING`]).
    max_gone_firing: usize,
    interval_ms: u128,
    notifiers: Notifiers,
}

impl Alerter {
    /// An alerter for `rules`; `interval_ms` is the flush interval, which `repeat_interval`
    /// is measured in.
    pub fn new(rules: Vec<AlertRule>, interval_ms: u128, notifiers: Notifiers) -> Alerter {
        let mut exact: HashMap<String, Vec<u32>> = HashMap::new();
        let mut globs = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.metric.is_exact() {
                exact
                    .entry(rule.metric.as_str().to_string())
                    .or_default()
                    .push(i as u32);
            } else {
                globs.push(i as u32);
            }
        }
        Alerter {
            rules,
            exact,
            globs,
            matches: HashMap::default(),
            states: HashMap::default(),
            flushes: 0,
            max_gone_firing: MAX_GONE_FIRING,
            interval_ms,
            notifiers,
        }
    }

    /// Evaluates every rule against `record`, appends the events to `record.alerts` and hands
    /// them to the rules' notifiers.
    pub fn evaluate(&mut self, record: &mut Record) {
        if self.rules.is_empty() {
            return;
        }
        self.flushes += 1;
        let mut events = Vec::new();
        let mut matches = HashMap::with_capacity_and_hasher(self.matches.len(), FxBuildHasher);
        for metric in &record.metrics {
            let rules = match self.matches.remove(&metric.key) {
                Some(rules) => rules,
                None => self.rules_for(&metric.key),
            };
            for &r in rules.iter() {
                let outcome = self.condition(r, Some(metric), record);
                self.step(r, &metric.key, outcome, true, record.timestamp, &mut events);
            }
            matches.insert(metric.key.clone(), rules);
        }
        self.matches = matches;
        // Pairs whose series is gone from the record (expired, or over max_series).
        let gone: Vec<(u32, SeriesKey, u64, bool)> = self
            .states
            .iter()
            .filter(|(_, state)| state.seen != self.flushes)
            .map(|((r, key), state)| (*r, key.clone(), state.seen, state.firing))
            .collect();
        let mut kept_firing = Vec::new();
        for (r, key, seen, firing) in gone {
            // `absent` still holds after the series left, and for `for` more flushes the
            // pair goes on as usual, so a rule whose `for` outlasts series_ttl can fire.
            // After that, a pair that is not firing is forgotten without an event. A firing
            // one is kept (and reminded of), still firing until a sample of its series
            // resolves it, up to `max_gone_firing` such pairs.
            let (holds, value) = self.condition(r, None, record);
            let grace = u64::from(self.rules[r as usize].for_flushes);
            if holds && self.flushes - seen > grace {
                if firing {
                    kept_firing.push((seen, r, key.clone()));
                } else {
                    self.states.remove(&(r, key));
                    continue;
                }
            }
            self.step(
                r,
                &key,
                (holds, value),
                false,
                record.timestamp,
                &mut events,
            );
        }
        if kept_firing.len() > self.max_gone_firing {
            // Series churn under an `absent` glob: forget the longest gone, so the state
            // stays bounded. Their alerts stay firing at the receivers.
            kept_firing.sort_unstable_by_key(|(seen, ..)| *seen);
            let excess = kept_firing.len() - self.max_gone_firing;
            for (_, r, key) in kept_firing.into_iter().take(excess) {
                self.states.remove(&(r, key));
            }
            tracing::warn!(
                forgotten = excess,
                "absent alerts: more firing pairs whose series expired than are kept; the \
                 longest gone are forgotten without a resolved event"
            );
        }
        for (r, event) in &events {
            self.notifiers.notify(&self.rules[*r as usize], event);
        }
        record
            .alerts
            .extend(events.into_iter().map(|(_, event)| event));
        record.firing = self
            .states
            .iter()
            .filter(|(_, state)| state.firing)
            .map(|((r, key), state)| {
                let rule = &self.rules[*r as usize];
                event(rule, key, "firing", state.value, state.since)
            })
            .collect();
        record
            .firing
            .sort_by(|a, b| (&a.rule, &a.name).cmp(&(&b.rule, &b.name)));
    }

    /// Closes the notifiers, giving webhooks until `deadline` to deliver what they hold.
    pub fn close(self, deadline: Instant) {
        self.notifiers.close(deadline);
    }

    fn rules_for(&self, key: &SeriesKey) -> Box<[u32]> {
        let exact = self.exact.get(key.name()).into_iter().flatten();
        let mut rules: Vec<u32> = exact
            .chain(self.globs.iter())
            .copied()
            .filter(|&r| self.rules[r as usize].matches(key))
            .collect();
        rules.sort_unstable();
        rules.into_boxed_slice()
    }

    /// The number of (rule, series) pairs with state.
    #[cfg(test)]
    fn pairs(&self) -> usize {
        self.states.len()
    }

    /// Whether rule `r` holds for a series (`None`: gone from the record), and the value.
    fn condition(&self, r: u32, metric: Option<&Metric>, record: &Record) -> (bool, Option<f64>) {
        let rule = &self.rules[r as usize];
        let value = metric.and_then(|m| m.figure(record, &rule.stat));
        let holds = match rule.op {
            Op::Absent => metric.is_none_or(|m| !m.active()),
            op => value.is_some_and(|v| op.holds(v, rule.threshold)),
        };
        (holds, value)
    }

    /// Advances the pair of rule `r` and `key` by one flush, given whether its condition
    /// holds (and the value) and whether the series is `present` in the record.
    fn step(
        &mut self,
        r: u32,
        key: &SeriesKey,
        (holds, value): (bool, Option<f64>),
        present: bool,
        now: u64,
        events: &mut Vec<(u32, AlertEvent)>,
    ) {
        let rule = &self.rules[r as usize];
        let pair = (r, key.clone());
        if !holds {
            if let Some(state) = self.states.remove(&pair)
                && state.firing
            {
                events.push((r, event(rule, key, "resolved", value, state.since)));
            }
            return;
        }
        let flushes = self.flushes;
        let state = self.states.entry(pair).or_insert(PairState {
            holding: 0,
            firing: false,
            since: now,
            last_sent: flushes,
            seen: flushes,
            value,
        });
        state.value = value;
        if present {
            state.seen = flushes;
        }
        state.holding = state.holding.saturating_add(1);
        if !state.firing {
            if state.holding >= rule.for_flushes {
                state.firing = true;
                state.since = now;
                state.last_sent = flushes;
                events.push((r, event(rule, key, "firing", value, now)));
            }
        } else if let Some(repeat) = rule.repeat_interval {
            let elapsed_ms = u128::from(flushes - state.last_sent) * self.interval_ms;
            if elapsed_ms >= repeat.as_millis() {
                state.last_sent = flushes;
                events.push((r, event(rule, key, "firing", value, state.since)));
            }
        }
    }
}

fn event(
    rule: &AlertRule,
    key: &SeriesKey,
    state: &str,
    value: Option<f64>,
    since: u64,
) -> AlertEvent {
    AlertEvent {
        rule: rule.name.clone(),
        severity: rule.severity.as_str().to_string(),
        state: state.to_string(),
        name: key.name().to_string(),
        tags: key
            .tags()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        stat: rule.stat.clone(),
        op: rule.op.as_str().to_string(),
        threshold: rule.threshold,
        value,
        since,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::distribution::DistributionConfig;
    use crate::alert::rule::Severity;
    use crate::glob::Glob;
    use crate::protocol::MetricKind;
    use crate::record::Figures;
    use crate::telemetry::Telemetry;

    fn alerter(pattern: &str, op: Op, for_flushes: u32) -> Alerter {
        let rule = AlertRule {
            name: "r".to_string(),
            metric: Glob::new(pattern).unwrap(),
            tags: Vec::new(),
            stat: "count".to_string(),
            op,
            threshold: 0.0,
            for_flushes,
            severity: Severity::Info,
            notify: Vec::new(),
            repeat_interval: None,
        };
        let notifiers = Notifiers::log_only(Arc::new(Telemetry::default()));
        Alerter::new(vec![rule], 10_000, notifiers)
    }

    /// Evaluates a record of counters, each `(name, count)` (0: idle), and returns the
    /// events as (name, state).
    fn flush(alerter: &mut Alerter, series: &[(&str, f64)]) -> Vec<(String, String)> {
        let metrics = series
            .iter()
            .map(|&(name, count)| Metric {
                key: SeriesKey::new(MetricKind::Counter, name.as_bytes()),
                figures: Figures::Counter {
                    count,
                    active: count > 0.0,
                },
            })
            .collect();
        let mut record = Record {
            timestamp: 1_000 + alerter.flushes,
            interval_ms: 10_000,
            host: "test".to_string(),
            metrics,
            events: Vec::new(),
            alerts: Vec::new(),
            firing: Vec::new(),
            internal: Default::default(),
            members: Vec::new(),
            distribution: Arc::new(DistributionConfig {
                percentiles: Vec::new(),
                exact_samples: 10,
                keep_values: false,
                history_sketch: false,
            }),
        };
        alerter.evaluate(&mut record);
        record
            .alerts
            .into_iter()
            .map(|event| (event.name, event.state))
            .collect()
    }

    fn events(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(name, state)| (name.to_string(), state.to_string()))
            .collect()
    }

    #[test]
    fn absent_state_stays_bounded_under_series_churn() {
        // Each flush a new series appears, the previous one is idle (and fires), older ones
        // expired: their firing pairs are kept up to the bound.
        let mut alerter = alerter("req.*", Op::Absent, 1);
        alerter.max_gone_firing = 10;
        let names: Vec<String> = (0..100).map(|i| format!("req.{i}")).collect();
        flush(&mut alerter, &[(&names[0], 1.0)]);
        for pair in names.windows(2) {
            flush(&mut alerter, &[(&pair[0], 0.0), (&pair[1], 1.0)]);
        }
        // The bound, the idle series and the new one.
        assert!(alerter.pairs() <= 12, "{} pairs", alerter.pairs());
        assert!(alerter.pairs() >= 10, "{} pairs", alerter.pairs());
    }

    #[test]
    fn an_absent_pair_fires_after_expiry_and_resolves_only_when_a_sample_returns() {
        let mut alerter = alerter("heartbeat", Op::Absent, 2);
        assert!(flush(&mut alerter, &[("heartbeat", 1.0)]).is_empty());
        assert!(flush(&mut alerter, &[("heartbeat", 0.0)]).is_empty());
        // Expired: still absent, so `for` completes and the rule fires.
        assert_eq!(flush(&mut alerter, &[]), events(&[("heartbeat", "firing")]));
        // Still no sample: still firing, nothing new, the pair kept.
        for _ in 0..5 {
            assert!(flush(&mut alerter, &[]).is_empty());
        }
        assert_eq!(alerter.pairs(), 1);
        // The series is back with a sample: resolved.
        assert_eq!(
            flush(&mut alerter, &[("heartbeat", 1.0)]),
            events(&[("heartbeat", "resolved")])
        );
        assert_eq!(alerter.pairs(), 0);
    }

    #[test]
    fn a_comparison_pair_resolves_when_its_series_leaves() {
        let mut alerter = alerter("errors", Op::Gt, 1);
        assert_eq!(
            flush(&mut alerter, &[("errors", 3.0)]),
            events(&[("errors", "firing")])
        );
        assert_eq!(flush(&mut alerter, &[]), events(&[("errors", "resolved")]));
        assert_eq!(alerter.pairs(), 0);
    }
}
