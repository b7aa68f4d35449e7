//! Wiring: binds the listeners, creates the shards, starts the receive threads, flusher and
//! backends, and owns the shutdown order — stop receiving, drain the sockets into the shards,
//! final flush through every backend.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use tokio::sync::watch;

use crate::aggregate::{KeyEncoder, LocalHandle, LocalTable, new_shards};
use crate::alert::Alerter;
use crate::alert::notifier::Notifiers;
use crate::backend::{self, Backend, BackendHandle};
use crate::config::Config;
use crate::flush::{Command, Flusher};
use crate::http::HttpClient;
use crate::server::{Router, tcp, udp, unix};
use crate::telemetry::Telemetry;

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {transport} {address}: {source}")]
    Listen {
        transport: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A started agent. Dropping it without [`Running::shutdown`] leaves its threads running.
pub struct Running {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    unix_paths: Vec<PathBuf>,
    telemetry: Arc<Telemetry>,
    stop: Arc<AtomicBool>,
    stop_tcp: watch::Sender<bool>,
    receivers: Vec<JoinHandle<()>>,
    tcp_tasks: Vec<tokio::task::JoinHandle<()>>,
    flush_tx: Sender<Command>,
    flusher: JoinHandle<()>,
}

/// Runs the agent until `shutdown` completes, then stops it in order.
///
/// # Errors
/// When a listener, backend or thread cannot start.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let running = start(config, Vec::new()).await?;
    shutdown.await;
    tracing::info!("shutting down: draining and running the final flush");
    running.shutdown().await;
    Ok(())
}

