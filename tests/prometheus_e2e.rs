//! tallyd under a real Prometheus: the binary exports known traffic on `/metrics`, Prometheus
//! scrapes it every second, and its query API shows the figures SPEC §7.1 promises (counters
//! cumulative with rates applied, gauges, sets, summary quantiles in seconds, a mapped
//! histogram's buckets). Then every query of the shipped dashboard and every shipped rule
//! must evaluate without error and find data.
//!
//! Needs `prometheus` (and `promtool`) on PATH; skipped without them unless
//! `E2E_REQUIRED=1` (as `.ci/run` sets), where their absence fails.

mod monitoring;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use monitoring::prometheus::{
    Process, assert_value, eventually, free_tcp_port, free_udp_port, get, query, rules_healthy,
    which,
};
use monitoring::{promql, selector, sources};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tallyd");
/// How long Prometheus may take to scrape, evaluate and answer, all waits together.
const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(60);
/// How long a process may take to start, or a round of traffic to reach `/metrics`.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Skips the test (or fails it, under `E2E_REQUIRED=1`) without Prometheus.
fn prometheus_tools() -> Option<(PathBuf, PathBuf)> {
    match (which("prometheus"), which("promtool")) {
        (Some(prometheus), Some(promtool)) => Some((prometheus, promtool)),
        _ if std::env::var("E2E_REQUIRED").as_deref() == Ok("1") => panic!(
            "E2E_REQUIRED=1 but prometheus or promtool is not on PATH \
             (apt-get install prometheus)"
        ),
        _ => {
            println!("skipped: prometheus not installed (apt-get install prometheus)");
            None
        }
    }
}

