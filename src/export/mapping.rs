//! Placeholder until the statsd_exporter mapping module lands (same API).

use std::path::{Path, PathBuf};

use crate::protocol::MetricKind;

#[derive(Debug)]
pub struct Mapping;

impl Mapping {
    pub fn load(path: &Path) -> Result<Mapping, MappingError> {
        Mapping::parse("", path)
    }
    pub fn parse(_text: &str, _path: &Path) -> Result<Mapping, MappingError> {
        Ok(Mapping)
    }
    pub fn apply(&self, _name: &str, _kind: MetricKind) -> Mapped {
        Mapped::Unmatched
    }
}

pub enum Mapped {
    Unmatched,
    Drop,
    Map(MapResult),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MapResult {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub observer: Option<Observer>,
    pub ttl: Option<std::time::Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Observer {
    Summary { quantiles: Vec<f64> },
    Histogram { buckets: Vec<f64> },
}

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
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
}
