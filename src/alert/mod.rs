//! Alerts (SPEC §4): rules evaluated against every flush record after aggregation and
//! before the backends, with state per (rule, series); events go into the record's `alerts`
//! and to each rule's notifiers.

pub mod config;
mod evaluate;
pub mod notifier;
pub mod rule;

pub use evaluate::Alerter;
