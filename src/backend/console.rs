//! The console backend: a readable summary of each record on stdout, one line per series, or
//! the JSON record with `format = "json"`.

use std::io::{BufWriter, Write};

use serde::Deserialize;

use super::config::{BackendInvalid, raw};
use super::{Backend, BackendError};
use crate::record::Record;

/// `kind = "console"` as the file spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsoleConfig {
    /// "text" (default): a readable summary per flush; "json": the JSON record.
    #[serde(default)]
    format: ConsoleFormat,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum ConsoleFormat {
    #[default]
    Text,
    Json,
}

/// Validates a console entry: whether it writes JSON.
///
/// # Errors
/// An unknown key or format.
pub(super) fn validate(table: toml::Table) -> Result<bool, BackendInvalid> {
    let config: RawConsoleConfig = raw(table)?;
    Ok(config.format == ConsoleFormat::Json)
}

/// Writes records to stdout.
pub struct ConsoleBackend {
    json: bool,
}

impl ConsoleBackend {
    /// A console backend; `json` selects the JSON record over the text summary.
    pub fn new(json: bool) -> ConsoleBackend {
        ConsoleBackend { json }
    }
}

impl Backend for ConsoleBackend {
    fn name(&self) -> &str {
        "console"
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        let stdout = std::io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        let result = if self.json {
            serde_json::to_writer(&mut out, record)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
        } else {
            write_text(&mut out, record)
        };
        result
            .and_then(|()| out.flush())
            .map_err(|source| BackendError::Io {
                backend: "console",
                source,
            })
    }
}

/// The text summary: a header, one line per series, then events and alerts.
pub fn write_text(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    writeln!(
        out,
        "flush timestamp={} host={} interval_ms={} series={} events={} alerts={} lines={} bad_lines={}",
        record.timestamp,
        record.host,
        record.interval_ms,
        record.metrics.len(),
        record.events.len(),
        record.alerts.len(),
        record.internal.lines_received,
        record.internal.bad_lines_total(),
    )?;
    for metric in &record.metrics {
        write!(out, "  {} {}", metric.kind().as_str(), metric.key.name())?;
        let mut tags = metric.key.tags().peekable();
        if tags.peek().is_some() {
            let joined: Vec<String> = tags.map(|(k, v)| format!("{k}={v}")).collect();
            write!(out, "{{{}}}", joined.join(","))?;
        }
        let mut result = Ok(());
        metric.for_each_figure(record, |name, value| {
            if result.is_ok() {
                result = write!(out, " {name}={value}");
            }
        });
        result?;
        writeln!(out)?;
    }
    for event in &record.events {
        writeln!(
            out,
            "  event {}",
            serde_json::to_string(event).unwrap_or_default()
        )?;
    }
    for alert in &record.alerts {
        writeln!(
            out,
            "  alert {} {} {} {}{}{} value={}",
            alert.rule,
            alert.state,
            alert.name,
            alert.stat,
            alert.op,
            alert.threshold,
            alert
                .value
                .map_or_else(|| "none".to_string(), |v| v.to_string())
        )?;
    }
    Ok(())
}
