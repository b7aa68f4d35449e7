//! The HTTP push backend: POSTs each record as JSON (optionally gzipped) to one URL.
//!
//! `write` only serializes the record and queues it; a sender thread of its own
//! (`tallyd-http-N`) does the HTTP work through the shared [`HttpClient`], so a slow or
//! dead endpoint never delays the backend thread, the flush or the other backends. Failed
//! attempts are retried with exponential backoff; records wait, in order, in a queue bounded
//! by count and by bytes that drops its oldest when full (counted as `dropped_records`). At
//! shutdown the queue is sent until the flusher's deadline (less a small reserve), and what
//! is left is reported.

mod queue;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use self::queue::{PendingQueue, backoff_delay};
use super::{Backend, BackendError};
use crate::config::HttpConfig;
use crate::http::{HttpClient, display_url, gzip};
use crate::record::Record;
use crate::telemetry::Telemetry;

const NAME: &str = "http";

/// Numbers the sender threads: `tallyd-http-0`, `tallyd-http-1`, …
static SENDERS: AtomicUsize = AtomicUsize::new(0);

/// Queues records for its sender thread.
pub struct HttpBackend {
    shared: Arc<Shared>,
    gzip: bool,
    telemetry: Arc<Telemetry>,
    url: String,
    max_pending_bytes: u64,
    /// A record larger than `max_pending_bytes` was logged (once is enough).
    oversize_logged: bool,
    shutdown_timeout: Duration,
    sender: Option<JoinHandle<()>>,
    /// Disconnects when the sender thread ends.
    sender_done_rx: Receiver<()>,
}

/// What the backend and its sender share.
struct Shared {
    state: Mutex<State>,
    /// Signalled on a new record, on close and on abandon.
    wake: Condvar,
}

struct State {
    queue: PendingQueue<Vec<u8>>,
    /// The sender holds a record out of the queue for an attempt.
    on_the_wire: bool,
    /// Set by `close`: send what is queued until then, then stop.
    deadline: Option<Instant>,
    /// Stop now: `close` has reported what is left, or the backend was dropped.
    abandoned: bool,
    /// Records dropped since start, for the log.
    dropped: u64,
}

impl HttpBackend {
    /// Starts the sender thread for `config`, posting through `client`. `shutdown_timeout`
    /// sizes the reserve `close` keeps before the shutdown deadline.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        config: &HttpConfig,
        client: HttpClient,
        telemetry: Arc<Telemetry>,
        shutdown_timeout: Duration,
    ) -> Result<HttpBackend, BackendError> {
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
        let (done_tx, sender_done_rx) = crossbeam_channel::bounded::<()>(0);
        let sender = Sender {
            shared: shared.clone(),
            client,
            config: config.clone(),
            url: display_url(&config.url),
            telemetry: telemetry.clone(),
        };
        let name = format!("tallyd-http-{}", SENDERS.fetch_add(1, Ordering::Relaxed));
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _done_tx = done_tx;
                sender.run();
            })
            .map_err(|source| BackendError::Io {
                backend: NAME,
                source,
            })?;
        Ok(HttpBackend {
            shared,
            gzip: config.gzip,
            telemetry,
            url: display_url(&config.url),
            max_pending_bytes: config.max_pending_bytes,
            oversize_logged: false,
            shutdown_timeout,
            sender: Some(thread),
            sender_done_rx,
        })
    }

    fn encode(&self, record: &Record) -> std::io::Result<Vec<u8>> {
        let json = serde_json::to_vec(record)?;
        if self.gzip { gzip(&json) } else { Ok(json) }
    }
}

/// Until when `close` sends: the flusher's shutdown `deadline` less a small reserve (a
/// twentieth of the shutdown timeout, at most 0.2 s), so the report of what is left is
/// logged before the flusher stops waiting for this backend.
fn sending_deadline(deadline: Instant, shutdown_timeout: Duration) -> Instant {
    let reserve = (shutdown_timeout / 20).min(Duration::from_millis(200));
    deadline.checked_sub(reserve).unwrap_or(deadline)
}

impl Backend for HttpBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        let body = self.encode(record).map_err(|source| BackendError::Io {
            backend: NAME,
            source,
        })?;
        let size = body.len() as u64;
        if size > self.max_pending_bytes && !self.oversize_logged {
            self.oversize_logged = true;
            tracing::warn!(
                backend = NAME,
                url = %self.url,
                record_bytes = size,
                max_pending_bytes = self.max_pending_bytes,
                "http record over max_pending_bytes: sent, but waits alone (older ones dropped)"
            );
        }
        let mut state = self.shared.lock();
        for _ in state.queue.push(body) {
            count_drop(&mut state, &self.telemetry, &self.url);
        }
        drop(state);
        self.shared.wake.notify_all();
        Ok(())
    }

    fn close(&mut self, deadline: Instant) -> Result<(), BackendError> {
        let deadline = sending_deadline(deadline, self.shutdown_timeout);
        self.shared.lock().deadline = Some(deadline);
        self.shared.wake.notify_all();
        let finished = matches!(
            self.sender_done_rx.recv_deadline(deadline),
            Err(RecvTimeoutError::Disconnected)
        );
        let unsent = self.shared.abandon();
        if finished && let Some(thread) = self.sender.take() {
            let _ = thread.join();
        }
        match unsent {
            0 => Ok(()),
            unsent => Err(BackendError::Unsent {
                backend: NAME,
                unsent,
            }),
        }
    }
}

