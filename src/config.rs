//! The configuration: raw serde structs as the TOML file spells them, then one validation
//! pass into [`Config`], the types the rest of the agent uses. Nothing downstream
//! re-validates. Errors name the file, the line and column, and what is wrong. `TALLYD_*`
//! environment variables override keys of the file ([`env`]); their errors name the variable.

mod env;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::aggregate::config::RawAggregation;
pub use crate::aggregate::config::{AggregationConfig, HistogramRule};
pub use crate::alert::config::{NotifierConfig, WebhookFormat};
use crate::alert::config::{RawAlert, RawNotifier, validate_alerts, validate_notifiers};
use crate::alert::rule::AlertRule;
use crate::api::{ApiConfig, RawApiConfig};
pub use crate::backend::config::BackendConfig;
use crate::backend::config::BackendInvalid;
pub use crate::backend::http::HttpConfig;
pub use crate::backend::json_file::JsonFileConfig;
use crate::collector::{CollectorsConfig, RawCollectorsConfig};
use crate::export::{ExportPlan, PrometheusConfig, RawPrometheusConfig};
use crate::history::{HistoryConfig, RawHistoryConfig};
use crate::server::config::RawServer;
pub use crate::server::config::ServerConfig;

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
pub(crate) struct Invalid {
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
    pub(crate) fn at<T>(value: &toml::Spanned<T>, message: impl fmt::Display) -> Invalid {
        Invalid {
            span: Some(value.span()),
            key: Vec::new(),
            message: message.to_string(),
        }
    }

