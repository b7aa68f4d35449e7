//! The real `tallyd` binary: SIGTERM after a burst loses nothing; config errors exit 2 with
//! the file, line and column, or the environment variable; environment overrides apply with
//! and without a file; the shipped example config is valid.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::binary::{BIN, spawn_agent, spawn_logged};

/// Writes a config into `dir`: one UDP listener on a free port with `recv_buffer` bytes of
/// receive buffer, an hour's flush interval (only the final flush writes) plus `aggregation`
/// lines, and a JSON file backend. Returns the config's path and the output file's.
fn file_config(dir: &Path, recv_buffer: usize, aggregation: &str) -> (PathBuf, PathBuf) {
    let out = dir.join("out.jsonl");
    let config = dir.join("tallyd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nudp = [\"127.0.0.1:0\"]\nudp_recv_buffer_bytes = {recv_buffer}\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\
             [aggregation]\nflush_interval_ms = 3600000\n{aggregation}\n\
             [[backends]]\nkind = \"json_file\"\npath = {:?}\n",
            out.display().to_string()
        ),
    )
    .expect("config");
    (config, out)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..1000 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("the agent did not exit within 10 s");
}

#[test]
fn sigterm_straight_after_a_burst_loses_nothing() {
    // Two shards with two receive threads, one shard with two (counters in each thread's
    // local table until the final flush, the rest batched), and one shard and one thread
    // (folded straight into the shard).
    for (shards, threads) in [(2, 2), (1, 2), (1, 1)] {
        burst_then_sigterm(shards, threads);
    }
}

fn burst_then_sigterm(shards: usize, threads: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, out) = file_config(dir.path(), 4_194_304, &format!("shards = {shards}"));
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "[server]\n",
        &format!("[server]\nudp_threads_per_socket = {threads}\n"),
    );
    std::fs::write(&config, text).expect("config");
    let (mut agent, addr) = spawn_agent(&config);

    let socket = UdpSocket::bind("127.0.0.1:0").expect("client");
    let datagram = (0..20)
        .map(|i| format!("burst:1|c\nlat:{i}|ms\n"))
        .collect::<String>();
    const DATAGRAMS: u64 = 500;
    for _ in 0..DATAGRAMS {
        socket.send_to(datagram.as_bytes(), addr).expect("send");
    }
    // SAFETY: kill(2) with a valid pid of our own child and a valid signal number.
    let rc = unsafe { libc::kill(agent.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = wait_exit(&mut agent.0);
    assert!(status.success(), "exit status {status}");

    let text = std::fs::read_to_string(&out).expect("output file");
    let record: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("final record")).expect("json");
    let metrics = record["metrics"].as_array().expect("metrics");
    let burst = metrics
        .iter()
        .find(|m| m["name"] == "burst")
        .expect("counter present");
    let lat = metrics
        .iter()
        .find(|m| m["name"] == "lat")
        .expect("timer present");
    assert_eq!(burst["count"], DATAGRAMS * 20);
    assert_eq!(lat["count"], DATAGRAMS * 20);
    assert_eq!(record["internal"]["dropped_lines"], 0);
    // The final flush divides by the configured interval.
    assert_eq!(record["interval_ms"], 3_600_000);
}

