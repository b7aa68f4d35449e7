//! What the Prometheus-style outputs share: series names, the statsd_exporter mapping file.

pub mod mapping;
