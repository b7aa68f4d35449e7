//! `[[collectors.process]]`: one watched process, found by pid, pidfile or executable at each
//! read (SPEC §10): `process.up`, and while it runs its CPU share, resident memory, threads,
//! open file descriptors and uptime, tagged `process=<name>`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Gauge;
use super::procfs;

/// How a watched process is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Pid(u32),
    /// A file holding the pid, read at each flush.
    Pidfile(PathBuf),
    /// An executable: a path (compared with `/proc/<pid>/exe`) or a bare name (compared with
    /// the executable's file name, or `comm`); the longest-running match is watched.
    Exe(String),
}

/// One watched process's config.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    pub name: String,
    pub target: Target,
}

/// A watched process and its previous CPU reading.
#[derive(Debug)]
pub struct Process {
    config: ProcessConfig,
    /// (pid, start ticks, CPU ticks, when): the last reading of the process seen.
    last: Option<(u32, u64, u64, Instant)>,
}

impl Process {
    pub fn new(config: ProcessConfig) -> Process {
        Process { config, last: None }
    }

    fn find(&self) -> Option<u32> {
        match &self.config.target {
            Target::Pid(pid) => Some(*pid).filter(|p| Path::new(&format!("/proc/{p}")).exists()),
            Target::Pidfile(path) => procfs::read(path)?.trim().parse().ok(),
            Target::Exe(exe) => find_exe(exe),
        }
    }

    /// Reads the process's figures into `out`.
    pub fn collect(&mut self, out: &mut Vec<Gauge>) {
        let name = self.config.name.clone();
        let gauge = |metric: &'static str, value: f64| {
            Gauge::new(metric, value).tagged("process", name.clone())
        };
        let found = self.find().and_then(|pid| {
            let stat =
                procfs::read(format!("/proc/{pid}/stat")).and_then(|s| procfs::proc_stat(&s))?;
            Some((pid, stat))
        });
        let Some((pid, stat)) = found else {
            out.push(gauge("process.up", 0.0));
            self.last = None;
            return;
        };
        let ticks = procfs::ticks_per_second();
        let now = Instant::now();
        let boot_uptime = procfs::read("/proc/uptime")
            .and_then(|u| procfs::uptime(&u))
            .unwrap_or(0.0);
        let uptime = (boot_uptime - stat.start_ticks as f64 / ticks).max(0.0);
        let cpu_pct = match self.last {
            Some((p, start, cpu, at)) if p == pid && start == stat.start_ticks => {
                let elapsed = now.duration_since(at).as_secs_f64();
                let used = stat.cpu_ticks.saturating_sub(cpu) as f64 / ticks;
                (elapsed > 0.0).then(|| 100.0 * used / elapsed)
            }
            // First sight: its average since it started.
            _ => (uptime > 0.0).then(|| 100.0 * (stat.cpu_ticks as f64 / ticks) / uptime),
        };
        self.last = Some((pid, stat.start_ticks, stat.cpu_ticks, now));
        out.push(gauge("process.up", 1.0));
        if let Some(cpu) = cpu_pct {
            out.push(gauge("process.cpu_pct", cpu));
        }
        out.push(gauge(
            "process.rss_bytes",
            (stat.rss_pages * procfs::page_size()) as f64,
        ));
        out.push(gauge("process.threads", stat.threads as f64));
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            out.push(gauge("process.open_fds", fds.count() as f64));
        }
        out.push(gauge("process.uptime_s", uptime));
    }
}

/// The longest-running process whose executable is `exe`.
fn find_exe(exe: &str) -> Option<u32> {
    let by_path = exe.contains('/');
    let mut best: Option<(u64, u32)> = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let matches = match &link {
            Some(path) if by_path => path == Path::new(exe),
            Some(path) => path.file_name().is_some_and(|n| n == exe),
            None => false,
        } || (!by_path
            && procfs::read(format!("/proc/{pid}/comm")).is_some_and(|c| c.trim_end() == exe));
        if !matches {
            continue;
        }
        let Some(stat) =
            procfs::read(format!("/proc/{pid}/stat")).and_then(|s| procfs::proc_stat(&s))
        else {
            continue;
        };
        if best.is_none_or(|(start, _)| stat.start_ticks < start) {
            best = Some((stat.start_ticks, pid));
        }
    }
    best.map(|(_, pid)| pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(target: Target) -> Vec<(String, f64)> {
        let mut process = Process::new(ProcessConfig {
            name: "me".into(),
            target,
        });
        let mut out = Vec::new();
        process.collect(&mut out);
        out.into_iter()
            .map(|g| (g.name.to_string(), g.value))
            .collect()
    }

    #[test]
    fn our_own_process_is_up_with_its_figures() {
        let got = figures(Target::Pid(std::process::id()));
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "process.up",
                "process.cpu_pct",
                "process.rss_bytes",
                "process.threads",
                "process.open_fds",
                "process.uptime_s"
            ]
        );
        assert_eq!(got[0].1, 1.0);
        assert!(got[2].1 > 0.0 && got[3].1 >= 1.0);
    }

    #[test]
    fn a_missing_process_is_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("gone.pid");
        assert_eq!(
            figures(Target::Pidfile(pidfile)),
            [("process.up".into(), 0.0)]
        );
        assert_eq!(
            figures(Target::Exe("/no/such/executable".into())),
            [("process.up".into(), 0.0)]
        );
    }

    #[test]
    fn an_executable_is_found_by_path() {
        let exe = std::fs::read_link("/proc/self/exe").expect("own exe");
        let found = find_exe(&exe.display().to_string());
        assert!(found.is_some());
    }
}
