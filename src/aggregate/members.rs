//! A set's distinct members in one interval: their 64-bit hashes, counted exactly up to a
//! configured number, then estimated by a HyperLogLog sketch of fixed size, so that a flood
//! of distinct members cannot grow a series' memory without bound. When a `statsd` output
//! forwards the sets (SPEC §7.4), the texts of the exactly counted members are kept too.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use rustc_hash::FxHasher;

/// Register index bits: 2^14 registers, one byte each (16 KiB a sketch), for a standard
/// error of 1.04 / sqrt(2^14), about 0.8 %.
const INDEX_BITS: u32 = 14;
const REGISTERS: usize = 1 << INDEX_BITS;

/// The member hashes of one set series.
#[derive(Debug, Default)]
pub struct Members {
    exact: HashSet<u64, BuildHasherDefault<FxHasher>>,
    sketch: Option<Box<Sketch>>,
    /// The texts of the distinct members counted exactly, each followed by `\n` (only
    /// when forwarding asks for them; members never hold a newline).
    /// Boxed: one word for the sets of an agent that does not forward, against three.
    #[allow(clippy::box_collection)]
    texts: Option<Box<String>>,
}

impl Members {
    /// Adds one member's hash. Past `max_exact` distinct members the set moves to the sketch
    /// and gives its exact table back.
    #[cfg(test)]
    pub fn insert(&mut self, hash: u64, max_exact: usize) {
        self.insert_text(hash, None, max_exact);
    }

    /// [`Members::insert`], keeping `text` when it is a new member counted exactly.
    pub fn insert_text(&mut self, hash: u64, text: Option<&str>, max_exact: usize) {
        if let Some(sketch) = &mut self.sketch {
            sketch.insert(hash);
            return;
        }
        let new = self.exact.insert(hash);
        if new
            && self.exact.len() <= max_exact
            && let Some(text) = text
        {
            let texts = self.texts.get_or_insert_with(Box::default);
            texts.push_str(text);
            texts.push('\n');
        }
        if new && self.exact.len() > max_exact {
            let mut sketch = Box::new(Sketch::new());
            for &member in &self.exact {
                sketch.insert(member);
            }
            self.exact = HashSet::default();
            self.sketch = Some(sketch);
        }
    }

    /// The interval's distinct members, and whether that is an estimate; empties the set
    /// (the next interval starts exact again).
    pub fn take_count(&mut self) -> (u64, bool) {
        self.texts = None;
        match self.sketch.take() {
            Some(sketch) => (sketch.estimate(), true),
            None => (std::mem::take(&mut self.exact).len() as u64, false),
        }
    }
}

impl Members {
    /// [`Members::take_count`], with the texts kept: the exactly counted members (all of
    /// them while the count is exact; the first `max_exact` when it is an estimate).
    pub fn take_with_texts(&mut self) -> (u64, bool, String) {
        let texts = self.texts.take().map(|texts| *texts).unwrap_or_default();
        let (count, estimated) = self.take_count();
        (count, estimated, texts)
    }
}

/// A HyperLogLog sketch: each register keeps the longest run of leading zeros (plus one)
/// seen among the hashes whose top bits select it.
struct Sketch {
    registers: [u8; REGISTERS],
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch").finish_non_exhaustive()
    }
}

impl Sketch {
    fn new() -> Sketch {
        Sketch {
            registers: [0; REGISTERS],
        }
    }

    fn insert(&mut self, hash: u64) {
        let index = (hash >> (64 - INDEX_BITS)) as usize;
        // The remaining 50 bits; the guard bit caps the rank at 51.
        let rest = (hash << INDEX_BITS) | (1 << (INDEX_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        let register = &mut self.registers[index];
        if rank > *register {
            *register = rank;
        }
    }

    /// The estimate of Flajolet et al., with linear counting while many registers are still
    /// empty. 64-bit hashes need no large-range correction.
    fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &register in &self.registers {
            sum += (-f64::from(register)).exp2();
            zeros += usize::from(register == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Well-spread test hashes (splitmix64), as SipHash gives the shard.
    fn hashes(seed: u64, n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(move |i| {
            let mut z =
                (seed ^ 0x5851_f42d_4c95_7f2d).wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }

    #[test]
    fn up_to_the_cap_the_count_is_exact() {
        let mut members = Members::default();
        for hash in hashes(1, 1000).chain(hashes(1, 1000)) {
            members.insert(hash, 1000);
        }
        assert_eq!(members.take_count(), (1000, false));
        assert_eq!(
            members.take_count(),
            (0, false),
            "taking the count empties it"
        );
    }

    #[test]
    fn texts_are_kept_for_the_exactly_counted_members_only() {
        let mut members = Members::default();
        for (hash, text) in [(1, "a"), (2, "b"), (1, "a"), (3, "c"), (4, "d")] {
            members.insert_text(hash, Some(text), 3);
        }
        let (_, estimated, texts) = members.take_with_texts();
        assert!(estimated, "four distinct members over a cap of three");
        assert_eq!(texts, "a\nb\nc\n");
        members.insert_text(9, Some("z"), 3);
        assert_eq!(members.take_with_texts(), (1, false, "z\n".to_string()));
    }

    #[test]
    fn past_the_cap_the_count_is_an_estimate_within_a_few_per_cent() {
        for (seed, n) in [
            (2, 1_001),
            (3, 20_000),
            (4, 50_000),
            (5, 100_000),
            (6, 1_000_000),
        ] {
            let mut members = Members::default();
            for hash in hashes(seed, n) {
                members.insert(hash, 1000);
            }
            // Repeats change nothing.
            for hash in hashes(seed, n / 2) {
                members.insert(hash, 1000);
            }
            let (count, estimated) = members.take_count();
            assert!(estimated);
            let error = (count as f64 - n as f64).abs() / n as f64;
            // 0.8 % standard error: 3 % is nearly four of them.
            assert!(error < 0.03, "{n} members estimated as {count}");
            assert!(
                members.exact.capacity() < 1000,
                "the exact table was given back"
            );
            assert_eq!(
                members.take_count(),
                (0, false),
                "the next interval is exact again"
            );
        }
    }
}
