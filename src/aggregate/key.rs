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

use triomphe::ThinArc;

use crate::protocol::{MetricKind, Tag};

const TAG_START: u8 = 0x00;
const TAG_VALUE: u8 = 0x01;

/// The canonical identity of one series: one pointer wide (the length lives beside the
/// bytes), so the shard's table and the flush record spend 8 bytes a series on it.
#[derive(Clone)]
pub struct SeriesKey(ThinArc<(), u8>);

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
        let bytes = KeyBytes {
            kind: Some(kind.code()),
            body: body.iter(),
        };
        SeriesKey(ThinArc::from_header_and_iter((), bytes))
    }

    /// True when this is the key of series `kind` with key body `body`.
    pub fn is(&self, kind: MetricKind, body: &[u8]) -> bool {
        self.as_bytes().split_first() == Some((&kind.code(), body))
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0.slice
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
        series_hash(
            route_hash(self.as_bytes().get(1..).unwrap_or_default()),
            self.kind(),
        )
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

/// The whole key's bytes, kind code first, for building a [`SeriesKey`] in one allocation.
struct KeyBytes<'a> {
    kind: Option<u8>,
    body: std::slice::Iter<'a, u8>,
}

impl Iterator for KeyBytes<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        self.kind.take().or_else(|| self.body.next().copied())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = usize::from(self.kind.is_some()) + self.body.len();
        (len, Some(len))
    }
}

impl ExactSizeIterator for KeyBytes<'_> {}

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