#[test]
fn shipped_prometheus_files_pass_promtool() {
    let Some((_, promtool)) = prometheus_tools() else {
        return;
    };
    // `check config` checks the rule files the config names too; `test rules` runs the
    // rules' unit tests (alerts firing and quiet on made-up series).
    for args in [
        ["check", "config", sources::PROMETHEUS_CONFIG],
        ["test", "rules", sources::RULES_TESTS],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const MAPPING: &str = r#"mappings:
  - match: "checkout.*.latency"
    name: "checkout_latency_seconds"
    observer_type: histogram
    histogram_options:
      buckets: [0.01, 0.1, 1]
    labels:
      region: "$1"
"#;

/// tallyd's config: UDP and the API on the given loopback ports, 1 s flushes, the mapping,
/// no backends, and an alert that fires while `queue.depth` is above 5.
fn tallyd_config(udp_port: u16, api_port: u16, mapping: &Path) -> String {
    format!(
        "backends = []\n\
         [server]\nudp = [\"127.0.0.1:{udp_port}\"]\n\
         [aggregation]\nflush_interval_ms = 1000\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n\
         [prometheus]\nmapping_file = {mapping:?}\n\
         [[alerts]]\nname = \"deep-queue\"\nmetric = \"queue.depth\"\nstat = \"value\"\n\
         op = \">\"\nthreshold = 5\nseverity = \"critical\"\n",
        mapping = mapping.display().to_string()
    )
}

/// Prometheus's config: tallyd scraped and the shipped rules evaluated every second.
fn prometheus_config(api_port: u16) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {:?}\n\
         scrape_configs:\n  - job_name: tallyd\n    static_configs:\n      \
         - targets: [\"127.0.0.1:{api_port}\"]\n",
        sources::RULES
    )
}

/// One round of traffic, one datagram, so that it lands in one flush interval: per round the
/// counter adds 7 (two increments at rate 0.5, one of 3), the gauge moves 10, +5, -3, the set
/// has 3 members, the timer 100..=1000 ms, the mapped timer 5, 50, 500, 5000 ms at rate 0.5
/// (each counted twice; mixed rates in one interval are tests/sample_rates.rs's).
fn round(round: u32) -> String {
    let gauge = ["queue.depth:10|g", "queue.depth:+5|g", "queue.depth:-3|g"][round as usize - 1];
    let mut lines = vec![
        "checkout.requests:1|c|@0.5",
        "checkout.requests:1|c|@0.5",
        "checkout.requests:3|c",
        gauge,
        "users.active:alice|s",
        "users.active:bob|s",
        "users.active:alice|s",
        "users.active:carol|s",
        "api.latency:100:200:300:400:500:600:700:800:900:1000|ms",
        "checkout.eu.latency:5:50:500:5000|ms|@0.5",
    ];
    if round == 1 {
        lines.push("not a statsd line");
    }
    lines.join("\n")
}

const ROUNDS: u32 = 3;

/// Sends the rounds, each once tallyd's `/metrics` shows the one before flushed.
fn send_rounds(udp_port: u16, api_port: u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    let metrics = format!("http://127.0.0.1:{api_port}/metrics");
    for r in 1..=ROUNDS {
        socket
            .send_to(round(r).as_bytes(), ("127.0.0.1", udp_port))
            .expect("send");
        let want = 7.0 * f64::from(r);
        eventually(
            Instant::now() + START_PATIENCE,
            &format!("round {r} flushed"),
            || {
                let (_, text) = get(&metrics, &[])?;
                let samples = monitoring::exposition::parse(&text)?;
                let got = samples
                    .iter()
                    .find(|s| s.name == "checkout_requests_total")
                    .map(|s| s.value);
                (got == Some(want))
                    .then_some(())
                    .ok_or(format!("checkout_requests_total = {got:?}, want {want}"))
            },
        );
    }
}

/// Starts the tallyd binary in `dir` and waits until its API says it is ready.
fn start_tallyd(dir: &Path) -> (Process, u16, u16) {
    let (udp_port, api_port) = (free_udp_port(), free_tcp_port());
    let mapping = dir.join("mapping.yml");
    std::fs::write(&mapping, MAPPING).expect("mapping file");
    let config = dir.join("tallyd.toml");
    std::fs::write(&config, tallyd_config(udp_port, api_port, &mapping)).expect("config");
    let args = ["--config".to_string(), config.display().to_string()];
    let tallyd = Process::spawn("tallyd", Path::new(BIN), &args, dir.join("tallyd.log"));
    let ready = format!("http://127.0.0.1:{api_port}/-/ready");
    eventually(
        Instant::now() + START_PATIENCE,
        "tallyd ready",
        || match get(&ready, &[])? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        },
    );
    (tallyd, udp_port, api_port)
}

/// Starts Prometheus in `dir`, scraping tallyd's API, and waits until it is ready; returns it
/// with its base URL.
fn start_prometheus(dir: &Path, program: &Path, api_port: u16) -> (Process, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, prometheus_config(api_port)).expect("config");
    let port = free_tcp_port();
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".to_string(),
    ];
    let prometheus = Process::spawn("prometheus", program, &args, dir.join("prometheus.log"));
    let url = format!("http://127.0.0.1:{port}");
    eventually(
        Instant::now() + START_PATIENCE,
        "prometheus ready",
        || match get(&format!("{url}/-/ready"), &[])? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        },
    );
    (prometheus, url)
}

#[test]
fn a_real_prometheus_scrapes_tallyd_and_answers_every_dashboard_query() {
    let Some((prometheus_bin, _)) = prometheus_tools() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_tallyd, udp_port, api_port) = start_tallyd(dir.path());
    let (_prometheus, url) = start_prometheus(dir.path(), &prometheus_bin, api_port);
    let deadline = Instant::now() + PROMETHEUS_PATIENCE;
    // Ready is not yet scraping: target discovery hands over the target within seconds.
    assert_value(&url, deadline, r#"up{job="tallyd"}"#, 1.0);
    send_rounds(udp_port, api_port);

    assert_figures(&url, deadline);
    // From here on the agent stays busy, as a dashboard usually sees it: an idle interval's
    // timers have no quantiles to show.
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| keep_busy(udp_port, &stop, deadline));
        let _stop = StopOnDrop(&stop);
        assert_variables_find_the_traffic(&url, deadline);
        assert_dashboard_queries_answer(&url, deadline);
        assert_rules_evaluate(&url, deadline);
    });
    assert_mapped_histogram(&url, deadline);
}