impl Drop for HttpBackend {
    /// A backend dropped without `close` (the agent was not shut down) stops its sender.
    fn drop(&mut self) {
        self.shared.abandon();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the sender to stop; returns the records it leaves unsent.
    fn abandon(&self) -> usize {
        let mut state = self.lock();
        state.abandoned = true;
        let unsent = state.queue.len() + usize::from(state.on_the_wire);
        drop(state);
        self.wake.notify_all();
        unsent
    }

    /// Waits for the oldest record and takes it out for an attempt, with the shutdown
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

/// Counts and logs a record dropped because the queue was full (by count or by bytes).
fn count_drop(state: &mut State, telemetry: &Telemetry, url: &str) {
    state.dropped += 1;
    telemetry.dropped_record();
    tracing::warn!(
        backend = NAME,
        url,
        dropped_since_start = state.dropped,
        pending = state.queue.len(),
        pending_bytes = state.queue.bytes(),
        "http queue full (max_pending or max_pending_bytes): dropped the oldest record"
    );
}

/// The sender thread: posts the queued records in order, retrying failures with backoff.
struct Sender {
    shared: Arc<Shared>,
    client: HttpClient,
    config: HttpConfig,
    /// The URL as logs show it.
    url: String,
    telemetry: Arc<Telemetry>,
}

impl Sender {
    fn run(self) {
        let mut failures = 0u32;
        while let Some((body, deadline)) = self.shared.next() {
            let timeout = deadline.map_or(self.config.timeout, |deadline| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.config.timeout.min(left)
            });
            let config = &self.config;
            let result =
                self.client
                    .post_json(&config.url, &config.headers, &body, config.gzip, timeout);
            match result {
                Ok(_) => {
                    self.shared.lock().on_the_wire = false;
                    if failures > 0 {
                        tracing::info!(backend = NAME, url = %self.url, failures, "http endpoint accepts records again");
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.telemetry.backend_error();
                    if failures == 1 {
                        tracing::warn!(backend = NAME, error = %e, "http post failed; retrying with backoff");
                    } else {
                        tracing::debug!(backend = NAME, error = %e, failures, "http post failed again");
                    }
                    self.give_back(body);
                    let delay =
                        backoff_delay(config.retry_initial, config.retry_max, failures, jitter());
                    self.shared.pause(delay);
                }
            }
        }
    }

    fn give_back(&self, body: Vec<u8>) {
        let mut state = self.shared.lock();
        state.on_the_wire = false;
        if state.queue.give_back(body).is_some() {
            count_drop(&mut state, &self.telemetry, &self.url);
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

    /// An endpoint that accepts connections (into the listen backlog) and never answers.
    fn hanging_endpoint() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/ingest", listener.local_addr().expect("addr"));
        (listener, url)
    }

    fn backend_for(url: &str, shutdown_timeout: Duration) -> (HttpBackend, Arc<Telemetry>) {
        let text = format!("[[backends]]\nkind = \"http\"\nurl = {url:?}\ntimeout_ms = 600000\n");
        let config = crate::config::Config::from_toml(&text, std::path::Path::new("test.toml"))
            .expect("valid");
        let Some(crate::config::BackendConfig::Http(http)) = config.backends.first() else {
            panic!("an http backend");
        };
        let telemetry = Arc::new(Telemetry::default());
        let backend =
            HttpBackend::spawn(http, HttpClient::new(), telemetry.clone(), shutdown_timeout)
                .expect("the sender starts");
        (backend, telemetry)
    }

    #[test]
    fn close_keeps_to_the_deadline_it_is_given_and_reports_what_is_left() {
        // The flusher's deadline has passed by the time the backend closes (serializing the
        // final record took it all); the backend's own hour of shutdown timeout must not
        // restart the clock: both records, one on the wire to an endpoint that never
        // answers, are reported unsent at once.
        let (_endpoint, url) = hanging_endpoint();
        let (mut backend, _) = backend_for(&url, Duration::from_secs(3600));
        {
            let mut state = backend.shared.lock();
            state.queue.push(b"{}".to_vec());
            state.queue.push(b"[]".to_vec());
        }
        backend.shared.wake.notify_all();
        let (report_tx, report_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = report_tx.send(backend.close(Instant::now()));
        });
        // A liveness bound, not a measurement: the report comes at once, or after the hour.
        let report = report_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("close kept to the deadline it was given");
        let err = report.expect_err("nothing was delivered");
        assert!(
            matches!(err, BackendError::Unsent { unsent: 2, .. }),
            "{err}"
        );
    }
}
