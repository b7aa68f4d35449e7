//! A table of series, as shards and the receive threads' local tables keep them: the entries
//! in a dense vector, the hash table holding only their positions (4 bytes a slot), keyed by
//! the series hash the receive path computed. An entry's hash is not kept: the table's tag
//! bits rule out most key comparisons, and the rare rehash (the table growing, an entry
//! removed) works it out again from the key.

use hashbrown::HashTable;

use super::key::SeriesKey;
use crate::protocol::MetricKind;

/// One series and its state.
#[derive(Debug)]
pub(super) struct Entry<V> {
    pub key: SeriesKey,
    pub value: V,
}

/// Series by key, in a dense vector.
#[derive(Debug)]
pub(super) struct SeriesTable<V> {
    table: HashTable<u32>,
    entries: Vec<Entry<V>>,
}

impl<V> Default for SeriesTable<V> {
    fn default() -> Self {
        SeriesTable {
            table: HashTable::new(),
            entries: Vec::new(),
        }
    }
}

/// The hash of a stored entry, as the receive path computed it for the entry's samples.
fn entry_hash<V>(entry: &Entry<V>) -> u64 {
    entry.key.series_hash()
}

impl<V> SeriesTable<V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The position of series `kind` with key body `body`, whose series hash is `hash`.
    #[inline]
    pub fn find(&self, hash: u64, kind: MetricKind, body: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.table
            .find(hash, |&at| entries[at as usize].key.is(kind, body))
            .map(|&at| at as usize)
    }

    /// Adds a series the table does not hold, with series hash `hash`, and returns its
    /// position; `None` (and nothing added) when positions run out.
    pub fn insert(&mut self, hash: u64, entry: Entry<V>) -> Option<usize> {
        let at = u32::try_from(self.entries.len()).ok()?;
        self.entries.push(entry);
        let entries = &self.entries;
        self.table
            .insert_unique(hash, at, |&at| entry_hash(&entries[at as usize]));
        Some(at as usize)
    }

    pub fn get_mut(&mut self, at: usize) -> &mut Entry<V> {
        &mut self.entries[at]
    }

    /// Removes the entry at `at`: the last entry moves into its place.
    pub fn remove(&mut self, at: usize) {
        let hash = entry_hash(&self.entries[at]);
        if let Ok(slot) = self.table.find_entry(hash, |&i| i as usize == at) {
            slot.remove();
        }
        let last = self.entries.len() - 1;
        self.entries.swap_remove(at);
        if at != last {
            let moved = entry_hash(&self.entries[at]);
            if let Some(slot) = self.table.find_mut(moved, |&i| i as usize == last) {
                *slot = at as u32;
            }
        }
    }

    /// Gives memory back after many entries were removed.
    pub fn shrink_if_sparse(&mut self) {
        if self.entries.capacity() > 2 * self.entries.len() + 1024 {
            self.entries.shrink_to(self.entries.len() * 5 / 4);
            let entries = &self.entries;
            self.table
                .shrink_to(entries.len(), |&at| entry_hash(&entries[at as usize]));
        }
    }

    /// Visits every entry; those for which `keep` returns false are removed.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Entry<V>) -> bool) {
        let mut at = 0;
        while at < self.entries.len() {
            if keep(&mut self.entries[at]) {
                at += 1;
            } else {
                self.remove(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::key::{route_hash, series_hash};

    fn hash(body: &[u8]) -> u64 {
        series_hash(route_hash(body), MetricKind::Counter)
    }

    fn add(table: &mut SeriesTable<u32>, body: &[u8], value: u32) {
        let entry = Entry {
            key: SeriesKey::new(MetricKind::Counter, body),
            value,
        };
        table.insert(hash(body), entry).expect("room");
    }

    fn value(table: &SeriesTable<u32>, body: &[u8]) -> Option<u32> {
        let at = table.find(hash(body), MetricKind::Counter, body)?;
        Some(table.entries[at].value)
    }

    #[test]
    fn removal_keeps_every_other_entry_findable() {
        let mut table = SeriesTable::default();
        let bodies: Vec<Vec<u8>> = (0..2000u32).map(|i| format!("s{i}").into_bytes()).collect();
        for (i, body) in bodies.iter().enumerate() {
            add(&mut table, body, i as u32);
        }
        // Remove the odd values: the last entry moves into each freed position.
        table.retain(|entry| entry.value % 2 == 0);
        table.shrink_if_sparse();
        assert_eq!(table.len(), 1000);
        for (i, body) in bodies.iter().enumerate() {
            let want = (i % 2 == 0).then_some(i as u32);
            assert_eq!(value(&table, body), want, "{i}");
        }
        assert_eq!(
            table.find(hash(b"s0"), MetricKind::Gauge, b"s0"),
            None,
            "the kind is part of the key"
        );
    }
}
