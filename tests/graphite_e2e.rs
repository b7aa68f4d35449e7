//! tallyd into a real carbon-cache: a flush's lines land in whisper files under etsy's
//! paths (a tagged one under carbon's `_tagged` tree), at the record's timestamp, with the
//! record's values, read back with carbon's own Python modules and `whisper`.
//!
//! Needs Debian's `graphite-carbon` (`carbon-cache`, and `python3-whisper`); skipped without
//! it unless `E2E_REQUIRED=1` (as `.ci/run` sets), where its absence fails.

mod common;
mod monitoring;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use monitoring::prometheus::{Process, eventually, free_tcp_port, which};
use serde_json::Value;

/// How long carbon may take to start, or to write what it received.
const CARBON_PATIENCE: Duration = Duration::from_secs(60);

/// The Python that runs `carbon-cache` (its `#!` line: Debian's, not a `python3` another
/// tool put first on PATH), which has carbon's and whisper's modules.
fn carbon_python(carbon: &Path) -> PathBuf {
    let script = std::fs::read_to_string(carbon).unwrap_or_default();
    script
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("#!"))
        .map(|line| {
            line.trim()
                .split(' ')
                .next()
                .unwrap_or("python3")
                .to_string()
        })
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// carbon-cache and its Python; skips the test (or fails it, under `E2E_REQUIRED=1`)
/// without them.
fn carbon_cache() -> Option<(PathBuf, PathBuf)> {
    let found = which("carbon-cache").map(|carbon| {
        let python = carbon_python(&carbon);
        (carbon, python)
    });
    let usable = found.as_ref().is_some_and(|(_, python)| {
        Command::new(python)
            .args(["-c", "import whisper, carbon.util"])
            .status()
            .is_ok_and(|s| s.success())
    });
    match found {
        Some(found) if usable => Some(found),
        _ if std::env::var("E2E_REQUIRED").as_deref() == Ok("1") => panic!(
            "E2E_REQUIRED=1 but carbon-cache or python3-whisper is missing \
             (apt-get install graphite-carbon)"
        ),
        _ => {
            println!("skipped: carbon not installed (apt-get install graphite-carbon)");
            None
        }
    }
}

/// carbon.conf with everything under `dir` and the three listeners on loopback ports.
fn carbon_conf(dir: &Path, line_port: u16) -> String {
    let d = dir.display();
    format!(
        "[cache]\nSTORAGE_DIR = {d}/storage/\nLOCAL_DATA_DIR = {d}/storage/whisper/\n\
         WHISPER_DIR = {d}/storage/whisper/\nCONF_DIR = {d}/\nLOG_DIR = {d}/log/\n\
         PID_DIR = {d}/\nDATABASE = whisper\nUSER =\nMAX_CACHE_SIZE = inf\n\
         MAX_UPDATES_PER_SECOND = 100000\nMAX_CREATES_PER_MINUTE = inf\n\
         LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {line_port}\n\
         ENABLE_UDP_LISTENER = False\nPICKLE_RECEIVER_INTERFACE = 127.0.0.1\n\
         PICKLE_RECEIVER_PORT = {pickle}\nCACHE_QUERY_INTERFACE = 127.0.0.1\n\
         CACHE_QUERY_PORT = {query}\nENABLE_MANHOLE = False\nENABLE_TAGS = False\n\
         WHISPER_AUTOFLUSH = True\nLOG_CREATES = True\n",
        pickle = free_tcp_port(),
        query = free_tcp_port(),
    )
}

/// Reads each metric's value at `ts` from its whisper file, through carbon's own path
/// encoding: a JSON object of the metrics found.
const READ_BACK: &str = r#"
import json, os, sys, whisper
from carbon.util import TaggedSeries
root, ts, metrics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
out = {}
for metric in metrics:
    if ';' in metric:
        metric_path = TaggedSeries.parse(metric).path
    else:
        metric_path = metric
    path = os.path.join(root, TaggedSeries.encode(metric_path, os.sep, hash_only=True) + '.wsp')
    if not os.path.exists(path):
        continue
    (start, end, step), values = whisper.fetch(path, ts - 30, ts + 30)
    for i, value in enumerate(values):
        if start + i * step == ts and value is not None:
            out[metric] = value
