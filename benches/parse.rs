//! Parser throughput in lines/s: `cargo bench --bench parse`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tallyd::protocol::{MetricLine, lines, parse_line};

/// A packed datagram of typical lines: counters, timers with rates and tags, gauges, sets.
fn datagram() -> String {
    let mut out = String::new();
    for i in 0..10 {
        out.push_str(&format!("api.requests.{i}:1|c|#env:prod,region:eu\n"));
        out.push_str(&format!(
            "api.latency.{i}:{}.25|ms|@0.5|#env:prod\n",
            10 + i
        ));
        out.push_str(&format!("queue.depth.{i}:+{i}|g\n"));
        out.push_str(&format!("users.online:user{i}|s\n"));
    }
    out
}

fn parse(c: &mut Criterion) {
    let datagram = datagram();
    let count = lines(datagram.as_bytes()).count() as u64;
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(count));
    group.bench_function("packed_datagram_40_lines", |b| {
        let mut line_buf: MetricLine<'static> = MetricLine::default();
        b.iter(|| {
            let mut parsed: MetricLine<'_> = std::mem::take(&mut line_buf).recycle();
            let mut samples = 0;
            for line in lines(black_box(datagram.as_bytes())) {
                if parse_line(line, &mut parsed).is_ok() {
                    samples += parsed.samples.len();
                }
            }
            line_buf = parsed.recycle();
            samples
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
