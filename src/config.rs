//! The configuration: raw serde structs as the TOML file spells them, then one validation
//! pass into [`Config`], the types the rest of the agent uses. Nothing downstream
//! re-validates. Errors name the file, the line and column, and what is wrong. `TALLYD_*`
//! environment variables override keys of the file ([`env`]); their errors name the variable.

mod env;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::aggregate::distribution::{Bins, DistributionConfig, Observe, Percentile};
use crate::alert::rule::{AlertRule, Op, Severity, Target, is_known_stat};
use crate::api::{ApiConfig, RawApiConfig};
use crate::collector::{CollectorsConfig, RawCollectorsConfig};
use crate::export::{ExportPlan, PrometheusConfig, RawPrometheusConfig};
use crate::glob::Glob;
use crate::history::{HistoryConfig, RawHistoryConfig};
use crate::protocol::MetricKind;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A `TALLYD_*` override that names no key, or whose value does not fit its key.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `host` of every flush record.
    pub host: String,
    pub server: ServerConfig,
    pub aggregation: AggregationConfig,
    pub backends: Vec<BackendConfig>,
    /// Alert rules, evaluated at every flush.
    pub alerts: Vec<AlertRule>,
    /// Webhook notifiers that alert rules name in `notify`.
    pub notifiers: Vec<NotifierConfig>,
    /// The HTTP API (`[api]`).
    pub api: ApiConfig,
    /// Prometheus names, mapping and timer type (`[prometheus]`).
    pub prometheus: PrometheusConfig,
    /// The history store (`[history]`); `None` when off.
    pub history: Option<HistoryConfig>,
    /// Host and process figures (`[collectors]`).
    pub collectors: CollectorsConfig,
}

/// A webhook notifier: each alert event is POSTed to `url`.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifierConfig {
    pub name: String,
    pub url: String,
    /// With `${VAR}` already expanded.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub format: WebhookFormat,
    /// Further attempts after a failed POST.
    pub retries: u32,
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The alert event object of the record's `alerts`.
    #[default]
    Json,
    /// `{"text": "..."}`, which Slack incoming webhooks (and Mattermost, Rocket.Chat) accept.
    Slack,
}

/// Listeners and the receive path.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub unix: Vec<PathBuf>,
    pub udp_sockets_per_address: usize,
    pub udp_recv_buffer_bytes: usize,
    pub udp_batch: usize,
    /// The longest a UDP listener waits between light receives, to gather datagrams.
    pub udp_coalesce: Duration,
    pub max_datagram_bytes: usize,
    pub tcp_max_line_bytes: usize,
    /// Receive threads per UDP socket; 0 picks one per shard, and at least two when the
    /// agent may run on two cores, with a single socket per address, else one (see
    /// [`ServerConfig::udp_threads`]).
    pub udp_threads_per_socket: usize,
    /// The permission bits of the Unix socket files (0o722: anyone may send).
    pub unix_mode: u32,
    pub shutdown_timeout: Duration,
}

impl ServerConfig {
    /// The receive threads each UDP socket gets when there are `shards` shards and the agent
    /// may run on `cores` cores.
    pub fn udp_threads(&self, shards: usize, cores: usize) -> usize {
        match self.udp_threads_per_socket {
            0 if self.udp_sockets_per_address > 1 => 1,
            0 => shards.max(cores.min(2)).max(1),
            n => n,
        }
    }
}

/// Shards and the arithmetic.
#[derive(Debug, Clone)]
pub struct AggregationConfig {
    pub flush_interval: Duration,
    pub shards: usize,
    pub distribution: DistributionConfig,
    pub gauge_deltas: bool,
    pub series_ttl: Duration,
    pub max_series: usize,
    /// Distinct members a set series counts exactly in one interval; beyond, its count is
    /// a HyperLogLog estimate.
    pub exact_set_members: usize,
    /// Sorted by key, keys unique.
    pub global_tags: Vec<(String, String)>,
    pub histograms: Vec<HistogramRule>,
    /// What Prometheus-style outputs need observed per series; `None` when none is on.
    pub export: Option<Arc<crate::export::ExportPlan>>,
}

impl AggregationConfig {
    /// What the export plan observes for a new series (`None` without a plan or for
    /// counters, gauges and sets).
    pub fn observe_for(&self, name: &str, kind: MetricKind) -> Option<Arc<Observe>> {
        let plan = self.export.as_ref()?;
        plan.observe_for(name, kind, self.bins_for(name).map(|b| &**b))
    }

    /// The bins of the first histogram rule whose pattern matches `name`.
    pub fn bins_for(&self, name: &str) -> Option<&Arc<Bins>> {
        self.histograms
            .iter()
            .find(|rule| rule.metric.matches(name))
            .map(|rule| &rule.bins)
    }
}

/// Histogram bins for the timers, histograms and distributions whose name matches.
#[derive(Debug, Clone)]
pub struct HistogramRule {
    pub metric: Glob,
    pub bins: Arc<Bins>,
}

/// One configured backend.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    Console { json: bool },
    JsonFile(JsonFileConfig),
    Http(HttpConfig),
}

impl BackendConfig {
    /// The name used in logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Console { .. } => "console",
            BackendConfig::JsonFile(_) => "json_file",
            BackendConfig::Http(_) => "http",
        }
    }
}

/// The JSON Lines file backend.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonFileConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: usize,
}

/// The HTTP push backend.
#[derive(Clone, PartialEq)]
pub struct HttpConfig {
    /// An http:// or https:// URL.
    pub url: String,
    /// For one whole request, connection to answer.
    pub timeout: Duration,
    /// Records waiting at most; beyond, the oldest is dropped. At least 1.
    pub max_pending: usize,
    /// Bytes of serialized (and gzipped) records waiting at most; beyond, the oldest are
    /// dropped, except that the newest is kept even alone over the budget. At least 1.
    pub max_pending_bytes: u64,
    pub gzip: bool,
    /// Checked names and values, `${VAR}`s expanded.
    pub headers: Vec<(String, String)>,
    /// The first retry delay, doubled per failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl fmt::Debug for HttpConfig {
    /// Header values may be secrets: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpConfig")
            .field("url", &crate::http::display_url(&self.url))
            .field("timeout", &self.timeout)
            .field("max_pending", &self.max_pending)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .field("gzip", &self.gzip)
            .field("header_names", &header_names)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .finish()
    }
}

