//! The push outputs' encoders at 1 000 000 series, on one core: remote write samples/s
//! encoded and snappy-compressed (SPEC §7.2's target: 2 M/s), and OTLP data points/s
//! encoded (protobuf, uncompressed). The record is built once through the real flush path;
//! the Prometheus view (shared with `/metrics`) is built once too and timed on its own.
//! Traffic: 800 000 counters and 100 000 gauges with two tags each, and 100 000 timers of
//! 10 values (a summary: 4 quantiles, `_sum`, `_count`).
//! `cargo bench --bench outputs`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tallyd::backend::{otlp, remote_write};
use tallyd::config::Config;
use tallyd::export::view::View;
use tallyd::record::Record;

const SERIES: usize = 1_000_000;

fn record(config: &Config) -> Record {
    let mut lines = String::with_capacity(SERIES * 48);
    for i in 0..SERIES {
        match i % 10 {
            0 => {
                for v in 0..10 {
                    lines.push_str(&format!(
                        "svc.latency.{i}:{}|ms|#env:prod\n",
                        v * 7 + i % 13
                    ));
                }
            }
            1 => lines.push_str(&format!("svc.queue.{i}:{}|g|#env:prod,az:b\n", i % 100)),
            _ => lines.push_str(&format!("svc.requests.{i}:{}|c|#env:prod,az:a\n", i % 50)),
        }
    }
    tallyd::flush::record_from_datagram(config, &lines)
}

fn bench(c: &mut Criterion) {
    let config = Config::from_toml(
        "[aggregation]\nmax_series = 2000000\n[[backends]]\nkind = \"remote_write\"\n\
         url = \"http://127.0.0.1:9/api/v1/write\"\n",
        std::path::Path::new("bench.toml"),
    )
    .expect("valid");
    let record = Arc::new(record(&config));
    assert_eq!(record.metrics.len(), SERIES);
    let view = View::build(None, record.clone(), &config.prometheus);

    let mut group = c.benchmark_group("outputs");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("view_build_1m_series", |b| {
        b.iter(|| View::build(Some(&view), record.clone(), &config.prometheus))
    });

    let mut encoder = remote_write::Encoder::new(2000);
    let mut bytes = 0usize;
    encoder.encode(&view, None, "web-7", 1, &mut |body| bytes += body.len());
    let samples = encoder.last_samples();
    println!("remote write: {samples} samples, {bytes} bytes compressed");
    group.throughput(Throughput::Elements(samples as u64));
    group.bench_function("remote_write_1m_series", |b| {
        b.iter(|| {
            encoder.encode(&view, Some(&view), "web-7", 1, &mut |body| {
                std::hint::black_box(body);
            })
        })
    });

    let mut otlp_encoder = otlp::Encoder::new(otlp::Temporality::Cumulative, 2000);
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("otlp_1m_points", |b| {
        b.iter(|| {
            otlp_encoder.encode(&view, &mut |body| {
                std::hint::black_box(body);
            })
        })
    });
    group.finish();

    // Wall time on a shared machine counts the time other processes hold the core; the
    // thread's own CPU time is what one core spends.
    let rounds = 5;
    let cpu = thread_cpu(|| {
        for _ in 0..rounds {
            encoder.encode(&view, Some(&view), "web-7", 1, &mut |body| {
                std::hint::black_box(body);
            });
        }
    });
    println!(
        "remote write, CPU time: {:.0} ms per flush of {samples} samples, {:.2} M samples per CPU-second",
        cpu * 1000.0 / rounds as f64,
        (samples * rounds) as f64 / cpu / 1e6
    );
    let cpu = thread_cpu(|| {
        for _ in 0..rounds {
            otlp_encoder.encode(&view, &mut |body| {
                std::hint::black_box(body);
            });
        }
    });
    println!(
        "otlp, CPU time: {:.0} ms per flush of {SERIES} points, {:.2} M points per CPU-second",
        cpu * 1000.0 / rounds as f64,
        (SERIES * rounds) as f64 / cpu / 1e6
    );
    let cpu = thread_cpu(|| {
        for _ in 0..rounds {
            std::hint::black_box(View::build(Some(&view), record.clone(), &config.prometheus));
        }
    });
    println!(
        "view build, CPU time: {:.0} ms per flush of {SERIES} series",
        cpu * 1000.0 / rounds as f64
    );
}

/// The CPU seconds the calling thread spends in `f`.
fn thread_cpu(f: impl FnOnce()) -> f64 {
    let now = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid pointer to a timespec this function owns.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    };
    let start = now();
    f();
    now() - start
}

criterion_group!(benches, bench);
criterion_main!(benches);
