//! The flusher: a thread that ticks every flush interval, collects each shard's snapshot,
//! computes figures, builds the record and hands it to every backend's queue. Ingest goes on
//! meanwhile: shards only swap their interval state out.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::aggregate::distribution::{DistFigures, DistributionConfig};
use crate::aggregate::{LocalHandle, RawData, RawMetric, SeriesKey, ShardHandle, ShardSnapshot};
use crate::alert::Alerter;
use crate::backend::BackendHandle;
use crate::collector::{Collectors, procfs};
use crate::config::{AggregationConfig, BackendConfig, Config};
use crate::record::{Figures, Metric, Record};
use crate::server::udp::KernelDrops;
use crate::telemetry::Telemetry;

// The record's metrics are collected in place from a shard's snapshot (see `build`), which
// needs the two to have the same size and alignment; three words each.
const _: () = assert!(
    std::mem::size_of::<RawMetric>() == 24
        && std::mem::size_of::<RawMetric>() == std::mem::size_of::<Metric>()
        && std::mem::align_of::<RawMetric>() == std::mem::align_of::<Metric>()
);

/// A request to the flusher besides its own ticks.
#[derive(Debug)]
pub enum Command {
    /// Flush now; reply once the record is queued to every backend.
    Now(Sender<()>),
    /// Final flush: drain the shards, flush, close the backends (waiting up to the deadline),
    /// then reply and stop.
    Final(Sender<()>),
    /// A reloaded config's parts, taking effect from the next flush; reply once applied.
    Reload(Box<Reload>, Sender<()>),
}

/// What a reload changes in the flusher (SPEC §8): every part is already built, so applying
/// it cannot fail.
pub struct Reload {
    /// Backends the new config adds, started.
    pub add: Vec<(BackendConfig, BackendHandle)>,
    /// Backends the new config no longer has: they drain their queue (until the shutdown
    /// timeout) and stop.
    pub remove: Vec<BackendConfig>,
    /// New alert rules and notifiers, when they changed.
    pub alerter: Option<Alerter>,
    /// The aggregation config with the new histogram bins and export plan, for the shards
    /// from the next interval.
    pub aggregation: Arc<AggregationConfig>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("add", &self.add.len())
            .field("remove", &self.remove)
            .field("alerter", &self.alerter.is_some())
            .finish_non_exhaustive()
    }
}

/// Everything the flusher owns.
pub struct Flusher {
    config: Arc<Config>,
    shards: Vec<ShardHandle>,
    /// The receive threads' local tables, drained into the shards at every flush.
    locals: Vec<LocalHandle>,
    /// Each backend with its config entry (`None` for those the agent adds, like the API's).
    backends: Vec<(Option<BackendConfig>, BackendHandle)>,
    /// A reloaded aggregation config for the shards, applied at the next snapshot.
    pending: Option<Arc<AggregationConfig>>,
    telemetry: Arc<Telemetry>,
    distribution: Arc<DistributionConfig>,
    alerter: Option<Alerter>,
    kernel_drops: Vec<KernelDrops>,
    /// Host and process collectors, read at the start of each flush.
    collectors: Option<Collectors>,
    /// When the agent started, for `internal.uptime_s`.
    started: Instant,
}

impl Flusher {
    /// A flusher over the shards, the alert rules and the backends.
    pub fn new(
        config: Arc<Config>,
        shards: Vec<ShardHandle>,
        alerter: Alerter,
        backends: Vec<(Option<BackendConfig>, BackendHandle)>,
        telemetry: Arc<Telemetry>,
    ) -> Flusher {
        let distribution = Arc::new(config.aggregation.distribution.clone());
        let collectors = (!config.collectors.is_empty())
            .then(|| Collectors::new(&config.collectors, &config.aggregation.global_tags));
        Flusher {
            config,
            shards,
            locals: Vec::new(),
            backends,
            pending: None,
            telemetry,
            distribution,
            alerter: Some(alerter),
            kernel_drops: Vec::new(),
            collectors,
            started: Instant::now(),
        }
    }

    /// Reports the datagrams the kernel dropped at these UDP sockets in each record's
    /// `internal.dropped_datagrams`.
    #[must_use]
    pub fn with_kernel_drops(mut self, kernel_drops: Vec<KernelDrops>) -> Flusher {
        self.kernel_drops = kernel_drops;
        self
    }

