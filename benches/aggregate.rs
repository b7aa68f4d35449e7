//! Shard throughput in samples/s: the router encodes and batches lines (setup, not timed),
//! then one shard folds the batches in (timed). `cargo bench --bench aggregate`.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tallyd::aggregate::{Batch, KeyEncoder, Shard, detached_queue};
use tallyd::config::Config;
use tallyd::server::Router;
use tallyd::telemetry::Telemetry;

const SERIES: usize = 1000;
const LINES: usize = 20_000;

fn batches(kind: &str) -> Vec<Batch> {
    let (queue, rx) = detached_queue();
    let telemetry = Arc::new(Telemetry::default());
    let mut router = Router::new(
        KeyEncoder::new(Arc::from(Vec::new())),
        vec![queue],
        telemetry,
    );
    let mut packet = String::new();
    for i in 0..LINES {
        packet.push_str(&format!(
            "bench.metric.{}:{}|{kind}|#env:prod\n",
            i % SERIES,
            i % 97
        ));
        if i % 40 == 39 {
            router.handle_packet(packet.as_bytes());
            packet.clear();
        }
    }
    router.handle_packet(packet.as_bytes());
    drop(router);
    rx.try_iter().collect()
}

fn aggregate(c: &mut Criterion) {
    let config = Arc::new(Config::default().aggregation);
    let mut group = c.benchmark_group("shard");
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, kind) in [
        ("counters", "c"),
        ("timers", "ms"),
        ("gauges", "g"),
        ("sets", "s"),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let shard = Shard::new(config.clone(), Arc::new(Telemetry::default()));
                    (shard, batches(kind))
                },
                |(mut shard, batches)| {
                    for mut batch in batches {
                        shard.add(&mut batch);
                    }
                    shard
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
