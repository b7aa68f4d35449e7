//! tallyd's remote_write output into real stores: the binary writes known traffic, 1 s
//! flushes, to a Prometheus (`--web.enable-remote-write-receiver`) and to a
//! VictoriaMetrics, and both query APIs answer the figures SPEC §7.1 and §7.2 promise:
//! counters cumulative, gauges, summary quantiles and `_sum`/`_count` in seconds, a mapped
//! histogram's buckets (and a fleet-style `histogram_quantile` over them), the `instance`
//! label, and a series that expires disappearing (its stale marker). VictoriaMetrics is
//! started only after tallyd has flushed to it a few times: the requests queued during
//! that outage arrive, in order.
//!
//! Needs `prometheus` and `victoria-metrics` on PATH; skipped without them unless
//! `E2E_REQUIRED=1` (as `.ci/run` sets), where their absence fails.

mod monitoring;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use monitoring::prometheus::{
    Process, assert_value, eventually, free_tcp_port, free_udp_port, get, query, which,
};

const BIN: &str = env!("CARGO_BIN_EXE_tallyd");
/// How long the stores may take to ingest and answer, all waits together.
const PATIENCE: Duration = Duration::from_secs(90);
const START_PATIENCE: Duration = Duration::from_secs(30);
/// Rounds of traffic, each seen in Prometheus before the next is sent.
const ROUNDS: u32 = 4;

fn stores() -> Option<(PathBuf, PathBuf)> {
    match (which("prometheus"), which("victoria-metrics")) {
        (Some(prometheus), Some(vm)) => Some((prometheus, vm)),
        _ if std::env::var("E2E_REQUIRED").as_deref() == Ok("1") => panic!(
            "E2E_REQUIRED=1 but prometheus or victoria-metrics is not on PATH \
             (apt-get install prometheus victoria-metrics)"
        ),
        _ => {
            println!(
                "skipped: prometheus or victoria-metrics not installed \
                 (apt-get install prometheus victoria-metrics)"
            );
            None
        }
    }
}

const MAPPING: &str = r#"mappings:
  - match: "checkout.*.latency"
    name: "checkout_latency_seconds"
    observer_type: histogram
    histogram_options:
      buckets: [0.1, 1]
    labels:
      region: "$1"
"#;

fn tallyd_config(ports: (u16, u16), prometheus: &str, vm: &str, mapping: &Path) -> String {
    let (udp_port, api_port) = ports;
    format!(
        "host = \"e2e-host\"\n\
         [server]\nudp = [\"127.0.0.1:{udp_port}\"]\n\
         [aggregation]\nflush_interval_ms = 1000\npercentiles = [90]\nseries_ttl_ms = 5000\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n\
         [prometheus]\nmapping_file = {mapping:?}\n\
         [[backends]]\nkind = \"remote_write\"\nurl = \"{prometheus}/api/v1/write\"\n\
         retry_initial_ms = 100\nretry_max_ms = 500\n\
         [[backends]]\nkind = \"remote_write\"\nurl = \"{vm}/api/v1/write\"\n\
         retry_initial_ms = 100\nretry_max_ms = 500\n",
        mapping = mapping.display().to_string()
    )
}

fn wait_ready(url: &str, what: &str) {
    eventually(Instant::now() + START_PATIENCE, what, || {
        match get(url, &[])? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    });
}

fn start_prometheus(dir: &Path, program: &Path) -> (Process, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("config");
    let port = free_tcp_port();
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--web.enable-remote-write-receiver".to_string(),
        "--log.level=warn".to_string(),
    ];
    let process = Process::spawn("prometheus", program, &args, dir.join("prometheus.log"));
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/-/ready"), "prometheus ready");
    (process, url)
}

fn start_vm(dir: &Path, program: &Path, port: u16) -> Process {
    let args = [
        format!("-storageDataPath={}", dir.join("vm").display()),
        format!("-httpListenAddr=127.0.0.1:{port}"),
        // Answer with what was just written (by default the last 30 s are left out).
        "-search.latencyOffset=0s".to_string(),
        "-search.disableCache".to_string(),
    ];
    let process = Process::spawn("victoria-metrics", program, &args, dir.join("vm.log"));
    wait_ready(
        &format!("http://127.0.0.1:{port}/health"),
        "victoria-metrics ready",
    );
    process
}

fn send(socket: &UdpSocket, port: u16, lines: &[String]) {
    for line in lines {
        socket
            .send_to(line.as_bytes(), ("127.0.0.1", port))
            .expect("send");
    }
}

