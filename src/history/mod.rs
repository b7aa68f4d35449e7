//! History on one machine (SPEC §9): an embedded SQLite store of every series' figures in
//! tiers of fixed windows, written at each flush by a backend ([`HistoryBackend`]) from the
//! record, and read by the query engine that `tallyd query` and `GET /api/v1/query` share.
//!
//! - [`window`]: the mergeable state of one series in one window, and its figures.
//! - [`store`]: the SQLite schema, opening, writing, retention.
//! - [`writer`]: the backend that folds each record into the open windows.
//! - [`query`]: the query engine: parameters, tier choice, steps, aggregation.
//! - [`output`]: table, JSON and CSV.
//! - [`time`]: RFC 3339, Unix seconds, relative times and durations.

pub mod output;
pub mod query;
pub mod store;
pub mod time;
pub mod window;
pub mod writer;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use query::{Query, QueryError, QueryParams};
pub use writer::HistoryBackend;

/// One tier: windows of `step_ms`, kept for `keep_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub step_ms: u64,
    pub keep_ms: u64,
}

impl Tier {
    /// The window length in seconds.
    pub fn step_s(&self) -> i64 {
        (self.step_ms / 1000) as i64
    }

    /// The retention in seconds.
    pub fn keep_s(&self) -> i64 {
        (self.keep_ms / 1000).min(i64::MAX as u64) as i64
    }
}

/// SPEC §9's default tiers: 1 min for 7 days, 5 min for 30 days, 1 h for a year.
pub fn default_tiers() -> Vec<Tier> {
    vec![
        Tier {
            step_ms: 60_000,
            keep_ms: 604_800_000,
        },
        Tier {
            step_ms: 300_000,
            keep_ms: 2_592_000_000,
        },
        Tier {
            step_ms: 3_600_000,
            keep_ms: 31_536_000_000,
        },
    ]
}

/// The `[history]` section as the file spells it. History is on when `path` is set and not
/// empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHistoryConfig {
    /// The store's file; relative paths resolve against the config file's folder.
    pub path: Option<toml::Spanned<PathBuf>>,
    /// The tiers, finest first; SPEC §9's defaults when absent.
    pub tiers: Option<toml::Spanned<Vec<Tier>>>,
}

/// The validated `[history]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// The store's file (not opened or created until the agent starts).
    pub path: PathBuf,
    /// Strictly increasing steps.
    pub tiers: Vec<Tier>,
}

/// The most tiers a store keeps.
const MAX_TIERS: usize = 8;

impl RawHistoryConfig {
    /// Validates the section; `None` when history is off. `base` resolves a relative path.
    ///
    /// # Errors
    /// A message with the span of the key at fault.
    pub fn validate(
        self,
        base: Option<&Path>,
    ) -> Result<Option<HistoryConfig>, (std::ops::Range<usize>, String)> {
        let tiers = match self.tiers {
            None => default_tiers(),
            Some(spanned) => {
                let span = spanned.span();
                let tiers = spanned.into_inner();
                validate_tiers(&tiers).map_err(|message| (span, message))?;
                tiers
            }
        };
        let Some(path) = self.path else {
            return Ok(None);
        };
        let path = path.into_inner();
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        let path = match base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        };
        Ok(Some(HistoryConfig { path, tiers }))
    }
}

fn validate_tiers(tiers: &[Tier]) -> Result<(), String> {
    if tiers.is_empty() || tiers.len() > MAX_TIERS {
        return Err(format!("history needs 1 to {MAX_TIERS} tiers"));
    }
    for tier in tiers {
        if tier.step_ms == 0 || !tier.step_ms.is_multiple_of(1000) {
            return Err(format!(
                "tier step_ms {} must be a whole number of seconds (a multiple of 1000)",
                tier.step_ms
            ));
        }
        if tier.keep_ms < tier.step_ms {
            return Err(format!(
                "tier keep_ms {} must be at least its step_ms {}",
                tier.keep_ms, tier.step_ms
            ));
        }
    }
    if tiers.windows(2).any(|w| w[0].step_ms >= w[1].step_ms) {
        return Err("tiers must be listed finest first, with strictly increasing step_ms".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(pairs: &[(u64, u64)]) -> Vec<Tier> {
        pairs
            .iter()
            .map(|&(step_ms, keep_ms)| Tier { step_ms, keep_ms })
            .collect()
    }

    #[test]
    fn default_tiers_are_valid() {
        assert_eq!(validate_tiers(&default_tiers()), Ok(()));
    }

    #[test]
    fn tiers_must_be_whole_seconds_increasing_and_kept_at_least_a_step() {
        assert!(validate_tiers(&[]).is_err());
        assert!(validate_tiers(&tiers(&[(1500, 60_000)])).is_err());
        assert!(validate_tiers(&tiers(&[(60_000, 1000)])).is_err());
        assert!(validate_tiers(&tiers(&[(5000, 60_000), (1000, 60_000)])).is_err());
        assert!(validate_tiers(&tiers(&[(1000, 30_000), (5000, 300_000)])).is_ok());
    }

    #[test]
    fn no_path_or_an_empty_one_is_off_and_a_relative_one_resolves() {
        let off = RawHistoryConfig::default().validate(None);
        assert_eq!(off, Ok(None));
        let raw = RawHistoryConfig {
            path: Some(toml::Spanned::new(0..0, PathBuf::from("h.db"))),
            tiers: None,
        };
        let on = raw.validate(Some(Path::new("/etc/tallyd"))).expect("valid");
        assert_eq!(on.map(|h| h.path), Some(PathBuf::from("/etc/tallyd/h.db")));
    }
}
