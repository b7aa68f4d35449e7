//! History benchmarks (issue 14). Run with `cargo bench --bench history`.
//!
//! 1. Upkeep: 10 000 series (5 000 counters, 5 000 timers with 10 values each per flush),
//!    a 10 s flush, SPEC §9's default tiers; an hour of flushes (360) written through the
//!    real [`HistoryBackend`] into a real store. Prints the writer's CPU per flush (thread
//!    CPU time), the extra CPU of building the timers' log sketches at the flush, and, from
//!    counters-only and timers-only runs, the bytes on disk per window of each tier
//!    (SQLite's `dbstat`: pages of each table over its rows).
//! 2. Query latency (criterion): a store synthesized directly, then one series over 7 days
//!    at 5-minute steps, and an aggregate across all 10 000 series over 24 h at 1-h steps.
//!
//! `HISTORY_BENCH_FLUSHES` shortens the upkeep run (default 360; 0 skips it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group};
use tallyd::aggregate::SeriesKey;
use tallyd::aggregate::distribution::{
    DistFigures, DistState, DistributionConfig, LogSketch, Percentile,
};
use tallyd::backend::Backend;
use tallyd::history::query;
use tallyd::history::store::{Store, encode_tags};
use tallyd::history::window::Window;
use tallyd::history::{HistoryBackend, HistoryConfig, QueryParams, default_tiers};
use tallyd::protocol::MetricKind;
use tallyd::record::{Figures, Metric, Record};
use tallyd::telemetry::Telemetry;

const SERIES: usize = 10_000;
const VALUES_PER_FLUSH: usize = 10;

