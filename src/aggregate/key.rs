//! Series identity (SPEC §1): name + type + the sorted tag set, with global tags merged in.
//! The receive path works out a line's key body (name and tags) once, borrowing the name
//! from the datagram when there are no tags to merge; a shard keeps the whole key as a
//! shared, immutable [`SeriesKey`] that the flush record borrows without copying.
//!
//! Layout: `[kind code] body`, the body being `name (0x00 key 0x01 value)*` with tags sorted
//! by key and unique. Names and tags hold no control characters (the parser and config
//! reject them), so the separators are unambiguous.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::protocol::{MetricKind, Tag};

const TAG_START: u8 = 0x00;
const TAG_VALUE: u8 = 0x01;

/// The canonical identity of one series: one pointer to a shared, immutable heap block that
/// holds a reference count and the length (4 bytes each) before the bytes. The shard's table
/// and the flush record spend 8 bytes a series on the pointer, and the block costs 8 bytes
/// more than the key: a general-purpose shared slice (two word-sized counts, or a count and
/// a word-sized length) would cost 16, which at a million series of 24–31-byte names puts
/// every key in the allocator's next size class (64 bytes instead of 48).
pub struct SeriesKey(NonNull<KeyHeader>);

/// The start of a key's block; the key's bytes follow it.
#[repr(C)]
struct KeyHeader {
    count: AtomicU32,
    len: u32,
}

const HEADER: usize = std::mem::size_of::<KeyHeader>();

// SAFETY: the bytes are never written after the block is built, and the count is atomic,
// as in `std::sync::Arc<[u8]>`.
unsafe impl Send for SeriesKey {}
// SAFETY: as above; shared access only ever reads the bytes.
unsafe impl Sync for SeriesKey {}

impl Clone for SeriesKey {
    fn clone(&self) -> SeriesKey {
        // Relaxed, as in `Arc::clone`: a new reference needs no ordering with other memory.
        let old = self.header().count.fetch_add(1, Ordering::Relaxed);
        if old > u32::MAX / 2 {
            // Billions of live copies of one key means a leak; stop before the count wraps
            // and a block is freed while in use.
            std::process::abort();
        }
        SeriesKey(self.0)
    }
}

impl Drop for SeriesKey {
    fn drop(&mut self) {
        if self.header().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Pairs with the Release above in every other copy's drop, as in `Arc::drop`.
        std::sync::atomic::fence(Ordering::Acquire);
        let layout = block_layout(self.header().len as usize);
        // SAFETY: this was the last copy; the block was allocated in `SeriesKey::new` with
        // this same layout.
        unsafe { std::alloc::dealloc(self.0.as_ptr().cast(), layout) };
    }
}

/// The layout of a key block holding `len` bytes.
fn block_layout(len: usize) -> Layout {
    Layout::from_size_align(HEADER + len, std::mem::align_of::<KeyHeader>())
        .unwrap_or_else(|_| panic!("a {len}-byte key does not fit in memory"))
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &SeriesKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SeriesKey {}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for SeriesKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesKey")
            .field("kind", &self.kind())
            .field("name", &self.name())
            .field("tags", &self.tags().collect::<Vec<_>>())
            .finish()
    }
}

impl SeriesKey {
    /// The key of series `kind` with key body `body` (from [`KeyEncoder::body`]).
    pub fn new(kind: MetricKind, body: &[u8]) -> SeriesKey {
        let len = body.len() + 1;
        let len32 = u32::try_from(len).unwrap_or_else(|_| panic!("a {len}-byte key"));
        let layout = block_layout(len);
        // SAFETY: the layout has a non-zero size (the header).
        let block = unsafe { std::alloc::alloc(layout) };
        let Some(block) = NonNull::new(block.cast::<KeyHeader>()) else {
            std::alloc::handle_alloc_error(layout);
        };
        // SAFETY: the block was just allocated for a header and `len` bytes after it, and
        // is aligned for the header; `body` cannot overlap a fresh allocation.
        unsafe {
            block.as_ptr().write(KeyHeader {
                count: AtomicU32::new(1),
                len: len32,
            });
            let bytes = block.as_ptr().cast::<u8>().add(HEADER);
            bytes.write(kind.code());
            std::ptr::copy_nonoverlapping(body.as_ptr(), bytes.add(1), body.len());
        }
        SeriesKey(block)
    }

    fn header(&self) -> &KeyHeader {
        // SAFETY: the block lives while any copy of the key does, and the header is only
        // read (its count atomically).
        unsafe { self.0.as_ref() }
    }

    /// True when this is the key of series `kind` with key body `body`.
    pub fn is(&self, kind: MetricKind, body: &[u8]) -> bool {
        self.as_bytes().split_first() == Some((&kind.code(), body))
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        let len = self.header().len as usize;
        // SAFETY: `len` initialized bytes follow the header, written once in
        // `SeriesKey::new`, and live as long as this copy.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>().add(HEADER), len) }
    }

    /// The key body: the key without its kind byte, as [`KeyEncoder::body`] gives it.
    pub fn body(&self) -> &[u8] {
        self.as_bytes().get(1..).unwrap_or_default()
    }

