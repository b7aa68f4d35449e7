//! Parser throughput in lines/s, splitting and parsing as the router does (`next_line`):
//! `cargo bench --bench parse`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tallyd::protocol::{MetricLine, NextLine, lines, next_line, parse_line};

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

/// A datagram of the commonest lines, as the load generator sends them: `name:value|type`.
fn plain_datagram() -> String {
    (0..40)
        .map(|i| format!("loadgen.counter.{i}:1|c\n"))
        .collect()
}

/// Splits and parses every line of `buf` as a router does; the samples parsed.
fn parse_all<'a>(buf: &'a [u8], parsed: &mut MetricLine<'a>) -> usize {
    let mut rest = buf;
    let mut samples = 0;
    while let Some(next) = next_line(&mut rest, parsed) {
        let ok = match next {
            NextLine::Parsed(_, result) => result.is_ok(),
            NextLine::Line(line) => parse_line(line, parsed).is_ok(),
        };
        if ok {
            samples += parsed.samples.len();
        }
    }
    samples
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, datagram) in [
        ("packed_datagram_40_lines", datagram()),
        ("plain_datagram_40_lines", plain_datagram()),
    ] {
        group.throughput(Throughput::Elements(
            lines(datagram.as_bytes()).count() as u64
        ));
        group.bench_function(name, |b| {
            let mut line_buf: MetricLine<'static> = MetricLine::default();
            b.iter(|| {
                let mut parsed: MetricLine<'_> = std::mem::take(&mut line_buf).recycle();
                let samples = parse_all(black_box(datagram.as_bytes()), &mut parsed);
                line_buf = parsed.recycle();
                samples
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
