//! The one sender every push output shares (SPEC §5 `http`, §7): a bounded queue of encoded
//! payloads, one thread that delivers them in order through the output's [`Transport`],
//! retries with capped exponential backoff and jitter (honouring a receiver's `Retry-After`),
//! and at shutdown sends what is queued until the flusher's deadline, reporting what is left.
//!
//! An output is its config, its encoder and its transport: `write` encodes a record into
//! payloads and hands them to [`Outbox::push`], which never blocks on the network. When the
//! queue is full (`max_pending` payloads or `max_pending_bytes`), the oldest is dropped and
//! counted in `internal.dropped_records`; a payload the receiver rejects for good (a 4xx
//! that retrying cannot fix) is dropped, counted and logged with the receiver's answer.

pub mod http;
mod queue;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Deserialize;

pub use self::queue::{PendingQueue, backoff_delay};
use super::BackendError;
use crate::telemetry::Telemetry;

/// Numbers the sender threads: `tallyd-send-0`, `tallyd-send-1`, …
static SENDERS: AtomicUsize = AtomicUsize::new(0);

/// How an output reaches its receiver.
pub trait Transport: Send + 'static {
    /// The receiver as logs show it (no credentials).
    fn describe(&self) -> String;

    /// Delivers one payload, taking at most `timeout`.
    ///
    /// # Errors
    /// [`Failure::Retry`] to try the payload again later; [`Failure::Reject`] to drop it.
    fn deliver(&mut self, payload: &[u8], timeout: Duration) -> Result<(), Failure>;
}

/// Why a delivery failed, and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Try again after the backoff, or after `after` when the receiver asked for longer.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The receiver refused the payload for good: drop it (counted and logged).
    Reject { error: String },
}

/// The queue and retry settings every push output has, under the same keys.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// For one whole delivery (connection to answer).
    pub timeout: Duration,
    /// Payloads waiting at most; beyond, the oldest is dropped. At least 1.
    pub max_pending: usize,
    /// Bytes of payloads waiting at most; beyond, the oldest are dropped, except that the
    /// newest is kept even alone over the budget. At least 1.
    pub max_pending_bytes: u64,
    /// The first retry delay, doubled per failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// The queue keys as a config file spells them, beside each push output's own keys in its
