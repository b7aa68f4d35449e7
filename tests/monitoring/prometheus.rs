//! Driving a real Prometheus (or any child process) from a test: processes killed on drop
//! with their log's tail shown on failure, free loopback ports, bounded polling, and
//! Prometheus's HTTP API (instant queries, rule health).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const POLL: Duration = Duration::from_millis(250);

/// A child process killed (by its pid) when dropped; its output is in `log`, whose tail is
/// printed when a test fails while it runs.
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &'static str, program: &Path, args: &[String], log: PathBuf) -> Process {
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Process { name, child, log }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of {}'s log:", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The path of `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

pub fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
    listener.local_addr().expect("its address").port()
}

pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
    socket.local_addr().expect("its address").port()
}

pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// GET `url` with query parameters: the status and body, or the transport error.
pub fn get(url: &str, params: &[(&str, &str)]) -> Result<(u16, String), String> {
    let mut request = http().get(url);
    for (key, value) in params {
        request = request.query(*key, *value);
    }
    let mut response = request.call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Calls `probe` until it gives a value, at most until `deadline`; panics with what the last
/// attempt said.
pub fn eventually<T>(
    deadline: Instant,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline || attempts > 1000 => {
                panic!("{what}: still not so after {attempts} attempts: {last}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// One series of an instant query's answer: its labels and value.
pub type Series = (BTreeMap<String, String>, f64);

/// Runs `expr` at now: the answer's series (a scalar as one series without labels).
pub fn query(prometheus: &str, expr: &str) -> Result<Vec<Series>, String> {
    let (status, body) = get(&format!("{prometheus}/api/v1/query"), &[("query", expr)])?;
    let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 || answer["status"] != "success" {
        return Err(format!("{status} {body}"));
    }
    let number = |pair: &Value| -> Result<f64, String> {
        let text = pair[1].as_str().ok_or(format!("no value in {body}"))?;
        match text {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            t => t.parse().map_err(|e| format!("{e}: {t}")),
        }
    };
    let data = &answer["data"];
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or(format!("no result in {body}"))?
            .iter()
            .map(|series| {
                let labels =
                    serde_json::from_value(series["metric"].clone()).map_err(|e| e.to_string())?;
                Ok((labels, number(&series["value"])?))
            })
            .collect(),
        Some("scalar") => Ok(vec![(BTreeMap::new(), number(&data["result"])?)]),
        other => Err(format!("unexpected result type {other:?}: {body}")),
    }
}

pub fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

/// Waits until `expr` answers exactly one series with value `want`.
pub fn assert_value(prometheus: &str, deadline: Instant, expr: &str, want: f64) {
    eventually(deadline, &format!("{expr} == {want}"), || {
        let answer = query(prometheus, expr)?;
        match answer.as_slice() {
            [(_, got)] if close(*got, want) => Ok(()),
            _ => Err(format!("answer {answer:?}")),
        }
    });
}

/// Whether Prometheus has loaded `rules` rules and each evaluated without error; panics on
/// one that failed.
pub fn rules_healthy(url: &str, rules: usize) -> Result<(), String> {
    let (_, body) = get(&format!("{url}/api/v1/rules"), &[])?;
    let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let loaded: Vec<&Value> = answer["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .collect();
    for rule in &loaded {
        assert_ne!(
            rule["health"], "err",
            "rule {} fails: {}",
            rule["name"], rule["lastError"]
        );
    }
    let healthy = loaded.iter().filter(|rule| rule["health"] == "ok").count();
    (loaded.len() == rules && healthy == rules)
        .then_some(())
        .ok_or(format!("{healthy} of {rules} rules healthy: {body}"))
}