impl Default for Config {
    /// The built-in defaults: UDP 127.0.0.1:8125, 10 s flush, console backend.
    fn default() -> Config {
        let raw: RawConfig = toml::from_str("").unwrap_or_else(|e| unreachable!("{e}"));
        raw.validate(None)
            .unwrap_or_else(|e| unreachable!("defaults are valid: {}", e.message))
    }
}

impl Config {
    /// Reads and validates a TOML file, with the process's `TALLYD_*` environment
    /// overrides applied (see [`Config::from_toml_with_env`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, and for content errors the line and column; or
    /// naming the environment variable at fault.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_with_env(&text, path, env::process_env()?)
    }

    /// The built-in defaults with the process's `TALLYD_*` environment overrides applied:
    /// the configuration when no file is given.
    ///
    /// # Errors
    /// [`ConfigError::Env`] naming the variable at fault.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_toml_with_env("", Path::new("(built-in defaults)"), env::process_env()?)
    }

    /// Validates TOML text, with no environment overrides; `path` is used in error messages
    /// only.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with the line and column of the problem.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, path, std::iter::empty())
    }

    /// Validates TOML text with the `TALLYD_*` variables among `env` overriding its keys;
    /// other variables are ignored. `TALLYD_<SECTION>_<KEY>` sets `<key>` of `[<section>]`
    /// and `TALLYD_<KEY>` a top-level key (the name after `TALLYD_` lowercased); the value is
    /// read as a TOML value, or as a string when it is not one. Keys inside tables and arrays
    /// of tables (`[[backends]]`, `global_tags` entries) cannot be named. See [`env`].
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with the line and column of a problem in the text;
    /// [`ConfigError::Env`] for a `TALLYD_*` variable that names no key, or whose value
    /// has the wrong type or fails validation.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let in_file = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let root = toml::de::DeTable::parse(text)
            .map_err(|e| in_file(e.span(), e.message().to_string()))?;
        let overrides = env::Overrides::new(env, env::field_names::<RawConfig>(), text.len())?;
        // An error's span is in the file's text, or in the region of the variable at fault.
        let locate = |span: Option<std::ops::Range<usize>>, message: String| {
            let var = span.as_ref().and_then(|s| overrides.var_at(s.start));
            match var {
                Some(var) => ConfigError::Env {
                    var: var.to_string(),
                    message,
                },
                None => in_file(span, message),
            }
        };
        let (raw, document): (RawConfig, _) = overrides.deserialize(root, locate)?;
        raw.validate(path.parent()).map_err(|e| {
            let span = e.span.or_else(|| key_span(document.get_ref(), &e.key));
            locate(span, e.message)
        })
    }
}

/// The span of the value at a key path (`backends`, 1, `url`) in the document, or of the
/// deepest table on it that the document has, for values that serde reads without spans
/// (those inside the internally tagged `[[backends]]`).
fn key_span(root: &toml::de::DeTable<'_>, path: &[Key]) -> Option<std::ops::Range<usize>> {
    let root = toml::de::DeValue::Table(root.clone());
    let mut value = &root;
    let mut span = None;
    for key in path {
        // A key the file leaves out (a default at fault): point at its table.
        let Some(next) = (match key {
            Key::Name(name) => value.get(name.as_str()),
            Key::Index(i) => value.get(*i),
        }) else {
            break;
        };
        span = Some(next.span());
        value = next.get_ref();
    }
    span
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A validation error with the span of the value at fault, or its key path.
struct Invalid {
    span: Option<std::ops::Range<usize>>,
    key: Vec<Key>,
    message: String,
}

/// One step of a key path.
enum Key {
    Name(String),
    Index(usize),
}

impl Invalid {
    fn at<T>(value: &toml::Spanned<T>, message: impl fmt::Display) -> Invalid {
        Invalid {
            span: Some(value.span()),
            key: Vec::new(),
            message: message.to_string(),
        }
    }

    /// At the value of backend `index`'s `key` (and below it, `sub`).
    fn at_backend(
        index: usize,
        key: &str,
        sub: Option<&str>,
        message: impl fmt::Display,
    ) -> Invalid {
        let mut path = vec![
            Key::Name("backends".into()),
            Key::Index(index),
            Key::Name(key.into()),
        ];
        path.extend(sub.map(|s| Key::Name(s.into())));
        Invalid {
            span: None,
            key: path,
            message: message.to_string(),
        }
    }
}

// ---- raw structs: the file as written -------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The record's `host`; the machine's hostname when absent.
    host: Option<String>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    aggregation: RawAggregation,
    /// Defaults to one console backend when absent.
    backends: Option<Vec<RawBackend>>,
    #[serde(default)]
    alerts: Vec<RawAlert>,
    #[serde(default)]
    notifiers: Vec<RawNotifier>,
    #[serde(default)]
    api: RawApiConfig,
    #[serde(default)]
    prometheus: RawPrometheusConfig,
    #[serde(default)]
    history: RawHistoryConfig,
    #[serde(default)]
    collectors: RawCollectorsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    name: toml::Spanned<String>,
    metric: toml::Spanned<String>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    stat: Option<toml::Spanned<String>>,
    op: Op,
    threshold: Option<f64>,
    #[serde(rename = "for", default = "one")]
    for_flushes: toml::Spanned<u32>,
    #[serde(default = "default_severity")]
    severity: Severity,
    #[serde(default)]
    notify: Vec<toml::Spanned<String>>,
    repeat_interval_ms: Option<u64>,
}

fn one() -> toml::Spanned<u32> {
    toml::Spanned::new(0..0, 1)
}

