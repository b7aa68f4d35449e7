//! The SQLite store: one `series` table (id, name, type, tags as a JSON object), one
//! `tiers` table (step and retention of each), and one `windows_<step_ms>` table per tier,
//! keyed by (start, series) with `start` in Unix seconds: a flush rewrites the current
//! windows of every series, which this order keeps on a few contiguous pages; retention is
//! one range delete; one series' windows are point lookups, one per window start. WAL
//! journal: a reader sees the last committed flush while the writer goes on, and a
//! `kill -9` loses at most the transaction in flight; the file always reopens.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::Tier;
use super::window::Window;
use crate::aggregate::distribution::LogSketch;

/// A store failure, with the store's path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("history store {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The schema version this code writes and reads.
const SCHEMA_VERSION: &str = "1";

/// The table of one tier's windows.
pub fn windows_table(step_ms: u64) -> String {
    format!("windows_{step_ms}")
}

/// One series as the store names it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeries {
    pub id: i64,
    pub name: String,
    pub kind: String,
    /// Sorted by key.
    pub tags: Vec<(String, String)>,
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating it and its folder if needed) the store for writing, with `tiers`:
    /// their tables are created, their retention recorded, and tiers no longer configured
    /// dropped.
    ///
    /// # Errors
    /// When the folder or file cannot be created or the file is not a store of ours.
    pub fn open_write(path: &Path, tiers: &[Tier]) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Invalid {
                path: path.to_path_buf(),
                message: format!("cannot create {}: {e}", parent.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(sqlite(path))?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.init(tiers)?;
        Ok(store)
    }

    /// Opens an existing store read-only.
    ///
    /// # Errors
    /// When there is no store at `path` or it cannot be read.
    pub fn open_read(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Invalid {
                path: path.to_path_buf(),
                message: "no history store here (is [history] on, and has the agent run?)".into(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite(path))?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        let version: Option<String> = store
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| store.error(e))?;
        if version.as_deref() != Some(SCHEMA_VERSION) {
            return Err(store.invalid("not a tallyd history store of this version"));
        }
        Ok(store)
    }

    fn init(&self, tiers: &[Tier]) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| self.error(e))?;
        // WAL: readers never block the writer, and a crash leaves the last commit whole.
        // synchronous = NORMAL: a commit survives a process crash (kill -9); a power cut
        // may lose the last commits, never the file.
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS tiers (
                     step_ms INTEGER PRIMARY KEY, keep_ms INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS series (
                     id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                     tags TEXT NOT NULL, UNIQUE (name, type, tags));",
            )
            .map_err(|e| self.error(e))?;
        let version: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.error(e))?;
        match version.as_deref() {
            None => {
                self.conn
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                        [SCHEMA_VERSION],
                    )
                    .map_err(|e| self.error(e))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(self.invalid(&format!("schema version {other} is not ours")));
            }
        }
        let old = self.tiers()?;
        for gone in old
            .iter()
            .filter(|t| !tiers.iter().any(|n| n.step_ms == t.step_ms))
        {
            tracing::warn!(
                step_ms = gone.step_ms,
                "history tier no longer configured: dropped"
            );
            self.conn
                .execute_batch(&format!(
                    "DROP TABLE IF EXISTS {}; DELETE FROM tiers WHERE step_ms = {};",
                    windows_table(gone.step_ms),
                    gone.step_ms
                ))
                .map_err(|e| self.error(e))?;
        }
        for tier in tiers {
            self.conn
                .execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (
                         series INTEGER NOT NULL, start INTEGER NOT NULL,
                         count REAL, n REAL, sum REAL, sum_squares REAL,
                         lower REAL, upper REAL, last REAL, sketch BLOB, bins TEXT,
                         PRIMARY KEY (start, series)) WITHOUT ROWID;",
                    windows_table(tier.step_ms)
                ))
                .map_err(|e| self.error(e))?;
            self.conn
                .execute(
                    "INSERT INTO tiers (step_ms, keep_ms) VALUES (?1, ?2)
                     ON CONFLICT (step_ms) DO UPDATE SET keep_ms = excluded.keep_ms",
                    params![
                        tier.step_ms as i64,
                        tier.keep_ms.min(i64::MAX as u64) as i64
                    ],
                )
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// The tiers the store holds, finest first.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn tiers(&self) -> Result<Vec<Tier>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT step_ms, keep_ms FROM tiers ORDER BY step_ms")
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Tier {
                    step_ms: r.get::<_, i64>(0)?.max(0) as u64,
                    keep_ms: r.get::<_, i64>(1)?.max(0) as u64,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// Every series the store names.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn series(&self) -> Result<Vec<StoredSeries>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, type, tags FROM series ORDER BY name, tags, type")
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |r| {
                let tags: String = r.get(3)?;
                Ok(StoredSeries {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    kind: r.get(2)?,
                    tags: parse_tags(&tags),
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// The id of a series, created if new.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn series_id(&self, name: &str, kind: &str, tags: &str) -> Result<i64, StoreError> {
        let mut find = self
            .conn
            .prepare_cached("SELECT id FROM series WHERE name = ?1 AND type = ?2 AND tags = ?3")
            .map_err(|e| self.error(e))?;
        if let Some(id) = find
            .query_row(params![name, kind, tags], |r| r.get(0))
            .optional()
            .map_err(|e| self.error(e))?
        {
            return Ok(id);
        }
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO series (name, type, tags) VALUES (?1, ?2, ?3)")
            .map_err(|e| self.error(e))?;
        insert
            .execute(params![name, kind, tags])
            .map_err(|e| self.error(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Writes (replaces) one window.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn put(&self, step_ms: u64, series: i64, start: i64, w: &Window) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT OR REPLACE INTO {} (series, start, count, n, sum, sum_squares, lower, upper,
             last, sketch, bins) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            windows_table(step_ms)
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.error(e))?;
        let sketch = w.sketch.as_ref().map(LogSketch::encode);
        let bins = (!w.bins.is_empty()).then(|| encode_bins(&w.bins));
        stmt.execute(params![
            series,
            start,
            w.count,
            w.n,
            w.sum,
            w.sum_squares,
            w.lower,
            w.upper,
            w.last,
            sketch,
            bins
        ])
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// One window, if stored.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn get(&self, step_ms: u64, series: i64, start: i64) -> Result<Option<Window>, StoreError> {
        let sql = format!(
            "SELECT start, {COLUMNS} FROM {} WHERE series = ?1 AND start = ?2",
            windows_table(step_ms)
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.error(e))?;
        stmt.query_row(params![series, start], read_window)
            .optional()
            .map(|found| found.map(|(_, w)| w))
            .map_err(|e| self.error(e))
    }

    /// Calls `f(start, window)` for each window of `series` with `from <= start < to`, in
    /// order: one lookup per window start of the tier.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn windows(
        &self,
        step_ms: u64,
        series: i64,
        from: i64,
        to: i64,
        mut f: impl FnMut(i64, Window),
    ) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT start, {COLUMNS} FROM {} WHERE start = ?1 AND series = ?2",
            windows_table(step_ms)
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.error(e))?;
        let step = (step_ms / 1000).max(1) as i64;
        let mut start = from.div_euclid(step) * step;
        if start < from {
            start += step;
        }
        if to.saturating_sub(start) / step > MAX_LOOKUPS {
            // A range too long to look up start by start: scan it for the series.
            return self.windows_range(
                step_ms,
                from,
                to,
                |id| id == series,
                |_, at, window| f(at, window),
            );
        }
        while start < to {
            if let Some((at, window)) = stmt
                .query_row(params![start, series], read_window)
                .optional()
                .map_err(|e| self.error(e))?
            {
                f(at, window);
            }
            start += step;
        }
        Ok(())
    }

    /// Calls `f(series, start, window)` for every window with `from <= start < to` of
    /// every series `keep` accepts (others are not decoded): one range of the key, for
    /// queries over many series.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn windows_range(
        &self,
        step_ms: u64,
        from: i64,
        to: i64,
        keep: impl Fn(i64) -> bool,
        mut f: impl FnMut(i64, i64, Window),
    ) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT series, start, {COLUMNS} FROM {} WHERE start >= ?1 AND start < ?2",
            windows_table(step_ms)
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.error(e))?;
        let mut rows = stmt.query(params![from, to]).map_err(|e| self.error(e))?;
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            let series: i64 = row.get(0).map_err(|e| self.error(e))?;
            if !keep(series) {
                continue;
            }
            let (start, window) = read_window_at(row, 1).map_err(|e| self.error(e))?;
            f(series, start, window);
        }
        Ok(())
    }

    /// Deletes every window of a tier that started before `cutoff` (Unix seconds): one
    /// range of the key.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn expire(&mut self, step_ms: u64, cutoff: i64) -> Result<usize, StoreError> {
        let sql = format!("DELETE FROM {} WHERE start < ?1", windows_table(step_ms));
        self.conn
            .execute(&sql, params![cutoff])
            .map_err(|e| self.error(e))
    }

    /// Starts a transaction (ended by [`Store::commit`] or [`Store::rollback`]).
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn begin(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.error(e))
    }

    /// Starts a read transaction: every read until [`Store::commit`] sees one state.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn begin_read(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN").map_err(|e| self.error(e))
    }

    /// Commits the transaction.
    ///
    /// # Errors
    /// When the commit fails (a full disk); the transaction is then rolled back.
    pub fn commit(&self) -> Result<(), StoreError> {
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                self.rollback();
                Err(self.error(e))
            }
        }
    }

    /// Abandons the transaction, if one is open.
    pub fn rollback(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn invalid(&self, message: &str) -> StoreError {
        StoreError::Invalid {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }
}

/// The most window starts one series' read looks up one by one.
const MAX_LOOKUPS: i64 = 1_000_000;

const COLUMNS: &str = "count, n, sum, sum_squares, lower, upper, last, sketch, bins";

fn read_window(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Window)> {
    read_window_at(r, 0)
}

/// A window from the row's columns `at` (start), `at + 1`... (as [`COLUMNS`]).
fn read_window_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<(i64, Window)> {
    let sketch: Option<Vec<u8>> = r.get(at + 8)?;
    let bins: Option<String> = r.get(at + 9)?;
    Ok((
        r.get(at)?,
        Window {
            count: r.get(at + 1)?,
            n: r.get(at + 2)?,
            sum: r.get(at + 3)?,
            sum_squares: r.get(at + 4)?,
            lower: r.get(at + 5)?,
            upper: r.get(at + 6)?,
            last: r.get(at + 7)?,
            // A blob that is no sketch (written by someone else) reads as none.
            sketch: sketch.and_then(|b| LogSketch::decode(&b)),
            bins: bins.as_deref().map(decode_bins).unwrap_or_default(),
        },
    ))
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Tags as the `series.tags` column holds them: a JSON object, keys sorted.
pub fn encode_tags<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = tags
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn parse_tags(text: &str) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut tags: Vec<(String, String)> = map
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    tags.sort();
    tags
}

/// Bins as the `bins` column holds them: `name=count` pairs joined by `,`.
fn encode_bins(bins: &[(String, u64)]) -> String {
    let parts: Vec<String> = bins.iter().map(|(n, c)| format!("{n}={c}")).collect();
    parts.join(",")
}

fn decode_bins(text: &str) -> Vec<(String, u64)> {
    text.split(',')
        .filter_map(|part| {
            let (name, count) = part.split_once('=')?;
            Some((name.to_string(), count.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_trip_and_reopen_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/history.db");
        let tiers = super::super::default_tiers();
        let store = Store::open_write(&path, &tiers).expect("open");
        let id = store
            .series_id(
                "api.latency",
                "timer",
                &encode_tags([("env", "prod")].into_iter()),
            )
            .expect("series");
        let w = Window {
            count: Some(3.0),
            n: Some(3.0),
            sum: Some(60.0),
            sum_squares: Some(1400.0),
            lower: Some(10.0),
            upper: Some(30.0),
            last: None,
            sketch: Some(LogSketch::from_sorted(&[10.0, 20.0, 30.0])),
            bins: vec![("bin_15".into(), 1), ("bin_inf".into(), 2)],
        };
        store.begin().expect("begin");
        store.put(60_000, id, 1_800_000_000, &w).expect("put");
        store.commit().expect("commit");
        assert_eq!(
            store
                .series_id("api.latency", "timer", r#"{"env":"prod"}"#)
                .ok(),
            Some(id)
        );
        drop(store);
        let read = Store::open_read(&path).expect("reopen");
        assert_eq!(read.tiers().expect("tiers"), tiers);
        let series = read.series().expect("series");
        assert_eq!(series[0].tags, [("env".to_string(), "prod".to_string())]);
        let mut got = Vec::new();
        read.windows(60_000, id, 0, i64::MAX, |start, w| got.push((start, w)))
            .expect("windows");
        assert_eq!(got, [(1_800_000_000, w)]);
    }

    #[test]
    fn expire_deletes_only_windows_before_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.db");
        let tiers = [Tier {
            step_ms: 1000,
            keep_ms: 10_000,
        }];
        let mut store = Store::open_write(&path, &tiers).expect("open");
        let id = store.series_id("c", "counter", "{}").expect("series");
        let w = Window {
            count: Some(1.0),
            ..Window::default()
        };
        for start in 0..5 {
            store.put(1000, id, start, &w).expect("put");
        }
        assert_eq!(store.expire(1000, 3).expect("expire"), 3);
        assert_eq!(store.get(1000, id, 2).expect("get"), None);
        assert!(store.get(1000, id, 3).expect("get").is_some());
    }

    #[test]
    fn a_missing_store_is_a_clear_error() {
        let err =
            Store::open_read(Path::new("/nonexistent/tallyd/history.db")).expect_err("no store");
        assert!(err.to_string().contains("no history store"), "{err}");
    }
}
