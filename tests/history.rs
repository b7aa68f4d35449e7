//! History over real sockets and the real store: windowed percentiles are the true ones (not
//! averages of per-interval ones), `tallyd query` in every format and its errors, the API's
//! `/api/v1/query`, a store that cannot be written, and `kill -9` of the real binary mid-run.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::{BIN, spawn_agent};
use common::client;
use serde_json::Value;
use tallyd::history::QueryParams;
use tallyd::history::query::{self, Answer};

/// A day-long tier kept for a year: every flush of a test falls in one window (queries use
/// a 10-day step, so only a run across a 10-day boundary could split them).
fn history_toml(path: &Path) -> String {
    format!(
        "[history]\npath = {:?}\ntiers = [{{ step_ms = 86400000, keep_ms = 31536000000 }}]\n",
        path.display().to_string()
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn run_query(path: &Path, params: QueryParams) -> Answer {
    let query = params.validate(now()).expect("valid query");
    query::run(path, &query).expect("query answers")
}

/// The values of the rows that have one.
fn values(answer: &Answer) -> Vec<f64> {
    match answer {
        Answer::Rows { rows, .. } => rows.iter().filter_map(|r| r.value).collect(),
        Answer::List(_) => panic!("rows expected"),
    }
}

fn params(metric: &str, stat: &str) -> QueryParams {
    QueryParams {
        metric: Some(metric.into()),
        stat: Some(stat.into()),
        from: Some("-2d".into()),
        step: Some("10d".into()),
        ..QueryParams::default()
    }
}

/// The SPEC §2 rank: V[round(p/100 n) - 1].
fn true_percentile(sorted: &[f64], p: f64) -> f64 {
    let k = (p / 100.0 * sorted.len() as f64).round() as usize;
    sorted[k - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_p95_is_the_p95_of_all_its_values_not_a_mean_of_intervals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("history.db");
    let agent = common::start(&(common::base("") + &history_toml(&store))).await;
    let mut all = Vec::new();
    let mut interval_p95s = Vec::new();
    let mut lines = 0;
    // Nine quick intervals and one slow one.
    for interval in 0..10 {
        let mut these: Vec<f64> = (0..200)
            .map(|i| {
                if interval == 9 {
                    1000.0 + f64::from(i) * 3.0
                } else {
                    1.0 + f64::from(i % 50) / 50.0 + f64::from(interval)
                }
            })
            .collect();
        let datagrams: Vec<String> = these
            .chunks(20)
            .map(|chunk| {
                let packed: Vec<String> = chunk.iter().map(|v| v.to_string()).collect();
                format!("checkout.latency:{}|ms|#region:eu", packed.join(":"))
            })
            .collect();
        let refs: Vec<&str> = datagrams.iter().map(String::as_str).collect();
        agent.send(&refs);
        lines += refs.len() as u64;
        agent.wait_lines(lines).await;
        let record = agent.flush().await;
        let tags = serde_json::json!({"region": "eu"});
        let m = common::metric_tagged(&record, "checkout.latency", "timer", &tags);
        interval_p95s.push(common::fig(m, "upper_95"));
        all.append(&mut these);
    }
    agent.finish().await;
    all.sort_by(f64::total_cmp);
    let want = true_percentile(&all, 95.0);
    let averaged = interval_p95s.iter().sum::<f64>() / interval_p95s.len() as f64;
    assert!(
        (averaged - want).abs() > want * 0.5,
        "the test needs averaged ({averaged}) and true ({want}) p95s far apart"
    );

    let p95 = values(&run_query(&store, params("checkout.*", "upper_95")));
    assert_eq!(p95.len(), 1, "one window: {p95:?}");
    assert!(
        (p95[0] - want).abs() <= want * 0.01,
        "p95 {} want {want}",
        p95[0]
    );
    let median = values(&run_query(&store, params("checkout.latency", "median")))[0];
    let n = all.len();
    let want_median = (all[n / 2 - 1] + all[n / 2]) / 2.0;
    assert!((median - want_median).abs() <= want_median * 0.01);
    let count = values(&run_query(&store, params("checkout.latency", "count")))[0];
    assert_eq!(count, 2000.0);
    let sum = values(&run_query(&store, params("checkout.latency", "sum")))[0];
    common::assert_close(sum, all.iter().sum());
    let upper = values(&run_query(&store, params("checkout.latency", "upper")))[0];
    assert_eq!(upper, all[n - 1], "extremes are exact");
    // A top percentile: the 10 % highest values' lowest.
    let top = values(&run_query(
        &store,
        params("checkout.latency", "lower_top10"),
    ))[0];
    let want_top = all[n - 200];
    assert!((top - want_top).abs() <= want_top * 0.01);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_gauges_and_sets_keep_their_window_figures_and_group_by_tag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("history.db");
    let agent = common::start(&(common::base("") + &history_toml(&store))).await;
    let flushes: [&[&str]; 3] = [
        &[
            "req:3|c|#region:eu",
            "req:5|c|#region:us",
            "q:7|g",
            "u:a|s",
            "u:b|s",
        ],
        &["req:4|c|#region:eu", "q:2|g", "u:a|s"],
        &["req:1|c|#region:us", "q:+10|g", "u:a|s", "u:b|s", "u:c|s"],
    ];
    let mut lines = 0;
    for datagrams in flushes {
        agent.send(datagrams);
        lines += datagrams.len() as u64;
        agent.wait_lines(lines).await;
        agent.flush().await;
    }
    agent.finish().await;
    let grouped = |stat: &str, agg: Option<&str>| {
        let mut p = params("req", stat);
        p.group_by = Some("region".into());
        p.agg = agg.map(String::from);
        match run_query(&store, p) {
            Answer::Rows { rows, .. } => rows
                .into_iter()
                .filter_map(|r| Some((r.group?, r.value?)))
                .collect::<Vec<_>>(),
            Answer::List(_) => panic!("rows"),
        }
    };
    assert_eq!(
        grouped("count", None),
        [("eu".to_string(), 7.0), ("us".to_string(), 6.0)]
    );
    let total = values(&run_query(&store, {
        let mut p = params("req", "count");
        p.agg = Some("sum".into());
        p
    }));
    assert_eq!(total, [13.0]);
    let gauge = |stat: &str| values(&run_query(&store, params("q", stat)))[0];
    assert_eq!(
        (gauge("value"), gauge("min"), gauge("max")),
        (12.0, 2.0, 12.0)
    );
    let set = |stat: &str| values(&run_query(&store, params("u", stat)))[0];
    // Intervals of 2, 1 and 3 members, then the final flush's idle interval of 0: the
    // window's mean is over every interval the records carry the set in.
    assert_eq!((set("count"), set("mean")), (3.0, 1.5));
    let listed = match run_query(
        &store,
        QueryParams {
            list: true,
            ..QueryParams::default()
        },
    ) {
        Answer::List(series) => series.len(),
        Answer::Rows { .. } => panic!("a list"),
    };
    assert_eq!(listed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_queries_and_says_when_history_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("history.db");
    let agent = common::start(&(common::base("") + &history_toml(&store))).await;
    agent.send(&["hits:2|c"]);
    agent.wait_lines(1).await;
    agent.flush().await;
    let api = agent.running.api_addr().expect("api on");
    let path = "/api/v1/query?metric=hits&stat=count&from=-2d&step=10d";
    // The writer commits on its own thread: wait (bounded) for the window to show.
    let deadline = Instant::now() + common::PATIENCE;
    let body = loop {
        let answer = client::get(api, path, &[]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        if body
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["value"] == 2))
        {
            break body;
        }
        assert!(Instant::now() < deadline, "no window: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(body[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let bad = client::get(api, "/api/v1/query?stat=p95", &[]);
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("stat"))
    );
    let unknown = client::get(api, "/api/v1/query?bogus=1", &[]);
    assert_eq!(unknown.status, 400);
    let csv = client::get(api, &format!("{path}&format=csv"), &[]);
    assert!(csv.body.starts_with("time,value\n"), "{}", csv.body);
    agent.finish().await;

    let off = common::start(&common::base("")).await;
    let api = off.running.api_addr().expect("api on");
    let answer = client::get(api, "/api/v1/query?metric=x", &[]);
    assert_eq!(answer.status, 404);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("history is off"))
    );
    off.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_written_is_counted_and_aggregation_goes_on() {
    // Nothing, not even root, creates files under /proc.
    let toml = common::base("") + &history_toml(Path::new("/proc/tallyd-test/history.db"));
    let agent = common::start(&toml).await;
    agent.send(&["still:1|c"]);
    agent.wait_lines(1).await;
    let first = agent.flush().await;
    assert_eq!(
        common::fig(common::metric(&first, "still", "counter"), "count"),
        1.0
    );
    // The writer's failures show in a later record's internal.
    let deadline = Instant::now() + common::PATIENCE;
    let mut errors = first["internal"]["history_errors"].as_u64().unwrap_or(0);
    while errors == 0 {
        assert!(Instant::now() < deadline, "history_errors never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
        errors += agent.flush().await["internal"]["history_errors"]
            .as_u64()
            .unwrap_or(0);
    }
    agent.finish().await;
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("query")
        .args(args)
        .output()
        .expect("tallyd query runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The count `tallyd query` reads for `metric` over the store, via the real CLI.
fn cli_count(store: &str, metric: &str) -> f64 {
    let (code, out, err) = cli(&[
        "--path", store, "--metric", metric, "--stat", "count", "--from", "-2d", "--step", "10d",
        "--format", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).expect("json");
    rows.as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["value"].as_f64())
        .sum()
}

#[test]
fn kill_9_mid_run_leaves_a_store_that_opens_and_a_restart_continues_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("history.db");
    let config = dir.path().join("tallyd.toml");
    std::fs::write(
        &config,
        format!(
            "backends = []\n[server]\nudp = [\"127.0.0.1:0\"]\n[api]\nlisten = \"\"\n\
             [aggregation]\nflush_interval_ms = 50\n{}",
            history_toml(&store)
        ),
    )
    .expect("config");
    let store_arg = store.display().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    let mut sent = 0.0;
    for run in 0..2 {
        let (mut agent, addr) = spawn_agent(&config);
        // Send while flushes write, until the store shows this run's traffic (bounded).
        let before = if run == 0 {
            0.0
        } else {
            cli_count(&store_arg, "kill.*")
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = before;
        let mut rounds = 0;
        while seen <= before || rounds < 20 {
            assert!(Instant::now() < deadline, "no window written");
            for _ in 0..50 {
                socket.send_to(b"kill.hits:1|c", addr).expect("send");
                sent += 1.0;
            }
            std::thread::sleep(Duration::from_millis(10));
            rounds += 1;
            if rounds % 10 == 0 {
                seen = cli_count(&store_arg, "kill.*");
            }
        }
        // SIGKILL by pid, mid-run, while datagrams still arrive.
        for _ in 0..50 {
            socket.send_to(b"kill.hits:1|c", addr).expect("send");
            sent += 1.0;
        }
        agent.0.kill().expect("SIGKILL");
        let _ = agent.0.wait();
        // The store opens, answers, and never holds more than was sent.
        let (code, out, err) = cli(&["--path", &store_arg, "--list", "--format", "csv"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("kill.hits,counter"), "{out}");
        let after = cli_count(&store_arg, "kill.*");
        assert!(after > before, "run {run}: {after} after, {before} before");
        assert!(after <= sent, "{after} counted of {sent} sent");
    }
}

#[test]
fn query_errors_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("none.db").display().to_string();
    let (code, _, err) = cli(&["--path", &missing]);
    assert_eq!(code, 2);
    assert!(err.contains("no history store"), "{err}");
    let (code, _, err) = cli(&["--metric", "x"]);
    assert_eq!(code, 2, "neither --config nor --path: {err}");
    for bad in [
        ["--stat", "p95"],
        ["--from", "yesterday"],
        ["--agg", "median"],
        ["--format", "xml"],
    ] {
        let (code, _, err) = cli(&["--path", &missing, bad[0], bad[1]]);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(!err.is_empty());
    }
    let off = dir.path().join("off.toml");
    std::fs::write(&off, "backends = []\n").expect("config");
    let (code, _, err) = cli(&["--config", &off.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("history is off"), "{err}");
}

#[test]
fn expired_windows_are_never_answered_and_are_deleted_and_the_tier_follows_the_range() {
    use tallyd::backend::Backend;
    use tallyd::history::store::{Store, encode_tags};
    use tallyd::history::window::Window;
    use tallyd::history::{HistoryBackend, HistoryConfig, Tier};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.db");
    let tiers = vec![
        Tier {
            step_ms: 10_000,
            keep_ms: 600_000,
        },
        Tier {
            step_ms: 60_000,
            keep_ms: 86_400_000,
        },
    ];
    let now = now();
    let store = Store::open_write(&path, &tiers).expect("store");
    let id = store
        .series_id("old.hits", "counter", &encode_tags(std::iter::empty()))
        .expect("series");
    let count = |c: f64| Window {
        count: Some(c),
        ..Window::default()
    };
    // An hour ago (past the 10 s tier's 10 minutes) and a minute ago, in both tiers.
    for (step, start, c) in [
        (10_i64, now - 3600, 5.0),
        (10, now - 60, 1.0),
        (60, now - 3600, 5.0),
        (60, now - 60, 1.0),
    ] {
        store
            .put(step as u64 * 1000, id, start / step * step, &count(c))
            .expect("put");
    }
    drop(store);
    let rows = |from: &str, step: Option<&str>| {
        let params = QueryParams {
            metric: Some("old.*".into()),
            stat: Some("count".into()),
            from: Some(from.into()),
            step: step.map(String::from),
            agg: Some("sum".into()),
            ..QueryParams::default()
        };
        match run_query(&path, params) {
            Answer::Rows {
                tier_step_s, rows, ..
            } => (
                tier_step_s,
                rows.iter().filter_map(|r| r.value).sum::<f64>(),
            ),
            Answer::List(_) => panic!("rows"),
        }
    };
    // The last 5 minutes: the 10 s tier covers them.
    assert_eq!(rows("-5m", None), (10, 1.0));
    // The last 2 hours: only the minute tier keeps them, and it has both windows.
    assert_eq!(rows("-2h", None), (60, 6.0));
    // Asked at 10 s steps over 2 hours: still the tier that covers the range.
    assert_eq!(rows("-2h", Some("10s")), (60, 6.0));

    // The writer deletes expired windows when it starts writing.
    let config = HistoryConfig {
        path: path.clone(),
        tiers,
    };
    let telemetry = std::sync::Arc::new(tallyd::telemetry::Telemetry::default());
    let mut writer = HistoryBackend::new(config, telemetry);
    let record = tallyd::record::Record {
        timestamp: now as u64,
        interval_ms: 10_000,
        host: "test".into(),
        metrics: Vec::new(),
        events: Vec::new(),
        alerts: Vec::new(),
        firing: Vec::new(),
        members: Vec::new(),
        internal: Default::default(),
        distribution: std::sync::Arc::new(
            tallyd::config::Config::default().aggregation.distribution,
        ),
    };
    writer.write(&record).expect("write");
    drop(writer);
    let store = Store::open_read(&path).expect("reopen");
    let old = (now - 3600) / 10 * 10;
    assert_eq!(store.get(10_000, id, old).expect("read"), None, "deleted");
    assert!(
        store
            .get(60_000, id, (now - 3600) / 60 * 60)
            .expect("read")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_give_that_many_rows_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("history.db");
    let agent = common::start(&(common::base("") + &history_toml(&store))).await;
    agent.send(&["pts:4|c|#region:eu"]);
    agent.wait_lines(1).await;
    agent.flush().await;
    agent.finish().await;
    let store = store.display().to_string();
    let base = [
        "--path",
        store.as_str(),
        "--metric",
        "pts",
        "--from",
        "-2h",
        "--points",
        "6",
    ];
    let run = |format: &str| {
        let mut args = base.to_vec();
        args.extend(["--format", format]);
        let (code, out, err) = cli(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let json: Value = serde_json::from_str(&run("json")).expect("json");
    let rows = json.as_array().expect("array");
    assert_eq!(rows.len(), 6, "{json}");
    assert_eq!(
        rows.iter().filter_map(|r| r["value"].as_f64()).sum::<f64>(),
        4.0
    );
    let csv = run("csv");
    assert_eq!(csv.lines().count(), 7, "a header and six rows: {csv}");
    assert!(csv.starts_with("time,value\n"));
    let table = run("table");
    assert!(table.starts_with("TIME"), "{table}");
    assert_eq!(table.lines().count(), 7);
}
