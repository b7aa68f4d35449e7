//! Heap allocations per line on the hot receive path, in steady state: a [`Router`] parsing
//! and batching packed datagrams (40 lines each, built like `tallyd-loadgen`'s) and handing
//! them to a single direct shard (`shards = 1`, no shard thread), which folds them in — all on
//! the test's thread, as a one-core agent's UDP thread does it.
//!
//! A counting `#[global_allocator]` counts `alloc`/`realloc` calls per thread, so tests
//! running side by side do not see each other's allocations. Each case warms up first (every
//! series sent once, the router flushed many times) so that the shard's series map and the
//! router's reused buffers have reached their size; then it counts over 1000 datagrams.
//!
//! The figures are printed (`cargo test --test alloc -- --nocapture`) for two receive-cycle
//! sizes: one datagram per cycle (a lightly loaded agent: `recvmmsg` returns one datagram,
//! the router flushes after it) and 32 (a loaded agent). Parsing, key encoding, tags,
//! sample rates and the shard's fold allocate nothing for counters, gauges and sets with
//! known members: a direct shard folds the router's batch in place and leaves its buffers
//! for the next cycle. Timers grow each series' exact-sample vector within an interval (the
//! snapshot takes it away), by design.
//!
//! A router with a local table (several receive threads) is measured too: counters and
//! timers go to it, gauges and sets to the shard's batch.
//!
//! Set `TALLYD_ALLOC_TRACE=N` to print a backtrace for each of the first N allocations
//! counted in each measurement (two per case), e.g. with `--exact <test> --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::Arc;

use tallyd::aggregate::{KeyEncoder, LocalHandle, LocalTable, new_shards};
use tallyd::config::Config;
use tallyd::server::Router;
use tallyd::telemetry::Telemetry;

/// Counts allocation calls of the current thread, then defers to the system allocator.
struct Counting;