/// Sets its flag when dropped, a panic's unwinding included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Sends a little of every kind of traffic every 200 ms until `stop` or `deadline`.
fn keep_busy(udp_port: u16, stop: &AtomicBool, deadline: Instant) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    // Not the mapped timer: its figures are checked after this.
    let datagram =
        "checkout.requests:1|c\nqueue.depth:+0|g\nusers.active:dave|s\napi.latency:100:200|ms";
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        socket
            .send_to(datagram.as_bytes(), ("127.0.0.1", udp_port))
            .expect("send");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The figures of the rounds, as Prometheus stored them.
fn assert_figures(url: &str, deadline: Instant) {
    let rounds = f64::from(ROUNDS);
    // Counters: cumulative, 1/rate per increment.
    assert_value(url, deadline, "checkout_requests_total", 7.0 * rounds);
    // Gauge with deltas: 10 + 5 - 3.
    assert_value(url, deadline, "queue_depth", 12.0);
    // Sets and quantiles are the last interval's; idle intervals since then show less.
    assert_value(url, deadline, "max_over_time(users_active[5m])", 3.0);
    for (quantile, seconds) in [("0.5", 0.55), ("0.9", 0.9), ("0.95", 1.0), ("0.99", 1.0)] {
        let expr = format!(r#"max_over_time(api_latency{{quantile="{quantile}"}}[5m])"#);
        assert_value(url, deadline, &expr, seconds);
    }
    // Summary sum and count: cumulative, in seconds.
    assert_value(url, deadline, "api_latency_count", 10.0 * rounds);
    assert_value(url, deadline, "api_latency_sum", 5.5 * rounds);
    assert_value(
        url,
        deadline,
        r#"tallyd_bad_lines_total{reason="malformed"}"#,
        1.0,
    );
    let firing = r#"tallyd_alerts_firing{rule="deep-queue", severity="critical"}"#;
    assert_value(url, deadline, firing, 1.0);
}

/// The timer the mapping file names: a histogram with the mapping's buckets and label, in
/// place of the summary its StatsD name would give.
fn assert_mapped_histogram(url: &str, deadline: Instant) {
    let rounds = f64::from(ROUNDS);
    // Per round 0.005 0.05 0.5 5 s at rate 0.5, each counted twice.
    let mapped = r#"checkout_latency_seconds_count{region="eu"}"#;
    assert_value(url, deadline, mapped, 8.0 * rounds);
    let buckets = [(0.01, 2.0), (0.1, 4.0), (1.0, 6.0), (f64::INFINITY, 8.0)];
    eventually(deadline, "the mapped histogram's buckets", || {
        let answer = query(url, r#"checkout_latency_seconds_bucket{region="eu"}"#)?;
        let got: Vec<(f64, f64)> = answer
            .iter()
            .map(|(labels, value)| {
                let le = labels.get("le").map(String::as_str).unwrap_or("");
                let le = if le == "+Inf" {
                    Ok(f64::INFINITY)
                } else {
                    le.parse()
                };
                le.map(|le| (le, *value)).map_err(|e| format!("le {e}"))
            })
            .collect::<Result<_, _>>()?;
        let mut got = got;
        got.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<(f64, f64)> = buckets.iter().map(|&(le, n)| (le, n * rounds)).collect();
        (got == want)
            .then_some(())
            .ok_or(format!("buckets {got:?}, want {want:?}"))
    });
    // The mapping named the series; the escaped StatsD name is not exported beside it.
    let unmapped = query(url, r#"{__name__=~"checkout_eu_latency.*"}"#).expect("query");
    assert!(unmapped.is_empty(), "unmapped series: {unmapped:?}");
    // _sum counts each value 1/rate times, like the buckets and _count: 2 * 5.555 a round.
    let mapped = r#"checkout_latency_seconds_sum{region="eu"}"#;
    assert_value(url, deadline, mapped, 11.11 * rounds);
}

/// Every query variable of the dashboard finds what a user would pick from the traffic.
fn assert_variables_find_the_traffic(url: &str, deadline: Instant) {
    let dashboard = sources::dashboard();
    for variable in sources::dashboard_variables(&dashboard) {
        let text = promql::substitute(&variable.query, &[("instance", ".*")]);
        let parsed = selector::parse_label_values(&text)
            .unwrap_or_else(|e| panic!("variable {}: {e}", variable.name));
        let path = format!("{url}/api/v1/label/{}/values", parsed.label);
        let params: Vec<(&str, &str)> = parsed
            .selector
            .iter()
            .map(|s| ("match[]", s.as_str()))
            .collect();
        let values: Vec<String> = eventually(deadline, &format!("variable {text}"), || {
            let (status, body) = get(&path, &params)?;
            let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            let values: Vec<String> = serde_json::from_value(answer["data"].clone())
                .map_err(|e| format!("{status} {e}: {body}"))?;
            if values.is_empty() {
                return Err(format!("no values: {body}"));
            }
            Ok(values)
        });
        let expected = match variable.name.as_str() {
            "timer" => Some("api_latency"),
            "counter" => Some("checkout_requests_total"),
            "histogram" => Some("checkout_latency_seconds_bucket"),
            _ => None,
        };
        if let Some(expected) = expected {
            assert!(
                values.iter().any(|v| v == expected),
                "variable {} offers {values:?}, not {expected}",
                variable.name
            );
            assert!(
                values.iter().all(|v| !v.starts_with("tallyd_")),
                "variable {} offers the agent's own figures: {values:?}",
                variable.name
            );
        }
    }
}

/// Every panel query, with the variables set, answers without error and with data.
fn assert_dashboard_queries_answer(url: &str, deadline: Instant) {
    let values = [
        ("timer", "api_latency"),
        ("counter", "checkout_requests_total"),
        ("histogram", "checkout_latency_seconds_bucket"),
        ("instance", ".*"),
        ("__rate_interval", "1m"),
        ("__interval", "1m"),
    ];
    for panel_query in sources::dashboard_queries(&sources::dashboard()) {
        let expr = promql::substitute(&panel_query.expr, &values);
        eventually(deadline, &format!("{}: {expr}", panel_query.origin), || {
            match query(url, &expr) {
                Ok(answer) if answer.is_empty() => Err("an empty answer".to_string()),
                Ok(_) => Ok(()),
                // A bad query does not get better with time.
                Err(error) if error.starts_with("400") || error.starts_with("422") => {
                    panic!("{}: {expr}: {error}", panel_query.origin)
                }
                Err(error) => Err(error),
            }
        });
    }
}

/// Every shipped rule was loaded and evaluates without error, over several evaluations (a
/// rule can break on its own output), and every recording rule records something.
fn assert_rules_evaluate(url: &str, deadline: Instant) {
    let rules = sources::rule_queries().len();
    // Healthy at every look for at least HEALTHY_FOR, evaluated each second meanwhile.
    const HEALTHY_FOR: Duration = Duration::from_secs(4);
    let mut healthy_since: Option<Instant> = None;
    eventually(deadline, "every rule evaluated and healthy", || {
        let healthy = rules_healthy(url, rules);
        match (&healthy, healthy_since) {
            (Err(_), _) => healthy_since = None,
            (Ok(()), None) => healthy_since = Some(Instant::now()),
            (Ok(()), Some(since)) if since.elapsed() >= HEALTHY_FOR => return Ok(()),
            (Ok(()), Some(_)) => {}
        }
        healthy.and(Err("not yet healthy long enough".to_string()))
    });
    for name in sources::recorded_names() {
        eventually(deadline, &format!("recorded {name}"), || {
            let answer = query(url, &name)?;
            (!answer.is_empty())
                .then_some(())
                .ok_or("nothing recorded".to_string())
        });
    }
}