    /// The series' metric kind.
    pub fn kind(&self) -> MetricKind {
        self.as_bytes()
            .first()
            .and_then(|&c| MetricKind::from_code(c))
            .unwrap_or(MetricKind::Counter)
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        let rest = self.as_bytes().get(1..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == TAG_START)
            .unwrap_or(rest.len());
        as_str(&rest[..end])
    }

    /// The tags, sorted by key.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        let rest = self.as_bytes().get(1..).unwrap_or_default();
        rest.split(|&b| b == TAG_START).skip(1).map(|tag| {
            let split = tag
                .iter()
                .position(|&b| b == TAG_VALUE)
                .unwrap_or(tag.len());
            let value = tag.get(split + 1..).unwrap_or_default();
            (as_str(&tag[..split]), as_str(value))
        })
    }

    /// The hash the receive path computes for this series ([`series_hash`] of
    /// [`route_hash`]).
    pub fn series_hash(&self) -> u64 {
        series_hash(route_hash(self.body()), self.kind())
    }

    /// Orders keys by name, then tags, then kind: the order of the flush record.
    pub fn record_order(&self, other: &SeriesKey) -> std::cmp::Ordering {
        let (a, b) = (self.as_bytes(), other.as_bytes());
        let (a_rest, b_rest) = (
            a.get(1..).unwrap_or_default(),
            b.get(1..).unwrap_or_default(),
        );
        a_rest.cmp(b_rest).then(a.first().cmp(&b.first()))
    }
}

/// The hash of a key body (the key without its kind byte), seeded once per process so that
/// clients cannot aim collisions at the tables: it picks the shard and, mixed with the kind
/// ([`series_hash`]), finds the series in the shard's table, so a line is hashed once.
pub fn route_hash(body: &[u8]) -> u64 {
    static SEED: OnceLock<foldhash::fast::FixedState> = OnceLock::new();
    let mut hasher = SEED
        .get_or_init(|| {
            let random = std::collections::hash_map::RandomState::new().hash_one(0x7a11_u64);
            foldhash::fast::FixedState::with_seed(random)
        })
        .build_hasher();
    // One write, without the length prefix `Hash for [u8]` adds: a body is hashed alone.
    hasher.write(body);
    hasher.finish()
}

/// The hash of a whole series identity from its routing hash and kind. Rotated, because the
/// shard was chosen by the routing hash's top bits, and a shard's table tells entries apart
/// by the top bits of this one.
pub fn series_hash(route_hash: u64, kind: MetricKind) -> u64 {
    (route_hash ^ u64::from(kind.code()).wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left(32)
}

/// Keys are built from validated UTF-8 and split at ASCII bytes, so this never fails; the
/// fallback keeps it panic-free regardless.
fn as_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("\u{fffd}")
}

/// Encodes series keys of one line into a caller-owned buffer. Holds the global tags.
#[derive(Debug, Clone)]
pub struct KeyEncoder {
    global_tags: Arc<[(String, String)]>,
}

impl KeyEncoder {
    /// `global_tags` must be sorted by key with unique keys (as the config validates them).
    pub fn new(global_tags: Arc<[(String, String)]>) -> KeyEncoder {
        KeyEncoder { global_tags }
    }

    /// The key body of `name` + `tags` and its routing hash (which ignores the kind, so all
    /// samples of a line go to one shard): the name itself when there are no tags to merge,
    /// else the body written into `scratch` (cleared first) by [`KeyEncoder::encode`].
    pub fn body<'a>(
        &self,
        name: &'a str,
        tags: &mut [Tag<'_>],
        scratch: &'a mut Vec<u8>,
    ) -> (&'a [u8], u64) {
        if tags.is_empty() && self.global_tags.is_empty() {
            return (name.as_bytes(), route_hash(name.as_bytes()));
        }
        scratch.clear();
        let hash = self.encode(name, tags, scratch);
        (scratch, hash)
    }

