//! tallyd, a StatsD aggregation agent. Modules in the order data flows:
//!
//! - [`config`]: the TOML file and its `TALLYD_*` environment overrides, validated once into
//!   [`config::Config`].
//! - [`protocol`]: the StatsD line grammar: bytes in, samples, events and checks out.
//! - [`server`]: UDP, TCP and Unix listeners; each routes samples to their shard.
//! - [`collector`]: host and process figures from `/proc`, fed into the shards as gauges at
//!   each flush.
//! - [`aggregate`]: shards owning the series and their interval state, folded into by the
//!   receive threads.
//! - [`flush`]: the interval ticker: collects snapshots, builds the [`record::Record`].
//! - [`record`]: the flush record and its JSON shape.
//! - [`alert`]: alert rules evaluated against each record, and their notifiers.
//! - [`export`]: what the Prometheus-style outputs share (the statsd_exporter mapping file,
//!   names, labels, cumulative totals).
//! - [`history`]: the embedded store of every series over time (tiers of mergeable windows,
//!   written by a backend at each flush) and the query engine `tallyd query` and the API
//!   share.
//! - [`backend`]: where records go: console, JSON Lines file, HTTP push, Graphite, StatsD
//!   forwarding, Prometheus remote write, OTLP, and a capture for tests.
//! - [`http`]: the one HTTP client the HTTP backend (and webhooks) post through.
//! - [`telemetry`]: the agent's own counters, read into each record's `internal`.
//! - [`app`]: wiring and the shutdown order.

pub mod aggregate;
pub mod alert;
pub mod api;
pub mod app;
pub mod backend;
pub mod collector;
pub mod config;
pub mod export;
pub mod flush;
pub mod glob;
pub mod history;
pub mod http;
pub mod protocol;
pub mod record;
pub mod server;
pub mod telemetry;
