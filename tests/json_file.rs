//! The JSON Lines file backend, read back from the real file.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read file");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "every record ends with a newline"
    );
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON record"))
        .collect()
}

fn file_config(path: &Path, max_bytes: u64, keep: usize) -> String {
    format!(
        "[server]\nudp = [\"127.0.0.1:0\"]\n[aggregation]\nflush_interval_ms = 60000\n\
         [[backends]]\nkind = \"json_file\"\npath = {:?}\nmax_bytes = {max_bytes}\nkeep = {keep}\n",
        path.display().to_string()
    )
}

/// Waits until the file holds `n` complete records.
async fn wait_records(path: &Path, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let records = read_records(path);
        if records.len() >= n {
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} records",
            records.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_appended_one_per_line_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.jsonl");
    // A partial line left by a crash is cut off at start.
    std::fs::write(&path, "{\"timestamp\":1,\"partial\":").expect("seed");
    let agent = start(&file_config(&path, 1 << 30, 2)).await;
    agent.send(&["file.hits:2|c|#env:test\nfile.depth:9|g"]);
    agent.wait_lines(2).await;
    agent.flush().await;
    agent.send(&["file.hits:3|c|#env:test"]);
    agent.wait_lines(3).await;
    agent.running.shutdown().await;
    let records = read_records(&path);
    assert_eq!(records.len(), 2);
    let env = serde_json::json!({"env": "test"});
    assert_close(
        fig(
            metric_tagged(&records[0], "file.hits", "counter", &env),
            "count",
        ),
        2.0,
    );
    assert_close(
        fig(
            metric_tagged(&records[1], "file.hits", "counter", &env),
            "count",
        ),
        3.0,
    );
    assert_close(
        fig(metric(&records[1], "file.depth", "gauge"), "value"),
        9.0,
    );
    for key in [
        "timestamp",
        "interval_ms",
        "host",
        "metrics",
        "events",
        "alerts",
        "internal",
    ] {
        assert!(records[1].get(key).is_some(), "record has {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_rotates_at_max_bytes_keeping_keep_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.jsonl");
    // Every record is larger than max_bytes: each write rotates.
    let agent = start(&file_config(&path, 10, 2)).await;
    for i in 0..4u64 {
        agent.send(&[&format!("rot:{}|c", i + 1)]);
        agent.wait_lines(i + 1).await;
        agent.flush().await;
    }
    agent.running.shutdown().await;
    // Five records (four flushes and the final one), each larger than max_bytes: each write
    // rotated, so `path` is fresh and empty, `.1` holds the final record, `.2` the fourth.
    let rotated = |n: usize| dir.path().join(format!("m.jsonl.{n}"));
    assert!(read_records(&path).is_empty());
    let newest = read_records(&rotated(1));
    let older = read_records(&rotated(2));
    assert_eq!(newest.len(), 1);
    assert_eq!(older.len(), 1);
    assert_close(fig(metric(&newest[0], "rot", "counter"), "count"), 0.0);
    assert_close(fig(metric(&older[0], "rot", "counter"), "count"), 4.0);
    assert!(!rotated(3).exists(), "only `keep` rotated files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_below_max_bytes_is_not_rotated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.jsonl");
    let agent = start(&file_config(&path, 1 << 20, 2)).await;
    agent.send(&["x:1|c"]);
    agent.wait_lines(1).await;
    agent.flush().await;
    wait_records(&path, 1).await;
    agent.running.shutdown().await;
    assert_eq!(read_records(&path).len(), 2);
    assert!(!dir.path().join("m.jsonl.1").exists());
}