    /// Appends the key body of `name` + `tags` to `out` and returns its routing hash. Sorts
    /// `tags` in place; a client tag wins over an earlier duplicate never (first wins) and
    /// over a global tag with the same key.
    pub fn encode(&self, name: &str, tags: &mut [Tag<'_>], out: &mut Vec<u8>) -> u64 {
        let start = out.len();
        out.extend_from_slice(name.as_bytes());
        // Stable: among equal keys the first sent stays first.
        tags.sort_by(|a, b| a.key.cmp(b.key));
        let mut globals = self.global_tags.iter().peekable();
        let mut previous: Option<&str> = None;
        for tag in tags.iter() {
            if previous == Some(tag.key) {
                continue;
            }
            previous = Some(tag.key);
            while let Some((key, value)) = globals.next_if(|(k, _)| k.as_str() < tag.key) {
                push_tag(out, key, value);
            }
            globals.next_if(|(k, _)| k.as_str() == tag.key);
            push_tag(out, tag.key, tag.value);
        }
        for (key, value) in globals {
            push_tag(out, key, value);
        }
        route_hash(&out[start..])
    }

    /// Merges an event's tags (as sent) with the global tags: first wins, sorted by key.
    pub fn merge_owned(&self, mut tags: Vec<(String, String)>) -> Vec<(String, String)> {
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        tags.dedup_by(|later, first| later.0 == first.0);
        for (key, value) in self.global_tags.iter() {
            if let Err(at) = tags.binary_search_by(|t| t.0.as_str().cmp(key)) {
                tags.insert(at, (key.clone(), value.clone()));
            }
        }
        tags
    }
}

fn push_tag(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(TAG_START);
    out.extend_from_slice(key.as_bytes());
    out.push(TAG_VALUE);
    out.extend_from_slice(value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_one_block_and_count_themselves_across_threads() {
        let original = SeriesKey::new(MetricKind::Timer, b"api.latency\x00env\x01prod");
        let copies: Vec<SeriesKey> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..1000).map(|_| original.clone()).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|handle| handle.join().expect("cloning thread"))
                .collect()
        });
        assert_eq!(original.header().count.load(Ordering::Relaxed), 4001);
        assert!(
            copies
                .iter()
                .all(|copy| std::ptr::eq(copy.as_bytes(), original.as_bytes()))
        );
        std::thread::scope(|scope| {
            for chunk in copies.chunks(1000) {
                let chunk = chunk.to_vec();
                scope.spawn(move || drop(chunk));
            }
        });
        drop(copies);
        assert_eq!(original.header().count.load(Ordering::Relaxed), 1);
        assert_eq!(original.kind(), MetricKind::Timer);
        assert_eq!(original.name(), "api.latency");
        assert_eq!(original.tags().collect::<Vec<_>>(), [("env", "prod")]);
    }

    #[test]
    fn a_key_block_is_its_bytes_and_eight_more() {
        for len in [0, 1, 7, 8, 31, 300] {
            let body = vec![b'a'; len];
            let key = SeriesKey::new(MetricKind::Counter, &body);
            assert_eq!(key.as_bytes().len(), len + 1);
            assert_eq!(&key.as_bytes()[1..], &body[..]);
            assert_eq!(block_layout(len + 1).size(), len + 1 + 8);
        }
        assert_eq!(std::mem::size_of::<SeriesKey>(), 8);
        assert_eq!(std::mem::size_of::<Option<SeriesKey>>(), 8);
    }

    fn key(
        global: &[(&str, &str)],
        name: &str,
        tags: &[(&'static str, &'static str)],
    ) -> SeriesKey {
        let global: Arc<[(String, String)]> = global
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let encoder = KeyEncoder::new(global);
        let mut tags: Vec<Tag<'_>> = tags
            .iter()
            .map(|&(key, value)| Tag { key, value })
            .collect();
        let mut scratch = Vec::new();
        let (body, hash) = encoder.body(name, &mut tags, &mut scratch);
        let key = SeriesKey::new(MetricKind::Timer, body);
        assert!(key.is(MetricKind::Timer, body));
        assert!(!key.is(MetricKind::Counter, body));
        assert_eq!(
            key.series_hash(),
            series_hash(hash, MetricKind::Timer),
            "the shard works out the hash the receive path computed"
        );
        key
    }

    #[test]
    fn key_round_trips_name_kind_and_sorted_tags() {
        let k = key(&[], "api.latency", &[("region", "eu"), ("env", "prod")]);
        assert_eq!(k.name(), "api.latency");
        assert_eq!(k.kind(), MetricKind::Timer);
        assert_eq!(
            k.tags().collect::<Vec<_>>(),
            vec![("env", "prod"), ("region", "eu")]
        );
    }

    #[test]
    fn tag_order_does_not_change_identity() {
        assert_eq!(
            key(&[], "x", &[("a", "1"), ("b", "2")]),
            key(&[], "x", &[("b", "2"), ("a", "1")])
        );
    }

    #[test]
    fn first_duplicate_tag_wins() {
        let k = key(&[], "x", &[("env", "canary"), ("env", "prod")]);
        assert_eq!(k.tags().collect::<Vec<_>>(), vec![("env", "canary")]);
    }

    #[test]
    fn client_tag_wins_over_global_tag() {
        let k = key(
            &[("env", "prod"), ("zone", "a")],
            "x",
            &[("env", "dev"), ("b", "")],
        );
        assert_eq!(
            k.tags().collect::<Vec<_>>(),
            vec![("b", ""), ("env", "dev"), ("zone", "a")]
        );
    }

    #[test]
    fn name_without_tags_has_no_tags() {
        let k = key(&[], "plain", &[]);
        assert_eq!(k.name(), "plain");
        assert_eq!(k.tags().count(), 0);
    }

    #[test]
    fn event_tags_merge_first_wins_then_globals() {
        let encoder = KeyEncoder::new(Arc::from(vec![("env".to_string(), "prod".to_string())]));
        let merged = encoder.merge_owned(vec![
            ("b".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "".into()),
        ]);
        assert_eq!(
            merged,
            vec![
                ("a".to_string(), "".to_string()),
                ("b".to_string(), "1".to_string()),
                ("env".to_string(), "prod".to_string())
            ]
        );
    }
}
