//! The agent's own counters: atomics that receive threads and shards add to in bulk, and the
//! flusher reads (and resets) into the record's `internal` once per flush.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::protocol::ParseError;

const REASONS: usize = ParseError::ALL.len();

/// Shared counters. Interval counters reset at each flush; `series` is a live gauge.
#[derive(Debug, Default)]
pub struct Telemetry {
    packets_received: AtomicU64,
    lines_received: AtomicU64,
    bad_lines: [AtomicU64; REASONS],
    dropped_lines: AtomicU64,
    dropped_series: AtomicU64,
    dropped_events: AtomicU64,
    estimated_sets: AtomicU64,
    dropped_records: AtomicU64,
    backend_errors: AtomicU64,
    notifier_errors: AtomicU64,
    config_reloads: AtomicU64,
    config_reload_failures: AtomicU64,
    stream_clients_dropped: AtomicU64,
    history_errors: AtomicU64,
    /// Live series across all shards; shards use it to enforce `max_series`.
    series: AtomicU64,
    /// Series the receive threads' local tables took in this interval, not yet in a shard:
    /// with `series` they stay under `max_series`.
    local_series: AtomicU64,
    /// Lines received since start, never reset: lets tests and tools wait for delivery.
    lines_total: AtomicU64,
    /// Records dropped since start, never reset: lets tests wait for a backend's drops.
    dropped_records_total: AtomicU64,
}

/// Counts kept by one receive thread between two hand-overs to [`Telemetry`].
#[derive(Debug, Default, Clone)]
pub struct LocalCounts {
    pub packets: u64,
    pub lines: u64,
    pub bad: [u64; REASONS],
    pub dropped_lines: u64,
}

impl LocalCounts {
    /// Counts one rejected line.
    pub fn bad_line(&mut self, reason: ParseError) {
        self.bad[reason.index()] += 1;
    }
}

/// The `internal` figures of one flush record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Internal {
    pub packets_received: u64,
    pub lines_received: u64,
    /// Every reason, zero or not, in a stable order.
    #[serde(serialize_with = "serialize_bad_lines")]
    pub bad_lines: [u64; REASONS],
    pub dropped_lines: u64,
    /// Datagrams the kernel dropped at a UDP socket before they could be read (a full
    /// receive buffer, mostly); the flusher reads them from the sockets.
    pub dropped_datagrams: u64,
    pub dropped_series: u64,
    /// Events and service checks beyond the per-interval limit.
    pub dropped_events: u64,
    /// Set series whose count is an estimate this interval: they had more distinct members
    /// than `exact_set_members`.
    pub estimated_sets: u64,
    /// Records a backend's full queue made it skip, or made the http backend drop.
    pub dropped_records: u64,
    pub backend_errors: u64,
    /// Alert events a webhook could not queue or deliver.
    pub notifier_errors: u64,
    /// Configuration reloads (SIGHUP, `POST /-/reload`) that took effect.
    pub config_reloads: u64,
    /// Reloads refused because the file was invalid.
    pub config_reload_failures: u64,
    /// `/api/v1/stream` clients disconnected because they fell behind.
    pub stream_clients_dropped: u64,
    /// History store writes that failed (a full disk, an unwritable store); the flush and
    /// the other backends go on.
    pub history_errors: u64,
    pub series: u64,
    pub flush_duration_ms: f64,
    /// The agent's resident memory (from `/proc/self/statm`), 0 where unreadable.
    pub rss_bytes: u64,
    /// CPU time (user + system) the agent has used since it started.
    pub cpu_seconds: f64,
    /// Seconds since the agent started.
    pub uptime_s: f64,
}

fn serialize_bad_lines<S: serde::Serializer>(
    counts: &[u64; REASONS],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(REASONS))?;
    for reason in ParseError::ALL {
        map.serialize_entry(reason.reason(), &counts[reason.index()])?;
    }
    map.end()
}

impl Internal {
    /// Rejected lines of every reason.
    pub fn bad_lines_total(&self) -> u64 {
        self.bad_lines.iter().sum()
    }
}

impl Telemetry {
    /// Adds a receive thread's counts and zeroes them.
    pub fn add(&self, local: &mut LocalCounts) {
        add_nonzero(&self.packets_received, local.packets);
        add_nonzero(&self.lines_received, local.lines);
        add_nonzero(&self.lines_total, local.lines);
        add_nonzero(&self.dropped_lines, local.dropped_lines);
        for (counter, &n) in self.bad_lines.iter().zip(&local.bad) {
            add_nonzero(counter, n);
        }
        *local = LocalCounts::default();
    }

    /// Tries to admit one new series under `max`; false (and counted) when full.
    pub fn admit_series(&self, max: u64) -> bool {
        let admitted = self
            .series
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok();
        if !admitted {
            self.refuse_series();
        }
        admitted
    }

    /// Counts a sample of a new series that was not admitted.
    pub fn refuse_series(&self) {
        self.refuse_samples(1);
    }

    /// Counts `n` samples of a new series that was not admitted.
    pub fn refuse_samples(&self, n: u64) {
        self.dropped_series.fetch_add(n, Relaxed);
    }

