//! The real `tallyd` binary as the tests run it: started on a config, its UDP address read
//! from its log, and killed (SIGKILL) when its guard drops while it still runs, so a test
//! failing part-way does not leave it behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_tallyd");

/// The agent's process: killed when dropped while still running, so that a test failing
/// part-way does not leave it behind.
pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the binary on `config` and returns it with the UDP address it logged.
pub fn spawn_agent(config: &Path) -> (Agent, SocketAddr) {
    let mut command = Command::new(BIN);
    command.arg("--config").arg(config);
    spawn_logged(command)
}

/// Starts `command` (the binary and its arguments) logging at info and returns it with the
/// UDP address it logged.
pub fn spawn_logged(mut command: Command) -> (Agent, SocketAddr) {
    let mut child = command
        .arg("--log-level")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let agent = Agent(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("udp=").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .ok()
        .and_then(|addr| addr.parse().ok());
    let Some(addr) = addr else {
        panic!("the agent did not log a UDP address it listens on");
    };
    (agent, addr)
}