/// xorshift64*: deterministic values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A latency in ms: log-normal around 50 ms (σ = 0.5), rounded to 0.1 ms.
    fn latency(&mut self) -> f64 {
        let (u1, u2) = (self.next().max(1e-12), self.next());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        ((50f64.ln() + 0.5 * z).exp() * 10.0).round() / 10.0
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn distribution(history_sketch: bool) -> DistributionConfig {
    DistributionConfig {
        percentiles: [90.0, 95.0, 99.0]
            .iter()
            .map(|p| Percentile::new(*p).expect("percentile"))
            .collect(),
        exact_samples: 10_000,
        keep_values: false,
        history_sketch,
    }
}

fn timer_figures(values: &[f64], config: &DistributionConfig) -> DistFigures {
    let mut state = DistState::default();
    for v in values {
        state.add(*v, 1.0, None, config.exact_samples);
    }
    state.take().figures(config, None, None, 10.0)
}

struct Upkeep {
    write_cpu: Duration,
    sketch_cpu: Duration,
    flushes: usize,
}

/// Writes `flushes` records of `counters` counters and `timers` timers into a fresh store.
fn simulate(path: &Path, counters: usize, timers: usize, flushes: usize) -> Upkeep {
    let telemetry = Arc::new(Telemetry::default());
    let config = HistoryConfig {
        path: path.to_path_buf(),
        tiers: default_tiers(),
    };
    let mut backend = HistoryBackend::new(config, telemetry.clone());
    let keys: Vec<SeriesKey> = (0..counters)
        .map(|i| SeriesKey::new(MetricKind::Counter, format!("bench.counter.{i}").as_bytes()))
        .chain(
            (0..timers)
                .map(|i| SeriesKey::new(MetricKind::Timer, format!("bench.timer.{i}").as_bytes())),
        )
        .collect();
    let with = distribution(true);
    let without = distribution(false);
    let arc = Arc::new(with.clone());
    // Windows in the future: none can be on disk from an earlier run, as in steady state.
    let start = (unix_now() / 3600 + 2) * 3600;
    let mut rng = Rng(0x5eed);
    let mut upkeep = Upkeep {
        write_cpu: Duration::ZERO,
        sketch_cpu: Duration::ZERO,
        flushes,
    };
    for flush in 0..flushes {
        let mut metrics = Vec::with_capacity(keys.len());
        let mut values = [0.0; VALUES_PER_FLUSH];
        for key in &keys {
            let figures = match key.kind() {
                MetricKind::Counter => Figures::Counter {
                    count: (rng.next() * 100.0).floor(),
                    active: true,
                },
                _ => {
                    for v in &mut values {
                        *v = rng.latency();
                    }
                    // The sketch's share of the flush: figures with it minus without.
                    let t0 = thread_cpu();
                    let plain = timer_figures(&values, &without);
                    let t1 = thread_cpu();
                    let figures = timer_figures(&values, &with);
                    let t2 = thread_cpu();
                    upkeep.sketch_cpu += (t2 - t1).saturating_sub(t1 - t0);
                    drop(plain);
                    Figures::Dist {
                        figures: Box::new(figures),
                        active: true,
                    }
                }
            };
            metrics.push(Metric {
                key: key.clone(),
                figures,
            });
        }
        let record = Record {
            // Each window gets whole flushes: 360 of them fill exactly one hour window.
            timestamp: (start + 10 * flush as i64) as u64,
            interval_ms: 10_000,
            host: "bench".into(),
            metrics,
            events: Vec::new(),
            alerts: Vec::new(),
            firing: Vec::new(),
            members: Vec::new(),
            internal: Default::default(),
            distribution: arc.clone(),
        };
        let t0 = thread_cpu();
        backend.write(&record).expect("history never fails a write");
        upkeep.write_cpu += thread_cpu() - t0;
    }
    assert_eq!(
        telemetry.take_interval().history_errors,
        0,
        "no store error"
    );
    upkeep
}

/// (table, bytes in its pages, rows) for each tier's table.
fn table_sizes(path: &Path) -> Vec<(String, u64, u64)> {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    default_tiers()
        .iter()
        .map(|t| {
            let table = format!("windows_{}", t.step_ms);
            let bytes: i64 = conn
                .query_row(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name = ?1",
                    [&table],
                    |r| r.get(0),
                )
                .expect("dbstat");
            let rows: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .expect("count");
            (table, bytes as u64, rows as u64)
        })
        .collect()
}

fn upkeep_report() {
    let flushes: usize = std::env::var("HISTORY_BENCH_FLUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(360);
    if flushes == 0 {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let both = simulate(&dir.path().join("both.db"), SERIES / 2, SERIES / 2, flushes);
    let per_flush = both.write_cpu / both.flushes as u32;
    let sketch = both.sketch_cpu / both.flushes as u32;
    println!(
        "history upkeep, {SERIES} series (half counters, half timers x {VALUES_PER_FLUSH} \
         values), {flushes} flushes of 10 s, default tiers:"
    );
    println!(
        "  writer: {:.1} ms CPU per flush = {:.2} % of one core; sketches at the flush: \
         {:.2} ms per flush ({:.3} %)",
        per_flush.as_secs_f64() * 1e3,
        per_flush.as_secs_f64() / 10.0 * 100.0,
        sketch.as_secs_f64() * 1e3,
        sketch.as_secs_f64() / 10.0 * 100.0
    );
    for (kind, counters, timers) in [("counter", SERIES / 2, 0), ("timer", 0, SERIES / 2)] {
        let path = dir.path().join(format!("{kind}.db"));
        simulate(&path, counters, timers, flushes);
        for (table, bytes, rows) in table_sizes(&path) {
            println!(
                "  {kind} windows in {table}: {rows} rows, {bytes} bytes, {:.1} bytes per window",
                bytes as f64 / rows.max(1) as f64
            );
        }
    }
}

/// A store with 5 000 counters and 5 000 timers: every series over the last 24 h in the 1-h
/// tier and the last 6 h in the 5-min tier; series 0 of each kind over 7 days at 5 min.
fn synthesize(path: &Path) {
    let store = Store::open_write(path, &default_tiers()).expect("store");
    let now = unix_now();
    let mut rng = Rng(7);
    let timer_window = |rng: &mut Rng, n: usize| {
        let mut values: Vec<f64> = (0..n).map(|_| rng.latency()).collect();
        values.sort_by(f64::total_cmp);
        Window {
            count: Some(n as f64),
            n: Some(n as f64),
            sum: Some(values.iter().sum()),
            sum_squares: Some(values.iter().map(|v| v * v).sum()),
            lower: values.first().copied(),
            upper: values.last().copied(),
            last: None,
            sketch: Some(LogSketch::from_sorted(&values)),
            bins: Vec::new(),
        }
    };
    store.begin().expect("begin");
    for i in 0..SERIES {
        let (name, kind) = if i < SERIES / 2 {
            (format!("bench.counter.{i}"), "counter")
        } else {
            (format!("bench.timer.{}", i - SERIES / 2), "timer")
        };
        let id = store
            .series_id(&name, kind, &encode_tags(std::iter::empty()))
            .expect("series");
        let first_of_kind = i == 0 || i == SERIES / 2;
        let five_min_windows = if first_of_kind { 7 * 288 } else { 72 };
        for (step, windows, values) in [(300, five_min_windows, 300), (3600, 24, 3600)] {
            let last = now / step * step;
            for w in 0..windows {
                let start = last - w * step;
                let window = if kind == "counter" {
                    Window {
                        count: Some((rng.next() * 1000.0).floor()),
                        ..Window::default()
                    }
                } else {
                    timer_window(&mut rng, values as usize)
                };
                store
                    .put(step as u64 * 1000, id, start, &window)
                    .expect("put");
            }
        }
    }
    store.commit().expect("commit");
}

fn query_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("query.db");
    let t0 = Instant::now();
    synthesize(&path);
    println!(
        "synthesized the query store in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let run = |params: QueryParams| {
        let query = params.validate(unix_now()).expect("valid");
        query::run(&path, &query).expect("answer")
    };
    let one = |stat: &str, metric: &str| QueryParams {
        metric: Some(metric.into()),
        stat: Some(stat.into()),
        from: Some("-7d".into()),
        step: Some("5m".into()),
        ..QueryParams::default()
    };
    let all = |stat: &str, metric: &str, agg: Option<&str>| QueryParams {
        metric: Some(metric.into()),
        stat: Some(stat.into()),
        from: Some("-24h".into()),
        step: Some("1h".into()),
        agg: agg.map(String::from),
        ..QueryParams::default()
    };
    let mut group = c.benchmark_group("history_query");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("one_counter_7d_at_5m", |b| {
        b.iter(|| run(one("rate", "bench.counter.0")))
    });
    group.bench_function("one_timer_p95_7d_at_5m", |b| {
        b.iter(|| run(one("upper_95", "bench.timer.0")))
    });
    group.bench_function("all_10000_series_count_sum_24h_at_1h", |b| {
        b.iter(|| run(all("count", "bench.*", Some("sum"))))
    });
    group.bench_function("all_5000_timers_merged_p95_24h_at_1h", |b| {
        b.iter(|| run(all("upper_95", "bench.timer.*", None)))
    });
    group.finish();
}

criterion_group!(benches, query_benches);

fn main() {
    upkeep_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
