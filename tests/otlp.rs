//! The otlp output against a real HTTP server in the test process, on loopback: bodies
//! decoded with the official OTLP protobuf definitions (`opentelemetry-proto`), gzip,
//! and which answers are retried.

mod common;

use std::io::Read;

use common::receiver::{HttpReceiver, Received};
use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use prost::Message;

fn otlp_config(url: &str, extra: &str) -> String {
    format!(
        "host = \"web-7\"\n[server]\nudp = [\"127.0.0.1:0\"]\nshutdown_timeout_ms = 5000\n\
         [aggregation]\nflush_interval_ms = 60000\n\
         [[backends]]\nkind = \"otlp\"\nurl = {url:?}\nretry_initial_ms = 10\n\
         retry_max_ms = 50\n{extra}\n"
    )
}

fn decode(request: &Received) -> ExportMetricsServiceRequest {
    let body = if request.header("Content-Encoding") == Some("gzip") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&request.body[..])
            .read_to_end(&mut plain)
            .expect("gunzips");
        plain
    } else {
        request.body.clone()
    };
    ExportMetricsServiceRequest::decode(&body[..]).expect("an OTLP request")
}

/// The value of counter `name`'s data point.
fn counter(request: &ExportMetricsServiceRequest, name: &str) -> Option<f64> {
    let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
    let metric = metrics.iter().find(|m| m.name == name)?;
    match &metric.data {
        Some(Data::Sum(sum)) => match sum.data_points[0].value {
            Some(Value::AsDouble(v)) => Some(v),
            _ => None,
        },
        _ => None,
    }
}

async fn flush(agent: &Agent, lines: &[&str], lines_so_far: u64) {
    agent.send(lines);
    agent.wait_lines(lines_so_far + lines.len() as u64).await;
    agent.flush().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_requests_decode_with_the_official_definitions() {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let agent = start(&otlp_config(&receiver.url(), "gzip = true")).await;
    flush(
        &agent,
        &["api.requests:2|c|#env:prod", "api.latency:250|ms"],
        0,
    )
    .await;
    let request = receiver.next();
    assert_eq!(
        request.header("Content-Type"),
        Some("application/x-protobuf")
    );
    assert_eq!(request.header("Content-Encoding"), Some("gzip"));
    let body = decode(&request);
    let resource = body.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource");
    let host = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "host.name")
        .expect("host.name");
    assert_eq!(
        format!("{:?}", host.value),
        format!(
            "{:?}",
            Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        "web-7".into()
                    )
                )
            })
        )
    );
    assert_eq!(counter(&body, "api.requests"), Some(2.0));
    let metrics = &body.resource_metrics[0].scope_metrics[0].metrics;
    let latency = metrics
        .iter()
        .find(|m| m.name == "api.latency")
        .expect("timer");
    assert_eq!(latency.unit, "ms");
    let Some(Data::Summary(summary)) = &latency.data else {
        panic!("a summary: {latency:?}")
    };
    assert_eq!(summary.data_points[0].sum, 250.0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlps_retryable_answers_are_retried_and_others_dropped() {
    // 502, 503, 504 and 429 retried; 500 dropped.
    let receiver = HttpReceiver::answering("127.0.0.1:0", vec![502, 503, 504, 429, 500]);
    let agent = start(&otlp_config(&receiver.url(), "")).await;
    flush(&agent, &["a:1|c"], 0).await;
    flush(&agent, &["a:1|c"], 1).await;
    let got: Vec<Option<f64>> = (0..6)
        .map(|_| counter(&decode(&receiver.next()), "a"))
        .collect();
    assert_eq!(
        got,
        [Some(1.0); 5]
            .into_iter()
            .chain([Some(2.0)])
            .collect::<Vec<_>>()
    );
    assert_eq!(agent.running.telemetry().dropped_records_total(), 1);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_every_request_arrives_in_order() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/v1/metrics");
    let agent = start(&otlp_config(&url, "")).await;
    for i in 0..4 {
        flush(&agent, &["a:1|c"], i).await;
    }
    let receiver = HttpReceiver::start(&format!("127.0.0.1:{port}"));
    let got: Vec<Option<f64>> = (0..4)
        .map(|_| counter(&decode(&receiver.next()), "a"))
        .collect();
    assert_eq!(got, [Some(1.0), Some(2.0), Some(3.0), Some(4.0)]);
    assert_eq!(agent.running.telemetry().dropped_records_total(), 0);
    agent.running.shutdown().await;
}
