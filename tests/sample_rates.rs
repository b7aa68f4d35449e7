//! SPEC §7.1 on `/metrics`: a timer value sampled at rate r counts 1/r times in a histogram's
//! buckets, its `_count` and its `_sum`, each value by its own rate, also when the rates of
//! one interval differ.

mod common;
mod monitoring;

use std::time::{Duration, Instant};

use common::{PATIENCE, client, config, send_udp};
use monitoring::exposition;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_sampled_at_different_rates_count_by_their_own_rate() {
    let toml = "backends = []\n[server]\nudp = [\"127.0.0.1:0\"]\n\
                [aggregation]\nflush_interval_ms = 60000\n\
                [api]\nlisten = \"127.0.0.1:0\"\n[prometheus]\ntimer_type = \"histogram\"\n";
    let running = tallyd::app::start(config(toml), Vec::new())
        .await
        .expect("agent starts");
    // 5, 50, 500 and 5000 ms once each, and 50 ms at rate 0.5: twice.
    send_udp(
        running.udp_addrs()[0],
        &["lat:5:50:500:5000|ms\nlat:50|ms|@0.5"],
    );
    let deadline = Instant::now() + PATIENCE;
    while running.telemetry().lines_total() < 2 {
        assert!(Instant::now() < deadline, "the lines arrive");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.flush_now().await;
    let api = running.api_addr().expect("the API listens");
    let answer = tokio::task::spawn_blocking(move || client::get(api, "/metrics", &[]))
        .await
        .expect("the scrape ends");
    running.shutdown().await;
    let samples = exposition::parse(&answer.body).expect("exposition");
    let value = |name: &str, le: Option<f64>| {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && le.is_none_or(|le| {
                        s.labels.get("le").and_then(|v| v.parse::<f64>().ok()) == Some(le)
                    })
            })
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("no {name} {le:?} in\n{}", answer.body))
    };
    let buckets = [
        (0.005, 1.0),
        (0.05, 4.0),
        (0.5, 5.0),
        (5.0, 6.0),
        (f64::INFINITY, 6.0),
    ];
    let got: Vec<(f64, f64)> = buckets
        .iter()
        .map(|&(le, _)| (le, value("lat_bucket", Some(le))))
        .collect();
    assert_eq!(got, buckets, "buckets, by le");
    assert_eq!(value("lat_count", None), 6.0);
    let sum = value("lat_sum", None);
    assert!((sum - 5.655).abs() < 1e-9, "lat_sum {sum}, want 5.655");
}
