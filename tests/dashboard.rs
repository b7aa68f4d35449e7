//! The shipped Grafana dashboard and Prometheus rules read only what tallyd exports: every
//! metric name in their queries is on a sample line of a real `/metrics` scrape, and every
//! template variable that stands for a metric name finds one there.

mod common;
mod monitoring;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{PATIENCE, config, send_udp};
use monitoring::exposition::{self, Sample};
use monitoring::selector::{parse_label_values, regex_matches};
use monitoring::{promql, sources, unknown_names};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn metrics(expr: &str) -> Vec<String> {
    promql::names(expr).expect("the query reads").metrics
}

#[test]
fn functions_and_ranges_are_not_metrics() {
    assert_eq!(
        metrics("rate(tallyd_lines_received_total[$__rate_interval] offset 5m)"),
        ["tallyd_lines_received_total"]
    );
    assert_eq!(metrics("time() - timestamp(up) > 1e-3"), ["up"]);
}

#[test]
fn label_lists_matchers_and_strings_are_not_metrics() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(api_latency_bucket{le!="+Inf", x=~"a|b"}[5m])))
        / on (instance) group_left (job) label_replace(sum without (reason) (tallyd_bad_lines_total), "kind", "lines", "", "")"#;
    assert_eq!(
        metrics(expr),
        ["api_latency_bucket", "tallyd_bad_lines_total"]
    );
    assert_eq!(
        metrics(r#"{job="tallyd", quantile="0.99"}"#),
        Vec::<String>::new()
    );
}

#[test]
fn an_aggregation_before_its_by_clause_is_not_a_metric() {
    assert_eq!(
        metrics(
            "sum by (rule, severity) (tallyd_alerts_firing) and max without (x) (tallyd_series)"
        ),
        ["tallyd_alerts_firing", "tallyd_series"]
    );
}

