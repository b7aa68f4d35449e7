//! Backends: where flush records go. Each runs on its own thread behind a small bounded
//! queue, so a slow one never delays aggregation or the others; a record it cannot take is
//! skipped for it, counted and logged. A new backend is one file implementing [`Backend`].

mod capture;
pub mod config;
mod console;
pub mod graphite;
pub mod http;
pub mod json_file;
pub mod otlp;
pub mod remote_write;
pub mod sender;
pub mod statsd;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

pub use capture::CaptureBackend;
pub use console::ConsoleBackend;
pub use graphite::GraphiteBackend;
pub use http::HttpBackend;
pub use json_file::JsonFileBackend;
pub use statsd::StatsdBackend;

use crate::config::BackendConfig;
use crate::http::HttpClient;
use crate::record::Record;
use crate::telemetry::Telemetry;

/// How many records may wait for one backend.
const QUEUE_RECORDS: usize = 4;

/// A backend failure, with the backend's name.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{backend}: {path}: {source}")]
    File {
        backend: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{backend}: {source}")]
    Io {
        backend: &'static str,
        source: std::io::Error,
    },
    /// Payloads left in an output's queue: a record each for `http`, a slice of one for the
    /// outputs that split a flush (graphite, statsd, remote_write, otlp).
    #[error("{backend}: {unsent} queued payloads not sent before the shutdown deadline")]
    Unsent {
        backend: &'static str,
        unsent: usize,
    },
}

/// Where flush records go. `write` is called once per flush, on the backend's own thread.
pub trait Backend: Send {
    /// The name used in logs.
    fn name(&self) -> &str;

    /// Delivers one record.
    ///
    /// # Errors
    /// When the record could not be delivered; it is logged and counted, and the backend
    /// receives the next record as usual.
    fn write(&mut self, record: &Record) -> Result<(), BackendError>;

    /// Delivers one record, shared: for backends that keep it past the call (the API's
    /// snapshot). Defaults to [`Backend::write`].
    ///
    /// # Errors
    /// As [`Backend::write`].
    fn write_shared(&mut self, record: &Arc<Record>) -> Result<(), BackendError> {
        self.write(record)
    }

    /// Called once after the last record, before the agent exits. `deadline` is the agent's
    /// shutdown deadline, fixed by the flusher before the final flush: the flusher stops
    /// waiting for this backend then, so what is not done by it should be reported before.
    ///
    /// # Errors
    /// When pending output could not be completed.
    fn close(&mut self, deadline: Instant) -> Result<(), BackendError> {
        let _ = deadline;
        Ok(())
    }
}

/// What building a backend may need from the agent.
pub struct BuildContext<'a> {
    /// The agent's one HTTP client.
    pub http: &'a HttpClient,
    pub telemetry: &'a Arc<Telemetry>,
    /// The shutdown timeout (`server.shutdown_timeout_ms`): sizes the reserve a backend
    /// keeps before the shutdown deadline it is given at close.
    pub shutdown_timeout: Duration,
    /// Prometheus names and labels (`[prometheus]`), for remote write; a reload replaces
    /// what it holds.
    pub prometheus: &'a crate::export::SharedPrometheus,
}

/// Builds the backend a config entry describes.
///
/// # Errors
/// When the backend cannot start (a file that cannot be opened, a thread that cannot
/// be spawned).
pub fn build(
    config: &BackendConfig,
    context: &BuildContext<'_>,
) -> Result<Box<dyn Backend>, BackendError> {
    Ok(match config {
        BackendConfig::Console { json } => Box::new(ConsoleBackend::new(*json)),
        BackendConfig::JsonFile(file) => Box::new(JsonFileBackend::open(file)?),
        BackendConfig::Http(http) => Box::new(HttpBackend::spawn(
            http,
            context.http.clone(),
            context.telemetry.clone(),
            context.shutdown_timeout,
        )?),
        BackendConfig::Graphite(graphite) => Box::new(GraphiteBackend::spawn(
            graphite,
            context.telemetry.clone(),
            context.shutdown_timeout,
        )?),
        BackendConfig::Statsd(statsd) => Box::new(StatsdBackend::spawn(
            statsd,
            context.telemetry.clone(),
            context.shutdown_timeout,
        )?),
        BackendConfig::RemoteWrite(rw) => Box::new(remote_write::RemoteWriteBackend::spawn(
            rw,
            context.prometheus.clone(),
            context.http.clone(),
            context.telemetry.clone(),
            context.shutdown_timeout,
        )?),
        BackendConfig::Otlp(otlp) => Box::new(otlp::OtlpBackend::spawn(
            otlp,
            context.http.clone(),
            context.telemetry.clone(),
            context.shutdown_timeout,
        )?),
    })
}

