//! The HTTP API (SPEC §8): `/metrics`, health and readiness, the last record, the alerts
//! firing now, the event stream and reload. Served by axum on the agent's tokio runtime
//! (axum: the most used Rust HTTP framework on hyper, small handlers over shared state,
//! graceful shutdown built in). Handlers read the last flush's [`state::ApiState`] view and
//! never reach into the shards.
//!
//! Bounds: a request head (line and headers) may take 64 KiB and must arrive within 10 s;
//! at most [`MAX_CONNECTIONS`] connections are served at once, more are closed on accept.

mod handlers;
pub mod state;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use state::{ApiFeed, ApiState, ReloadRequest};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// The longest a request head may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The `[api]` section as the file spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApiConfig {
    /// `host:port`; `""` turns the API off.
    pub listen: toml::Spanned<String>,
    /// A bearer token every path but the health checks then needs; `${VAR}` expands.
    pub token: Option<toml::Spanned<String>>,
    /// Items (records, alert events) a stream client may fall behind by before it is
    /// disconnected.
    pub stream_queue: toml::Spanned<usize>,
}

impl Default for RawApiConfig {
    fn default() -> RawApiConfig {
        RawApiConfig {
            listen: toml::Spanned::new(0..0, "127.0.0.1:9102".to_string()),
            token: None,
            stream_queue: toml::Spanned::new(0..0, 16),
        }
    }
}

/// The validated `[api]` section.
#[derive(Clone, PartialEq)]
pub struct ApiConfig {
    /// `None`: the API is off.
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
    pub stream_queue: usize,
}

impl std::fmt::Debug for ApiConfig {
    /// The token is a secret: only whether there is one is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("stream_queue", &self.stream_queue)
            .finish()
    }
}

impl RawApiConfig {
    /// Checks the address and expands the token.
    ///
    /// # Errors
    /// The span of the value at fault and what is wrong.
    pub fn validate(self) -> Result<ApiConfig, (std::ops::Range<usize>, String)> {
        let listen = match self.listen.get_ref().trim() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|e| {
                (
                    self.listen.span(),
                    format!(
                        "api listen {text:?}: {e} (use host:port, or \"\" to turn the API off)"
                    ),
                )
            })?),
        };
        let token = match self.token {
            None => None,
            Some(token) => {
                let expanded =
                    crate::config::expand_env(token.get_ref()).map_err(|e| (token.span(), e))?;
                if expanded.is_empty() || expanded.chars().any(|c| c.is_control() || c == ' ') {
                    return Err((
                        token.span(),
                        "api token must be non-empty, without spaces or control characters".into(),
                    ));
                }
                Some(expanded)
            }
        };
        let stream_queue = match *self.stream_queue.get_ref() {
            n @ 1..=10_000 => n,
            _ => {
                return Err((
                    self.stream_queue.span(),
                    "stream_queue must be from 1 to 10000".into(),
                ));
            }
        };
        Ok(ApiConfig {
            listen,
            token,
            stream_queue,
        })
    }
}

/// Serves the API on `listener` until `stop` turns true; returns once every connection
/// has been told to finish.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, mut stop: watch::Receiver<bool>) {
    let router = handlers::router(state);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let (closing_tx, closing_rx) = watch::channel(false);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let (socket, _) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: wait a little, don't spin.
                tracing::warn!(%error, "api: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("api: too many connections; closing a new one");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            let connection = builder.serve_connection(TokioIo::new(socket), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}
