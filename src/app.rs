//! Wiring: binds the listeners, creates the shards, starts the receive threads, flusher and
//! backends, and owns the shutdown order — stop receiving, drain the sockets into the shards,
//! final flush through every backend.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use tokio::sync::{mpsc, oneshot, watch};

use crate::aggregate::{KeyEncoder, LocalHandle, LocalTable, new_shards};
use crate::alert::Alerter;
use crate::alert::notifier::Notifiers;
use crate::api::{ApiFeed, ApiState, ReloadRequest};
use crate::backend::{self, Backend, BackendHandle};
use crate::config::{BackendConfig, Config};
use crate::export::SharedPrometheus;
use crate::flush::{Command, Flusher, Reload};
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
    api_addr: Option<SocketAddr>,
    api_state: Option<Arc<ApiState>>,
    stop_api: watch::Sender<bool>,
    api_task: Option<tokio::task::JoinHandle<()>>,
    reload_tx: mpsc::Sender<ReloadRequest>,
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
    run_from(config, None, shutdown).await
}

/// Runs the agent until `shutdown` completes, re-reading `config_path` (when given) on
/// SIGHUP and `POST /-/reload`.
///
/// # Errors
/// When a listener, backend or thread cannot start.
pub async fn run_from(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let reloadable = config_path.is_some();
    let running = start_from(config, config_path, Vec::new()).await?;
    let reload_tx = running.reload_sender();
    let hangups = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reload through POST /-/reload only");
            return;
        };
        while hangup.recv().await.is_some() {
            if !reloadable {
                tracing::warn!(
                    "SIGHUP received, but the agent runs on built-in defaults: nothing to reload"
                );
                continue;
            }
            tracing::info!("SIGHUP received: reloading the config");
            let (reply_tx, reply_rx) = oneshot::channel();
            if reload_tx.send(reply_tx).await.is_err() {
                return;
            }
            // The reloader logs the outcome.
            let _ = reply_rx.await;
        }
    });
    shutdown.await;
    hangups.abort();
    tracing::info!("shutting down: draining and running the final flush");
    running.shutdown().await;
    Ok(())
}

/// Starts the agent: listeners, shards, flusher, and the configured backends plus `extra`.
///
/// # Errors
/// When a listener, backend or thread cannot start.
pub async fn start(config: Config, extra: Vec<Box<dyn Backend>>) -> Result<Running, StartError> {
    start_from(config, None, extra).await
}

