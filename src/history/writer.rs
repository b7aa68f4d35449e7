//! The history writer: a [`Backend`] on its own thread, so a slow or full disk never delays
//! the flush or the other backends. Each record is folded into every tier's open window of
//! each series (kept in memory), and the windows it changed are written in one transaction.
//! A failed write is logged (once per run of failures) and counted in
//! `internal.history_errors`; its windows stay dirty and are written with the next record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::store::{Store, StoreError, encode_tags};
use super::window::Window;
use super::{HistoryConfig, Tier};
use crate::aggregate::SeriesKey;
use crate::backend::{Backend, BackendError};
use crate::record::Record;
use crate::telemetry::Telemetry;

/// How often expired windows are deleted, at most (SPEC §9: at least hourly).
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);
/// Closed windows that could not be written and wait for the store, at most; beyond, the
/// oldest are dropped (and counted as history errors).
const MAX_UNWRITTEN: usize = 1_000_000;

/// One series' open window in one tier.
#[derive(Debug)]
struct Open {
    start: i64,
    window: Window,
    dirty: bool,
}

/// Writes each flush record into the history store.
pub struct HistoryBackend {
    config: HistoryConfig,
    store: Option<Store>,
    telemetry: Arc<Telemetry>,
    ids: HashMap<SeriesKey, i64>,
    /// (tier index, series id) -> its open window.
    open: HashMap<(usize, i64), Open>,
    /// Closed windows still to write: (tier index, series id, start, state).
    unwritten: Vec<(usize, i64, i64, Window)>,
    /// Unix ms when this writer started: windows that began earlier may already be stored
    /// (by the previous run) and are read back before they are merged into.
    started_ms: i64,
    next_expiry: Instant,
    failing: bool,
}

impl HistoryBackend {
    /// A writer for `config`'s store, opened now if it can be (else at the next record).
    pub fn new(config: HistoryConfig, telemetry: Arc<Telemetry>) -> HistoryBackend {
        let mut backend = HistoryBackend {
            config,
            store: None,
            telemetry,
            ids: HashMap::new(),
            open: HashMap::new(),
            unwritten: Vec::new(),
            started_ms: unix_ms(),
            next_expiry: Instant::now(),
            failing: false,
        };
        if let Err(e) = backend.ensure_open() {
            backend.fail(&e);
        }
        backend
    }

    fn ensure_open(&mut self) -> Result<(), StoreError> {
        if self.store.is_none() {
            let store = Store::open_write(&self.config.path, &self.config.tiers)?;
            tracing::info!(path = %self.config.path.display(), "history store open");
            self.store = Some(store);
        }
        Ok(())
    }

    fn fail(&mut self, e: &StoreError) {
        self.telemetry.history_error();
        if !self.failing {
            tracing::error!(error = %e, "history: cannot write the store; aggregation goes on, windows wait in memory");
            self.failing = true;
        }
    }