/// `[[backends]]` entry (`serde(flatten)` does not mix with `deny_unknown_fields`, so
/// [`super::config::take_queue`] picks them out of the entry's table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueueConfig {
    pub timeout_ms: u64,
    pub max_pending: usize,
    pub max_pending_bytes: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for RawQueueConfig {
    fn default() -> RawQueueConfig {
        RawQueueConfig {
            timeout_ms: 5_000,
            max_pending: 1_000,
            // 256 MiB: three million-series records as plain JSON (about 80 MB each), many
            // more gzipped or in any of the metric formats.
            max_pending_bytes: 256 * 1024 * 1024,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

/// The queue keys, for outputs that pick them out of their table.
pub const QUEUE_KEYS: [&str; 5] = [
    "timeout_ms",
    "max_pending",
    "max_pending_bytes",
    "retry_initial_ms",
    "retry_max_ms",
];

impl RawQueueConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// The key at fault and what is wrong.
    pub fn validate(&self) -> Result<QueueConfig, (&'static str, String)> {
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("max_pending", self.max_pending as u64),
            ("max_pending_bytes", self.max_pending_bytes),
            ("retry_initial_ms", self.retry_initial_ms),
        ] {
            if value == 0 {
                return Err((key, format!("{key} must be at least 1")));
            }
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err((
                "retry_max_ms",
                "retry_max_ms must be at least retry_initial_ms".into(),
            ));
        }
        Ok(QueueConfig {
            timeout: Duration::from_millis(self.timeout_ms),
            max_pending: self.max_pending,
            max_pending_bytes: self.max_pending_bytes,
            retry_initial: Duration::from_millis(self.retry_initial_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
        })
    }
}

/// An output's queue and its sender thread.
pub struct Outbox {
    name: &'static str,
    shared: Arc<Shared>,
    telemetry: Arc<Telemetry>,
    receiver: String,
    max_pending_bytes: u64,
    /// A payload larger than `max_pending_bytes` was logged (once is enough).
    oversize_logged: bool,
    shutdown_timeout: Duration,
    thread: Option<JoinHandle<()>>,
    /// Disconnects when the sender thread ends.
    done_rx: Receiver<()>,
}

/// What the outbox and its sender share.
struct Shared {
    state: Mutex<State>,
    /// Signalled on a new payload, on close and on abandon.
    wake: Condvar,
}

struct State {
    queue: PendingQueue<Vec<u8>>,
    /// The sender holds a payload out of the queue for an attempt.
    on_the_wire: bool,
    /// Set by `close`: send what is queued until then, then stop.
    deadline: Option<Instant>,
    /// Stop now: `close` has reported what is left, or the outbox was dropped.
    abandoned: bool,
    /// Payloads dropped since start, for the log.
    dropped: u64,
}

impl Outbox {
    /// Starts the sender thread of output `name`, delivering through `transport`.
    /// `shutdown_timeout` sizes the reserve `close` keeps before the shutdown deadline.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        name: &'static str,
        transport: impl Transport,
        config: &QueueConfig,
        telemetry: Arc<Telemetry>,
        shutdown_timeout: Duration,
    ) -> Result<Outbox, BackendError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: PendingQueue::new(config.max_pending, config.max_pending_bytes),
                on_the_wire: false,
                deadline: None,
                abandoned: false,
                dropped: 0,
            }),
            wake: Condvar::new(),
        });
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let receiver = transport.describe();
        let sender = Sender {
            name,
            shared: shared.clone(),
            transport,
            config: config.clone(),
            receiver: receiver.clone(),
            telemetry: telemetry.clone(),
        };
        let thread_name = format!("tallyd-send-{}", SENDERS.fetch_add(1, Ordering::Relaxed));
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let _done_tx = done_tx;
                sender.run();
            })
            .map_err(|source| BackendError::Io {
                backend: name,
                source,
            })?;
        Ok(Outbox {
            name,
            shared,
            telemetry,
            receiver,
            max_pending_bytes: config.max_pending_bytes,
            oversize_logged: false,
            shutdown_timeout,
            thread: Some(thread),
            done_rx,
        })
    }

    /// Queues one payload behind the others; drops (and counts) the oldest when full.
    pub fn push(&mut self, payload: Vec<u8>) {
        let size = payload.len() as u64;
        if size > self.max_pending_bytes && !self.oversize_logged {
            self.oversize_logged = true;
            tracing::warn!(
                backend = self.name,
                receiver = %self.receiver,
                payload_bytes = size,
                max_pending_bytes = self.max_pending_bytes,
                "payload over max_pending_bytes: sent, but waits alone (older ones dropped)"
            );
        }
        let mut state = self.shared.lock();
        for _ in state.queue.push(payload) {
            count_drop(&mut state, &self.telemetry, self.name, &self.receiver);
        }
        drop(state);
        self.shared.wake.notify_all();
    }

    /// Payloads waiting (the one on the wire included).
    pub fn pending(&self) -> usize {
        let state = self.shared.lock();
        state.queue.len() + usize::from(state.on_the_wire)
    }

    /// Sends what is queued until the flusher's `deadline` (less a small reserve), then
    /// reports what is left.
    ///
    /// # Errors
    /// [`BackendError::Unsent`] with the count of payloads left.
    pub fn close(&mut self, deadline: Instant) -> Result<(), BackendError> {
        let deadline = sending_deadline(deadline, self.shutdown_timeout);
        self.shared.lock().deadline = Some(deadline);
        self.shared.wake.notify_all();
        let finished = matches!(
            self.done_rx.recv_deadline(deadline),
            Err(RecvTimeoutError::Disconnected)
        );
        let unsent = self.shared.abandon();
        if finished && let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        match unsent {
            0 => Ok(()),
            unsent => Err(BackendError::Unsent {
                backend: self.name,
                unsent,
            }),
        }
    }
}

