//! Host and process figures (SPEC §10): read from `/proc` by the flusher at the start of
//! each flush and folded into the shards as ordinary gauge samples (global tags and all), so
//! alert rules, backends and history see them like any series.
//!
//! - [`host`]: the `collectors.host` section.
//! - [`process`]: each `collectors.process` entry.
//! - [`procfs`]: the `/proc` parsers, also used for the agent's own `internal` figures.

pub mod host;
pub mod process;
pub mod procfs;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::aggregate::{KeyEncoder, ShardHandle, shard_of};
use crate::protocol::{MetricKind, Sample, Tag};

pub use host::{Host, HostConfig};
pub use process::{Process, ProcessConfig, Target};

/// The `[collectors]` section as the file spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCollectorsConfig {
    /// Present: the host collector is on (unless `enabled = false`).
    pub host: Option<RawHostConfig>,
    pub process: Vec<toml::Spanned<RawProcessConfig>>,
}

/// `[collectors.host]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHostConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// File systems for `host.disk.used_pct`.
    #[serde(default = "root")]
    pub disk_paths: Vec<PathBuf>,
    /// Interfaces for `host.network.*`; every one but `lo` when absent.
    #[serde(default)]
    pub interfaces: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

fn root() -> Vec<PathBuf> {
    vec![PathBuf::from("/")]
}

/// One `[[collectors.process]]`: `name` and one of `pid`, `pidfile`, `exe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcessConfig {
    pub name: String,
    pub pid: Option<u32>,
    pub pidfile: Option<PathBuf>,
    pub exe: Option<String>,
}

/// The validated `[collectors]` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectorsConfig {
    pub host: Option<HostConfig>,
    pub processes: Vec<ProcessConfig>,
}

impl CollectorsConfig {
    /// True when no collector is on.
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.processes.is_empty()
    }
}

impl RawCollectorsConfig {
    /// Validates the section; `base` resolves a relative pidfile.
    ///
    /// # Errors
    /// A message with the span of the entry at fault.
    pub fn validate(
        self,
        base: Option<&Path>,
    ) -> Result<CollectorsConfig, (std::ops::Range<usize>, String)> {
        let host = self.host.filter(|h| h.enabled).map(|h| HostConfig {
            disk_paths: h.disk_paths,
            interfaces: h.interfaces,
        });
        let mut processes: Vec<ProcessConfig> = Vec::new();
        for spanned in self.process {
            let span = spanned.span();
            let raw = spanned.into_inner();
            if raw.name.is_empty() || processes.iter().any(|p| p.name == raw.name) {
                return Err((
                    span,
                    format!("process name {:?} must be unique and not empty", raw.name),
                ));
            }
            let target = match (raw.pid, raw.pidfile, raw.exe) {
                (Some(pid), None, None) => Target::Pid(pid),
                (None, Some(file), None) => Target::Pidfile(match base {
                    Some(base) if file.is_relative() => base.join(file),
                    _ => file,
                }),
                (None, None, Some(exe)) if !exe.is_empty() => Target::Exe(exe),
                _ => {
                    return Err((
                        span,
                        format!(
                            "process {:?} needs exactly one of pid, pidfile or exe",
                            raw.name
                        ),
                    ));
                }
            };
            processes.push(ProcessConfig {
                name: raw.name,
                target,
            });
        }
        Ok(CollectorsConfig { host, processes })
    }
}

/// One gauge reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: &'static str,
    pub tags: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Gauge {
    fn new(name: &'static str, value: f64) -> Gauge {
        Gauge {
            name,
            tags: Vec::new(),
            value,
        }
    }

    fn tagged(mut self, key: &'static str, value: String) -> Gauge {
        self.tags.push((key, value));
        self
    }
}

/// Every configured collector, read by the flusher.
#[derive(Debug)]
pub struct Collectors {
    host: Option<Host>,
    processes: Vec<Process>,
    encoder: KeyEncoder,
    scratch: Vec<u8>,
}

impl Collectors {
    /// The collectors of `config` (baselines read now); global tags apply to their series.
    pub fn new(config: &CollectorsConfig, global_tags: &[(String, String)]) -> Collectors {
        Collectors {
            host: config.host.clone().map(Host::new),
            processes: config.processes.iter().cloned().map(Process::new).collect(),
            encoder: KeyEncoder::new(global_tags.to_vec().into()),
            scratch: Vec::new(),
        }
    }

    /// Reads every figure now.
    pub fn read(&mut self) -> Vec<Gauge> {
        let mut out = Vec::new();
        if let Some(host) = &mut self.host {
            host.collect(&mut out);
        }
        for process in &mut self.processes {
            process.collect(&mut out);
        }
        out.retain(|g| g.value.is_finite());
        out
    }

    /// Reads every figure and folds each into its shard as a gauge sample.
    pub fn feed(&mut self, shards: &[ShardHandle]) {
        if shards.is_empty() {
            return;
        }
        for gauge in self.read() {
            let mut tags: Vec<Tag<'_>> = gauge
                .tags
                .iter()
                .map(|(key, value)| Tag { key, value })
                .collect();
            let (body, hash) = self.encoder.body(gauge.name, &mut tags, &mut self.scratch);
            let sample = Sample {
                kind: MetricKind::Gauge,
                value: gauge.value,
                signed: false,
                text: "",
                rate: 1.0,
            };
            let shard = &shards[shard_of(hash, shards.len())];
            shard.lock_first().fold(body, hash, &sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_collector_reads_every_figure() {
        let config = CollectorsConfig {
            host: Some(HostConfig {
                disk_paths: vec![PathBuf::from("/")],
                interfaces: None,
            }),
            processes: Vec::new(),
        };
        let mut collectors = Collectors::new(&config, &[]);
        // Burn a little CPU so the interval has ticks.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let names: Vec<&str> = collectors.read().iter().map(|g| g.name).collect();
        for name in [
            "host.memory.total_bytes",
            "host.memory.available_bytes",
            "host.memory.used_pct",
            "host.load.1",
            "host.load.5",
            "host.load.15",
            "host.uptime_s",
            "host.disk.used_pct",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }

    #[test]
    fn a_process_needs_exactly_one_way_to_be_found() {
        let raw = |pid, exe: Option<&str>| RawCollectorsConfig {
            host: None,
            process: vec![toml::Spanned::new(
                0..1,
                RawProcessConfig {
                    name: "db".into(),
                    pid,
                    pidfile: None,
                    exe: exe.map(String::from),
                },
            )],
        };
        assert!(raw(None, None).validate(None).is_err());
        assert!(raw(Some(1), Some("postgres")).validate(None).is_err());
        let ok = raw(None, Some("postgres")).validate(None).expect("valid");
        assert_eq!(ok.processes[0].target, Target::Exe("postgres".into()));
    }
}