/// One round: 2 orders, the queue's depth, ten latencies (10..100 ms) and two checkouts
/// (50 ms and 500 ms); the first round also a gauge that is never sent again.
fn round(i: u32) -> Vec<String> {
    let mut lines = vec![
        "orders:2|c|#env:prod".to_string(),
        format!("queue.depth:{}|g", 10 + i),
        "checkout.eu.latency:50|ms".to_string(),
        "checkout.eu.latency:500|ms".to_string(),
    ];
    lines.extend((1..=10).map(|v| format!("api.latency:{}|ms", v * 10)));
    if i == 1 {
        lines.push("temp.gauge:1|g".to_string());
    }
    lines
}

/// The figures both stores must answer after `ROUNDS` rounds. Series may have expired by
/// the time a store is asked (`series_ttl_ms`): the last value written is asked for.
fn assert_figures(url: &str, deadline: Instant) {
    let n = f64::from(ROUNDS);
    let last = |expr: &str| format!("last_over_time({expr}[10m])");
    assert_value(
        url,
        deadline,
        &last("orders_total{instance=\"e2e-host\",env=\"prod\"}"),
        2.0 * n,
    );
    assert_value(url, deadline, &last("queue_depth"), 10.0 + n);
    assert_value(url, deadline, &last("api_latency_count"), 10.0 * n);
    assert_value(url, deadline, &last("api_latency_sum"), 0.55 * n);
    assert_value(
        url,
        deadline,
        "max_over_time(api_latency{quantile=\"0.9\"}[5m])",
        0.09,
    );
    assert_value(
        url,
        deadline,
        &last("checkout_latency_seconds_bucket{region=\"eu\",le=\"0.1\"}"),
        n,
    );
    assert_value(
        url,
        deadline,
        &last("checkout_latency_seconds_bucket{region=\"eu\",le=\"+Inf\"}"),
        2.0 * n,
    );
    assert_value(
        url,
        deadline,
        &last("checkout_latency_seconds_count"),
        2.0 * n,
    );
    // The fleet-wide p99 a dashboard asks for, over every instance's buckets: half the
    // checkouts are above 0.1 s and none above 1 s, so it lies in (0.1, 1].
    eventually(deadline, "histogram_quantile over the buckets", || {
        let expr = "histogram_quantile(0.99, sum by (le) \
                    (rate(checkout_latency_seconds_bucket[1m])))";
        match query(url, expr)?.as_slice() {
            [(_, v)] if *v > 0.1 && *v <= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[test]
fn prometheus_and_victoria_metrics_store_what_tallyd_writes() {
    let Some((prometheus_bin, vm_bin)) = stores() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prometheus, prometheus) = start_prometheus(dir.path(), &prometheus_bin);
    let vm_port = free_tcp_port();
    let vm = format!("http://127.0.0.1:{vm_port}");
    let (udp_port, api_port) = (free_udp_port(), free_tcp_port());
    let mapping = dir.path().join("mapping.yml");
    std::fs::write(&mapping, MAPPING).expect("mapping");
    let config = dir.path().join("tallyd.toml");
    let text = tallyd_config((udp_port, api_port), &prometheus, &vm, &mapping);
    std::fs::write(&config, text).expect("config");
    let args = ["--config".to_string(), config.display().to_string()];
    let _tallyd = Process::spawn(
        "tallyd",
        Path::new(BIN),
        &args,
        dir.path().join("tallyd.log"),
    );
    wait_ready(
        &format!("http://127.0.0.1:{api_port}/-/ready"),
        "tallyd ready",
    );

    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
    let deadline = Instant::now() + PATIENCE;
    let mut _vm_process = None;
    for i in 1..=ROUNDS {
        // Each round once, after the one before is stored.
        send(&socket, udp_port, &round(i));
        assert_value(&prometheus, deadline, "orders_total", 2.0 * f64::from(i));
        if i == 2 {
            // VictoriaMetrics was down for the first flushes: tallyd queued them.
            _vm_process = Some(start_vm(dir.path(), &vm_bin, vm_port));
        }
    }
    assert_figures(&prometheus, deadline);
    assert_figures(&vm, deadline);
    // The first flush's counter reached VictoriaMetrics, after its outage.
    assert_value(&vm, deadline, "min_over_time(orders_total[10m])", 2.0);
    // The gauge sent once expired (series_ttl_ms = 2000): its stale marker ends it.
    for url in [&prometheus, &vm] {
        eventually(
            deadline,
            &format!("temp_gauge gone from {url}"),
            || match query(url, "temp_gauge")?.as_slice() {
                [] => Ok(()),
                other => Err(format!("still {other:?}")),
            },
        );
    }
    // Before it expired it was there, with the instance label.
    assert_value(
        &prometheus,
        deadline,
        "max_over_time(temp_gauge{instance=\"e2e-host\"}[10m])",
        1.0,
    );
}
