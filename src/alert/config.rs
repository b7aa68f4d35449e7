//! The `[[alerts]]` and `[[notifiers]]` sections: their raw structs as the file spells them,
//! defaults, and validation into [`AlertRule`]s and [`NotifierConfig`]s. `src/config.rs`
//! composes them.

use std::time::Duration;

use serde::Deserialize;

use super::rule::{AlertRule, Op, Severity, Target, is_known_stat};
use crate::aggregate::config::AggregationConfig;
use crate::config::{Invalid, expand_env};
use crate::glob::Glob;

/// A webhook notifier: each alert event is POSTed to `url`.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifierConfig {
    pub name: String,
    pub url: String,
    /// With `${VAR}` already expanded.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub format: WebhookFormat,
    /// Further attempts after a failed POST.
    pub retries: u32,
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The alert event object of the record's `alerts`.
    #[default]
    Json,
    /// `{"text": "..."}`, which Slack incoming webhooks (and Mattermost, Rocket.Chat) accept.
    Slack,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlert {
    name: toml::Spanned<String>,
    metric: toml::Spanned<String>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    stat: Option<toml::Spanned<String>>,
    op: Op,
    threshold: Option<f64>,
    #[serde(rename = "for", default = "one")]
    for_flushes: toml::Spanned<u32>,
    #[serde(default = "default_severity")]
    severity: Severity,
    #[serde(default)]
    notify: Vec<toml::Spanned<String>>,
    repeat_interval_ms: Option<u64>,
}

fn one() -> toml::Spanned<u32> {
    toml::Spanned::new(0..0, 1)
}

fn default_severity() -> Severity {
    Severity::Warning
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotifier {
    name: toml::Spanned<String>,
    kind: NotifierKind,
    url: toml::Spanned<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, toml::Spanned<String>>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: toml::Spanned<u64>,
    #[serde(default)]
    format: WebhookFormat,
    #[serde(default = "default_retries")]
    retries: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum NotifierKind {
    Webhook,
}

fn default_timeout_ms() -> toml::Spanned<u64> {
    toml::Spanned::new(0..0, 5000)
}

fn default_retries() -> u32 {
    3
}

/// Validates the alert rules in file order; names must be unique.
///
/// # Errors
/// The first rule at fault, at its value.
pub(crate) fn validate_alerts(
    raw: Vec<RawAlert>,
    aggregation: &AggregationConfig,
    notifiers: &[NotifierConfig],
) -> Result<Vec<AlertRule>, Invalid> {
    let mut alerts: Vec<AlertRule> = Vec::with_capacity(raw.len());
    for rule in raw {
        if alerts.iter().any(|r| r.name == *rule.name.get_ref()) {
            return Err(Invalid::at(
                &rule.name,
                format!("alert name {:?} is used twice", rule.name.get_ref()),
            ));
        }
        alerts.push(rule.validate(aggregation, notifiers)?);
    }
    Ok(alerts)
}

pub(crate) fn validate_notifiers(raw: Vec<RawNotifier>) -> Result<Vec<NotifierConfig>, Invalid> {
    let mut notifiers: Vec<NotifierConfig> = Vec::with_capacity(raw.len());
    for notifier in raw {
        let name = notifier.name.get_ref();
        if name.is_empty() || name == "log" || notifiers.iter().any(|n| &n.name == name) {
            return Err(Invalid::at(
                &notifier.name,
                format!("notifier name {name:?} must be non-empty, unique and not \"log\""),
            ));
        }
        let url = notifier.url.get_ref();
        crate::http::check_url(url).map_err(|e| Invalid::at(&notifier.url, e))?;
        if *notifier.timeout_ms.get_ref() == 0 {
            return Err(Invalid::at(
                &notifier.timeout_ms,
                "timeout_ms must be at least 1",
            ));
        }
        let NotifierKind::Webhook = notifier.kind;
        let mut headers = Vec::with_capacity(notifier.headers.len());
        for (key, value) in notifier.headers {
            let expanded = expand_env(value.get_ref()).map_err(|e| Invalid::at(&value, e))?;
            crate::http::check_header(&key, &expanded).map_err(|e| Invalid::at(&value, e))?;
            headers.push((key, expanded));
        }
        notifiers.push(NotifierConfig {
            name: name.clone(),
            url: url.clone(),
            headers,
            timeout: Duration::from_millis(*notifier.timeout_ms.get_ref()),
            format: notifier.format,
            retries: notifier.retries,
        });
    }
    Ok(notifiers)
}

impl RawAlert {
    fn validate(
        self,
        aggregation: &AggregationConfig,
        notifiers: &[NotifierConfig],
    ) -> Result<AlertRule, Invalid> {
        if self.name.get_ref().trim().is_empty() {
            return Err(Invalid::at(&self.name, "alert name must not be empty"));
        }
        let metric = Glob::new(self.metric.get_ref()).map_err(|e| Invalid::at(&self.metric, e))?;
        let stat = match (&self.stat, self.op) {
            (Some(stat), _) => {
                if !is_known_stat(
                    stat.get_ref(),
                    &aggregation.distribution,
                    &aggregation.histograms,
                ) {
                    return Err(Invalid::at(
                        stat,
                        format!(
                            "unknown stat {:?}: use a figure of the record (count, rate, value, mean, upper_99, ...) for the configured percentiles and bins",
                            stat.get_ref()
                        ),
                    ));
                }
                stat.get_ref().clone()
            }
            (None, Op::Absent) => String::new(),
            (None, _) => {
                return Err(Invalid::at(
                    &self.name,
                    "alert needs a `stat` (or op = \"absent\")",
                ));
            }
        };
        let threshold = match (self.threshold, self.op) {
            (Some(t), _) if t.is_finite() => t,
            (None, Op::Absent) => 0.0,
            _ => {
                return Err(Invalid::at(
                    &self.name,
                    "alert needs a finite `threshold` (or op = \"absent\")",
                ));
            }
        };
        if *self.for_flushes.get_ref() == 0 {
            return Err(Invalid::at(&self.for_flushes, "`for` must be at least 1"));
        }
        let mut notify = Vec::with_capacity(self.notify.len());
        for target in &self.notify {
            let name = target.get_ref();
            if name == "log" {
                notify.push(Target::Log);
            } else if let Some(at) = notifiers.iter().position(|n| &n.name == name) {
                notify.push(Target::Webhook(at));
            } else {
                return Err(Invalid::at(
                    target,
                    format!(
                        "unknown notifier {name:?}: use \"log\" or the name of a [[notifiers]] entry"
                    ),
                ));
            }
        }
        Ok(AlertRule {
            name: self.name.into_inner(),
            metric,
            tags: self.tags.into_iter().collect(),
            stat,
            op: self.op,
            threshold,
            for_flushes: self.for_flushes.into_inner(),
            severity: self.severity,
            notify,
            repeat_interval: self
                .repeat_interval_ms
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
        })
    }
}