thread_local! {
    /// `alloc`, `alloc_zeroed` and `realloc` calls made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Backtraces still to print (see `TALLYD_ALLOC_TRACE`).
    static TRACES_LEFT: Cell<u32> = const { Cell::new(0) };
    /// Set while a backtrace is captured, whose own allocations must not be traced.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// SAFETY: every method defers to `System` with the caller's arguments unchanged; counting
// only touches const-initialized thread-locals without destructors, through `try_with`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counts one allocation call; prints its backtrace while traces are asked for.
fn note(size: usize) {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    let trace = TRACES_LEFT.try_with(|left| {
        let go = left.get() > 0 && TRACING.try_with(|t| !t.replace(true)).unwrap_or(false);
        if go {
            left.set(left.get() - 1);
        }
        go
    });
    if trace == Ok(true) {
        // Capturing and printing allocate; `TRACING` keeps those from being traced in turn.
        // Written to stderr directly, past the test harness's capture, errors ignored.
        let backtrace = std::backtrace::Backtrace::force_capture();
        let _ = writeln!(
            std::io::stderr(),
            "allocation of {size} bytes:\n{backtrace}"
        );
        let _ = TRACING.try_with(|t| t.set(false));
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

const LINES_PER_DATAGRAM: usize = 40;
const MEASURED_DATAGRAMS: usize = 1000;
/// The default `udp_batch`: datagrams per `recvmmsg`, so per router flush, under load.
const LOADED_CYCLE: usize = 32;

/// One workload: `series` distinct names, each line rendered by `line(series, value)`.
struct Case {
    name: &'static str,
    series: usize,
    line: fn(usize, usize) -> String,
}

/// The datagrams of one cycle over every series, as `tallyd-loadgen` builds them: packed,
/// `LINES_PER_DATAGRAM` lines each, every series once per cycle, values `i % 1000`.
fn datagrams(case: &Case) -> Vec<Vec<u8>> {
    let cycle = case.series.div_ceil(LINES_PER_DATAGRAM) * LINES_PER_DATAGRAM;
    let mut datagrams = Vec::new();
    let mut current = Vec::new();
    for i in 0..cycle {
        current.extend_from_slice((case.line)(i % case.series, i % 1000).as_bytes());
        current.push(b'\n');
        if (i + 1) % LINES_PER_DATAGRAM == 0 {
            datagrams.push(std::mem::take(&mut current));
        }
    }
    datagrams
}

/// Allocation calls per line over `MEASURED_DATAGRAMS` datagrams into `shards` shards (one:
/// lines folded straight in; more: batched per shard), or with `local` into the router's
/// local table (counters and timers; the rest batched), the router flushed (one receive
/// cycle ended) every `per_cycle` datagrams.
fn allocations_per_line(case: &Case, per_cycle: usize, shards: usize, local: bool) -> f64 {
    let mut config = Config::default().aggregation;
    config.shards = shards;
    let config = Arc::new(config);
    let telemetry = Arc::new(Telemetry::default());
    let handles = new_shards(&config, &telemetry);
    let encoder = KeyEncoder::new(config.global_tags.clone().into());
    let mut router = Router::new(encoder, handles.clone(), telemetry.clone());
    let local = local.then(|| LocalHandle::new(LocalTable::new(&config, telemetry.clone())));
    if let Some(local) = &local {
        router = router.with_local(local.clone());
    }
    let datagrams = datagrams(case);

    // The measured run: the datagrams in turn, a receive cycle ending every `per_cycle`.
    let run = |router: &mut Router| {
        for (i, datagram) in datagrams
            .iter()
            .cycle()
            .take(MEASURED_DATAGRAMS)
            .enumerate()
        {
            router.handle_packet(datagram);
            if (i + 1) % per_cycle == 0 {
                router.flush();
            }
        }
        router.flush();
    };
    // Warm-up: every series once (the shard creates them all), then the measured run itself,
    // so that every reused buffer (a shard's batch among them: which series go to which
    // shard depends on the hash seed of the run) has met its largest line, datagram and
    // receive cycle.
    for datagram in &datagrams {
        router.handle_packet(datagram);
        router.flush();
    }
    run(&mut router);
    telemetry.take_interval();

    let traces = std::env::var("TALLYD_ALLOC_TRACE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let _ = TRACES_LEFT.try_with(|left| left.set(traces));
    let before = allocations();
    run(&mut router);
    let counted = allocations() - before;
    let _ = TRACES_LEFT.try_with(|left| left.set(0));

    // What was measured is the path taken by good lines, and all of them arrived.
    let lines = (MEASURED_DATAGRAMS * LINES_PER_DATAGRAM) as u64;
    let internal = telemetry.take_interval();
    assert_eq!(internal.lines_received, lines, "{}", case.name);
    assert_eq!(internal.bad_lines_total(), 0, "{}", case.name);
    assert_eq!(internal.dropped_lines, 0, "{}", case.name);
    if let Some(local) = &local {
        // As the flusher does: the local table's shares into the shards.
        let mut shards: Vec<_> = handles.iter().map(|h| h.lock()).collect();
        local.lock().drain(&mut shards);
    }
    let series: usize = handles.iter().map(|h| h.snapshot().metrics.len()).sum();
    assert_eq!(series, case.series, "{}", case.name);

    counted as f64 / lines as f64
}

/// Allocation calls per line at both receive-cycle sizes.
struct Figures {
    /// One datagram per receive cycle, one shard.
    light: f64,
    /// `LOADED_CYCLE` datagrams per receive cycle, one shard.
    loaded: f64,
    /// `LOADED_CYCLE` datagrams per receive cycle, two shards (samples batched per shard).
    batched: f64,
    /// `LOADED_CYCLE` datagrams per receive cycle into a local table and one shard.
    local: f64,
}

/// Measures both cycle sizes and prints the figures.
fn measure(case: &Case) -> Figures {
    let figures = Figures {
        light: allocations_per_line(case, 1, 1, false),
        loaded: allocations_per_line(case, LOADED_CYCLE, 1, false),
        batched: allocations_per_line(case, LOADED_CYCLE, 2, false),
        local: allocations_per_line(case, LOADED_CYCLE, 1, true),
    };
    eprintln!(
        "{:<20} {:>6} series: {:.4} allocations/line at 1 datagram per receive cycle, \
         {:.4} at {LOADED_CYCLE}, {:.4} at {LOADED_CYCLE} into two shards, {:.4} with a local \
         table",
        case.name, case.series, figures.light, figures.loaded, figures.batched, figures.local
    );
    figures
}

/// Asserts that lines allocate nothing at all once the agent is warm.
fn assert_no_allocation(case: &Case) {
    let figures = measure(case);
    assert!(
        figures.light == 0.0
            && figures.loaded == 0.0
            && figures.batched == 0.0
            && figures.local == 0.0,
        "{}: {}, {}, {} and {} allocations per line",
        case.name,
        figures.light,
        figures.loaded,
        figures.batched,
        figures.local
    );
}

#[test]
fn counters_allocate_nothing_per_line() {
    assert_no_allocation(&Case {
        name: "counters",
        series: 10_000,
        line: |series, _| format!("loadgen.counter.{series}:1|c"),
    });
}

#[test]
fn counters_with_a_sample_rate_allocate_nothing_per_line() {
    assert_no_allocation(&Case {
        name: "counters @0.5",
        series: 10_000,
        line: |series, _| format!("loadgen.counter.{series}:1|c|@0.5"),
    });
}

#[test]
fn gauges_allocate_nothing_per_line() {
    assert_no_allocation(&Case {
        name: "gauges",
        series: 10_000,
        line: |series, value| format!("loadgen.gauge.{series}:{value}|g"),
    });
}

#[test]
fn tagged_counters_allocate_nothing_per_line() {
    assert_no_allocation(&Case {
        name: "counters |#a:b,c:d",
        series: 10_000,
        line: |series, _| format!("loadgen.counter.{series}:1|c|#a:b,c:d"),
    });
}

#[test]
fn sets_with_known_members_allocate_nothing_per_line() {
    // Each series sees the same member every cycle (as from the load generator), so the
    // member sets stop growing after the warm-up; new members would grow them.
    assert_no_allocation(&Case {
        name: "sets",
        series: 10_000,
        line: |series, value| format!("loadgen.set.{series}:{value}|s"),
    });
}

#[test]
fn timers_also_grow_their_exact_sample_vectors_within_an_interval() {
    // Each series' sample vector grows through the interval (room for 4, 8, 16, ... values)
    // and the snapshot takes it, so every interval grows it again from empty. Here each
    // series goes from 5 samples (warm-up) to 9, one growth (past 8) per series: 10 000 over
    // 40 000 lines: 0.25 a line, and nothing else.
    let figures = measure(&Case {
        name: "timers",
        series: 10_000,
        line: |series, value| format!("loadgen.timer.{series}:{value}|ms"),
    });
    assert!(
        figures.light <= 0.25
            && figures.loaded <= 0.25
            && figures.batched <= 0.25
            && figures.local <= 0.25,
        "timers: {}, {}, {} and {} allocations per line",
        figures.light,
        figures.loaded,
        figures.batched,
        figures.local
    );
}
