//! What the monitoring tests share: the queries of the shipped dashboard and rules, a small
//! PromQL tokenizer that finds the metric names they read, Grafana's `label_values`
//! variables evaluated over samples, and the text exposition format.
#![allow(dead_code)]

pub mod exposition;
pub mod prometheus;
pub mod promql;
pub mod selector;
pub mod sources;

use std::collections::BTreeSet;

/// Names Prometheus itself writes for every target: they are not tallyd's to export.
pub const SCRAPE_NAMES: &[&str] = &["up"];

/// The names `expr` reads that are neither in `exported` nor recorded by the rules nor
/// written by Prometheus itself, and the template variables it names metrics with.
///
/// # Errors
///
/// A query the tokenizer cannot read.
pub fn unknown_names(
    expr: &str,
    exported: &BTreeSet<String>,
    recorded: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    let names = promql::names(expr)?;
    let unknown = names
        .metrics
        .into_iter()
        .filter(|name| {
            !exported.contains(name)
                && !recorded.contains(name)
                && !SCRAPE_NAMES.contains(&name.as_str())
        })
        .collect();
    Ok((unknown, names.templated))
}
