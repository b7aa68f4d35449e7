//! The Prometheus remote write output (SPEC §7.2): each flush's exported series (names,
//! labels, merging and running totals from [`crate::export`], as `/metrics` has them) as
//! snappy-compressed protobuf `WriteRequest`s of at most `max_samples_per_send` samples,
//! POSTed in order by the shared sender ([`super::sender`]): 5xx and connection errors
//! retried, 429 only with `retry_on_429`, any other 4xx dropped, counted and logged.

mod encoder;
pub mod proto;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use encoder::{Encoder, STALE_NAN};

use super::config::{BackendInvalid, raw, take_queue};
use super::sender::http::{HttpTransport, RetryPolicy};
use super::sender::{Outbox, QueueConfig};
use super::{Backend, BackendError};
use crate::export::SharedPrometheus;
use crate::export::view::View;
use crate::http::HttpClient;
use crate::record::Record;
use crate::telemetry::Telemetry;

const NAME: &str = "remote_write";

/// Payloads (requests) a remote_write queue holds by default: a million-series flush is
/// thousands of requests, so the byte budget (`max_pending_bytes`) is the bound that
/// matters, not the count.
pub const DEFAULT_MAX_PENDING: usize = 100_000;

/// The remote_write output's settings.
#[derive(Clone, PartialEq)]
pub struct RemoteWriteConfig {
    /// An http:// or https:// URL (`http://vm:8428/api/v1/write`).
    pub url: String,
    /// Samples per request at most.
    pub max_samples_per_send: usize,
    /// Retry 429 answers (honouring `Retry-After`) instead of dropping the request.
    pub retry_on_429: bool,
    /// Checked names and values, `${VAR}`s expanded.
    pub headers: Vec<(String, String)>,
    pub queue: QueueConfig,
}

impl fmt::Debug for RemoteWriteConfig {
    /// Header values may be secrets: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RemoteWriteConfig")
            .field("url", &crate::http::display_url(&self.url))
            .field("max_samples_per_send", &self.max_samples_per_send)
            .field("retry_on_429", &self.retry_on_429)
            .field("header_names", &header_names)
            .field("queue", &self.queue)
            .finish()
    }
}

/// `kind = "remote_write"` as the file spells it, less the queue keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteWriteConfig {
    url: String,
    #[serde(default = "default_max_samples")]
    max_samples_per_send: usize,
    #[serde(default)]
    retry_on_429: bool,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

fn default_max_samples() -> usize {
    2000
}

/// Validates a remote_write entry.
///
/// # Errors
/// What is wrong, at its key.
pub(super) fn validate(mut table: toml::Table) -> Result<RemoteWriteConfig, BackendInvalid> {
    if !table.contains_key("max_pending") {
        table.insert(
            "max_pending".into(),
            toml::Value::Integer(DEFAULT_MAX_PENDING as i64),
        );
    }
    let queue = take_queue(&mut table)?;
    let raw: RawRemoteWriteConfig = raw(table)?;
    crate::http::check_url(&raw.url).map_err(|e| BackendInvalid::at("url", e))?;
    if raw.max_samples_per_send == 0 {
        return Err(BackendInvalid::at(
            "max_samples_per_send",
            "max_samples_per_send must be at least 1",
        ));
    }
    Ok(RemoteWriteConfig {
        url: raw.url,
        max_samples_per_send: raw.max_samples_per_send,
        retry_on_429: raw.retry_on_429,
        headers: super::http::check_headers(raw.headers)?,
        queue,
    })
}

/// Encodes each record's view into its outbox.
pub struct RemoteWriteBackend {
    outbox: Outbox,
    encoder: Encoder,
    /// Read at each flush: a reload may change the mapping.
    prometheus: SharedPrometheus,
    /// The view of the last record: running totals, and the series to mark stale.
    view: Option<View>,
    /// The last timestamp written: a flush in the same second as the one before (the
    /// final one, at shutdown) is written a millisecond later, never at the same time
    /// with another value (which Prometheus rejects as a duplicate).
    last_ms: i64,
}

impl RemoteWriteBackend {
    /// Starts the sender for `config`, posting through `client`; names and labels come
    /// from `prometheus` as it is at each flush.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        config: &RemoteWriteConfig,
        prometheus: SharedPrometheus,
        client: HttpClient,
        telemetry: Arc<Telemetry>,
        shutdown_timeout: Duration,
    ) -> Result<RemoteWriteBackend, BackendError> {
        let transport = HttpTransport {
            client,
            url: config.url.clone(),
            headers: config.headers.clone(),
            fixed: vec![("X-Prometheus-Remote-Write-Version", "0.1.0")],
            content_type: "application/x-protobuf",
            content_encoding: Some("snappy"),
            policy: RetryPolicy::ServerErrors {
                retry_429: config.retry_on_429,
            },
        };
        let outbox = Outbox::spawn(NAME, transport, &config.queue, telemetry, shutdown_timeout)?;
        Ok(RemoteWriteBackend {
            outbox,
            encoder: Encoder::new(config.max_samples_per_send),
            prometheus,
            view: None,
            last_ms: i64::MIN,
        })
    }
}

impl Backend for RemoteWriteBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        self.write_shared(&Arc::new(record.clone()))
    }

    fn write_shared(&mut self, record: &Arc<Record>) -> Result<(), BackendError> {
        let prometheus = self
            .prometheus
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let view = View::build(self.view.as_ref(), record.clone(), &prometheus);
        let ms = i64::try_from(record.timestamp.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ms = ms.max(self.last_ms.saturating_add(1));
        self.last_ms = ms;
        let outbox = &mut self.outbox;
        self.encoder
            .encode(&view, self.view.as_ref(), &record.host, ms, &mut |body| {
                outbox.push(body)
            });
        self.view = Some(view);
        Ok(())
    }

    fn close(&mut self, deadline: Instant) -> Result<(), BackendError> {
        self.outbox.close(deadline)
    }
}

#[cfg(test)]
mod tests;
