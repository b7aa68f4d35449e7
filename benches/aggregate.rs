//! Shard and router throughput in lines/s. `shard/*`: one shard folds prebuilt batches in
//! (building them is setup, not timed). `router/*`: whole packets of 40 lines parsed, keyed
//! and folded, into one shard (lines folded straight in) and into two (batched per shard).
//! `steady/*`: the load generator's packed lines (10 000 untagged counter series) into
//! shards that already hold every series, the agent's state under sustained load.
//! `cargo bench --bench aggregate`.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tallyd::aggregate::{Batch, KeyEncoder, Shard, new_shards};
use tallyd::config::Config;
use tallyd::protocol::{MetricLine, Parsed, parse_line};
use tallyd::server::Router;
use tallyd::telemetry::Telemetry;

const SERIES: usize = 1000;
const LINES: usize = 20_000;

/// Packets of 40 lines each, `LINES` lines in all.
fn packets(kind: &str) -> Vec<String> {
    let mut packets = vec![String::new()];
    for i in 0..LINES {
        let packet = packets.last_mut().expect("never empty");
        packet.push_str(&format!(
            "bench.metric.{}:{}|{kind}|#env:prod\n",
            i % SERIES,
            i % 97
        ));
        if i % 40 == 39 {
            packets.push(String::new());
        }
    }
    packets
}

/// The packets' samples in batches of 1024, as a router would leave them for a busy shard.
fn batches(kind: &str) -> Vec<Batch> {
    let encoder = KeyEncoder::new(Arc::from(Vec::new()));
    let mut batches = vec![Batch::default()];
    let packets = packets(kind);
    let mut parsed = MetricLine::default();
    for packet in &packets {
        for line in packet.lines() {
            let Ok(Parsed::Metric) = parse_line(line.as_bytes(), &mut parsed) else {
                panic!("bench lines are valid: {line}");
            };
            let batch = batches.last_mut().expect("never empty");
            let mut body = Vec::new();
            let hash = encoder.encode(parsed.name, &mut parsed.tags, &mut body);
            batch.push_line(&body, hash, &parsed.samples);
            if batch.samples.len() == 1024 {
                batches.push(Batch::default());
            }
        }
    }
    batches
}

const KINDS: [(&str, &str); 4] = [
    ("counters", "c"),
    ("timers", "ms"),
    ("gauges", "g"),
    ("sets", "s"),
];

fn shard(c: &mut Criterion) {
    let config = Arc::new(Config::default().aggregation);
    let mut group = c.benchmark_group("shard");
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, kind) in KINDS {
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

fn router(c: &mut Criterion) {
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(LINES as u64));
    for shards in [1, 2] {
        let packets = packets("c");
        group.bench_function(format!("counters_{shards}_shards"), |b| {
            b.iter_batched(
                || {
                    let telemetry = Arc::new(Telemetry::default());
                    let mut config = Config::default().aggregation;
                    config.shards = shards;
                    let handles = new_shards(&Arc::new(config), &telemetry);
                    Router::new(KeyEncoder::new(Arc::from(Vec::new())), handles, telemetry)
                },
                |mut router| {
                    for packet in &packets {
                        router.handle_packet(packet.as_bytes());
                    }
                    router.flush();
                    router
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// 40-line packets of `loadgen.counter.<i>:1|c`, cycling over 10 000 series in the order
/// the load generator sends them.
fn loadgen_packets() -> Vec<Vec<u8>> {
    const STEADY_SERIES: usize = 10_000;
    (0..STEADY_SERIES / 40 * 2)
        .map(|p| {
            (0..40)
                .flat_map(|l| {
                    let series = (p * 40 + l) % STEADY_SERIES;
                    format!("loadgen.counter.{series}:1|c\n").into_bytes()
                })
                .collect()
        })
        .collect()
}

fn steady(c: &mut Criterion) {
    let mut group = c.benchmark_group("steady");
    let packets = loadgen_packets();
    group.throughput(Throughput::Elements(packets.len() as u64 * 40));
    for shards in [1, 2] {
        let telemetry = Arc::new(Telemetry::default());
        let mut config = Config::default().aggregation;
        config.shards = shards;
        let handles = new_shards(&Arc::new(config), &telemetry);
        let mut router = Router::new(KeyEncoder::new(Arc::from(Vec::new())), handles, telemetry);
        for packet in &packets {
            router.handle_packet(packet);
        }
        router.flush();
        group.bench_function(format!("counters_{shards}_shards"), |b| {
            b.iter(|| {
                for packet in &packets {
                    router.handle_packet(packet);
                }
                router.flush();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, shard, router, steady);
criterion_main!(benches);