    /// At backend `index`: the value of its key (and below it, sub) the error names, or
    /// the entry itself.
    fn at_backend(index: usize, error: BackendInvalid) -> Invalid {
        let mut path = vec![Key::Name("backends".into()), Key::Index(index)];
        path.extend(error.key.map(Key::Name));
        path.extend(error.sub.map(Key::Name));
        Invalid {
            span: None,
            key: path,
            message: error.message,
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
    backends: Option<Vec<toml::Table>>,
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

impl RawConfig {
    /// `base`: the config file's folder, against which relative paths in it resolve.
    fn validate(self, base: Option<&Path>) -> Result<Config, Invalid> {
        let backends = match self.backends {
            None => vec![BackendConfig::Console { json: false }],
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, table)| {
                    crate::backend::config::validate(table).map_err(|e| Invalid::at_backend(i, e))
                })
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
        if api.listen.is_some() || backends.iter().any(BackendConfig::needs_export) {
            // `/metrics`, remote write and OTLP need buckets and mapped quantiles observed
            // at each flush.
            let mut plan = ExportPlan::new(prometheus.clone());
            plan.otlp_bins = backends.iter().any(BackendConfig::is_otlp);
            aggregation.export = Some(Arc::new(plan));
        }
        aggregation.set_forward(
            backends
                .iter()
                .any(|b: &BackendConfig| matches!(b, BackendConfig::Statsd(_))),
        );
        let history = self.history.validate(base).map_err(spanned)?;
        let collectors = self.collectors.validate(base).map_err(spanned)?;
        // The flusher builds each interval's mergeable sketch only for the history store.
        aggregation.distribution.history_sketch = history.is_some();
        let notifiers = validate_notifiers(self.notifiers)?;
        let alerts = validate_alerts(self.alerts, &aggregation, &notifiers)?;
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

// ---- validators the sections share ------------------------------------------------------

pub(crate) fn at_most(
    value: &toml::Spanned<usize>,
    key: &str,
    most: usize,
) -> Result<usize, Invalid> {
    match *value.get_ref() {
        n if n <= most => Ok(n),
        _ => Err(Invalid::at(value, format!("{key} must be at most {most}"))),
    }
}

pub(crate) fn between(
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

pub(crate) fn at_least_one(value: &toml::Spanned<usize>, key: &str) -> Result<usize, Invalid> {
    match *value.get_ref() {
        0 => Err(Invalid::at(value, format!("{key} must be at least 1"))),
        n => Ok(n),
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

pub(crate) fn has_control(s: &str) -> bool {
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

/// The commented `[[backends]]` block of `kind` in config.toml.example, uncommented, with
/// its `${VAR}`s given a value: for the tests that check each block parses and spells the
/// defaults.
#[cfg(test)]
pub(crate) fn example_block(kind: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let example = std::fs::read_to_string(path).expect("read the example");
    let start = example
        .find(&format!("# [[backends]]\n# kind = \"{kind}\""))
        .unwrap_or_else(|| panic!("the example has a {kind} block"));
    example[start..]
        .lines()
        .take_while(|line| line.starts_with("# "))
        .map(|line| &line[2..])
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            line.replace("${OTLP_TOKEN}", "token")
                .replace("${METRICS_TOKEN}", "token")
                + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::aggregate::config::auto_shards;
    use crate::alert::rule::Target;

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
        assert_eq!(http.queue.timeout, Duration::from_millis(5_000));
        assert_eq!(http.queue.max_pending, 1_000);
        assert_eq!(http.queue.max_pending_bytes, 256 * 1024 * 1024);
        assert!(!http.gzip);
        assert!(http.headers.is_empty());
        assert_eq!(http.queue.retry_initial, Duration::from_millis(500));
        assert_eq!(http.queue.retry_max, Duration::from_millis(30_000));
    }

    #[test]
    fn http_backend_reads_every_key() {
        let http = http_backend(
            "[[backends]]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/x\"\ntimeout_ms = 250\n\
             max_pending = 3\nmax_pending_bytes = 4096\ngzip = true\nheaders = { X-A = \"1\" }\n\
             retry_initial_ms = 10\nretry_max_ms = 40\n",
        )
        .expect("valid");
        assert_eq!(http.queue.timeout, Duration::from_millis(250));
        assert_eq!(http.queue.max_pending, 3);
        assert_eq!(http.queue.max_pending_bytes, 4096);
        assert!(http.gzip);
        assert_eq!(http.headers, [("X-A".to_string(), "1".to_string())]);
        assert_eq!(http.queue.retry_initial, Duration::from_millis(10));
        assert_eq!(http.queue.retry_max, Duration::from_millis(40));
    }

    #[test]
    fn the_example_http_block_uncommented_is_valid_and_spells_the_defaults() {
        let block = example_block("http");
        let http = http_backend(&block).expect("the http block is valid");
        let defaults =
            http_backend("[[backends]]\nkind = \"http\"\nurl = \"http://h/\"\n").expect("valid");
        assert_eq!(http.queue.timeout, defaults.queue.timeout);
        assert_eq!(http.queue.max_pending, defaults.queue.max_pending);
        assert_eq!(
            http.queue.max_pending_bytes,
            defaults.queue.max_pending_bytes
        );
        assert_eq!(http.gzip, defaults.gzip);
        assert_eq!(http.queue.retry_initial, defaults.queue.retry_initial);
        assert_eq!(http.queue.retry_max, defaults.queue.retry_max);
        assert_eq!(http.headers[0].1, "Bearer token");
    }

    #[test]
    fn the_example_remote_write_and_otlp_blocks_are_valid_and_spell_the_defaults() {
        let only = |text: &str| {
            let mut config = parse(text).expect("valid");
            assert_eq!(config.backends.len(), 1);
            config.backends.remove(0)
        };
        let (BackendConfig::RemoteWrite(example), BackendConfig::RemoteWrite(defaults)) = (
            only(&example_block("remote_write")),
            only("[[backends]]\nkind = \"remote_write\"\nurl = \"http://h/\"\n"),
        ) else {
            panic!("remote_write backends");
        };
        assert_eq!(example.max_samples_per_send, defaults.max_samples_per_send);
        assert_eq!(example.retry_on_429, defaults.retry_on_429);
        assert_eq!(example.queue, defaults.queue);
        let (BackendConfig::Otlp(example), BackendConfig::Otlp(defaults)) = (
            only(&example_block("otlp")),
            only("[[backends]]\nkind = \"otlp\"\nurl = \"http://h/\"\n"),
        ) else {
            panic!("otlp backends");
        };
        assert_eq!(example.temporality, defaults.temporality);
        assert_eq!(example.gzip, defaults.gzip);
        assert_eq!(example.max_points_per_send, defaults.max_points_per_send);
        assert_eq!(example.queue, defaults.queue);
        assert_eq!(example.headers[0].1, "Bearer token");
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
