//! The Graphite output at a million series: `encode/*` turns one flush record into its
//! plaintext payloads on one core (lines/s); `deliver/*` encodes and writes the whole flush
//! down one TCP connection to a loopback receiver that reads and counts it (the time of a
//! flush's delivery). The statsd output's encoder is measured beside it. The record is built
//! through the real path (router, shard, flusher) once, outside the timing.
//! `cargo bench --bench graphite`.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tallyd::backend::graphite::{GraphiteEncoder, NameConfig};
use tallyd::backend::sender::Transport;
use tallyd::backend::sender::tcp::TcpTransport;
use tallyd::backend::sender::udp::datagrams;
use tallyd::backend::statsd::StatsdEncoder;
use tallyd::config::Config;
use tallyd::flush::record_from_datagram;
use tallyd::record::Record;

const SERIES: usize = 1_000_000;

/// A million series: 70 % counters (tagged and not), 20 % gauges, 10 % timers with three
/// values each (every figure of §2 with the default percentiles: 24 lines each).
fn record(forward: bool) -> Record {
    let mut text = String::with_capacity(SERIES * 40);
    for i in 0..SERIES {
        match i % 10 {
            0 => text.push_str(&format!(
                "app.timer.{i}:{}|ms\napp.timer.{i}:{}|ms\napp.timer.{i}:{}.5|ms\n",
                i % 97,
                i % 13,
                i % 7
            )),
            1 | 2 => text.push_str(&format!("app.gauge.{i}:{}.25|g\n", i % 1000)),
            3 => text.push_str(&format!(
                "app.requests.{i}:{}|c|#env:prod,zone:eu\n",
                i % 50
            )),
            _ => text.push_str(&format!("app.counter.{i}:{}|c\n", i % 50 + 1)),
        }
    }
    let backend = if forward {
        "[[backends]]\nkind = \"statsd\"\naddress = \"127.0.0.1:9\"\n"
    } else {
        "backends = []\n"
    };
    let config = Config::from_toml(
        &format!("{backend}[aggregation]\nflush_interval_ms = 10000\nshards = 1\n"),
        std::path::Path::new("bench.toml"),
    )
    .expect("valid");
    let record = record_from_datagram(&config, &text);
    assert_eq!(
        record.metrics.len(),
        SERIES,
        "every series is in the record"
    );
    record
}

/// What the comparison with etsy statsd floods it with: `n` untagged counter series.
fn counters(n: usize) -> Record {
    let text: String = (0..n).map(|i| format!("bench.counter.{i}:1|c\n")).collect();
    let config = Config::from_toml(
        "backends = []\n[aggregation]\nflush_interval_ms = 10000\nshards = 1\n",
        std::path::Path::new("bench.toml"),
    )
    .expect("valid");
    record_from_datagram(&config, &text)
}

/// The lines and bytes of one flush; `framed`: payloads of length-framed datagrams.
fn lines_of(framed: bool, encode: impl FnOnce(&mut dyn FnMut(Vec<u8>))) -> (u64, u64) {
    let (mut lines, mut bytes) = (0u64, 0u64);
    encode(&mut |payload: Vec<u8>| {
        bytes += payload.len() as u64;
        lines += if framed {
            datagrams(&payload).map(newlines).sum()
        } else {
            newlines(&payload)
        };
    });
    (lines, bytes)
}

fn newlines(text: &[u8]) -> u64 {
    text.iter().filter(|&&b| b == b'\n').count() as u64
}

fn bench(c: &mut Criterion) {
    let small = counters(100_000);
    let mut encoder = GraphiteEncoder::new(&NameConfig::default());
    let (lines, _) = lines_of(false, |push| encoder.encode(&small, push));
    let mut group = c.benchmark_group("graphite");
    group.sample_size(20);
    group.throughput(Throughput::Elements(lines));
    group.bench_function("encode/100k_counters", |b| {
        b.iter(|| {
            let mut n = 0usize;
            encoder.encode(&small, |payload| n += payload.len());
            n
        });
    });
    group.finish();
    drop(small);

    let record = record(false);
    let mut encoder = GraphiteEncoder::new(&NameConfig::default());
    let (lines, bytes) = lines_of(false, |push| encoder.encode(&record, push));
    println!("graphite: one flush of {SERIES} series is {lines} lines, {bytes} bytes");

    let mut group = c.benchmark_group("graphite");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(lines));
    group.bench_function("encode/1m_series", |b| {
        b.iter(|| {
            let mut n = 0usize;
            encoder.encode(&record, |payload| n += payload.len());
            n
        });
    });

    // A receiver that reads everything and acknowledges each flush's end (the last
    // payload's bytes) by counting bytes.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<()>();
    let flush_bytes = bytes;
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut seen = 0u64;
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    seen += n as u64;
                    while seen >= flush_bytes {
                        seen -= flush_bytes;
                        let _ = done_tx.send(());
                    }
                }
            }
        }
    });
    let mut transport = TcpTransport::new(addr.to_string());
    group.bench_function("deliver/1m_series_to_loopback_tcp", |b| {
        b.iter(|| {
            encoder.encode(&record, |payload| {
                transport
                    .deliver(&payload, Duration::from_secs(10))
                    .expect("delivered");
            });
            done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the receiver read the whole flush");
        });
    });
    group.finish();

    let forwarded = self::record(true);
    drop(record);
    let mut statsd = StatsdEncoder::new(true, 1432);
    let (lines, bytes) = lines_of(true, |push| statsd.encode(&forwarded, push));
    println!("statsd: one flush of {SERIES} series is {lines} lines, {bytes} bytes");
    let mut group = c.benchmark_group("statsd");
    group.sample_size(10);
    group.throughput(Throughput::Elements(lines));
    group.bench_function("encode/1m_series_udp", |b| {
        b.iter(|| {
            let mut n = 0usize;
            statsd.encode(&forwarded, |payload| n += payload.len());
            n
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
