//! The OTLP/HTTP output (SPEC §7.5): each record as protobuf `ExportMetricsServiceRequest`s
//! (optionally gzipped) POSTed to `url` by the shared sender ([`super::sender`]), retried
//! on 429, 502, 503, 504 and connection errors (honouring `Retry-After`); other answers
//! drop the request, counted and logged.

mod encoder;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use encoder::{Encoder, Temporality};

use super::config::{BackendInvalid, raw, take_queue};
use super::sender::http::{HttpTransport, RetryPolicy};
use super::sender::{Outbox, QueueConfig};
use super::{Backend, BackendError};
use crate::export::PrometheusConfig;
use crate::export::view::View;
use crate::http::{HttpClient, gzip};
use crate::record::Record;
use crate::telemetry::Telemetry;

const NAME: &str = "otlp";

/// The OTLP output's settings.
#[derive(Clone, PartialEq)]
pub struct OtlpConfig {
    /// An http:// or https:// URL, e.g. `http://collector:4318/v1/metrics`.
    pub url: String,
    pub temporality: Temporality,
    pub gzip: bool,
    /// Data points per request at most.
    pub max_points_per_send: usize,
    /// Checked names and values, `${VAR}`s expanded.
    pub headers: Vec<(String, String)>,
    pub queue: QueueConfig,
}

impl fmt::Debug for OtlpConfig {
    /// Header values may be secrets: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("url", &crate::http::display_url(&self.url))
            .field("temporality", &self.temporality)
            .field("gzip", &self.gzip)
            .field("max_points_per_send", &self.max_points_per_send)
            .field("header_names", &header_names)
            .field("queue", &self.queue)
            .finish()
    }
}

/// `kind = "otlp"` as the file spells it, less the queue keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlpConfig {
    url: String,
    #[serde(default)]
    temporality: Temporality,
    #[serde(default)]
    gzip: bool,
    #[serde(default = "default_max_points")]
    max_points_per_send: usize,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

fn default_max_points() -> usize {
    2000
}

/// Validates an otlp entry.
///
/// # Errors
/// What is wrong, at its key.
pub(super) fn validate(mut table: toml::Table) -> Result<OtlpConfig, BackendInvalid> {
    if !table.contains_key("max_pending") {
        // Requests, not records: a million-series flush is hundreds of them.
        table.insert(
            "max_pending".into(),
            toml::Value::Integer(super::remote_write::DEFAULT_MAX_PENDING as i64),
        );
    }
    let queue = take_queue(&mut table)?;
    let raw: RawOtlpConfig = raw(table)?;
    crate::http::check_url(&raw.url).map_err(|e| BackendInvalid::at("url", e))?;
    if raw.max_points_per_send == 0 {
        return Err(BackendInvalid::at(
            "max_points_per_send",
            "max_points_per_send must be at least 1",
        ));
    }
    Ok(OtlpConfig {
        url: raw.url,
        temporality: raw.temporality,
        gzip: raw.gzip,
        max_points_per_send: raw.max_points_per_send,
        headers: super::http::check_headers(raw.headers)?,
        queue,
    })
}

/// Encodes each record into its outbox.
pub struct OtlpBackend {
    outbox: Outbox,
    encoder: Encoder,
    gzip: bool,
    /// Running totals per StatsD series; no mapping applies to OTLP.
    view: Option<View>,
    prometheus: PrometheusConfig,
}

impl OtlpBackend {
    /// Starts the sender for `config`, posting through `client`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        config: &OtlpConfig,
        client: HttpClient,
        telemetry: Arc<Telemetry>,
        shutdown_timeout: Duration,
    ) -> Result<OtlpBackend, BackendError> {
        let transport = HttpTransport {
            client,
            url: config.url.clone(),
            headers: config.headers.clone(),
            fixed: Vec::new(),
            content_type: "application/x-protobuf",
            content_encoding: config.gzip.then_some("gzip"),
            policy: RetryPolicy::Otlp,
        };
        let outbox = Outbox::spawn(NAME, transport, &config.queue, telemetry, shutdown_timeout)?;
        Ok(OtlpBackend {
            outbox,
            encoder: Encoder::new(config.temporality, config.max_points_per_send),
            gzip: config.gzip,
            view: None,
            prometheus: PrometheusConfig::default(),
        })
    }
}

impl Backend for OtlpBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        self.write_shared(&Arc::new(record.clone()))
    }

    fn write_shared(&mut self, record: &Arc<Record>) -> Result<(), BackendError> {
        let view = View::build(self.view.as_ref(), record.clone(), &self.prometheus);
        let mut bodies = Vec::new();
        self.encoder.encode(&view, &mut |body| bodies.push(body));
        self.view = Some(view);
        for body in bodies {
            let body = if self.gzip {
                gzip(&body).map_err(|source| BackendError::Io {
                    backend: NAME,
                    source,
                })?
            } else {
                body
            };
            self.outbox.push(body);
        }
        Ok(())
    }

    fn close(&mut self, deadline: Instant) -> Result<(), BackendError> {
        self.outbox.close(deadline)
    }
}

#[cfg(test)]
mod tests;