    /// Drains these receive threads' local tables into the shards at every flush.
    #[must_use]
    pub fn with_locals(mut self, locals: Vec<LocalHandle>) -> Flusher {
        self.locals = locals;
        self
    }

    /// Starts the flusher thread.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(self, commands: Receiver<Command>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("tallyd-flush".to_string())
            .spawn(move || self.run(commands))
    }

    fn run(mut self, commands: Receiver<Command>) {
        let interval = self.config.aggregation.flush_interval;
        let mut next = Instant::now() + interval;
        loop {
            match commands.recv_deadline(next) {
                Err(RecvTimeoutError::Timeout) => {
                    self.flush(None);
                    next += interval;
                    let now = Instant::now();
                    if next <= now {
                        // We fell behind (a very slow flush): skip the missed ticks.
                        next = now + interval;
                    }
                }
                Ok(Command::Now(done)) => {
                    self.flush(None);
                    let _ = done.send(());
                }
                Ok(Command::Reload(reload, done)) => {
                    self.reload(*reload);
                    let _ = done.send(());
                }
                Ok(Command::Final(done)) => {
                    self.finish();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            }
        }
    }

    fn finish(&mut self) {
        let deadline = Instant::now() + self.config.server.shutdown_timeout;
        self.flush(Some(deadline));
        // The final drops are read: let the sockets go, so that datagrams arriving while
        // the backends finish are refused rather than queued and never read.
        self.kernel_drops.clear();
        // Every backend learns the deadline and that its queue is closed before the flusher
        // waits for any of them, so a slow one does not eat the others' time.
        let closing: Vec<_> = std::mem::take(&mut self.backends)
            .into_iter()
            .map(|(_, backend)| backend.start_close(deadline))
            .collect();
        for backend in closing {
            backend.wait(deadline);
        }
        if let Some(alerter) = self.alerter.take() {
            alerter.close(deadline);
        }
    }

    /// Collects one snapshot from every shard and sends the record to every backend. The
    /// final flush (`last` = the shutdown deadline) waits for room in a full backend queue
    /// until the deadline instead of skipping the record.
    fn flush(&mut self, last: Option<Instant>) {
        let started = Instant::now();
        if let Some(collectors) = self.collectors.as_mut() {
            // Ordinary gauge samples, folded in before the interval ends.
            collectors.feed(&self.shards);
        }
        let snapshots = self.collect();
        let mut record = self.build(snapshots);
        if let Some(alerter) = self.alerter.as_mut() {
            alerter.evaluate(&mut record);
        }
        record.internal = self.telemetry.take_interval();
        record.internal.dropped_datagrams =
            self.kernel_drops.iter_mut().map(KernelDrops::take).sum();
        let (rss_bytes, cpu_seconds) = procfs::own_usage();
        record.internal.rss_bytes = rss_bytes;
        record.internal.cpu_seconds = cpu_seconds;
        record.internal.uptime_s = self.started.elapsed().as_secs_f64();
        record.internal.flush_duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let record = Arc::new(record);
        for (_, backend) in &self.backends {
            match last {
                None => backend.send(record.clone(), &self.telemetry),
                Some(deadline) => backend.send_final(record.clone(), deadline),
            }
        }
    }

    /// Ends the interval: moves the local tables' shares into the shards, then takes each
    /// shard's snapshot. Each local table is held, with every shard, only while it is
    /// drained; its receive thread meanwhile sends its lines to the shards' batches.
    fn collect(&mut self) -> Vec<ShardSnapshot> {
        for local in &self.locals {
            // The same order as a receive thread's: its table, then a shard.
            let mut local = local.lock_first();
            let mut shards: Vec<_> = self.shards.iter().map(ShardHandle::lock_first).collect();
            local.drain(&mut shards);
        }
        self.telemetry.clear_local_series();
        let pending = self.pending.take();
        self.shards
            .iter()
            .map(|shard| shard.snapshot_reconfigure(pending.as_ref()))
            .collect()
    }

    /// Applies a reload: backends added and removed (a removed one drains its queue on a
    /// thread of its own, until the shutdown timeout), new alert rules, and the shards'
    /// new bins from the next snapshot.
    fn reload(&mut self, reload: Reload) {
        let deadline = Instant::now() + self.config.server.shutdown_timeout;
        for gone in &reload.remove {
            let at = self
                .backends
                .iter()
                .position(|(config, _)| config.as_ref() == Some(gone));
            if let Some(at) = at {
                let (_, backend) = self.backends.remove(at);
                let closing = backend.start_close(deadline);
                let _ = std::thread::Builder::new()
                    .name("tallyd-backend-close".into())
                    .spawn(move || closing.wait(deadline));
            }
        }
        self.backends.extend(
            reload
                .add
                .into_iter()
                .map(|(config, handle)| (Some(config), handle)),
        );
        if let Some(alerter) = reload.alerter
            && let Some(old) = self.alerter.replace(alerter)
        {
            let _ = std::thread::Builder::new()
                .name("tallyd-alerts-close".into())
                .spawn(move || old.close(deadline));
        }
        // Forwarding may have been switched on or off: the figures keep values, or not.
        self.distribution = Arc::new(reload.aggregation.distribution.clone());
        self.pending = Some(reload.aggregation);
    }

    fn build(&self, snapshots: Vec<ShardSnapshot>) -> Record {
        let interval_s = self.config.aggregation.flush_interval.as_secs_f64();
        let total: usize = snapshots.iter().map(|s| s.metrics.len()).sum();
        let mut metrics: Vec<Metric> = Vec::new();
        let mut events = Vec::new();
        let mut members = Vec::new();
        for snapshot in snapshots {
            events.extend(snapshot.events);
            members.extend(snapshot.members);
            let figures = snapshot
                .metrics
                .into_iter()
                .map(|raw| self.figures(raw, interval_s));
            if metrics.capacity() == 0 {
                // Collected in place: the snapshot's vector becomes the record's, so a
                // million series do not need both at once.
                metrics = figures.collect();
                metrics.reserve(total - metrics.len());
            } else {
                metrics.extend(figures);
            }
        }
        metrics.sort_unstable_by(|a, b| a.key.record_order(&b.key));
        members.sort_unstable_by(|a: &(SeriesKey, String), b| a.0.record_order(&b.0));
        Record {
            timestamp: unix_seconds(),
            interval_ms: self.config.aggregation.flush_interval.as_millis() as u64,
            host: self.config.host.clone(),
            metrics,
            events,
            alerts: Vec::new(),
            firing: Vec::new(),
            internal: Default::default(),
            members,
            distribution: self.distribution.clone(),
        }
    }

    fn figures(&self, raw: RawMetric, interval_s: f64) -> Metric {
        let figures = match raw.data {
            RawData::Counter { sum, active } => Figures::Counter { count: sum, active },
            RawData::Gauge { value, active } => Figures::Gauge { value, active },
            RawData::Set { count, active } => Figures::Set {
                count: count as f64,
                active,
            },
            RawData::Dist(dist) => {
                let (snapshot, bins, observe) = *dist;
                Figures::Dist {
                    figures: Box::new(snapshot.figures(
                        &self.distribution,
                        bins,
                        observe.as_ref(),
                        interval_s,
                    )),
                    active: true,
                }
            }
            RawData::DistIdle(observe) => Figures::Dist {
                figures: Box::new(DistFigures::idle_observed(observe.as_ref())),
                active: false,
            },
        };
        Metric {
            key: raw.key,
            figures,
        }
    }
}