    /// Folds a record into the open windows (in memory: never fails).
    fn fold(&mut self, record: &Record, store: &Store) -> Result<(), StoreError> {
        // The record's timestamp (the end of its interval) decides its window, as it does
        // a point's in Graphite or Prometheus: history agrees with every other output.
        let at_ms = (record.timestamp as i64).saturating_mul(1000);
        let tiers: Vec<(usize, Tier, i64)> = self
            .config
            .tiers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let step = t.step_ms as i64;
                (i, *t, at_ms.div_euclid(step) * step / 1000)
            })
            .collect();
        if self.ids.len() > 2 * record.metrics.len() + 10_000 {
            // Series churn: forget the ids of series gone from the records (a lookup finds
            // them again should they come back).
            self.ids.clear();
        }
        for metric in &record.metrics {
            let id = match self.ids.get(&metric.key) {
                Some(id) => *id,
                None => {
                    let key = &metric.key;
                    let id = store.series_id(
                        key.name(),
                        key.kind().as_str(),
                        &encode_tags(key.tags()),
                    )?;
                    self.ids.insert(key.clone(), id);
                    id
                }
            };
            let part = Window::from_figures(&metric.figures);
            for &(tier, t, start) in &tiers {
                let open = match self.open.entry((tier, id)) {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        if e.get().start != start {
                            let old = std::mem::replace(
                                e.get_mut(),
                                Open {
                                    start,
                                    window: Window::default(),
                                    dirty: true,
                                },
                            );
                            if old.dirty {
                                self.unwritten.push((tier, id, old.start, old.window));
                            }
                        }
                        e.into_mut()
                    }
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(Open {
                        start,
                        window: Window::default(),
                        dirty: true,
                    }),
                };
                if open.dirty && open.window == Window::default() && start * 1000 < self.started_ms
                {
                    // A window the previous run may have written: continue it.
                    if let Some(stored) = store.get(t.step_ms, id, start)? {
                        open.window = stored;
                    }
                }
                open.window.merge(&part);
                // Idle series too: a set's or gauge's idle interval still counts in its
                // window (the mean over intervals, the flushes seen).
                open.dirty = true;
            }
        }
        let current: Vec<i64> = tiers.iter().map(|(_, _, start)| *start).collect();
        // Windows of series gone from the record close when their tier moves on.
        let unwritten = &mut self.unwritten;
        self.open.retain(|(tier, id), open| {
            if open.start >= current[*tier] {
                return true;
            }
            if open.dirty {
                unwritten.push((*tier, *id, open.start, std::mem::take(&mut open.window)));
            }
            false
        });
        if self.unwritten.len() > MAX_UNWRITTEN {
            let excess = self.unwritten.len() - MAX_UNWRITTEN;
            self.unwritten.drain(..excess);
            for _ in 0..excess {
                self.telemetry.history_error();
            }
        }
        Ok(())
    }

    /// Writes every dirty window in one transaction.
    fn write_dirty(&mut self, store: &Store) -> Result<(), StoreError> {
        store.begin()?;
        let result = (|| {
            for (tier, id, start, window) in &self.unwritten {
                store.put(self.config.tiers[*tier].step_ms, *id, *start, window)?;
            }
            for ((tier, id), open) in &self.open {
                if open.dirty {
                    store.put(
                        self.config.tiers[*tier].step_ms,
                        *id,
                        open.start,
                        &open.window,
                    )?;
                }
            }
            Ok(())
        })();
        match result.and_then(|()| store.commit()) {
            Ok(()) => {
                self.unwritten.clear();
                for open in self.open.values_mut() {
                    open.dirty = false;
                }
                Ok(())
            }
            Err(e) => {
                store.rollback();
                Err(e)
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        if now < self.next_expiry {
            return;
        }
        let shortest = self
            .config
            .tiers
            .iter()
            .map(|t| Duration::from_millis(t.keep_ms))
            .min()
            .unwrap_or(EXPIRE_EVERY);
        self.next_expiry = now + EXPIRE_EVERY.min(shortest);
        let now_s = unix_ms() / 1000;
        let tiers = self.config.tiers.clone();
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let mut failed = None;
        for tier in tiers {
            match store.expire(tier.step_ms, now_s.saturating_sub(tier.keep_s())) {
                Ok(n) if n > 0 => tracing::debug!(step_ms = tier.step_ms, n, "history expired"),
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.fail(&e);
        }
    }

    fn try_write(&mut self, record: &Record) -> Result<(), StoreError> {
        // Taken out so `fold` can borrow the rest of `self` mutably.
        self.ensure_open()?;
        let Some(store) = self.store.take() else {
            return Ok(());
        };
        let result = self
            .fold(record, &store)
            .and_then(|()| self.write_dirty(&store));
        self.store = Some(store);
        result
    }
}

impl Backend for HistoryBackend {
    fn name(&self) -> &str {
        "history"
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        match self.try_write(record) {
            Ok(()) => {
                if self.failing {
                    tracing::info!("history: the store is written again");
                    self.failing = false;
                }
                self.expire();
            }
            Err(e) => self.fail(&e),
        }
        Ok(())
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