/// Starts the agent: listeners, shards, flusher, and the configured backends plus `extra`.
///
/// # Errors
/// When a listener, backend or thread cannot start.
pub async fn start(config: Config, extra: Vec<Box<dyn Backend>>) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let telemetry = Arc::new(Telemetry::default());

    // One HTTP client (one connection pool) for everything that posts.
    let http = HttpClient::new();
    let context = backend::BuildContext {
        http: &http,
        telemetry: &telemetry,
        shutdown_timeout: config.server.shutdown_timeout,
    };
    let mut backends: Vec<Box<dyn Backend>> = Vec::new();
    for backend_config in &config.backends {
        backends.push(backend::build(backend_config, &context)?);
    }
    backends.extend(extra);

    // Bind everything before starting threads, so a bad address fails fast and cleanly.
    let server = &config.server;
    let mut udp_sockets = Vec::new();
    for &addr in &server.udp {
        udp_sockets.extend(udp::bind(addr, server).map_err(listen_error("udp", addr))?);
    }
    // The kernel's drop counts are read from here on, before any listener reports that it
    // listens.
    let mut kernel_drops = Vec::new();
    for socket in &udp_sockets {
        match udp::KernelDrops::new(socket) {
            Ok(drops) => kernel_drops.push(drops),
            Err(error) => tracing::warn!(
                udp = ?socket.local_addr().ok(),
                %error,
                "cannot read the kernel's drop count; internal.dropped_datagrams leaves this socket out"
            ),
        }
    }
    let mut tcp_listeners = Vec::new();
    for &addr in &server.tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(listen_error("tcp", addr))?;
        tcp_listeners.push(listener);
    }
    let mut unix_sockets = Vec::new();
    for path in &server.unix {
        let socket = unix::bind(path, server.unix_mode).map_err(|source| StartError::Listen {
            transport: "unix",
            address: path.display().to_string(),
            source,
        })?;
        unix_sockets.push((socket, path.clone()));
    }

    let aggregation = Arc::new(config.aggregation.clone());
    let shards = new_shards(&aggregation, &telemetry);
    let encoder = KeyEncoder::new(aggregation.global_tags.clone().into());
    let make_router = {
        let telemetry = telemetry.clone();
        let shards = shards.clone();
        move || Router::new(encoder.clone(), shards.clone(), telemetry.clone())
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    let mut udp_addrs = Vec::new();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let udp_threads = server.udp_threads(aggregation.shards, cores);
    // A lone datagram thread with a lone shard folds straight into it. Otherwise each
    // datagram thread keeps counters and distributions in a table of its own, drained into
    // the shards at every flush, so the threads do not contend for the shards' locks and
    // memory (see `aggregate::local`).
    let datagram_threads = udp_sockets.len() * udp_threads + unix_sockets.len();
    let use_locals = datagram_threads > 1 || aggregation.shards > 1;
    let mut locals = Vec::new();
    let mut datagram_router = || {
        let router = make_router();
        if use_locals {
            let local = LocalHandle::new(LocalTable::new(&aggregation, telemetry.clone()));
            locals.push(local.clone());
            router.with_local(local)
        } else {
            router
        }
    };
    for socket in udp_sockets {
        let addr = socket.local_addr()?;
        tracing::info!(threads = udp_threads, udp = %addr, "listening");
        if !udp_addrs.contains(&addr) {
            udp_addrs.push(addr);
        }
        let standby = Arc::new(udp::Standby::default());
        for i in 0..udp_threads {
            let name = format!("tallyd-udp-{}", receivers.len());
            let role = if i == 0 {
                udp::Role::First(standby.clone())
            } else {
                udp::Role::Helper(standby.clone())
            };
            receivers.push(udp::spawn_udp(
                name,
                socket.try_clone()?,
                datagram_router(),
                stop.clone(),
                role,
                server,
            )?);
        }
    }
    let mut unix_paths = Vec::new();
    for (i, (socket, path)) in unix_sockets.into_iter().enumerate() {
        tracing::info!(unix = %path.display(), "listening");
        unix_paths.push(path.clone());
        let name = format!("tallyd-unix-{i}");
        let router = datagram_router();
        let thread = unix::spawn_unix(
            name,
            socket,
            path,
            router,
            stop.clone(),
            server.max_datagram_bytes,
        )?;
        receivers.push(thread);
    }
    let (stop_tcp, stop_tcp_rx) = watch::channel(false);
    let mut tcp_addrs = Vec::new();
    let mut tcp_tasks = Vec::new();
    for listener in tcp_listeners {
        let addr = listener.local_addr()?;
        tracing::info!(tcp = %addr, "listening");
        tcp_addrs.push(addr);
        let make_router = make_router.clone();
        let max_line = server.tcp_max_line_bytes;
        tcp_tasks.push(tokio::spawn(tcp::serve(
            listener,
            make_router,
            max_line,
            stop_tcp_rx.clone(),
        )));
    }

    let mut handles = Vec::new();
    for backend in backends {
        handles.push(BackendHandle::spawn(backend, telemetry.clone())?);
    }
    // The webhook notifiers share the backends' HTTP client (and its connection pool).
    let notifiers = Notifiers::start(&config.notifiers, &http, telemetry.clone())?;
    let interval_ms = config.aggregation.flush_interval.as_millis();
    let alerter = Alerter::new(config.alerts.clone(), interval_ms, notifiers);
    let (flush_tx, flush_rx) = crossbeam_channel::unbounded();
    let flusher = Flusher::new(config.clone(), shards, alerter, handles, telemetry.clone())
        .with_kernel_drops(kernel_drops)
        .with_locals(locals)
        .spawn(flush_rx)?;

    Ok(Running {
        udp_addrs,
        tcp_addrs,
        unix_paths,
        telemetry,
        stop,
        stop_tcp,
        receivers,
        tcp_tasks,
        flush_tx,
        flusher,
    })
}

fn listen_error(
    transport: &'static str,
    addr: SocketAddr,
) -> impl Fn(std::io::Error) -> StartError {
    move |source| StartError::Listen {
        transport,
        address: addr.to_string(),
        source,
    }
}

impl Running {
    /// The bound UDP addresses (with the real port where the config said 0).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The bound TCP addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The Unix datagram socket paths.
    pub fn unix_paths(&self) -> &[PathBuf] {
        &self.unix_paths
    }

    /// The agent's own counters.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Flushes now, outside the interval's ticks; returns once the record is queued to every
    /// backend.
    pub async fn flush_now(&self) {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        if self.flush_tx.send(Command::Now(done_tx)).is_ok() {
            let _ = tokio::task::spawn_blocking(move || done_rx.recv()).await;
        }
    }

    /// Stops receiving, drains the sockets into the shards, runs the final flush through every
    /// backend (each given until the shutdown deadline) and waits for all threads.
    pub async fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stop_tcp.send(true);
        for task in self.tcp_tasks {
            let _ = task.await;
        }
        let receivers = self.receivers;
        let flush_tx = self.flush_tx;
        let flusher = self.flusher;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in receivers {
                let _ = thread.join();
            }
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            if flush_tx.send(Command::Final(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
            let _ = flusher.join();
        })
        .await;
        tracing::info!("stopped");
    }
}