impl Drop for Outbox {
    /// An outbox dropped without `close` (the agent was not shut down) stops its sender.
    fn drop(&mut self) {
        self.shared.abandon();
    }
}

/// Until when `close` sends: the flusher's shutdown `deadline` less a small reserve (a
/// twentieth of the shutdown timeout, at most 0.2 s), so the report of what is left is
/// logged before the flusher stops waiting for this backend.
fn sending_deadline(deadline: Instant, shutdown_timeout: Duration) -> Instant {
    let reserve = (shutdown_timeout / 20).min(Duration::from_millis(200));
    deadline.checked_sub(reserve).unwrap_or(deadline)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the sender to stop; returns the payloads it leaves unsent.
    fn abandon(&self) -> usize {
        let mut state = self.lock();
        state.abandoned = true;
        let unsent = state.queue.len() + usize::from(state.on_the_wire);
        drop(state);
        self.wake.notify_all();
        unsent
    }

    /// Waits for the oldest payload and takes it out for an attempt, with the shutdown
    /// deadline if closing. None when the sender should stop.
    fn next(&self) -> Option<(Vec<u8>, Option<Instant>)> {
        let mut state = self.lock();
        loop {
            if state.abandoned || state.deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            if let Some(body) = state.queue.take() {
                state.on_the_wire = true;
                return Some((body, state.deadline));
            }
            if state.deadline.is_some() {
                return None;
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits `delay` before the next attempt; cut short when closing begins (the final
    /// attempts should not sit out a long backoff) and at the shutdown deadline.
    fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut state = self.lock();
        let was_closing = state.deadline.is_some();
        loop {
            if state.abandoned || state.deadline.is_some() != was_closing {
                return;
            }
            let end = state.deadline.map_or(until, |deadline| deadline.min(until));
            let Some(left) = end
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return;
            };
            state = self
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Counts and logs a payload dropped because the queue was full (by count or by bytes).
fn count_drop(state: &mut State, telemetry: &Telemetry, name: &str, receiver: &str) {
    state.dropped += 1;
    telemetry.dropped_record();
    tracing::warn!(
        backend = name,
        receiver,
        dropped_since_start = state.dropped,
        pending = state.queue.len(),
        pending_bytes = state.queue.bytes(),
        "queue full (max_pending or max_pending_bytes): dropped the oldest payload"
    );
}

/// The sender thread: delivers the queued payloads in order, retrying failures with backoff.
struct Sender<T: Transport> {
    name: &'static str,
    shared: Arc<Shared>,
    transport: T,
    config: QueueConfig,
    /// The receiver as logs show it.
    receiver: String,
    telemetry: Arc<Telemetry>,
}

impl<T: Transport> Sender<T> {
    fn run(mut self) {
        let mut failures = 0u32;
        while let Some((payload, deadline)) = self.shared.next() {
            let timeout = deadline.map_or(self.config.timeout, |deadline| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.config.timeout.min(left)
            });
            match self.transport.deliver(&payload, timeout) {
                Ok(()) => {
                    self.shared.lock().on_the_wire = false;
                    if failures > 0 {
                        tracing::info!(backend = self.name, receiver = %self.receiver, failures, "the receiver accepts again");
                    }
                    failures = 0;
                }
                Err(Failure::Reject { error }) => {
                    let mut state = self.shared.lock();
                    state.on_the_wire = false;
                    state.dropped += 1;
                    drop(state);
                    self.telemetry.dropped_record();
                    self.telemetry.backend_error();
                    tracing::error!(backend = self.name, %error, "the receiver rejected a payload: dropped, not retried");
                }
                Err(Failure::Retry { error, after }) => {
                    failures = failures.saturating_add(1);
                    self.telemetry.backend_error();
                    if failures == 1 {
                        tracing::warn!(backend = self.name, %error, "delivery failed; retrying with backoff");
                    } else {
                        tracing::debug!(backend = self.name, %error, failures, "delivery failed again");
                    }
                    self.give_back(payload);
                    let backoff = backoff_delay(
                        self.config.retry_initial,
                        self.config.retry_max,
                        failures,
                        jitter(),
                    );
                    // A receiver's Retry-After is honoured up to the cap.
                    let delay = after.map_or(backoff, |after| {
                        after.min(self.config.retry_max).max(backoff)
                    });
                    self.shared.pause(delay);
                }
            }
        }
    }

    fn give_back(&self, payload: Vec<u8>) {
        let mut state = self.shared.lock();
        state.on_the_wire = false;
        if state.queue.give_back(payload).is_some() {
            count_drop(&mut state, &self.telemetry, self.name, &self.receiver);
        }
    }
}

/// A number in [0, 1) that differs between calls and between agents.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn sending_stops_a_small_reserve_before_the_flushers_deadline() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stop = |ms| {
            deadline
                .duration_since(sending_deadline(deadline, Duration::from_millis(ms)))
                .as_millis()
        };
        assert_eq!(stop(10_000), 200);
        assert_eq!(stop(1_000), 50);
        assert_eq!(stop(0), 0);
    }

    /// Answers from a script: each delivery takes the next outcome, and records the payload.
    struct Scripted {
        outcomes: std::collections::VecDeque<Result<(), Failure>>,
        delivered: crossbeam_channel::Sender<Vec<u8>>,
    }

    impl Transport for Scripted {
        fn describe(&self) -> String {
            "script".into()
        }

        fn deliver(&mut self, payload: &[u8], _: Duration) -> Result<(), Failure> {
            let outcome = self.outcomes.pop_front().unwrap_or(Ok(()));
            if outcome.is_ok() {
                let _ = self.delivered.send(payload.to_vec());
            }
            outcome
        }
    }

    fn queue_config() -> QueueConfig {
        RawQueueConfig {
            retry_initial_ms: 1,
            retry_max_ms: 2,
            ..RawQueueConfig::default()
        }
        .validate()
        .expect("valid")
    }

    #[test]
    fn retried_payloads_arrive_in_order_and_rejected_ones_are_dropped_and_counted() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let retry = || {
            Err(Failure::Retry {
                error: "503".into(),
                after: None,
            })
        };
        let reject = Err(Failure::Reject {
            error: "400".into(),
        });
        let transport = Scripted {
            // a: fails twice then goes; b: rejected; c: goes.
            outcomes: [retry(), retry(), Ok(()), reject, Ok(())].into(),
            delivered: tx,
        };
        let telemetry = Arc::new(Telemetry::default());
        let mut outbox = Outbox::spawn(
            "test",
            transport,
            &queue_config(),
            telemetry.clone(),
            Duration::from_secs(1),
        )
        .expect("spawn");
        for payload in ["a", "b", "c"] {
            outbox.push(payload.as_bytes().to_vec());
        }
        let got: Vec<Vec<u8>> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("delivered"))
            .collect();
        assert_eq!(got, [b"a".to_vec(), b"c".to_vec()]);
        outbox
            .close(Instant::now() + Duration::from_secs(10))
            .expect("nothing left");
        let internal = telemetry.take_interval();
        assert_eq!(internal.dropped_records, 1, "the rejected payload");
        assert_eq!(internal.backend_errors, 3, "two retries and a rejection");
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        // The receiver asks for an hour; the cap (2 ms here) wins, so the retry comes soon.
        let (tx, rx) = crossbeam_channel::unbounded();
        let transport = Scripted {
            outcomes: [Err(Failure::Retry {
                error: "429".into(),
                after: Some(Duration::from_secs(3600)),
            })]
            .into(),
            delivered: tx,
        };
        let telemetry = Arc::new(Telemetry::default());
        let mut outbox = Outbox::spawn(
            "test",
            transport,
            &queue_config(),
            telemetry,
            Duration::from_secs(1),
        )
        .expect("spawn");
        outbox.push(b"x".to_vec());
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)).expect("retried"),
            b"x"
        );
        outbox
            .close(Instant::now() + Duration::from_secs(10))
            .expect("nothing left");
    }
}
