//! Host and process figures end to end: read from `/proc` at the flush, they reach the
//! record as ordinary gauges with the global tags, an alert rule fires on one, and the
//! agent's own figures join `internal`.

mod common;

use serde_json::{Value, json};

fn meminfo_total() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: f64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    kb * 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_process_gauges_are_ordinary_series() {
    let pid = std::process::id();
    let toml = common::base("global_tags = { dc = \"test\" }")
        + &format!(
            "[collectors.host]\ndisk_paths = [\"/\"]\n\
             [[collectors.process]]\nname = \"self\"\npid = {pid}\n\
             [[collectors.process]]\nname = \"ghost\"\npidfile = \"/nonexistent/ghost.pid\"\n\
             [[alerts]]\nname = \"memory\"\nmetric = \"host.memory.used_pct\"\n\
             stat = \"value\"\nop = \">=\"\nthreshold = 0\n"
        );
    let agent = common::start(&toml).await;
    // Two flushes: the second's CPU and network figures cover a whole interval.
    let first = agent.flush().await;
    let record = agent.flush().await;
    let tagged = |extra: Value| {
        let mut tags = json!({"dc": "test"});
        if let (Some(t), Some(e)) = (tags.as_object_mut(), extra.as_object()) {
            t.extend(e.clone());
        }
        tags
    };
    let gauge = |name: &str, tags: Value| {
        common::fig(
            common::metric_tagged(&record, name, "gauge", &tags),
            "value",
        )
    };
    assert_eq!(
        gauge("host.memory.total_bytes", tagged(json!({}))),
        meminfo_total()
    );
    for name in [
        "host.cpu.usage_pct",
        "host.cpu.iowait_pct",
        "host.memory.used_pct",
    ] {
        let pct = gauge(name, tagged(json!({})));
        assert!((0.0..=100.0).contains(&pct), "{name} = {pct}");
    }
    for name in [
        "host.load.1",
        "host.load.5",
        "host.load.15",
        "host.uptime_s",
    ] {
        assert!(gauge(name, tagged(json!({}))) >= 0.0, "{name}");
    }
    let disk = gauge("host.disk.used_pct", tagged(json!({"path": "/"})));
    assert!((0.0..=100.0).contains(&disk));
    let me = tagged(json!({"process": "self"}));
    assert_eq!(gauge("process.up", me.clone()), 1.0);
    assert!(gauge("process.rss_bytes", me.clone()) > 0.0);
    assert!(gauge("process.threads", me.clone()) >= 2.0);
    assert!(gauge("process.open_fds", me.clone()) >= 3.0);
    assert!(gauge("process.cpu_pct", me) >= 0.0);
    assert_eq!(
        gauge("process.up", tagged(json!({"process": "ghost"}))),
        0.0
    );
    // An alert rule sees them like any series.
    let fired = |r: &Value| r["rule"] == "memory" && r["state"] == "firing";
    let alerts = first["alerts"].as_array().cloned().unwrap_or_default();
    assert!(
        alerts.iter().any(fired),
        "the memory rule fired: {alerts:?}"
    );
    let internal = &record["internal"];
    assert!(internal["rss_bytes"].as_f64().is_some_and(|v| v > 0.0));
    assert!(internal["cpu_seconds"].as_f64().is_some_and(|v| v >= 0.0));
    assert!(internal["uptime_s"].as_f64().is_some_and(|v| v > 0.0));
    agent.finish().await;
}