fn default_severity() -> Severity {
    Severity::Warning
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifier {
    name: toml::Spanned<String>,
    kind: NotifierKind,
    url: toml::Spanned<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, toml::Spanned<String>>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: toml::Spanned<u64>,
    #[serde(default)]
    format: WebhookFormat,
    #[serde(default = "default_retries")]
    retries: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum NotifierKind {
    Webhook,
}

fn default_timeout_ms() -> toml::Spanned<u64> {
    toml::Spanned::new(0..0, 5000)
}

fn default_retries() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    udp: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    unix: Vec<PathBuf>,
    udp_sockets_per_address: toml::Spanned<usize>,
    udp_recv_buffer_bytes: usize,
    udp_batch: toml::Spanned<usize>,
    udp_coalesce_us: toml::Spanned<u64>,
    max_datagram_bytes: toml::Spanned<usize>,
    tcp_max_line_bytes: toml::Spanned<usize>,
    udp_threads_per_socket: toml::Spanned<usize>,
    unix_mode: toml::Spanned<u32>,
    shutdown_timeout_ms: u64,
}

impl Default for RawServer {
    fn default() -> RawServer {
        RawServer {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 8125))],
            tcp: Vec::new(),
            unix: Vec::new(),
            udp_sockets_per_address: toml::Spanned::new(0..0, 1),
            udp_recv_buffer_bytes: 8 * 1024 * 1024,
            udp_batch: toml::Spanned::new(0..0, 256),
            udp_coalesce_us: toml::Spanned::new(0..0, 5_000),
            max_datagram_bytes: toml::Spanned::new(0..0, 65_535),
            tcp_max_line_bytes: toml::Spanned::new(0..0, 65_536),
            udp_threads_per_socket: toml::Spanned::new(0..0, 0),
            unix_mode: toml::Spanned::new(0..0, 0o722),
            shutdown_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAggregation {
    flush_interval_ms: toml::Spanned<u64>,
    shards: usize,
    percentiles: Vec<toml::Spanned<f64>>,
    exact_samples: toml::Spanned<usize>,
    gauge_deltas: bool,
    series_ttl_ms: u64,
    max_series: toml::Spanned<usize>,
    exact_set_members: toml::Spanned<usize>,
    global_tags: std::collections::BTreeMap<String, toml::Spanned<String>>,
    histograms: Vec<RawHistogram>,
}

impl Default for RawAggregation {
    fn default() -> RawAggregation {
        RawAggregation {
            flush_interval_ms: toml::Spanned::new(0..0, 10_000),
            shards: 0,
            percentiles: [90.0, 95.0, 99.0]
                .into_iter()
                .map(|p| toml::Spanned::new(0..0, p))
                .collect(),
            exact_samples: toml::Spanned::new(0..0, 10_000),
            gauge_deltas: true,
            series_ttl_ms: 300_000,
            max_series: toml::Spanned::new(0..0, 1_000_000),
            exact_set_members: toml::Spanned::new(0..0, 100_000),
            global_tags: Default::default(),
            histograms: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistogram {
    metric: toml::Spanned<String>,
    bins: toml::Spanned<Vec<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawBackend {
    Console {
        #[serde(default)]
        format: ConsoleFormat,
    },
    JsonFile {
        path: PathBuf,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        #[serde(default = "default_keep")]
        keep: usize,
    },
    Http(RawHttp),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: String,
    #[serde(default = "default_http_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_max_pending")]
    max_pending: usize,
    #[serde(default = "default_max_pending_bytes")]
    max_pending_bytes: u64,
    #[serde(default)]
    gzip: bool,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_retry_initial_ms")]
    retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    retry_max_ms: u64,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum ConsoleFormat {
    #[default]
    Text,
    Json,
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_keep() -> usize {
    5
}

fn default_http_timeout_ms() -> u64 {
    5_000
}

fn default_max_pending() -> usize {
    1_000
}

/// 256 MiB: three million-series records as plain JSON (about 80 MB each), many more gzipped.
fn default_max_pending_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_retry_initial_ms() -> u64 {
    500
}

fn default_retry_max_ms() -> u64 {
    30_000
}

// ---- validation: raw -> Config ----------------------------------------------------------------

impl RawConfig {
    /// `base`: the config file's folder, against which relative paths in it resolve.
    fn validate(self, base: Option<&Path>) -> Result<Config, Invalid> {
        let backends = match self.backends {
            None => vec![BackendConfig::Console { json: false }],
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, backend)| backend.validate(i))
                .collect::<Result<_, _>>()?,
        };
        let mut aggregation = self.aggregation.validate()?;
        let spanned = |(span, message): (std::ops::Range<usize>, String)| Invalid {
            span: Some(span),
            key: Vec::new(),
            message,
        };
        let api = self.api.validate().map_err(spanned)?;
        let prometheus = self.prometheus.validate(base).map_err(spanned)?;
        if api.listen.is_some() {
            // `/metrics` needs buckets and mapped quantiles observed at each flush.
            aggregation.export = Some(Arc::new(ExportPlan::new(prometheus.clone())));
        }
        let history = self.history.validate(base).map_err(spanned)?;
        let collectors = self.collectors.validate(base).map_err(spanned)?;
        // The flusher builds each interval's mergeable sketch only for the history store.
        aggregation.distribution.history_sketch = history.is_some();
        let notifiers = validate_notifiers(self.notifiers)?;
        let mut alerts: Vec<AlertRule> = Vec::with_capacity(self.alerts.len());
        for raw in self.alerts {
            if alerts.iter().any(|rule| rule.name == *raw.name.get_ref()) {
                return Err(Invalid::at(
                    &raw.name,
                    format!("alert name {:?} is used twice", raw.name.get_ref()),
                ));
            }
            alerts.push(raw.validate(&aggregation, &notifiers)?);
        }
        Ok(Config {
            host: self.host.unwrap_or_else(hostname),
            server: self.server.validate()?,
            aggregation,
            backends,
            alerts,
            notifiers,
            api,
            prometheus,
            history,
            collectors,
        })
    }
}

fn validate_notifiers(raw: Vec<RawNotifier>) -> Result<Vec<NotifierConfig>, Invalid> {
    let mut notifiers: Vec<NotifierConfig> = Vec::with_capacity(raw.len());
    for notifier in raw {
        let name = notifier.name.get_ref();
        if name.is_empty() || name == "log" || notifiers.iter().any(|n| &n.name == name) {
            return Err(Invalid::at(
                &notifier.name,
                format!("notifier name {name:?} must be non-empty, unique and not \"log\""),
            ));
        }
        let url = notifier.url.get_ref();
        crate::http::check_url(url).map_err(|e| Invalid::at(&notifier.url, e))?;
        if *notifier.timeout_ms.get_ref() == 0 {
            return Err(Invalid::at(
                &notifier.timeout_ms,
                "timeout_ms must be at least 1",
            ));
        }
        let NotifierKind::Webhook = notifier.kind;
        let mut headers = Vec::with_capacity(notifier.headers.len());
        for (key, value) in notifier.headers {
            let expanded = expand_env(value.get_ref()).map_err(|e| Invalid::at(&value, e))?;
            crate::http::check_header(&key, &expanded).map_err(|e| Invalid::at(&value, e))?;
            headers.push((key, expanded));
        }
        notifiers.push(NotifierConfig {
            name: name.clone(),
            url: url.clone(),
            headers,
            timeout: Duration::from_millis(*notifier.timeout_ms.get_ref()),
            format: notifier.format,
            retries: notifier.retries,
        });
    }
    Ok(notifiers)
}

impl RawAlert {
    fn validate(
        self,
        aggregation: &AggregationConfig,
        notifiers: &[NotifierConfig],
    ) -> Result<AlertRule, Invalid> {
        if self.name.get_ref().trim().is_empty() {
            return Err(Invalid::at(&self.name, "alert name must not be empty"));
        }
        let metric = Glob::new(self.metric.get_ref()).map_err(|e| Invalid::at(&self.metric, e))?;
        let stat = match (&self.stat, self.op) {
            (Some(stat), _) => {
                if !is_known_stat(
                    stat.get_ref(),
                    &aggregation.distribution,
                    &aggregation.histograms,
                ) {
                    return Err(Invalid::at(
                        stat,
                        format!(
                            "unknown stat {:?}: use a figure of the record (count, rate, value, mean, upper_99, ...) for the configured percentiles and bins",
                            stat.get_ref()
                        ),
                    ));
                }
                stat.get_ref().clone()
            }
            (None, Op::Absent) => String::new(),
            (None, _) => {
                return Err(Invalid::at(
                    &self.name,
                    "alert needs a `stat` (or op = \"absent\")",
                ));
            }
        };
        let threshold = match (self.threshold, self.op) {
            (Some(t), _) if t.is_finite() => t,
            (None, Op::Absent) => 0.0,
            _ => {
                return Err(Invalid::at(
                    &self.name,
                    "alert needs a finite `threshold` (or op = \"absent\")",
                ));
            }
        };
        if *self.for_flushes.get_ref() == 0 {
            return Err(Invalid::at(&self.for_flushes, "`for` must be at least 1"));
        }
        let mut notify = Vec::with_capacity(self.notify.len());
        for target in &self.notify {
            let name = target.get_ref();
            if name == "log" {
                notify.push(Target::Log);
            } else if let Some(at) = notifiers.iter().position(|n| &n.name == name) {
                notify.push(Target::Webhook(at));
            } else {
                return Err(Invalid::at(
                    target,
                    format!(
                        "unknown notifier {name:?}: use \"log\" or the name of a [[notifiers]] entry"
                    ),
                ));
            }
        }
        Ok(AlertRule {
            name: self.name.into_inner(),
            metric,
            tags: self.tags.into_iter().collect(),
            stat,
            op: self.op,
            threshold,
            for_flushes: self.for_flushes.into_inner(),
            severity: self.severity,
            notify,
            repeat_interval: self
                .repeat_interval_ms
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
        })
    }
}

fn at_most(value: &toml::Spanned<usize>, key: &str, most: usize) -> Result<usize, Invalid> {
    match *value.get_ref() {
        n if n <= most => Ok(n),
        _ => Err(Invalid::at(value, format!("{key} must be at most {most}"))),
    }
}

/// The shards on `cores` cores: half of them, rounded up. A StatsD agent shares its host
/// with the applications that send to it. On the 2-core benchmark machine, with the load
/// generator on the same host, one shard counted 23-24 M packed lines/s flat out and two
/// 18-21 M: the shard state and locks passed between the cores. Receive threads, which
/// keep counters and distributions in tables of their own, scale past the shard count
/// (see [`ServerConfig::udp_threads`]).
fn auto_shards(cores: usize) -> usize {
    cores.div_ceil(2).max(1)
}

fn between(
    value: &toml::Spanned<usize>,
    key: &str,
    least: usize,
    most: usize,
) -> Result<usize, Invalid> {
    match *value.get_ref() {
        n if (least..=most).contains(&n) => Ok(n),
        _ => Err(Invalid::at(
            value,
            format!("{key} must be from {least} to {most}"),
        )),
    }
}

fn at_least_one(value: &toml::Spanned<usize>, key: &str) -> Result<usize, Invalid> {
    match *value.get_ref() {
        0 => Err(Invalid::at(value, format!("{key} must be at least 1"))),
        n => Ok(n),
    }
}

/// The coalescing wait stays well under what a receive buffer can hold at high rates.
fn coalesce(value: &toml::Spanned<u64>) -> Result<Duration, Invalid> {
    match *value.get_ref() {
        us @ 0..=100_000 => Ok(Duration::from_micros(us)),
        _ => Err(Invalid::at(value, "udp_coalesce_us must be at most 100000")),
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, Invalid> {
        Ok(ServerConfig {
            udp_sockets_per_address: at_least_one(
                &self.udp_sockets_per_address,
                "udp_sockets_per_address",
            )?,
            udp_batch: between(&self.udp_batch, "udp_batch", 1, 1024)?,
            udp_coalesce: coalesce(&self.udp_coalesce_us)?,
            max_datagram_bytes: between(&self.max_datagram_bytes, "max_datagram_bytes", 1, 65_535)?,
            tcp_max_line_bytes: at_least_one(&self.tcp_max_line_bytes, "tcp_max_line_bytes")?,
            udp_threads_per_socket: at_most(
                &self.udp_threads_per_socket,
                "udp_threads_per_socket",
                64,
            )?,
            udp: self.udp,
            tcp: self.tcp,
            unix: self.unix,
            udp_recv_buffer_bytes: self.udp_recv_buffer_bytes,
            unix_mode: match *self.unix_mode.get_ref() {
                mode @ 0..=0o777 => mode,
                _ => {
                    return Err(Invalid::at(
                        &self.unix_mode,
                        "unix_mode must be permission bits, at most 0o777",
                    ));
                }
            },
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
        })
    }
}

impl RawAggregation {
    fn validate(self) -> Result<AggregationConfig, Invalid> {
        if *self.flush_interval_ms.get_ref() == 0 {
            return Err(Invalid::at(
                &self.flush_interval_ms,
                "flush_interval_ms must be at least 1",
            ));
        }
        let percentiles = self
            .percentiles
            .iter()
            .map(|p| Percentile::new(*p.get_ref()).map_err(|e| Invalid::at(p, e)))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, p) in self.percentiles.iter().enumerate() {
            if self.percentiles[..i]
                .iter()
                .any(|q| q.get_ref() == p.get_ref())
            {
                return Err(Invalid::at(
                    p,
                    format!("percentile {} is listed twice", p.get_ref()),
                ));
            }
        }
        let mut global_tags = Vec::with_capacity(self.global_tags.len());
        for (key, value) in self.global_tags {
            if key.is_empty() || has_control(&key) || has_control(value.get_ref()) {
                return Err(Invalid::at(
                    &value,
                    format!(
                        "global tag {key:?}: keys must be non-empty, and neither key nor value may hold control characters"
                    ),
                ));
            }
            global_tags.push((key, value.into_inner()));
        }
        let histograms = self
            .histograms
            .into_iter()
            .map(RawHistogram::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let shards = match self.shards {
            0 => auto_shards(std::thread::available_parallelism().map_or(1, |n| n.get())),
            n => n,
        };
        Ok(AggregationConfig {
            flush_interval: Duration::from_millis(*self.flush_interval_ms.get_ref()),
            shards,
            distribution: DistributionConfig {
                percentiles,
                exact_samples: at_least_one(&self.exact_samples, "exact_samples")?,
                history_sketch: false,
            },
            gauge_deltas: self.gauge_deltas,
            series_ttl: Duration::from_millis(self.series_ttl_ms),
            max_series: at_least_one(&self.max_series, "max_series")?,
            exact_set_members: at_least_one(&self.exact_set_members, "exact_set_members")?,
            global_tags,
            histograms,
            export: None,
        })
    }
}

impl RawHistogram {
    fn validate(self) -> Result<HistogramRule, Invalid> {
        let metric = Glob::new(self.metric.get_ref()).map_err(|e| Invalid::at(&self.metric, e))?;
        let bins =
            Bins::new(self.bins.get_ref().clone()).map_err(|e| Invalid::at(&self.bins, e))?;
        Ok(HistogramRule {
            metric,
            bins: Arc::new(bins),
        })
    }
}

impl RawBackend {
    /// `index`: the entry's place in `[[backends]]`, for error positions.
    fn validate(self, index: usize) -> Result<BackendConfig, Invalid> {
        Ok(match self {
            RawBackend::Console { format } => BackendConfig::Console {
                json: format == ConsoleFormat::Json,
            },
            RawBackend::JsonFile {
                path,
                max_bytes,
                keep,
            } => BackendConfig::JsonFile(JsonFileConfig {
                path,
                max_bytes,
                keep,
            }),
            RawBackend::Http(http) => BackendConfig::Http(http.validate(index)?),
        })
    }
}

impl RawHttp {
    /// `index`: the entry's place in `[[backends]]`, for error positions.
    fn validate(self, index: usize) -> Result<HttpConfig, Invalid> {
        let RawHttp {
            url,
            timeout_ms,
            max_pending,
            max_pending_bytes,
            gzip,
            headers,
            retry_initial_ms,
            retry_max_ms,
        } = self;
        let at = |key: &str, message: String| Invalid::at_backend(index, key, None, message);
        crate::http::check_url(&url).map_err(|e| at("url", e))?;
        for (key, value) in [
            ("timeout_ms", timeout_ms),
            ("max_pending", max_pending as u64),
            ("max_pending_bytes", max_pending_bytes),
            ("retry_initial_ms", retry_initial_ms),
        ] {
            if value == 0 {
                return Err(at(key, format!("{key} must be at least 1")));
            }
        }
        if retry_max_ms < retry_initial_ms {
            return Err(at(
                "retry_max_ms",
                "retry_max_ms must be at least retry_initial_ms".into(),
            ));
        }
        let mut checked = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let at_header = |e| Invalid::at_backend(index, "headers", Some(&name), e);
            let value = expand_env(&value).map_err(at_header)?;
            crate::http::check_header(&name, &value).map_err(at_header)?;
            checked.push((name, value));
        }
        Ok(HttpConfig {
            url,
            timeout: Duration::from_millis(timeout_ms),
            max_pending,
            max_pending_bytes,
            gzip,
            headers: checked,
            retry_initial: Duration::from_millis(retry_initial_ms),
            retry_max: Duration::from_millis(retry_max_ms),
        })
    }
}

/// Replaces every `${NAME}` with the environment variable's value (for header values, so
/// tokens stay out of the config file). `$` not followed by `{` is kept as is.
///
/// # Errors
/// An unset variable or an unclosed `${`.
pub fn expand_env(text: &str) -> Result<String, String> {
    expand_with(text, |name| std::env::var(name).ok())
}

fn expand_with(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
        let name = &after[..end];
        let value =
            lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The machine's hostname, or `localhost` when it cannot be read.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length; gethostname NUL-terminates
    // within it or truncates, and we stop at the first NUL or the buffer's end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("t.toml"))
    }

    #[test]
    fn automatic_receive_threads_are_one_per_shard_and_two_from_two_cores() {
        let auto = parse("").expect("valid").server;
        // (shards, cores) -> threads per socket
        let threads: Vec<usize> = [(1, 1), (1, 2), (2, 4), (8, 16), (3, 2)]
            .into_iter()
            .map(|(shards, cores)| auto.udp_threads(shards, cores))
            .collect();
        assert_eq!(threads, [1, 2, 2, 8, 3]);
        let reuse = parse("[server]\nudp_sockets_per_address = 4\n").expect("valid");
        assert_eq!(reuse.server.udp_threads(2, 4), 1, "one per socket");
        let explicit = parse("[server]\nudp_threads_per_socket = 3\n").expect("valid");
        assert_eq!(explicit.server.udp_threads(1, 1), 3);
    }

    #[test]
    fn automatic_shards_take_half_the_cores_rounded_up() {
        let counts: Vec<usize> = [1, 2, 3, 4, 16].into_iter().map(auto_shards).collect();
        assert_eq!(counts, [1, 1, 2, 2, 8]);
        let explicit = parse("[aggregation]\nshards = 3\n").expect("valid");
        assert_eq!(explicit.aggregation.shards, 3);
    }

    #[test]
    fn the_example_config_loads_and_matches_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
        // Not `load`: the test's environment should not override the example.
        let text = std::fs::read_to_string(&path).expect("read the example");
        let mut example = Config::from_toml(&text, &path).expect("config.toml.example is valid");
        let defaults = Config::default();
        // The example turns history on (SPEC §10); the built-in defaults leave it off.
        let history = example
            .history
            .take()
            .expect("the example turns history on");
        assert_eq!(history.path, Path::new("/var/lib/tallyd/history.db"));
        assert_eq!(history.tiers, crate::history::default_tiers());
        assert!(example.aggregation.distribution.history_sketch);
        example.aggregation.distribution.history_sketch = false;
        // And the host collector.
        let host = example
            .collectors
            .host
            .take()
            .expect("the example turns the host on");
        assert_eq!(host.disk_paths, [Path::new("/")]);
        assert_eq!(host.interfaces, None);
        // Every key, through the whole tree: a default changed in one place and not the
        // other shows here.
        assert_eq!(format!("{example:#?}"), format!("{defaults:#?}"));
        assert!(matches!(
            example.backends[..],
            [BackendConfig::Console { json: false }]
        ));
    }

    #[test]
    fn defaults_listen_on_udp_8125_and_flush_every_10_s() {
        let config = Config::default();
        assert_eq!(
            config.server.udp,
            vec![SocketAddr::from(([127, 0, 0, 1], 8125))]
        );
        assert_eq!(config.aggregation.flush_interval, Duration::from_secs(10));
        assert!(matches!(
            config.backends[..],
            [BackendConfig::Console { json: false }]
        ));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_position() {
        let err = parse("[aggregation]\nflush_interval_ms = 1000\nsharts = 2\n").unwrap_err();
        let ConfigError::Invalid {
            line,
            column,
            message,
            ..
        } = err
        else {
            panic!("not a content error");
        };
        assert_eq!((line, column), (3, 1));
        assert!(message.contains("sharts"), "{message}");
    }

    #[test]
    fn invalid_percentile_points_at_the_value() {
        let err = parse("[aggregation]\npercentiles = [90, 101]\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    line: 2,
                    column: 20,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn server_limits_are_errors_not_clamps() {
        for (text, key) in [
            ("[server]\nudp_batch = 4096\n", "udp_batch"),
            ("[server]\nudp_batch = 0\n", "udp_batch"),
            (
                "[server]\nmax_datagram_bytes = 70000\n",
                "max_datagram_bytes",
            ),
            ("[server]\nunix_mode = 0o1777\n", "unix_mode"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(
                matches!(&err, ConfigError::Invalid { line: 2, message, .. } if message.contains(key)),
                "{text}: {err}"
            );
        }
        let config = parse("[server]\nudp_batch = 1024\nunix_mode = 0o760\n").expect("valid");
        assert_eq!(config.server.udp_batch, 1024);
        assert_eq!(config.server.unix_mode, 0o760);
        assert_eq!(Config::default().server.unix_mode, 0o722);
    }

    #[test]
    fn global_tags_are_sorted_and_validated() {
        let config = parse("[aggregation]\nglobal_tags = { zone = \"a\", env = \"prod\" }\n")
            .expect("valid");
        assert_eq!(
            config.aggregation.global_tags,
            vec![
                ("env".to_string(), "prod".to_string()),
                ("zone".to_string(), "a".to_string())
            ]
        );
        assert!(parse("[aggregation]\nglobal_tags = { \"\" = \"x\" }\n").is_err());
    }

    #[test]
    fn histogram_rules_match_the_first_pattern() {
        let config = parse(
            "[[aggregation.histograms]]\nmetric = \"api.*\"\nbins = [1]\n\
             [[aggregation.histograms]]\nmetric = \"*\"\nbins = [2, 3]\n",
        )
        .expect("valid");
        let bins = |name| {
            config
                .aggregation
                .bins_for(name)
                .map(|b| b.bounds().to_vec())
        };
        assert_eq!(bins("api.x"), Some(vec![1.0]));
        assert_eq!(bins("db.x"), Some(vec![2.0, 3.0]));
    }

    #[test]
    fn env_variables_expand_in_place() {
        let lookup = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        assert_eq!(
            expand_with("Bearer ${TOKEN}!", lookup).as_deref(),
            Ok("Bearer s3cret!")
        );
        assert_eq!(expand_with("cost $5", lookup).as_deref(), Ok("cost $5"));
        assert!(
            expand_with("${MISSING}", lookup)
                .unwrap_err()
                .contains("MISSING")
        );
        assert!(expand_with("${TOKEN", lookup).is_err());
    }

    fn error_at(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected a content error, got {other:?}"),
        }
    }

    const RULE: &str = "[[alerts]]\nname = \"r\"\nmetric = \"api.*\"\n";

    #[test]
    fn alert_with_unknown_stat_is_an_error_at_the_stat() {
        let (line, column, message) = error_at(&format!(
            "{RULE}stat = \"p99\"\nop = \">\"\nthreshold = 1\n"
        ));
        assert_eq!((line, column), (4, 8));
        assert!(message.contains("unknown stat \"p99\""), "{message}");
    }

    #[test]
    fn alert_stats_follow_configured_percentiles_and_bins() {
        let text = "[aggregation]\npercentiles = [99.9]\n[[aggregation.histograms]]\nmetric = \"a\"\nbins = [5]\n\
                    [[alerts]]\nname = \"a\"\nmetric = \"x\"\nstat = \"upper_99_9\"\nop = \">\"\nthreshold = 1\n\
                    [[alerts]]\nname = \"b\"\nmetric = \"x\"\nstat = \"bin_5\"\nop = \">\"\nthreshold = 1\n";
        let config = parse(text).expect("valid");
        assert_eq!(config.alerts.len(), 2);
        // Without 90 among the percentiles, upper_90 names no figure.
        let (line, column, _) = error_at(&format!(
            "{RULE}stat = \"upper_90\"\nop = \">\"\nthreshold = 1\n[aggregation]\npercentiles = [99]\n"
        ));
        assert_eq!((line, column), (4, 8));
    }

    #[test]
    fn alert_with_unknown_notifier_or_bad_op_or_empty_glob_is_an_error() {
        let (line, column, message) = error_at(&format!(
            "{RULE}stat = \"count\"\nop = \">\"\nthreshold = 1\nnotify = [\"log\", \"pager\"]\n"
        ));
        assert_eq!((line, column), (7, 18));
        assert!(message.contains("unknown notifier \"pager\""), "{message}");
        let (line, _, message) = error_at(&format!(
            "{RULE}stat = \"count\"\nop = \"=>\"\nthreshold = 1\n"
        ));
        assert_eq!(line, 5);
        assert!(message.contains("unknown variant"), "{message}");
        let (line, column, _) =
            error_at("[[alerts]]\nname = \"r\"\nmetric = \"\"\nop = \"absent\"\n");
        assert_eq!((line, column), (3, 10));
    }

    #[test]
    fn bad_notifier_urls_zero_timeouts_and_empty_alert_names_are_errors() {
        let hook = "[[notifiers]]\nname = \"ops\"\nkind = \"webhook\"\n";
        for (text, line, needle) in [
            (format!("{hook}url = \"http://\"\n"), 4, "url"),
            (format!("{hook}url = \"http://a b/\"\n"), 4, "url"),
            (
                format!("{hook}url = \"http://h/\"\ntimeout_ms = 0\n"),
                5,
                "timeout_ms",
            ),
            (
                "[[alerts]]\nname = \" \"\nmetric = \"m\"\nop = \"absent\"\n".to_string(),
                2,
                "name",
            ),
        ] {
            let (at, _, message) = error_at(&text);
            assert_eq!(at, line, "{text}: {message}");
            assert!(message.contains(needle), "{text}: {message}");
        }
    }

    #[test]
    fn alert_without_threshold_is_an_error_unless_absent() {
        let (line, _, message) = error_at(&format!("{RULE}stat = \"count\"\nop = \">\"\n"));
        assert_eq!(line, 2);
        assert!(message.contains("threshold"), "{message}");
        let config = parse(&format!(
            "{RULE}op = \"absent\"\nfor = 2\nrepeat_interval_ms = 60000\n"
        ))
        .expect("valid");
        assert_eq!(config.alerts[0].for_flushes, 2);
        assert_eq!(
            config.alerts[0].repeat_interval,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn webhook_notifiers_resolve_and_expand_headers() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("TEST_TALLYD_CONFIG_TOKEN", "abc") };
        let text = format!(
            "[[notifiers]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             headers = {{ Authorization = \"Bearer ${{TEST_TALLYD_CONFIG_TOKEN}}\" }}\nformat = \"slack\"\n\
             {RULE}stat = \"count\"\nop = \">\"\nthreshold = 1\nnotify = [\"ops\", \"log\"]\n"
        );
        let config = parse(&text).expect("valid");
        assert_eq!(
            config.notifiers[0].headers,
            vec![("Authorization".to_string(), "Bearer abc".to_string())]
        );
        assert_eq!(config.notifiers[0].format, WebhookFormat::Slack);
        assert_eq!(
            config.alerts[0].notify,
            vec![Target::Webhook(0), Target::Log]
        );
        let (line, _, message) = error_at(
            "[[notifiers]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://h\"\nheaders = { A = \"${TALLYD_SURELY_UNSET_VAR}\" }\n",
        );
        assert_eq!(line, 5);
        assert!(message.contains("TALLYD_SURELY_UNSET_VAR"), "{message}");
    }

    #[test]
    fn duplicate_percentiles_are_rejected() {
        let (line, column, message) = error_at("[aggregation]\npercentiles = [90, 99, 90.0]\n");
        assert_eq!((line, column), (2, 24));
        assert!(message.contains("twice"), "{message}");
    }

    #[test]
    fn zero_flush_interval_is_rejected() {
        assert!(parse("[aggregation]\nflush_interval_ms = 0\n").is_err());
    }

    fn http_backend(text: &str) -> Result<HttpConfig, ConfigError> {
        match parse(text)?.backends.pop() {
            Some(BackendConfig::Http(http)) => Ok(http),
            other => panic!("not an http backend: {other:?}"),
        }
    }

    fn error_position(err: ConfigError) -> (usize, usize, String) {
        match err {
            ConfigError::Invalid {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("not a content error: {other}"),
        }
    }

    #[test]
    fn http_backend_keys_have_defaults() {
        let http = http_backend("[[backends]]\nkind = \"http\"\nurl = \"https://m.example/in\"\n")
            .expect("valid");
        assert_eq!(http.url, "https://m.example/in");
        assert_eq!(http.timeout, Duration::from_millis(5_000));
        assert_eq!(http.max_pending, 1_000);
        assert_eq!(http.max_pending_bytes, 256 * 1024 * 1024);
        assert!(!http.gzip);
        assert!(http.headers.is_empty());
        assert_eq!(http.retry_initial, Duration::from_millis(500));
        assert_eq!(http.retry_max, Duration::from_millis(30_000));
    }

    #[test]
    fn http_backend_reads_every_key() {
        let http = http_backend(
            "[[backends]]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/x\"\ntimeout_ms = 250\n\
             max_pending = 3\nmax_pending_bytes = 4096\ngzip = true\nheaders = { X-A = \"1\" }\n\
             retry_initial_ms = 10\nretry_max_ms = 40\n",
        )
        .expect("valid");
        assert_eq!(http.timeout, Duration::from_millis(250));
        assert_eq!(http.max_pending, 3);
        assert_eq!(http.max_pending_bytes, 4096);
        assert!(http.gzip);
        assert_eq!(http.headers, [("X-A".to_string(), "1".to_string())]);
        assert_eq!(http.retry_initial, Duration::from_millis(10));
        assert_eq!(http.retry_max, Duration::from_millis(40));
    }

    #[test]
    fn the_example_http_block_uncommented_is_valid_and_spells_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
        let example = std::fs::read_to_string(path).expect("read the example");
        let start = example
            .find("# [[backends]]\n# kind = \"http\"")
            .expect("the example has an http block");
        let block: String = example[start..]
            .lines()
            .take_while(|line| line.starts_with("# "))
            .map(|line| &line[2..])
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.replace("${METRICS_TOKEN}", "token") + "\n")
            .collect();
        let http = http_backend(&block).expect("the http block is valid");
        let defaults =
            http_backend("[[backends]]\nkind = \"http\"\nurl = \"http://h/\"\n").expect("valid");
        assert_eq!(http.timeout, defaults.timeout);
        assert_eq!(http.max_pending, defaults.max_pending);
        assert_eq!(http.max_pending_bytes, defaults.max_pending_bytes);
        assert_eq!(http.gzip, defaults.gzip);
        assert_eq!(http.retry_initial, defaults.retry_initial);
        assert_eq!(http.retry_max, defaults.retry_max);
        assert_eq!(http.headers[0].1, "Bearer token");
    }

    #[test]
    fn http_backend_rejects_unknown_keys() {
        let err =
            parse("[[backends]]\nkind = \"http\"\nurl = \"http://h/\"\nretries = 3\n").unwrap_err();
        assert!(error_position(err).2.contains("retries"));
    }

    #[test]
    fn http_url_must_be_http_or_https_and_the_error_points_at_it() {
        let err = parse(
            "[[backends]]\nkind = \"console\"\n[[backends]]\nkind = \"http\"\nurl = \"ftp://h/\"\n",
        )
        .unwrap_err();
        let (line, column, message) = error_position(err);
        assert_eq!((line, column), (5, 7), "{message}");
        assert!(message.contains("http://"), "{message}");
    }

    #[test]
    fn an_unset_header_variable_is_an_error_at_the_value() {
        let err = parse(
            "[[backends]]\nkind = \"http\"\nurl = \"http://h/\"\n\
             headers = { Authorization = \"Bearer ${TALLYD_SURELY_UNSET_VARIABLE}\" }\n",
        )
        .unwrap_err();
        let (line, column, message) = error_position(err);
        assert_eq!((line, column), (4, 29), "{message}");
        assert!(
            message.contains("TALLYD_SURELY_UNSET_VARIABLE"),
            "{message}"
        );
    }

    #[test]
    fn http_limits_must_be_positive_and_ordered() {
        let with = |extra: &str| {
            parse(&format!(
                "[[backends]]\nkind = \"http\"\nurl = \"http://h/\"\n{extra}\n"
            ))
        };
        for bad in [
            "max_pending = 0",
            "max_pending_bytes = 0",
            "timeout_ms = 0",
            "retry_initial_ms = 0",
            "retry_initial_ms = 100\nretry_max_ms = 50",
            "headers = { Content-Type = \"text/plain\" }",
        ] {
            let (line, _, message) = error_position(with(bad).unwrap_err());
            assert!(line >= 4, "{bad}: {message}");
        }
    }

    #[test]
    fn max_pending_bytes_must_be_a_plain_count_of_bytes() {
        // A wrong type points at the backend's entry, a zero at the value.
        for (bad, at) in [("-1", 1), ("\"256MiB\"", 1), ("1.5", 1), ("0", 4)] {
            let text = format!(
                "[[backends]]\nkind = \"http\"\nurl = \"http://h/\"\nmax_pending_bytes = {bad}\n"
            );
            let (line, _, message) = error_position(parse(&text).unwrap_err());
            assert_eq!(line, at, "{bad}: {message}");
        }
    }

    #[test]
    fn an_error_about_a_left_out_key_points_at_its_backend() {
        let err = parse(
            "[server]\nudp = []\n\n[[backends]]\nkind = \"http\"\nurl = \"http://h/\"\n\
             retry_initial_ms = 60000\n",
        )
        .unwrap_err();
        let (line, column, message) = error_position(err);
        assert!(message.contains("retry_max_ms"), "{message}");
        assert_eq!((line, column), (4, 1), "{message}");
    }

    #[test]
    fn http_config_debug_hides_header_values() {
        let http = http_backend(
            "[[backends]]\nkind = \"http\"\nurl = \"http://u:pw@h/?key=k\"\n\
             headers = { Authorization = \"Bearer hunter2\" }\n",
        )
        .expect("valid");
        let shown = format!("{http:?}");
        assert!(shown.contains("Authorization"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("pw") && !shown.contains("key=k"),
            "{shown}"
        );
    }

    #[test]
    fn backends_are_built_from_their_kind() {
        let config = parse(
            "[[backends]]\nkind = \"json_file\"\npath = \"/tmp/x.jsonl\"\n\
             [[backends]]\nkind = \"console\"\nformat = \"json\"\n",
        )
        .expect("valid");
        match &config.backends[..] {
            [
                BackendConfig::JsonFile(file),
                BackendConfig::Console { json: true },
            ] => {
                assert_eq!(file.max_bytes, 100 * 1024 * 1024);
                assert_eq!(file.keep, 5);
            }
            other => panic!("unexpected backends {other:?}"),
        }
    }
}