#[test]
fn datagrams_the_kernel_drops_while_the_agent_is_stopped_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, out) = file_config(dir.path(), 4096, "");
    let (mut agent, addr) = spawn_agent(&config);
    let pid = agent.0.id() as libc::pid_t;
    // SAFETY: kill(2) with a valid pid of our own child and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // The stopped agent reads nothing: a few datagrams fit its 8 KiB buffer, the kernel
    // drops the rest.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client");
    const DATAGRAMS: u64 = 2000;
    for i in 0..DATAGRAMS {
        socket.send_to(b"stopped:1|c", addr).expect("send");
        if i % 50 == 49 {
            // Loopback datagrams pass through the host's input backlog (1000 by default)
            // before they reach the socket; drops there are not the socket's. Pausing now
            // and then lets the backlog drain even when the machine is busy.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut agent.0);
    assert!(status.success(), "exit status {status}");

    let text = std::fs::read_to_string(&out).expect("output file");
    let record: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("final record")).expect("json");
    let counted = record["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["name"] == "stopped")
        .map_or(0, |m| m["count"].as_u64().expect("a count"));
    let dropped = record["internal"]["dropped_datagrams"]
        .as_u64()
        .expect("dropped_datagrams in internal");
    assert!(dropped > 0, "the kernel dropped datagrams: {record}");
    assert!(counted > 0, "the buffer kept some");
    assert_eq!(
        counted + dropped,
        DATAGRAMS,
        "every datagram is either counted or reported dropped"
    );
}

fn check(config: &str) -> (i32, String) {
    check_with_env(config, &[])
}

/// `--check-config` on `config` with the environment variables `env` (name, value) added.
fn check_with_env(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).expect("write");
    let output = Command::new(BIN)
        .arg("--check-config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let shown = stderr.replace(&path.display().to_string(), "FILE");
    (output.status.code().unwrap_or(-1), shown)
}

#[test]
fn config_errors_exit_2_naming_file_line_and_column() {
    let cases = [
        (
            "[server]\nudp = [\"nonsense\"]\n",
            "FILE:2:8:",
            "socket address",
        ),
        (
            "[aggregation]\nflush_interval = 5\n",
            "FILE:2:1:",
            "unknown field `flush_interval`",
        ),
        (
            "[aggregation]\npercentiles = [90, 0]\n",
            "FILE:2:20:",
            "percentile",
        ),
        (
            "[aggregation]\nflush_interval_ms = \"ten\"\n",
            "FILE:2:21:",
            "invalid type",
        ),
        (
            "[[backends]]\nkind = \"carrier_pigeon\"\n",
            "FILE:2:8:",
            "unknown backend kind",
        ),
        ("[server\n", "FILE:1:8:", "unclosed table"),
        (
            "[[aggregation.histograms]]\nmetric = \"a.*\"\nbins = [10, 5]\n",
            "FILE:3:8:",
            "increasing",
        ),
    ];
    for (config, location, words) in cases {
        let (code, stderr) = check(config);
        assert_eq!(code, 2, "{config:?}: {stderr}");
        assert!(
            stderr.contains(location),
            "{config:?}: want {location} in {stderr}"
        );
        assert!(
            stderr.contains(words),
            "{config:?}: want {words:?} in {stderr}"
        );
    }
}

#[test]
fn a_bad_environment_override_exits_2_naming_the_variable() {
    let var = "TALLYD_AGGREGATION_FLUSH_INTERVAL_MS";
    let (code, stderr) =
        check_with_env("[aggregation]\nflush_interval_ms = 1000\n", &[(var, "abc")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("environment variable {var}: invalid type")),
        "{stderr}"
    );
}

#[test]
fn an_environment_override_wins_over_the_file() {
    // Invalid on its own; valid once the environment replaces the value.
    let config = "[aggregation]\nflush_interval_ms = 0\n";
    assert_eq!(check(config).0, 2);
    let (code, stderr) =
        check_with_env(config, &[("TALLYD_AGGREGATION_FLUSH_INTERVAL_MS", "1000")]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn environment_overrides_apply_without_a_config_file() {
    let mut command = Command::new(BIN);
    command.env("TALLYD_SERVER_UDP", "[\"127.0.0.1:0\"]");
    let (mut agent, addr) = spawn_logged(command);
    // The default is port 8125: an ephemeral port shows the override applied.
    assert_ne!(addr.port(), 8125);
    // SAFETY: kill(2) with a valid pid of our own child and a valid signal number.
    let rc = unsafe { libc::kill(agent.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = wait_exit(&mut agent.0);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_missing_config_file_exits_2() {
    let output = Command::new(BIN)
        .args(["--config", "/nonexistent/tallyd.toml"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/tallyd.toml"));
}

#[test]
fn the_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let output = Command::new(BIN)
        .arg("--check-config")
        .arg(&example)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
