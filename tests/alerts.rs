//! Alert rules end to end: samples over UDP, flushes by hand, events read from the record.

mod common;

use common::receiver::HttpReceiver;
use common::*;
use serde_json::{Value, json};

fn rule(name: &str, body: &str) -> String {
    format!("[[alerts]]\nname = \"{name}\"\nnotify = [\"log\"]\n{body}\n")
}

/// The test config with alert rules appended (they must come after every other table).
async fn start_with(aggregation: &str, rules: &[String]) -> Agent {
    let mut toml = base(aggregation);
    for r in rules {
        toml.push_str(r);
    }
    start(&toml).await
}

/// Sends datagrams, waits for them, flushes, returns the record's alert events.
async fn step(agent: &Agent, sent: &mut u64, datagrams: &[&str]) -> Vec<Value> {
    agent.send(datagrams);
    *sent += datagrams
        .iter()
        .map(|d| d.lines().count() as u64)
        .sum::<u64>();
    agent.wait_lines(*sent).await;
    let record = agent.flush().await;
    record["alerts"].as_array().cloned().unwrap_or_default()
}

fn states(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["rule"].as_str().unwrap_or("").to_string(),
                e["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operator_fires_and_resolves_once() {
    let ops = [
        (">", 5.0),
        (">=", 5.0),
        ("<", 5.0),
        ("<=", 5.0),
        ("==", 5.0),
        ("!=", 5.0),
    ];
    let rules: Vec<String> = ops
        .iter()
        .enumerate()
        .map(|(i, (op, t))| {
            rule(
                &format!("r{i}"),
                &format!("metric = \"g\"\nstat = \"value\"\nop = \"{op}\"\nthreshold = {t}"),
            )
        })
        .collect();
    let agent = start_with("", &rules).await;
    let mut sent = 0;
    // value 5: >= <= == hold.
    let e = states(&step(&agent, &mut sent, &["g:5|g"]).await);
    assert_eq!(
        e,
        vec![
            ("r1".into(), "firing".into()),
            ("r3".into(), "firing".into()),
            ("r4".into(), "firing".into())
        ]
    );
    // value 6: > >= != hold; <= and == resolve.
    let e = states(&step(&agent, &mut sent, &["g:6|g"]).await);
    let mut e = e;
    e.sort();
    assert_eq!(
        e,
        vec![
            ("r0".into(), "firing".into()),
            ("r3".into(), "resolved".into()),
            ("r4".into(), "resolved".into()),
            ("r5".into(), "firing".into()),
        ]
    );
    // value 6 again: nothing changes, nothing is sent.
    assert!(step(&agent, &mut sent, &["g:6|g"]).await.is_empty());
    // value 4: < <= != hold.
    let mut e = states(&step(&agent, &mut sent, &["g:4|g"]).await);
    e.sort();
    assert_eq!(
        e,
        vec![
            ("r0".into(), "resolved".into()),
            ("r1".into(), "resolved".into()),
            ("r2".into(), "firing".into()),
            ("r3".into(), "firing".into()),
        ]
    );
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_event_carries_the_spec_fields() {
    let rules = [rule(
        "slow-api",
        "metric = \"api.*\"\ntags = { env = \"prod\" }\nstat = \"upper_90\"\nop = \">\"\nthreshold = 25\nseverity = \"critical\"",
    )];
    let agent = start_with("", &rules).await;
    let mut sent = 0;
    let events = step(
        &agent,
        &mut sent,
        &["api.latency:10:20:30|ms|#env:prod\napi.other:99|ms|#env:dev"],
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    let since = event["since"].as_u64().expect("since");
    assert_eq!(
        event,
        &json!({"rule": "slow-api", "severity": "critical", "state": "firing", "name": "api.latency",
                "tags": {"env": "prod"}, "stat": "upper_90", "op": ">", "threshold": 25,
                "value": 30, "since": since})
    );
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_requires_consecutive_flushes_and_a_break_restarts_the_count() {
    let rules = [rule(
        "busy",
        "metric = \"q\"\nstat = \"value\"\nop = \">\"\nthreshold = 10\nfor = 3",
    )];
    let agent = start_with("", &rules).await;
    let mut sent = 0;
    assert!(step(&agent, &mut sent, &["q:11|g"]).await.is_empty());
    assert!(step(&agent, &mut sent, &["q:12|g"]).await.is_empty());
    assert!(
        step(&agent, &mut sent, &["q:1|g"]).await.is_empty(),
        "the break resets the count"
    );
    assert!(step(&agent, &mut sent, &["q:11|g"]).await.is_empty());
    assert!(step(&agent, &mut sent, &["q:11|g"]).await.is_empty());
    let events = step(&agent, &mut sent, &["q:11|g"]).await;
    assert_eq!(states(&events), vec![("busy".into(), "firing".into())]);
    let events = step(&agent, &mut sent, &["q:0|g"]).await;
    assert_eq!(states(&events), vec![("busy".into(), "resolved".into())]);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_fires_for_idle_and_expired_series_and_resolves_on_a_sample() {
    // 60 s flushes, ttl 120 s: the series is idle for one flush, then expired.
    let rules = [rule("gone", "metric = \"heartbeat\"\nop = \"absent\"")];
    let agent = start_with("series_ttl_ms = 120000", &rules).await;
    let mut sent = 0;
    assert!(step(&agent, &mut sent, &["heartbeat:1|c"]).await.is_empty());
    let events = step(&agent, &mut sent, &[]).await;
    assert_eq!(states(&events), vec![("gone".into(), "firing".into())]);
    assert_eq!(events[0]["value"], Value::Null);
    assert!(
        step(&agent, &mut sent, &[]).await.is_empty(),
        "expired now, still absent, no repeat"
    );
    let events = step(&agent, &mut sent, &["heartbeat:1|c"]).await;
    assert_eq!(states(&events), vec![("gone".into(), "resolved".into())]);
    agent.running.shutdown().await;
}

/// The events as (series name, state), sorted.
fn by_series(events: &[Value]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or("").to_string(),
                e["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_series_that_expired_stay_firing_until_a_sample_returns() {
    // 60 s flushes, ttl 120 s: each request series is idle for one flush, then expired.
    let rules = [rule("stale", "metric = \"req.*\"\nop = \"absent\"")];
    let agent = start_with("series_ttl_ms = 120000", &rules).await;
    let mut sent = 0;
    let pair = |name: &str, state: &str| (name.to_string(), state.to_string());
    assert!(step(&agent, &mut sent, &["req.1:1|c"]).await.is_empty());
    let events = step(&agent, &mut sent, &["req.2:1|c"]).await;
    assert_eq!(by_series(&events), vec![pair("req.1", "firing")]);
    let events = step(&agent, &mut sent, &["req.3:1|c"]).await;
    assert_eq!(by_series(&events), vec![pair("req.2", "firing")]);
    // req.1 has been out of the record for more than `for` (1) flushes: still firing, as
    // no sample came, so nothing resolves.
    let events = step(&agent, &mut sent, &[]).await;
    assert_eq!(by_series(&events), vec![pair("req.3", "firing")]);
    for _ in 0..2 {
        assert!(
            step(&agent, &mut sent, &[]).await.is_empty(),
            "expired pairs neither resolve nor fire again"
        );
    }
    // req.2 is back: its alert resolves.
    let events = step(&agent, &mut sent, &["req.2:1|c"]).await;
    assert_eq!(by_series(&events), vec![pair("req.2", "resolved")]);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_interval_sends_reminders_while_firing() {
    // 60 s flushes, reminders every 120 s: every second flush.
    let rules = [rule(
        "hot",
        "metric = \"t\"\nstat = \"value\"\nop = \">\"\nthreshold = 0\nrepeat_interval_ms = 120000",
    )];
    let agent = start_with("", &rules).await;
    let mut sent = 0;
    let mut counts = Vec::new();
    for _ in 0..5 {
        counts.push(step(&agent, &mut sent, &["t:1|g"]).await.len());
    }
    assert_eq!(counts, vec![1, 0, 1, 0, 1]);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_and_tags_select_series_and_each_series_has_its_own_state() {
    let rules = [rule(
        "errors",
        "metric = \"*.errors\"\ntags = { env = \"prod\" }\nstat = \"count\"\nop = \">=\"\nthreshold = 1",
    )];
    let agent = start_with("", &rules).await;
    let mut sent = 0;
    let events = step(
        &agent,
        &mut sent,
        &["api.errors:1|c|#env:prod\ndb.errors:2|c|#env:prod,region:eu\nweb.errors:5|c|#env:dev\napi.errors.total:9|c|#env:prod"],
    )
    .await;
    let mut names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["api.errors", "db.errors"]);
    // Only db.errors keeps erroring: api.errors resolves alone.
    let events = step(&agent, &mut sent, &["db.errors:1|c|#env:prod,region:eu"]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["name"], "api.errors");
    assert_eq!(events[0]["state"], "resolved");
    agent.running.shutdown().await;
}

fn hook(name: &str, url: &str, extra: &str) -> String {
    format!("[[notifiers]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_notifier_receives_each_event_as_one_post() {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let rules = [
        hook("ops", &receiver.url(), "headers = { X-Team = \"web\" }"),
        "[[alerts]]\nname = \"deep\"\nmetric = \"queue\"\nstat = \"value\"\nop = \">=\"\nthreshold = 100\nseverity = \"critical\"\nnotify = [\"ops\", \"log\"]\n".to_string(),
    ];
    let agent = start_with("", &rules).await;
    let mut sent = 0;
    let events = step(&agent, &mut sent, &["queue:150|g"]).await;
    assert_eq!(events.len(), 1);
    let firing = receiver.next();
    assert_eq!(firing.method, "POST");
    assert_eq!(firing.header("X-Team"), Some("web"));
    assert_eq!(firing.header("Content-Type"), Some("application/json"));
    assert_eq!(
        firing.json(),
        events[0],
        "the webhook gets the record's alert event"
    );
    step(&agent, &mut sent, &["queue:3|g"]).await;
    let resolved = receiver.next().json();
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["value"], 3.0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_and_slack_format_carries_text() {
    // The first two answers fail; the third attempt gets through.
    let receiver = HttpReceiver::answering("127.0.0.1:0", vec![503, 500]);
    let rules = [
        hook("chat", &receiver.url(), "format = \"slack\"\nretries = 2"),
        "[[alerts]]\nname = \"hot\"\nmetric = \"temp\"\nstat = \"value\"\nop = \">\"\nthreshold = 80\nnotify = [\"chat\"]\n".to_string(),
    ];
    let agent = start_with("", &rules).await;
    let mut sent = 0;
    step(&agent, &mut sent, &["temp:90|g"]).await;
    let attempts: Vec<_> = (0..3).map(|_| receiver.next().json()).collect();
    assert!(
        attempts.iter().all(|body| body == &attempts[0]),
        "each retry sends the same body"
    );
    let text = attempts[0]["text"].as_str().expect("slack text");
    assert!(
        text.contains("hot") && text.contains("firing") && text.contains("temp"),
        "{text}"
    );
    agent.running.shutdown().await;
}