/// A running backend: its queue and thread.
pub struct BackendHandle {
    name: String,
    tx: Sender<Arc<Record>>,
    /// Hands the shutdown deadline to the backend thread, just before `tx` closes.
    deadline_tx: Sender<Instant>,
    done_rx: crossbeam_channel::Receiver<()>,
    thread: JoinHandle<()>,
}

impl BackendHandle {
    /// Starts `backend` on its own thread.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        mut backend: Box<dyn Backend>,
        telemetry: Arc<Telemetry>,
    ) -> std::io::Result<BackendHandle> {
        let name = backend.name().to_string();
        let (tx, rx) = crossbeam_channel::bounded::<Arc<Record>>(QUEUE_RECORDS);
        let (deadline_tx, deadline_rx) = crossbeam_channel::bounded::<Instant>(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let thread_name = format!("tallyd-backend-{name}");
        let thread = std::thread::Builder::new().name(thread_name).spawn(move || {
            for record in rx.iter() {
                if let Err(e) = backend.write_shared(&record) {
                    tracing::error!(backend = backend.name(), error = %e, "backend failed");
                    telemetry.backend_error();
                }
            }
            // `close` sent the deadline before closing the queue; a handle dropped without
            // `close` sent none, and the backend closes at once.
            let deadline = deadline_rx.recv().unwrap_or_else(|_| Instant::now());
            if let Err(e) = backend.close(deadline) {
                tracing::error!(backend = backend.name(), error = %e, "backend failed to close");
            }
            let _ = done_tx.send(());
        })?;
        Ok(BackendHandle {
            name,
            tx,
            deadline_tx,
            done_rx,
            thread,
        })
    }

    /// Queues a record; when the queue is full the record is skipped for this backend and
    /// counted.
    pub fn send(&self, record: Arc<Record>, telemetry: &Telemetry) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                telemetry.dropped_record();
                tracing::warn!(backend = %self.name, "backend queue full: record skipped");
            }
            Err(TrySendError::Disconnected(_)) => {
                telemetry.dropped_record();
                tracing::error!(backend = %self.name, "backend stopped: record skipped");
            }
        }
    }

    /// Queues the final record, waiting until `deadline` for room.
    pub fn send_final(&self, record: Arc<Record>, deadline: Instant) {
        if self.tx.send_deadline(record, deadline).is_err() {
            tracing::error!(backend = %self.name, "final record not delivered: the backend's queue stayed full until the shutdown deadline");
        }
    }

    /// Closes the queue and waits (until `deadline`) for the backend to finish what it holds;
    /// the backend's own `close` is given the same deadline.
    pub fn close(self, deadline: Instant) {
        self.start_close(deadline).wait(deadline);
    }

    /// Closes the queue and hands the backend `deadline`, without waiting: see
    /// [`Closing::wait`].
    pub fn start_close(self, deadline: Instant) -> Closing {
        // Room for one, and only this sends: never blocks.
        let _ = self.deadline_tx.send(deadline);
        drop(self.tx);
        Closing {
            name: self.name,
            done_rx: self.done_rx,
            thread: self.thread,
        }
    }
}

/// A backend whose queue is closed, finishing what it holds.
pub struct Closing {
    name: String,
    done_rx: crossbeam_channel::Receiver<()>,
    thread: JoinHandle<()>,
}

impl Closing {
    /// Waits (until `deadline`) for the backend to finish.
    pub fn wait(self, deadline: Instant) {
        match self.done_rx.recv_deadline(deadline) {
            Ok(()) => {
                let _ = self.thread.join();
            }
            Err(_) => tracing::error!(
                backend = %self.name,
                "backend did not finish before the shutdown deadline"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands the deadline its `close` receives to a channel.
    struct DeadlineProbe(Sender<Instant>);

    impl Backend for DeadlineProbe {
        fn name(&self) -> &str {
            "probe"
        }

        fn write(&mut self, _: &Record) -> Result<(), BackendError> {
            Ok(())
        }

        fn close(&mut self, deadline: Instant) -> Result<(), BackendError> {
            let _ = self.0.send(deadline);
            Ok(())
        }
    }

    #[test]
    fn the_backend_closes_with_the_flushers_deadline() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let telemetry = Arc::new(Telemetry::default());
        let handle = BackendHandle::spawn(Box::new(DeadlineProbe(tx)), telemetry).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(3600);
        handle.close(deadline);
        assert_eq!(
            rx.try_recv(),
            Ok(deadline),
            "the same instant, not one of its own"
        );
    }
}
