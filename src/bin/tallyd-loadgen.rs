//! `tallyd-loadgen`: a StatsD load generator for benchmarking tallyd (and its peers) over
//! loopback. Builds its datagrams once, then sends them with `sendmmsg` batches from one or
//! more sockets, flat out or paced to a line rate, for a bounded time. Prints, as one JSON
//! line, exactly what it sent, so delivery can be checked against the agent's records.
//!
//! Only loopback targets are accepted: this tool is for measuring on one machine.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Counter,
    Timer,
    Gauge,
    Set,
    Histogram,
}

/// Sends StatsD lines to a loopback address and reports what it sent.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to send (a loopback address).
    #[arg(long, default_value = "127.0.0.1:8125")]
    target: SocketAddr,
    /// The metric kind of every line.
    #[arg(long, value_enum, default_value = "counter")]
    kind: Kind,
    /// Distinct series (names `<prefix>.<kind>.<i>`).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// The first part of every name (longer names, longer keys).
    #[arg(long, default_value = "loadgen")]
    prefix: String,
    /// Lines per datagram.
    #[arg(long, default_value_t = 40)]
    lines_per_datagram: usize,
    /// Offered lines per second across all threads; 0 sends flat out. A paced thread that
    /// falls more than 2 ms behind (descheduled) skips the backlog rather than burst it.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to send, in seconds (at most 600).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Sending threads, each with its own socket (source port).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Datagrams per sendmmsg call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Stop after this many lines in all (0: only the duration bounds the run).
    #[arg(long, default_value_t = 0)]
    max_lines: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        eprintln!(
            "tallyd-loadgen: {} is not a loopback address; refusing",
            args.target
        );
        return std::process::ExitCode::from(2);
    }
    if args.series == 0 || args.lines_per_datagram == 0 || args.threads == 0 || args.batch == 0 {
        eprintln!(
            "tallyd-loadgen: --series, --lines-per-datagram, --threads and --batch must be at least 1"
        );
        return std::process::ExitCode::from(2);
    }
    let duration = Duration::from_secs_f64(args.duration.clamp(0.0, 600.0));
    let datagrams = build_datagrams(&args);
    let started = Instant::now();
    let per_thread_rate = args.rate / args.threads as u64;
    let per_thread_max = args.max_lines.div_ceil(args.threads as u64);
    let results: Vec<Sent> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.threads)
            .map(|t| {
                let datagrams = &datagrams;
                let args = &args;
                scope.spawn(move || {
                    send(
                        args,
                        datagrams,
                        t,
                        per_thread_rate,
                        per_thread_max,
                        duration,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let datagrams_sent: u64 = results.iter().map(|r| r.datagrams).sum();
    let lines_sent: u64 = results.iter().map(|r| r.lines).sum();
    let stalls: u64 = results.iter().map(|r| r.stalls).sum();
    println!(
        "{{\"target\":\"{}\",\"kind\":\"{:?}\",\"series\":{},\"lines_per_datagram\":{},\"offered_rate\":{},\"datagrams_sent\":{},\"lines_sent\":{},\"elapsed_s\":{:.3},\"lines_per_s\":{:.0},\"stalls\":{}}}",
        args.target,
        args.kind,
        args.series,
        args.lines_per_datagram,
        args.rate,
        datagrams_sent,
        lines_sent,
        elapsed,
        lines_sent as f64 / elapsed.max(1e-9),
        stalls,
    );
    std::process::ExitCode::SUCCESS
}

/// Every series appears once per cycle of datagrams; values are small integers.
fn build_datagrams(args: &Args) -> Vec<Vec<u8>> {
    let (kind, suffix) = match args.kind {
        Kind::Counter => ("counter", "c"),
        Kind::Timer => ("timer", "ms"),
        Kind::Gauge => ("gauge", "g"),
        Kind::Set => ("set", "s"),
        Kind::Histogram => ("histogram", "h"),
    };
    let cycle = args.series.div_ceil(args.lines_per_datagram) * args.lines_per_datagram;
    let mut datagrams = Vec::new();
    let mut current = Vec::new();
    for i in 0..cycle.max(args.lines_per_datagram) {
        let series = i % args.series;
        let value = match args.kind {
            Kind::Counter => 1,
            _ => i % 1000,
        };
        current.extend_from_slice(
            format!("{}.{kind}.{series}:{value}|{suffix}\n", args.prefix).as_bytes(),
        );
        if (i + 1) % args.lines_per_datagram == 0 {
            datagrams.push(std::mem::take(&mut current));
        }
    }
    datagrams
}

/// How far behind its schedule a paced thread may fall and still catch up, in
/// milliseconds of its rate; beyond, the schedule moves on (counted as a stall).
const CATCH_UP_MS: u64 = 2;

/// What one sending thread sent.
#[derive(Debug, Default)]
struct Sent {
    datagrams: u64,
    lines: u64,
    /// Times the thread fell more than [`CATCH_UP_MS`] behind a paced schedule.
    stalls: u64,
}

/// One sending thread.
fn send(
    args: &Args,
    datagrams: &[Vec<u8>],
    thread: usize,
    rate: u64,
    max_lines: u64,
    duration: Duration,
) -> Sent {
    let bind = if args.target.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let Ok(socket) = UdpSocket::bind(bind) else {
        eprintln!("tallyd-loadgen: cannot bind a socket");
        return Sent::default();
    };
    if socket.connect(args.target).is_err() {
        eprintln!("tallyd-loadgen: cannot connect to {}", args.target);
        return Sent::default();
    }
    let lines_each = args.lines_per_datagram as u64;
    let started = Instant::now();
    let mut next = thread * datagrams.len() / args.threads.max(1);
    let (mut sent_datagrams, mut sent_lines) = (0u64, 0u64);
    let mut forgiven = Duration::ZERO;
    let mut stalls = 0u64;
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(args.batch);
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(args.batch);
    loop {
        let elapsed = started.elapsed();
        if elapsed >= duration || (max_lines > 0 && sent_lines >= max_lines) {
            break;
        }
        let mut want = args.batch as u64;
        if rate > 0 {
            let allowed = (rate as f64 * (elapsed - forgiven).as_secs_f64()) as u64;
            let behind = allowed.saturating_sub(sent_lines);
            if behind > rate / 1000 * CATCH_UP_MS {
                // This thread stalled (descheduled, say). Sending the whole backlog flat out
                // would be a burst no paced sender makes; the schedule moves on instead, and
                // the report shows the rate really offered.
                let excess = behind - rate / 1000 * CATCH_UP_MS;
                forgiven += Duration::from_secs_f64(excess as f64 / rate as f64);
                stalls += 1;
            }
            let allowed = (rate as f64 * (elapsed - forgiven).as_secs_f64()) as u64;
            let owed = allowed.saturating_sub(sent_lines) / lines_each;
            if owed == 0 {
                // Ahead of schedule: wait for the next datagram's turn.
                let wait = lines_each as f64 / rate as f64;
                std::thread::sleep(Duration::from_secs_f64(wait.min(0.001)));
                continue;
            }
            want = want.min(owed);
        }
        if max_lines > 0 {
            want = want.min((max_lines - sent_lines).div_ceil(lines_each));
        }
        iovecs.clear();
        headers.clear();
        for i in 0..want as usize {
            let datagram = &datagrams[(next + i) % datagrams.len()];
            iovecs.push(libc::iovec {
                iov_base: datagram.as_ptr() as *mut libc::c_void,
                iov_len: datagram.len(),
            });
        }
        for iov in &mut iovecs {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            headers.push(header);
        }
        // SAFETY: every header points at one iovec of a datagram that outlives the call; the
        // socket is connected, so no address is needed.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                0,
            )
        };
        if n > 0 {
            next = (next + n as usize) % datagrams.len();
            sent_datagrams += n as u64;
            sent_lines += n as u64 * lines_each;
        } else {
            // ECONNREFUSED (nobody listening yet) or a full buffer: back off briefly.
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Sent {
        datagrams: sent_datagrams,
        lines: sent_lines,
        stalls,
    }
}