    /// Reserves room for one series new to a receive thread's local table: true while the
    /// shards' series and the local tables' new ones together stay under `max`.
    pub fn reserve_local_series(&self, max: u64) -> bool {
        let series = self.series();
        self.local_series
            .fetch_update(Relaxed, Relaxed, |n| (series + n < max).then_some(n + 1))
            .is_ok()
    }

    /// The local tables were moved into the shards: their reservations are spent.
    pub fn clear_local_series(&self) {
        self.local_series.store(0, Relaxed);
    }

    /// The live series right now, over all shards.
    pub fn series(&self) -> u64 {
        self.series.load(Relaxed)
    }

    /// Forgets `n` expired series.
    pub fn release_series(&self, n: u64) {
        self.series.fetch_sub(n, Relaxed);
    }

    /// Counts events dropped beyond the per-interval limit.
    pub fn dropped_events(&self, n: u64) {
        self.dropped_events.fetch_add(n, Relaxed);
    }

    /// Counts set series whose count was estimated this interval.
    pub fn estimated_sets(&self, n: u64) {
        self.estimated_sets.fetch_add(n, Relaxed);
    }

    /// Counts a record a backend could not queue, or dropped from its own queue.
    pub fn dropped_record(&self) {
        self.dropped_records.fetch_add(1, Relaxed);
        self.dropped_records_total.fetch_add(1, Relaxed);
    }

    /// Counts an alert event a notifier could not queue or deliver.
    pub fn notifier_error(&self) {
        self.notifier_errors.fetch_add(1, Relaxed);
    }

    /// Counts a configuration reload, done or refused.
    pub fn config_reload(&self, ok: bool) {
        let counter = if ok {
            &self.config_reloads
        } else {
            &self.config_reload_failures
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a stream client disconnected for falling behind.
    pub fn stream_client_dropped(&self) {
        self.stream_clients_dropped.fetch_add(1, Relaxed);
    }

    /// Counts a failed history store write.
    pub fn history_error(&self) {
        self.history_errors.fetch_add(1, Relaxed);
    }

    /// Counts a backend failure.
    pub fn backend_error(&self) {
        self.backend_errors.fetch_add(1, Relaxed);
    }

    /// Lines received since start.
    pub fn lines_total(&self) -> u64 {
        self.lines_total.load(Relaxed)
    }

    /// Records dropped since start, by any backend.
    pub fn dropped_records_total(&self) -> u64 {
        self.dropped_records_total.load(Relaxed)
    }

    /// Reads the interval's counters and resets them.
    pub fn take_interval(&self) -> Internal {
        let mut bad_lines = [0; REASONS];
        for (out, counter) in bad_lines.iter_mut().zip(&self.bad_lines) {
            *out = counter.swap(0, Relaxed);
        }
        Internal {
            packets_received: self.packets_received.swap(0, Relaxed),
            lines_received: self.lines_received.swap(0, Relaxed),
            bad_lines,
            dropped_lines: self.dropped_lines.swap(0, Relaxed),
            dropped_datagrams: 0,
            dropped_series: self.dropped_series.swap(0, Relaxed),
            dropped_events: self.dropped_events.swap(0, Relaxed),
            estimated_sets: self.estimated_sets.swap(0, Relaxed),
            dropped_records: self.dropped_records.swap(0, Relaxed),
            backend_errors: self.backend_errors.swap(0, Relaxed),
            notifier_errors: self.notifier_errors.swap(0, Relaxed),
            config_reloads: self.config_reloads.swap(0, Relaxed),
            config_reload_failures: self.config_reload_failures.swap(0, Relaxed),
            stream_clients_dropped: self.stream_clients_dropped.swap(0, Relaxed),
            history_errors: self.history_errors.swap(0, Relaxed),
            series: self.series.load(Relaxed),
            flush_duration_ms: 0.0,
            rss_bytes: 0,
            cpu_seconds: 0.0,
            uptime_s: 0.0,
        }
    }
}

fn add_nonzero(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_counters_reset_but_series_stays() {
        let t = Telemetry::default();
        let mut local = LocalCounts {
            packets: 2,
            lines: 5,
            ..Default::default()
        };
        local.bad_line(ParseError::InvalidValue);
        t.add(&mut local);
        assert_eq!(local.lines, 0, "local counts are zeroed on hand-over");
        assert!(t.admit_series(10));
        let first = t.take_interval();
        assert_eq!(first.packets_received, 2);
        assert_eq!(first.lines_received, 5);
        assert_eq!(first.bad_lines[ParseError::InvalidValue.index()], 1);
        assert_eq!(first.series, 1);
        let second = t.take_interval();
        assert_eq!(second.lines_received, 0);
        assert_eq!(second.series, 1);
        assert_eq!(t.lines_total(), 5);
    }

    #[test]
    fn series_beyond_max_are_refused_and_counted() {
        let t = Telemetry::default();
        assert!(t.admit_series(1));
        assert!(!t.admit_series(1));
        t.release_series(1);
        assert!(t.admit_series(1));
        assert_eq!(t.take_interval().dropped_series, 1);
    }

    #[test]
    fn bad_lines_serialize_by_reason_name() {
        let mut internal = Internal::default();
        internal.bad_lines[ParseError::TooLong.index()] = 3;
        let json = serde_json::to_value(&internal).expect("serializes");
        assert_eq!(json["bad_lines"]["too_long"], 3);
        assert_eq!(json["bad_lines"]["malformed"], 0);
    }
}