/// [`start`], with the config file that reloads re-read (none: reloads are refused).
///
/// # Errors
/// When a listener, backend or thread cannot start.
pub async fn start_from(
    config: Config,
    config_path: Option<PathBuf>,
    mut extra: Vec<Box<dyn Backend>>,
) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let telemetry = Arc::new(Telemetry::default());
    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(4);

    // The API's listener is bound first of all, with the others, so a taken port fails fast.
    let mut api = None;
    if let Some(addr) = config.api.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(listen_error("http", addr))?;
        let state = Arc::new(
            ApiState::new(
                config.api.token.clone(),
                config.prometheus.clone(),
                telemetry.clone(),
                config_path.is_some().then(|| reload_tx.clone()),
                config.api.stream_queue,
            )
            .with_history(config.history.as_ref().map(|h| h.path.clone())),
        );
        extra.push(Box::new(ApiFeed::new(state.clone())));
        api = Some((listener, state));
    }

    // History is a backend of its own: a slow or full disk never delays the flush.
    if let Some(history) = &config.history {
        extra.push(Box::new(crate::history::HistoryBackend::new(
            history.clone(),
            telemetry.clone(),
        )));
    }

    // One HTTP client (one connection pool) for everything that posts.
    let http = HttpClient::new();
    let prometheus: SharedPrometheus = Arc::new(RwLock::new(config.prometheus.clone()));
    let context = backend::BuildContext {
        http: &http,
        telemetry: &telemetry,
        shutdown_timeout: config.server.shutdown_timeout,
        prometheus: &prometheus,
    };
    let mut backends: Vec<(Option<BackendConfig>, Box<dyn Backend>)> = Vec::new();
    for backend_config in &config.backends {
        let backend = backend::build(backend_config, &context)?;
        backends.push((Some(backend_config.clone()), backend));
    }
    backends.extend(extra.into_iter().map(|backend| (None, backend)));

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
    for (backend_config, backend) in backends {
        handles.push((
            backend_config,
            BackendHandle::spawn(backend, telemetry.clone())?,
        ));
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

    let (stop_api, stop_api_rx) = watch::channel(false);
    let mut api_addr = None;
    let mut api_state = None;
    let mut api_task = None;
    if let Some((listener, state)) = api {
        let addr = listener.local_addr()?;
        tracing::info!(http = %addr, "API listening");
        api_addr = Some(addr);
        // Every listener is bound by now.
        state.set_ready();
        api_task = Some(tokio::spawn(crate::api::serve(
            listener,
            state.clone(),
            stop_api_rx,
        )));
        api_state = Some(state);
    }
    if let Some(path) = config_path {
        let reloader = Reloader {
            path,
            current: config.clone(),
            http,
            telemetry: telemetry.clone(),
            flush_tx: flush_tx.clone(),
            api: api_state.clone(),
            prometheus,
        };
        tokio::spawn(reloader.run(reload_rx));
    }

    Ok(Running {
        api_addr,
        api_state,
        stop_api,
        api_task,
        reload_tx,
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
    /// The bound API address (with the real port where the config said 0), if the API is on.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The API's shared state, if the API is on.
    pub fn api_state(&self) -> Option<&Arc<ApiState>> {
        self.api_state.as_ref()
    }

    /// Where reload requests go (SIGHUP's and the API's way in).
    pub fn reload_sender(&self) -> mpsc::Sender<ReloadRequest> {
        self.reload_tx.clone()
    }

    /// Re-reads the config file now, as SIGHUP does.
    ///
    /// # Errors
    /// The config error (file, line, column) when the file is invalid; or no config file.
    pub async fn reload(&self) -> Result<(), String> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.reload_tx
            .send(reply_tx)
            .await
            .map_err(|_| "the agent has no config file to reload".to_string())?;
        reply_rx
            .await
            .unwrap_or_else(|_| Err("the agent has no config file to reload".into()))
    }

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
        // The API goes first: its answers would only grow stale.
        let _ = self.stop_api.send(true);
        if let Some(task) = self.api_task {
            let _ = task.await;
        }
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

/// Re-reads the config file on request (SIGHUP, `POST /-/reload`) and hands what changed to
/// the flusher and the API; settings that need a restart keep their values, and the log
/// says so.
struct Reloader {
    path: PathBuf,
    /// The config in force.
    current: Arc<Config>,
    http: HttpClient,
    telemetry: Arc<Telemetry>,
    flush_tx: Sender<Command>,
    api: Option<Arc<ApiState>>,
    /// The `[prometheus]` section the remote write outputs read.
    prometheus: SharedPrometheus,
}

impl Reloader {
    async fn run(mut self, mut requests: mpsc::Receiver<ReloadRequest>) {
        while let Some(reply) = requests.recv().await {
            let outcome = self.reload().await;
            self.telemetry.config_reload(outcome.is_ok());
            match &outcome {
                Ok(()) => tracing::info!(path = %self.path.display(), "config reloaded"),
                Err(error) => {
                    tracing::error!(%error, "config reload refused: the agent runs on unchanged");
                }
            }
            let _ = reply.send(outcome);
        }
    }

    async fn reload(&mut self) -> Result<(), String> {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let old = self.current.clone();
        warn_restart_only(&old, &loaded);

        // Backends: unchanged entries keep running (and their queues); new ones start.
        let mut remove = old.backends.clone();
        let mut add_configs = Vec::new();
        for backend in &loaded.backends {
            match remove.iter().position(|b| b == backend) {
                Some(at) => {
                    remove.remove(at);
                }
                None => add_configs.push(backend.clone()),
            }
        }
        let context = backend::BuildContext {
            http: &self.http,
            telemetry: &self.telemetry,
            shutdown_timeout: old.server.shutdown_timeout,
            prometheus: &self.prometheus,
        };
        let mut add = Vec::new();
        for backend_config in add_configs {
            let built = backend::build(&backend_config, &context).map_err(|e| e.to_string())?;
            let handle =
                BackendHandle::spawn(built, self.telemetry.clone()).map_err(|e| e.to_string())?;
            add.push((backend_config, handle));
        }
        let alerter = if loaded.alerts == old.alerts && loaded.notifiers == old.notifiers {
            None
        } else {
            let notifiers = Notifiers::start(&loaded.notifiers, &self.http, self.telemetry.clone())
                .map_err(|e| e.to_string())?;
            let interval_ms = old.aggregation.flush_interval.as_millis();
            Some(Alerter::new(loaded.alerts.clone(), interval_ms, notifiers))
        };
        let mut aggregation = old.aggregation.clone();
        aggregation.histograms = loaded.aggregation.histograms.clone();
        aggregation.set_forward(loaded.aggregation.forward);
        // The plan follows the reloaded outputs: none when nothing needs one any more.
        aggregation.export = (old.api.listen.is_some()
            || loaded.backends.iter().any(BackendConfig::needs_export))
        .then(|| {
            let mut plan = crate::export::ExportPlan::new(loaded.prometheus.clone());
            plan.otlp_bins = loaded.backends.iter().any(BackendConfig::is_otlp);
            Arc::new(plan)
        });
        let aggregation = Arc::new(aggregation);
        let reload = Reload {
            add,
            remove,
            alerter,
            aggregation: aggregation.clone(),
        };
        // Running outputs read it at their next flush, new ones at their first.
        *self
            .prometheus
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded.prometheus.clone();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        self.flush_tx
            .send(Command::Reload(Box::new(reload), done_tx))
            .map_err(|_| "the agent is shutting down".to_string())?;
        let _ = tokio::task::spawn_blocking(move || done_rx.recv()).await;
        if let Some(api) = &self.api {
            api.set_prometheus(loaded.prometheus.clone());
        }
        self.current = Arc::new(Config {
            host: old.host.clone(),
            server: old.server.clone(),
            aggregation: (*aggregation).clone(),
            backends: loaded.backends,
            alerts: loaded.alerts,
            notifiers: loaded.notifiers,
            api: old.api.clone(),
            prometheus: loaded.prometheus,
            history: old.history.clone(),
            collectors: old.collectors.clone(),
        });
        Ok(())
    }
}

/// Logs each changed setting that only a restart applies.
fn warn_restart_only(old: &Config, new: &Config) {
    let (a, b) = (&old.aggregation, &new.aggregation);
    let changed = [
        ("host", old.host != new.host),
        ("[server]", old.server != new.server),
        ("[api]", old.api != new.api),
        ("[history]", old.history != new.history),
        ("[collectors]", old.collectors != new.collectors),
        (
            "aggregation.flush_interval_ms",
            a.flush_interval != b.flush_interval,
        ),
        ("aggregation.shards", a.shards != b.shards),
        (
            "aggregation.percentiles",
            a.distribution.percentiles != b.distribution.percentiles,
        ),
        (
            "aggregation.exact_samples",
            a.distribution.exact_samples != b.distribution.exact_samples,
        ),
        ("aggregation.gauge_deltas", a.gauge_deltas != b.gauge_deltas),
        ("aggregation.series_ttl_ms", a.series_ttl != b.series_ttl),
        ("aggregation.max_series", a.max_series != b.max_series),
        (
            "aggregation.exact_set_members",
            a.exact_set_members != b.exact_set_members,
        ),
        ("aggregation.global_tags", a.global_tags != b.global_tags),
    ];
    for (setting, differs) in changed {
        if differs {
            tracing::warn!(
                setting,
                "reload: this setting needs a restart; keeping its old value"
            );
        }
    }
}