/// The record one flush makes of `datagram` (StatsD lines), built through the real path:
/// a router folds the lines into fresh shards, and the flusher's own code turns their
/// snapshots into figures. For the tests and benches of the outputs.
#[doc(hidden)]
pub fn record_from_datagram(config: &Config, datagram: &str) -> Record {
    use crate::aggregate::{KeyEncoder, new_shards};
    let aggregation = Arc::new(config.aggregation.clone());
    let telemetry = Arc::new(Telemetry::default());
    let shards = new_shards(&aggregation, &telemetry);
    let encoder = KeyEncoder::new(aggregation.global_tags.clone().into());
    let mut router = crate::server::Router::new(encoder, shards.clone(), telemetry.clone());
    router.handle_packet(datagram.as_bytes());
    router.flush();
    let notifiers = crate::alert::notifier::Notifiers::start(
        &[],
        &crate::http::HttpClient::new(),
        telemetry.clone(),
    )
    .unwrap_or_else(|e| panic!("no notifier thread to start: {e}"));
    let alerter = Alerter::new(Vec::new(), 1, notifiers);
    let mut flusher = Flusher::new(
        Arc::new(config.clone()),
        shards,
        alerter,
        Vec::new(),
        telemetry,
    );
    let snapshots = flusher.collect();
    flusher.build(snapshots)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
