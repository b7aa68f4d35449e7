//! `[collectors.host]`: the machine's CPU, memory, load, disks, network and uptime from
//! `/proc` (SPEC §10). CPU shares and network rates are over the time since the previous
//! read (the first read's baseline is taken when the agent starts).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use super::Gauge;
use super::procfs;

/// What the host collector reads.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// File systems whose use is reported (`host.disk.used_pct`, tag `path`).
    pub disk_paths: Vec<PathBuf>,
    /// Interfaces reported; `None`: every interface but `lo`.
    pub interfaces: Option<Vec<String>>,
}

/// The host collector and its previous readings.
#[derive(Debug)]
pub struct Host {
    config: HostConfig,
    cpu: Option<(u64, u64, u64)>,
    /// The last CPU shares worked out (usage, iowait).
    cpu_pct: Option<(f64, f64)>,
    net: HashMap<String, (u64, u64)>,
    net_at: Instant,
}

impl Host {
    /// A collector with its baseline read now.
    pub fn new(config: HostConfig) -> Host {
        let mut host = Host {
            config,
            cpu: None,
            cpu_pct: None,
            net: HashMap::new(),
            net_at: Instant::now(),
        };
        host.cpu = procfs::read("/proc/stat").and_then(|s| procfs::cpu_totals(&s));
        host.net = host.read_net();
        host
    }

    fn read_net(&self) -> HashMap<String, (u64, u64)> {
        let text = procfs::read("/proc/net/dev").unwrap_or_default();
        procfs::network(&text)
            .into_iter()
            .filter(|(name, _, _)| match &self.config.interfaces {
                Some(list) => list.contains(name),
                None => name != "lo",
            })
            .map(|(name, rx, tx)| (name, (rx, tx)))
            .collect()
    }

    /// Reads every figure into `out`.
    pub fn collect(&mut self, out: &mut Vec<Gauge>) {
        let mut gauge = |name: &'static str, value: f64| out.push(Gauge::new(name, value));
        if let Some(now) = procfs::read("/proc/stat").and_then(|s| procfs::cpu_totals(&s)) {
            // Two reads within one clock tick see no change: the previous shares stand, or
            // (on the first read) the shares since boot.
            let (t0, i0, w0) = match self.cpu {
                Some(before) if before.0 < now.0 => before,
                Some(_) if self.cpu_pct.is_some() => (now.0, now.1, now.2),
                _ => (0, 0, 0),
            };
            let (total, idle, iowait) = now;
            let dt = total.saturating_sub(t0) as f64;
            if dt > 0.0 {
                let busy = dt - idle.saturating_sub(i0) as f64;
                let wait = iowait.saturating_sub(w0) as f64;
                self.cpu_pct = Some((
                    (100.0 * busy / dt).clamp(0.0, 100.0),
                    (100.0 * wait / dt).clamp(0.0, 100.0),
                ));
            }
            if let Some((usage, wait)) = self.cpu_pct {
                gauge("host.cpu.usage_pct", usage);
                gauge("host.cpu.iowait_pct", wait);
            }
            self.cpu = Some(now);
        }
        if let Some((total, available)) =
            procfs::read("/proc/meminfo").and_then(|m| procfs::memory(&m))
        {
            gauge("host.memory.total_bytes", total as f64);
            gauge("host.memory.available_bytes", available as f64);
            if total > 0 {
                let used = total.saturating_sub(available) as f64;
                gauge("host.memory.used_pct", 100.0 * used / total as f64);
            }
        }
        if let Some([one, five, fifteen]) =
            procfs::read("/proc/loadavg").and_then(|l| procfs::load(&l))
        {
            gauge("host.load.1", one);
            gauge("host.load.5", five);
            gauge("host.load.15", fifteen);
        }
        if let Some(up) = procfs::read("/proc/uptime").and_then(|u| procfs::uptime(&u)) {
            gauge("host.uptime_s", up);
        }
        for path in &self.config.disk_paths {
            if let Some(pct) = procfs::disk_used_pct(path) {
                out.push(
                    Gauge::new("host.disk.used_pct", pct)
                        .tagged("path", path.display().to_string()),
                );
            }
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.net_at).as_secs_f64();
        let net = self.read_net();
        if elapsed > 0.0 {
            for (name, (rx, tx)) in &net {
                let (rx0, tx0) = self.net.get(name).copied().unwrap_or((*rx, *tx));
                let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / elapsed;
                out.push(
                    Gauge::new("host.network.rx_bytes_ps", rate(*rx, rx0))
                        .tagged("interface", name.clone()),
                );
                out.push(
                    Gauge::new("host.network.tx_bytes_ps", rate(*tx, tx0))
                        .tagged("interface", name.clone()),
                );
            }
        }
        self.net = net;
        self.net_at = now;
    }
}