print(json.dumps(out))
"#;

fn read_back(
    python: &Path,
    whisper_dir: &Path,
    ts: u64,
    metrics: &[String],
) -> Result<Value, String> {
    let out = Command::new(python)
        .arg("-c")
        .arg(READ_BACK)
        .arg(whisper_dir)
        .arg(ts.to_string())
        .args(metrics)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_lands_in_whisper_under_etsys_paths_with_its_values() {
    let Some((carbon, python)) = carbon_cache() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["storage/whisper", "log"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
    }
    let line_port = free_tcp_port();
    let conf = dir.path().join("carbon.conf");
    std::fs::write(&conf, carbon_conf(dir.path(), line_port)).expect("carbon.conf");
    std::fs::write(
        dir.path().join("storage-schemas.conf"),
        "[all]\npattern = .*\nretentions = 1s:1h\n",
    )
    .expect("storage-schemas.conf");
    let _carbon = Process::spawn(
        "carbon-cache",
        &carbon,
        &[
            format!("--config={}", conf.display()),
            "--nodaemon".into(),
            "start".into(),
        ],
        dir.path().join("carbon.out"),
    );
    eventually(Instant::now() + CARBON_PATIENCE, "carbon listens", || {
        std::net::TcpStream::connect(("127.0.0.1", line_port))
            .map(drop)
            .map_err(|e| e.to_string())
    });

    let agent = start(&format!(
        "[server]\nudp = [\"127.0.0.1:0\"]\n[aggregation]\nflush_interval_ms = 10000\n\
         [[backends]]\nkind = \"graphite\"\naddress = \"127.0.0.1:{line_port}\"\n"
    ))
    .await;
    agent.send(&[
        "api.requests:3|c\napi.requests:1|c|@0.5\nqueue.depth:-7.25|g\n\
         api.latency:10|ms\napi.latency:20|ms\napi.latency:45|ms\nusers:a|s\nusers:b|s\n\
         db.query:12|ms|#env:prod,zone:eu",
    ]);
    agent.wait_lines(9).await;
    let record = agent.flush().await;
    let ts = record["timestamp"].as_u64().expect("timestamp");
    let latency = metric(&record, "api.latency", "timer");
    let tagged = metric_tagged(
        &record,
        "db.query",
        "timer",
        &serde_json::json!({"env": "prod", "zone": "eu"}),
    );
    let expected: Vec<(String, f64)> = vec![
        ("stats.api.requests".into(), 0.5),
        ("stats_counts.api.requests".into(), 5.0),
        ("stats.gauges.queue.depth".into(), -7.25),
        ("stats.sets.users.count".into(), 2.0),
        ("stats.timers.api.latency.count".into(), 3.0),
        ("stats.timers.api.latency.mean".into(), fig(latency, "mean")),
        ("stats.timers.api.latency.std".into(), fig(latency, "std")),
        ("stats.timers.api.latency.upper_90".into(), 45.0),
        (
            "stats.timers.db.query.upper;zone=eu;env=prod".into(),
            fig(tagged, "upper"),
        ),
        (
            "stats.tallyd.lines_received".into(),
            record["internal"]["lines_received"]
                .as_f64()
                .expect("figure"),
        ),
    ];
    let names: Vec<String> = expected.iter().map(|(name, _)| name.clone()).collect();
    let whisper_dir = dir.path().join("storage/whisper");
    let found = eventually(
        Instant::now() + CARBON_PATIENCE,
        "every metric is in whisper",
        || {
            let found = read_back(&python, &whisper_dir, ts, &names)?;
            match names.iter().find(|name| found.get(name.as_str()).is_none()) {
                None => Ok(found),
                Some(missing) => Err(format!("{missing} not yet written: {found}")),
            }
        },
    );
    for (name, want) in &expected {
        let got = found[name.as_str()].as_f64().expect("a number");
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{name}: whisper has {got}, the record {want}"
        );
    }
    agent.finish().await;
}
