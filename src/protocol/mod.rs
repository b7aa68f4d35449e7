//! The StatsD line grammar (SPEC §1): bytes in, samples, events and service checks out.
//! Pure: no I/O, no allocation for metric lines, no panics on any input.

mod error;
mod event;
mod fast;
mod line;
mod types;

pub use error::ParseError;
pub use line::{MAX_NAME_BYTES, NextLine, lines, next_line, parse_line};
pub use types::{Event, MetricKind, MetricLine, Parsed, Sample, ServiceCheck, Tag};
