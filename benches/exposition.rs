//! `/metrics` at scale: the exposition of a view of N series written into 64 KiB chunks
//! (the HTTP layer excluded), and a view built from a record. Counters with a tag, and
//! timers (summaries) with the default percentiles. `cargo bench --bench exposition`;
//! `BENCH_SERIES` (default 1 000 000) sets N.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tallyd::config::Config;
use tallyd::export::exposition::{Format, encode};
use tallyd::export::view::View;
use tallyd::flush::record_from_datagram;

fn series() -> usize {
    std::env::var("BENCH_SERIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

fn view(kind: &str, n: usize) -> (View, Config) {
    let config = Config::from_toml(
        "[aggregation]\nmax_series = 2000000\n",
        std::path::Path::new("bench.toml"),
    )
    .expect("valid");
    let mut lines = String::with_capacity(n * 48);
    for i in 0..n {
        lines.push_str(&format!("bench.metric.{i}:{}|{kind}|#env:prod\n", i % 97));
    }
    let record = Arc::new(record_from_datagram(&config, &lines));
    let first = View::build(None, record.clone(), &config.prometheus);
    (
        View::build(Some(&first), record, &config.prometheus),
        config,
    )
}

fn exposition(c: &mut Criterion) {
    let n = series();
    let mut group = c.benchmark_group("exposition");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    for kind in ["c", "ms"] {
        let (view, config) = view(kind, n);
        group.bench_function(format!("text/{kind}/{n}"), |b| {
            b.iter(|| {
                let mut bytes = 0usize;
                encode(&view, Format::Text, &mut |chunk| {
                    bytes += chunk.len();
                    true
                });
                bytes
            })
        });
        let record = view.record().clone();
        group.bench_function(format!("view/{kind}/{n}"), |b| {
            b.iter(|| View::build(Some(&view), record.clone(), &config.prometheus))
        });
    }
    group.finish();
}

criterion_group!(benches, exposition);
criterion_main!(benches);
