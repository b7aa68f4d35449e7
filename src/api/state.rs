//! What the API reads: the last flush's [`View`] (record plus Prometheus totals), published
//! by [`ApiFeed`], a backend like any other that runs on its own thread, so building the
//! view never delays a flush; and the event stream that `/api/v1/stream` clients follow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::backend::{Backend, BackendError};
use crate::export::PrometheusConfig;
use crate::export::view::View;
use crate::record::{AlertEvent, Record};
use crate::telemetry::Telemetry;

/// One item of the event stream.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Record(Arc<Record>),
    Alert(Arc<AlertEvent>),
}

/// A reload request: answered with `Ok` or the config error.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// State shared by the API's handlers and its feed.
pub struct ApiState {
    /// `None` before the first flush.
    view: RwLock<Option<Arc<View>>>,
    /// The mapping and timer type the next view is built with (replaced at reload).
    prometheus: RwLock<PrometheusConfig>,
    stream_tx: broadcast::Sender<StreamItem>,
    ready: AtomicBool,
    pub(super) token: Option<String>,
    pub(super) telemetry: Arc<Telemetry>,
    reload_tx: Option<mpsc::Sender<ReloadRequest>>,
    /// Items a stream client may fall behind by before it is disconnected.
    pub(super) stream_queue: usize,
    /// The history store `/api/v1/query` reads (read-only); `None` when history is off.
    pub(super) history: Option<std::path::PathBuf>,
}

impl ApiState {
    /// State for an API with this token and `[prometheus]` section; reloads go to
    /// `reload_tx` when there is a config file to re-read.
    pub fn new(
        token: Option<String>,
        prometheus: PrometheusConfig,
        telemetry: Arc<Telemetry>,
        reload_tx: Option<mpsc::Sender<ReloadRequest>>,
        stream_queue: usize,
    ) -> ApiState {
        let (stream_tx, _) = broadcast::channel(stream_queue.max(1));
        ApiState {
            view: RwLock::new(None),
            prometheus: RwLock::new(prometheus),
            stream_tx,
            ready: AtomicBool::new(false),
            token,
            telemetry,
            reload_tx,
            stream_queue,
            history: None,
        }
    }

    /// Answers `/api/v1/query` from the history store at `path`.
    #[must_use]
    pub fn with_history(mut self, path: Option<std::path::PathBuf>) -> ApiState {
        self.history = path;
        self
    }

    /// The last flush's view, `None` before the first flush.
    pub fn view(&self) -> Option<Arc<View>> {
        self.view.read().ok().and_then(|v| v.clone())
    }

    /// Marks every listener bound: `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Replaces the mapping and timer type at a reload; the next view maps every series
    /// again.
    pub fn set_prometheus(&self, prometheus: PrometheusConfig) {
        if let Ok(mut p) = self.prometheus.write() {
            *p = prometheus;
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<StreamItem> {
        self.stream_tx.subscribe()
    }

    /// Asks the agent to re-read its config file.
    pub(super) async fn reload(&self) -> Result<(), String> {
        let Some(tx) = &self.reload_tx else {
            return Err(
                "the agent runs on built-in defaults: there is no config file to reload".into(),
            );
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(reply_tx)
            .await
            .map_err(|_| "the agent is shutting down".to_string())?;
        reply_rx
            .await
            .unwrap_or_else(|_| Err("the reload was not answered".into()))
    }

    fn publish(&self, record: &Arc<Record>) {
        let prometheus = self
            .prometheus
            .read()
            .map(|p| p.clone())
            .unwrap_or_default();
        let previous = self.view();
        let next = View::build(previous.as_deref(), record.clone(), &prometheus);
        drop(previous);
        self.store(next);
        self.broadcast(record);
    }

    fn store(&self, view: View) {
        if let Ok(mut v) = self.view.write() {
            *v = Some(Arc::new(view));
        }
    }

    fn broadcast(&self, record: &Arc<Record>) {
        // No subscriber is not an error: nobody is listening.
        let _ = self.stream_tx.send(StreamItem::Record(record.clone()));
        for event in &record.alerts {
            let _ = self
                .stream_tx
                .send(StreamItem::Alert(Arc::new(event.clone())));
        }
    }
}

/// The backend that builds and publishes the API's view at every flush.
pub struct ApiFeed {
    state: Arc<ApiState>,
}

impl ApiFeed {
    /// A feed into `state`.
    pub fn new(state: Arc<ApiState>) -> ApiFeed {
        ApiFeed { state }
    }
}

impl Backend for ApiFeed {
    fn name(&self) -> &str {
        "api"
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        self.write_shared(&Arc::new(record.clone()))
    }

    fn write_shared(&mut self, record: &Arc<Record>) -> Result<(), BackendError> {
        self.state.publish(record);
        Ok(())
    }
}
