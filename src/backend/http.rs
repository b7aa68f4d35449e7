//! The HTTP push backend: POSTs each record as JSON (optionally gzipped) to one URL.
//!
//! `write` only serializes the record and hands it to the shared sender
//! ([`super::sender::Outbox`]): a thread of its own posts it through the agent's
//! [`HttpClient`], so a slow or dead endpoint never delays the backend thread, the flush or
//! the other backends. Every failed attempt is retried, in order, with backoff; the queue
//! is bounded by count and bytes and drops its oldest when full.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::config::{BackendInvalid, raw, take_queue};
use super::sender::http::{HttpTransport, RetryPolicy};
use super::sender::{Outbox, QueueConfig};
use super::{Backend, BackendError};
use crate::http::{HttpClient, gzip};
use crate::record::Record;
use crate::telemetry::Telemetry;

const NAME: &str = "http";

/// The HTTP push backend's settings.
#[derive(Clone, PartialEq)]
pub struct HttpConfig {
    /// An http:// or https:// URL.
    pub url: String,
    pub gzip: bool,
    /// Checked names and values, `${VAR}`s expanded.
    pub headers: Vec<(String, String)>,
    /// Timeout, queue bounds and retry delays.
    pub queue: QueueConfig,
}

impl fmt::Debug for HttpConfig {
    /// Header values may be secrets: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpConfig")
            .field("url", &crate::http::display_url(&self.url))
            .field("gzip", &self.gzip)
            .field("header_names", &header_names)
            .field("queue", &self.queue)
            .finish()
    }
}

/// `kind = "http"` as the file spells it, less the queue keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpConfig {
    url: String,
    #[serde(default)]
    gzip: bool,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// Validates an http entry.
///
/// # Errors
/// What is wrong, at its key.
pub(super) fn validate(mut table: toml::Table) -> Result<HttpConfig, BackendInvalid> {
    let queue = take_queue(&mut table)?;
    let RawHttpConfig { url, gzip, headers } = raw(table)?;
    crate::http::check_url(&url).map_err(|e| BackendInvalid::at("url", e))?;
    Ok(HttpConfig {
        url,
        gzip,
        headers: check_headers(headers)?,
        queue,
    })
}

/// Expands `${VAR}`s in header values and checks every header.
///
/// # Errors
/// An unset variable or a bad header, at the header's value.
pub fn check_headers(
    headers: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, BackendInvalid> {
    let mut checked = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let at_header = |e| BackendInvalid::at_sub("headers", &name, e);
        let value = crate::config::expand_env(&value).map_err(at_header)?;
        crate::http::check_header(&name, &value).map_err(at_header)?;
        checked.push((name, value));
    }
    Ok(checked)
}

/// Serializes records into its outbox.
pub struct HttpBackend {
    outbox: Outbox,
    gzip: bool,
}

impl HttpBackend {
    /// Starts the sender for `config`, posting through `client`. `shutdown_timeout` sizes
    /// the reserve `close` keeps before the shutdown deadline.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        config: &HttpConfig,
        client: HttpClient,
        telemetry: Arc<Telemetry>,
        shutdown_timeout: Duration,
    ) -> Result<HttpBackend, BackendError> {
        let transport = HttpTransport {
            client,
            url: config.url.clone(),
            headers: config.headers.clone(),
            fixed: Vec::new(),
            content_type: "application/json",
            content_encoding: config.gzip.then_some("gzip"),
            policy: RetryPolicy::Always,
        };
        let outbox = Outbox::spawn(NAME, transport, &config.queue, telemetry, shutdown_timeout)?;
        Ok(HttpBackend {
            outbox,
            gzip: config.gzip,
        })
    }

    fn encode(&self, record: &Record) -> std::io::Result<Vec<u8>> {
        let json = serde_json::to_vec(record)?;
        if self.gzip { gzip(&json) } else { Ok(json) }
    }
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
        self.outbox.push(body);
        Ok(())
    }

    fn close(&mut self, deadline: Instant) -> Result<(), BackendError> {
        self.outbox.close(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        backend.outbox.push(b"{}".to_vec());
        backend.outbox.push(b"[]".to_vec());
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
