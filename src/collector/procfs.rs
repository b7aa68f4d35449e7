//! Small pure parsers for the `/proc` files the collectors and the flusher read, each tested
//! on sample text, plus the readers that open them. Nothing here panics on odd content: a
//! file that does not parse gives `None` and its figures are left out.

use std::path::Path;

/// Clock ticks per second (`USER_HZ`), 100 where sysconf cannot tell.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The page size in bytes, 4096 where sysconf cannot tell.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// The aggregate `cpu` line of `/proc/stat`: (busy + idle ticks, idle ticks including
/// iowait, iowait ticks). Guest time is already inside user time, so it is not added.
pub fn cpu_totals(stat: &str) -> Option<(u64, u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let total: u64 = fields.iter().take(8).sum();
    let idle = *fields.get(3)?;
    let iowait = fields.get(4).copied().unwrap_or(0);
    Some((total, idle + iowait, iowait))
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn memory(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The three load averages of `/proc/loadavg`.
pub fn load(loadavg: &str) -> Option<[f64; 3]> {
    let mut fields = loadavg.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The first figure of `/proc/uptime`: seconds since boot.
pub fn uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// (interface, received bytes, transmitted bytes) of each line of `/proc/net/dev`.
pub fn network(dev: &str) -> Vec<(String, u64, u64)> {
    dev.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let fields: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            Some((name.trim().to_string(), *fields.first()?, *fields.get(8)?))
        })
        .collect()
}

/// What the collectors read of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// utime + stime, in ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    /// Ticks after boot when the process started.
    pub start_ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and `)`, so fields are
/// counted from the last `)`.
pub fn proc_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so field N is index N - 3.
    let at = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        cpu_ticks: at(14)? + at(15)?,
        threads: at(20)?,
        start_ticks: at(22)?,
        rss_pages: at(24)?,
    })
}

/// Reads a file into a string; `None` where it cannot be read.
pub fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The share of a file system in use, as `df` computes it: used / (used + available to
/// unprivileged users), in percent.
pub fn disk_used_pct(path: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let used = st.f_blocks.saturating_sub(st.f_bfree) as f64;
    let avail = st.f_bavail as f64;
    if used + avail <= 0.0 {
        return Some(0.0);
    }
    Some(100.0 * used / (used + avail))
}

/// The agent's own figures for `internal`: resident bytes and CPU seconds.
pub fn own_usage() -> (u64, f64) {
    let stat = read("/proc/self/stat").and_then(|t| proc_stat(&t));
    match stat {
        Some(s) => (
            s.rss_pages * page_size(),
            s.cpu_ticks as f64 / ticks_per_second(),
        ),
        None => (0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line_counts_iowait_as_idle_and_apart() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(cpu_totals(stat), Some((1000, 840, 40)));
        assert_eq!(cpu_totals("intr 1 2\n"), None);
    }

    #[test]
    fn meminfo_gives_total_and_available_bytes() {
        let text = "MemTotal:        2000 kB\nMemFree:  100 kB\nMemAvailable:    500 kB\n";
        assert_eq!(memory(text), Some((2_048_000, 512_000)));
    }

    #[test]
    fn loadavg_and_uptime() {
        assert_eq!(load("0.50 1.25 2.00 1/234 5678\n"), Some([0.5, 1.25, 2.0]));
        assert_eq!(uptime("12345.67 23456.78\n"), Some(12345.67));
    }

    #[test]
    fn net_dev_lines_give_rx_and_tx_bytes() {
        let dev = "Inter-|   Receive\n face |bytes packets\n    lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n  eth0: 5000 10 0 0 0 0 0 0 7000 12 0 0 0 0 0 0\n";
        assert_eq!(
            network(dev),
            [
                ("lo".to_string(), 100, 200),
                ("eth0".to_string(), 5000, 7000)
            ]
        );
    }

    #[test]
    fn proc_stat_counts_fields_after_a_name_with_spaces_and_parens() {
        let text = "42 (my (odd) proc) S 1 42 42 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 7 0 \
                    5000 123456 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(
            proc_stat(text),
            Some(ProcStat {
                cpu_ticks: 100,
                threads: 7,
                start_ticks: 5000,
                rss_pages: 300,
            })
        );
        assert_eq!(proc_stat("garbage"), None);
    }

    #[test]
    fn our_own_usage_is_readable() {
        let (rss, cpu) = own_usage();
        assert!(rss > 0);
        assert!(cpu >= 0.0);
        assert!(disk_used_pct(Path::new("/")).is_some_and(|p| (0.0..=100.0).contains(&p)));
    }
}