#[test]
fn template_variables_in_a_name_are_reported_apart() {
    let names = promql::names(r#"rate(${timer}_count{instance=~"$instance"}[1m]) + $counter"#)
        .expect("reads");
    assert_eq!(names.metrics, Vec::<String>::new());
    assert_eq!(names.templated, ["timer", "counter"]);
}

#[test]
fn a_misspelt_metric_is_reported() {
    let exported = set(&["tallyd_lines_received_total", "tallyd_series"]);
    let (unknown, _) = unknown_names(
        "rate(tallyd_lines_recieved_total[5m]) / tallyd_series",
        &exported,
        &[],
    )
    .expect("reads");
    assert_eq!(unknown, ["tallyd_lines_recieved_total"]);
    let (unknown, _) = unknown_names(
        "rate(tallyd_lines_received_total[5m]) / instance:x:rate1m",
        &exported,
        &["instance:x:rate1m".to_string()],
    )
    .expect("reads");
    assert_eq!(unknown, Vec::<String>::new(), "recorded names are known");
}

#[test]
fn a_misspelt_function_is_an_error() {
    let error = promql::names("rates(tallyd_series[5m])").expect_err("no such function");
    assert!(error.contains("rates("), "{error}");
}

#[test]
fn label_values_select_as_prometheus_does() {
    assert!(regex_matches(".+_total", "api_requests_total"));
    assert!(!regex_matches(".+_total", "api_requests_total_x"));
    assert!(regex_matches("tallyd_.*", "tallyd_series"));
    assert!(!regex_matches("tallyd_.*", "my_tallyd_series"));
    assert!(regex_matches("a|b", "b"));
    let query = parse_label_values(
        r#"label_values({__name__=~".+_total", __name__!~"tallyd_.*", instance=~".*"}, __name__)"#,
    )
    .expect("parses");
    let series = [
        "api_requests_total",
        "tallyd_lines_received_total",
        "api_latency",
    ]
    .map(|name| BTreeMap::from([("__name__".to_string(), name.to_string())]));
    assert_eq!(query.evaluate(&series), set(&["api_requests_total"]));
}

/// The agent with the API on an ephemeral port, a firing alert rule and a mapping that makes
/// one timer a histogram, after one flush of a counter, a timer (a summary), the mapped timer,
/// a gauge, a set and a bad line: the samples of its `/metrics`.
async fn scrape_a_busy_agent() -> Vec<Sample> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mapping = dir.path().join("mapping.yml");
    std::fs::write(
        &mapping,
        "mappings:\n  - match: \"checkout.*.latency\"\n    name: \"checkout_latency_seconds\"\n    \
         observer_type: histogram\n    labels:\n      region: \"$1\"\n",
    )
    .expect("mapping file");
    let toml = format!(
        "backends = []\n\
         [server]\nudp = [\"127.0.0.1:0\"]\n\
         [aggregation]\nflush_interval_ms = 60000\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\
         [prometheus]\nmapping_file = {:?}\n\
         [[alerts]]\nname = \"deep-queue\"\nmetric = \"queue.depth\"\nstat = \"value\"\n\
         op = \">\"\nthreshold = 5\nseverity = \"critical\"\n",
        mapping.display().to_string()
    );
    let running = tallyd::app::start(config(&toml), Vec::new())
        .await
        .expect("agent starts");
    let lines = [
        "api.requests:1|c|#env:prod",
        "api.requests:2|c|@0.5|#env:prod",
        "api.latency:12|ms",
        "api.latency:20|ms",
        "checkout.eu.latency:40|ms",
        "queue.depth:7|g",
        "users.active:alice|s",
        "not a statsd line",
    ];
    send_udp(running.udp_addrs()[0], &[&lines.join("\n")]);
    let deadline = std::time::Instant::now() + PATIENCE;
    while running.telemetry().lines_total() < lines.len() as u64 {
        assert!(std::time::Instant::now() < deadline, "the lines arrive");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.flush_now().await;
    // The API's feed publishes the flush on its own thread: wait until it has.
    let deadline = Instant::now() + PATIENCE;
    while running.api_state().and_then(|s| s.view()).is_none() {
        assert!(Instant::now() < deadline, "the API never saw the flush");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let api = running.api_addr().expect("the API listens");
    let text = tokio::task::spawn_blocking(move || get_metrics(api))
        .await
        .expect("the scrape ends");
    running.shutdown().await;
    exposition::parse(&text).unwrap_or_else(|e| panic!("{e} in\n{text}"))
}

fn get_metrics(api: SocketAddr) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(PATIENCE))
        .build()
        .into();
    agent
        .get(format!("http://{api}/metrics"))
        .call()
        .expect("GET /metrics answers 200")
        .body_mut()
        .read_to_string()
        .expect("a text body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_rules_query_reads_exported_metrics() {
    let samples = scrape_a_busy_agent().await;
    let exported: BTreeSet<String> = samples.iter().map(|s| s.name.clone()).collect();
    // As Prometheus stores them: with the scrape's target labels.
    let series: Vec<BTreeMap<String, String>> = samples
        .iter()
        .map(|s| {
            let mut labels = s.labels.clone();
            labels.insert("job".to_string(), "tallyd".to_string());
            labels.insert("instance".to_string(), "127.0.0.1:9102".to_string());
            labels
        })
        .collect();
    let dashboard = sources::dashboard();
    let recorded = sources::recorded_names();
    let variables = sources::dashboard_variables(&dashboard);

    // Every query variable finds values; pick the first of each for the templated names.
    let mut chosen: Vec<(String, String)> = Vec::new();
    for variable in &variables {
        let query = promql::substitute(&variable.query, &[("instance", ".*")]);
        let values = parse_label_values(&query)
            .unwrap_or_else(|e| panic!("variable {}: {e}", variable.name))
            .evaluate(&series);
        let first = values.iter().next().unwrap_or_else(|| {
            panic!(
                "variable {} ({}) finds nothing in:\n{exported:?}",
                variable.name, variable.query
            )
        });
        assert!(
            !first.starts_with("tallyd_") || variable.name == "instance",
            "variable {} picks the agent's own {first}",
            variable.name
        );
        chosen.push((variable.name.clone(), first.clone()));
    }
    let mut values: Vec<(&str, &str)> = chosen
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    values.extend([
        ("__rate_interval", "5m"),
        ("__interval", "1m"),
        ("instance", ".*"),
    ]);

    let mut queries = sources::dashboard_queries(&dashboard);
    queries.extend(sources::rule_queries());
    assert!(
        queries.len() > 10,
        "the files hold their queries: {queries:?}"
    );
    let mut failures = Vec::new();
    for query in &queries {
        let (unknown, templated) = unknown_names(&query.expr, &exported, &recorded)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", query.origin, query.expr));
        if !unknown.is_empty() {
            failures.push(format!("{}: {unknown:?} in {}", query.origin, query.expr));
        }
        if templated.is_empty() {
            continue;
        }
        // With the variables' values in, the names must exist too (`${timer}_count`).
        let concrete = promql::substitute(&query.expr, &values);
        let (unknown, _) = unknown_names(&concrete, &exported, &recorded).expect("reads");
        if !unknown.is_empty() {
            failures.push(format!("{} with {values:?}: {unknown:?}", query.origin));
        }
    }
    assert!(
        failures.is_empty(),
        "names tallyd does not export:\n{}\nexported: {exported:?}",
        failures.join("\n")
    );
}

#[test]
fn every_alert_and_recording_rule_is_checked() {
    // The rules file's parser found every rule: a rule it missed would go unchecked.
    let text = std::fs::read_to_string(sources::RULES).expect("rules");
    let rules = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- record:") || l.starts_with("- alert:")
        })
        .count();
    assert_eq!(sources::rule_queries().len(), rules);
    assert!(sources::alert_names().contains(&"TallydDown".to_string()));
}

/// What Grafana's import needs and what keeps the panels apart: a uid, no numeric id, the
/// data source as a variable every panel and target uses, unique panel ids and refIds, and
/// panels that fit the 24-column grid without overlapping.
#[test]
fn the_dashboard_imports_into_any_grafana() {
    let dashboard = sources::dashboard();
    assert!(dashboard["id"].is_null(), "an exported dashboard has no id");
    assert_eq!(dashboard["uid"], "tallyd");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"]["uid"], "${DS_PROMETHEUS}");
    }

    let mut panels = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        panels.push(panel);
    }
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "every panel has its own id");
    let mut cells = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("");
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24, "panel {title:?} is wider than the grid");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(
                cells.insert(cell),
                "panel {title:?} overlaps another at {cell:?}"
            );
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        let refs: BTreeSet<&str> = targets.iter().filter_map(|t| t["refId"].as_str()).collect();
        assert_eq!(refs.len(), targets.len(), "panel {title:?}: refIds unique");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }
}
