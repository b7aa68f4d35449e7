//! A compact, mergeable sketch of one series' raw values (DDSketch-style log buckets), built
//! on the flush thread when history is on and merged by the history store across flushes and
//! windows. Any rank reads back within [`RELATIVE_ERROR`] of the value that holds it, so a
//! day's `upper_95` is the day's 95th percentile, not a mean of shorter ones.
//!
//! A value `v > 0` falls in bucket `i = ceil(ln v / ln γ)` with `γ = (1 + α) / (1 - α)`; the
//! bucket reads back as `2 γ^i / (γ + 1)`, within α of every value in it. Negative values
//! keep their magnitudes in a second set of buckets, zeros (and magnitudes too small to
//! index) a plain count. Merging adds bucket counts, so it is exact: the merge of sixty
//! one-minute sketches is the one-hour sketch.

use super::Percentile;

/// α: the relative error of a value read back (0.75 %, leaving room under SPEC §9's 1 % for
/// the 0.08 % of the interval sketch that feeds it past `exact_samples`).
pub const RELATIVE_ERROR: f64 = 0.0075;
/// Buckets kept per sign; past it the smallest magnitudes collapse into one bucket. 4096
/// buckets span a factor of about e^61 between the smallest and largest magnitude.
const MAX_BUCKETS: usize = 4096;
/// Magnitudes below this count as zeros (no index for them).
const MIN_MAGNITUDE: f64 = 1e-300;

fn ln_gamma() -> f64 {
    ((1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)).ln()
}

/// Log-bucketed counts of raw values (sample rates not applied, as for percentiles).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSketch {
    zeros: u64,
    /// (index, count), indices strictly increasing.
    positive: Vec<(i32, u64)>,
    /// Magnitudes of negative values, as `positive`.
    negative: Vec<(i32, u64)>,
}

impl LogSketch {
    /// The sketch of values sorted ascending.
    pub fn from_sorted(values: &[f64]) -> LogSketch {
        let mut sketch = LogSketch::default();
        let ln_gamma = ln_gamma();
        for &v in values {
            if v > MIN_MAGNITUDE {
                push_sorted(&mut sketch.positive, index(v, ln_gamma), 1);
            } else if v < -MIN_MAGNITUDE {
                push_sorted(&mut sketch.negative, index(-v, ln_gamma), 1);
            } else {
                sketch.zeros += 1;
            }
        }
        // Ascending values are descending magnitudes on the negative side.
        sketch.negative.reverse();
        sketch.collapse();
        sketch
    }

    /// The sketch of `(value, count)` buckets in any order.
    pub fn from_weighted(buckets: impl Iterator<Item = (f64, u64)>) -> LogSketch {
        let ln_gamma = ln_gamma();
        let mut sketch = LogSketch::default();
        for (v, count) in buckets {
            if v > MIN_MAGNITUDE {
                sketch.positive.push((index(v, ln_gamma), count));
            } else if v < -MIN_MAGNITUDE {
                sketch.negative.push((index(-v, ln_gamma), count));
            } else {
                sketch.zeros = sketch.zeros.saturating_add(count);
            }
        }
        for side in [&mut sketch.positive, &mut sketch.negative] {
            side.sort_unstable_by_key(|(i, _)| *i);
            side.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1 = kept.1.saturating_add(later.1);
                }
                same
            });
        }
        sketch.collapse();
        sketch
    }

    /// Adds `other`'s counts to this one's.
    pub fn merge(&mut self, other: &LogSketch) {
        self.zeros = self.zeros.saturating_add(other.zeros);
        merge_side(&mut self.positive, &other.positive);
        merge_side(&mut self.negative, &other.negative);
        self.collapse();
    }

    /// The number of values.
    pub fn len(&self) -> u64 {
        let side = |s: &[(i32, u64)]| s.iter().fold(0_u64, |a, (_, c)| a.saturating_add(*c));
        side(&self.positive)
            .saturating_add(side(&self.negative))
            .saturating_add(self.zeros)
    }

    /// True when no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every bucket as (read-back value, count), ascending.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let gamma = ln_gamma().exp();
        let value = move |i: i32| 2.0 * gamma.powi(i) / (gamma + 1.0);
        let negatives = self
            .negative
            .iter()
            .rev()
            .map(move |(i, c)| (-value(*i), *c));
        let zeros = Some((0.0, self.zeros)).filter(|(_, c)| *c > 0);
        let positives = self.positive.iter().map(move |(i, c)| (value(*i), *c));
        negatives.chain(zeros).chain(positives)
    }

    /// `V[rank]` (0-based, ascending), clamped into `[lower, upper]` (the exact extremes,
    /// which also answer the first and last ranks).
    pub fn value_at(&self, rank: u64, lower: f64, upper: f64) -> Option<f64> {
        let n = self.len();
        if rank >= n {
            return None;
        }
        if rank == 0 {
            return Some(lower);
        }
        if rank + 1 == n {
            return Some(upper);
        }
        let mut end = 0_u64;
        for (value, count) in self.buckets() {
            end = end.saturating_add(count);
            if rank < end {
                return Some(value.clamp(lower, upper));
            }
        }
        Some(upper)
    }

    /// The median: the middle value, the mean of the two middle ones when n is even.
    pub fn median(&self, lower: f64, upper: f64) -> Option<f64> {
        let n = self.len();
        let mid = n / 2;
        if n == 0 {
            return None;
        }
        if n.is_multiple_of(2) {
            let a = self.value_at(mid - 1, lower, upper)?;
            let b = self.value_at(mid, lower, upper)?;
            Some((a + b) / 2.0)
        } else {
            self.value_at(mid, lower, upper)
        }
    }

    /// A percentile's five figures in [`Percentile::names`] order (count, mean, bound, sum,
    /// sum_squares), or `None` where it covers no value.
    pub fn tail(&self, p: &Percentile, lower: f64, upper: f64) -> Option<[f64; 5]> {
        let n = self.len();
        let k = p.covered(n);
        if k == 0 {
            return None;
        }
        let buckets: Vec<(f64, u64)> = self.buckets().collect();
        let clamp = |(v, c): &(f64, u64)| (v.clamp(lower, upper), *c);
        let (bound, (sum, squares)) = if p.is_bottom() {
            let sums = tail_sums(buckets.iter().map(clamp), k);
            (self.value_at(k - 1, lower, upper)?, sums)
        } else {
            let sums = tail_sums(buckets.iter().rev().map(clamp), k);
            (self.value_at(n - k, lower, upper)?, sums)
        };
        let count = k as f64;
        Some([count, sum / count, bound, sum, squares])
    }

    /// The compact binary form the history store keeps: the zero count, then per side
    /// whichever of two forms is shorter, all numbers varints. Sparse (tag 0): the bucket
    /// count, then per bucket its index (the first zigzag, the rest as steps from the one
    /// before) and count. Dense (tag 1): the first index (zigzag), the span of indices, and
    /// a count for every index of the span (0 for an empty bucket): about one byte per
    /// bucket where buckets are close together, as an hour of latencies fills them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 3 * (self.positive.len() + self.negative.len()));
        put_varint(&mut out, self.zeros);
        for side in [&self.positive, &self.negative] {
            let sparse = encode_sparse(side);
            match encode_dense(side) {
                Some(dense) if dense.len() < sparse.len() => {
                    out.push(1);
                    out.extend_from_slice(&dense);
                }
                _ => {
                    out.push(0);
                    out.extend_from_slice(&sparse);
                }
            }
        }
        out
    }

    /// Reads [`LogSketch::encode`]'s form; `None` when the bytes are not one.
    pub fn decode(mut bytes: &[u8]) -> Option<LogSketch> {
        let zeros = get_varint(&mut bytes)?;
        let mut sides = [Vec::new(), Vec::new()];
        for side in &mut sides {
            let (&tag, rest) = bytes.split_first()?;
            bytes = rest;
            *side = match tag {
                0 => decode_sparse(&mut bytes)?,
                1 => decode_dense(&mut bytes)?,
                _ => return None,
            };
        }
        if !bytes.is_empty() {
            return None;
        }
        let [positive, negative] = sides;
        Some(LogSketch {
            zeros,
            positive,
            negative,
        })
    }

    /// Keeps at most [`MAX_BUCKETS`] per side by folding the smallest magnitudes together.
    fn collapse(&mut self) {
        for side in [&mut self.positive, &mut self.negative] {
            if side.len() > MAX_BUCKETS {
                let cut = side.len() - MAX_BUCKETS;
                let folded = side[..=cut]
                    .iter()
                    .fold(0_u64, |a, (_, c)| a.saturating_add(*c));
                side.drain(..cut);
                side[0].1 = folded;
            }
        }
    }
}

fn encode_sparse(side: &[(i32, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 3 * side.len());
    put_varint(&mut out, side.len() as u64);
    let mut previous: Option<i32> = None;
    for (i, count) in side {
        match previous {
            None => put_varint(&mut out, zigzag(*i)),
            Some(p) => put_varint(&mut out, (i64::from(*i) - i64::from(p)) as u64),
        }
        previous = Some(*i);
        put_varint(&mut out, *count);
    }
    out
}

/// The dense form, or `None` when the span is too wide to be worth it.
fn encode_dense(side: &[(i32, u64)]) -> Option<Vec<u8>> {
    let (first, last) = (side.first()?.0, side.last()?.0);
    let span = usize::try_from(i64::from(last) - i64::from(first) + 1).ok()?;
    if span > 4 * side.len() + 8 {
        return None;
    }
    let mut out = Vec::with_capacity(4 + span);
    put_varint(&mut out, zigzag(first));
    put_varint(&mut out, span as u64);
    let mut next = first;
    for (i, count) in side {
        while next < *i {
            out.push(0);
            next += 1;
        }
        put_varint(&mut out, *count);
        next = i + 1;
    }
    Some(out)
}

fn decode_sparse(bytes: &mut &[u8]) -> Option<Vec<(i32, u64)>> {
    let len = usize::try_from(get_varint(bytes)?).ok()?;
    if len > MAX_BUCKETS {
        return None;
    }
    let mut side = Vec::with_capacity(len);
    let mut previous: Option<i64> = None;
    for _ in 0..len {
        let raw = get_varint(bytes)?;
        let i = match previous {
            None => unzigzag(raw),
            Some(p) if raw > 0 => p.checked_add(i64::try_from(raw).ok()?)?,
            Some(_) => return None,
        };
        previous = Some(i);
        side.push((i32::try_from(i).ok()?, get_varint(bytes)?));
    }
    Some(side)
}

fn decode_dense(bytes: &mut &[u8]) -> Option<Vec<(i32, u64)>> {
    let first = unzigzag(get_varint(bytes)?);
    let span = usize::try_from(get_varint(bytes)?).ok()?;
    if span > 4 * MAX_BUCKETS + 8 {
        return None;
    }
    let mut side = Vec::new();
    for offset in 0..span {
        let count = get_varint(bytes)?;
        if count > 0 {
            let i = first.checked_add(offset as i64)?;
            side.push((i32::try_from(i).ok()?, count));
        }
    }
    if side.len() > MAX_BUCKETS {
        return None;
    }
    Some(side)
}

fn index(magnitude: f64, ln_gamma: f64) -> i32 {
    (magnitude.ln() / ln_gamma).ceil() as i32
}

fn push_sorted(side: &mut Vec<(i32, u64)>, i: i32, count: u64) {
    match side.last_mut() {
        Some((last, c)) if *last == i => *c = c.saturating_add(count),
        _ => side.push((i, count)),
    }
}

fn merge_side(mine: &mut Vec<(i32, u64)>, other: &[(i32, u64)]) {
    if other.is_empty() {
        return;
    }
    if other.len() * 8 < mine.len() {
        // A flush's few buckets into a window's many: in place, no new vector.
        for &(i, count) in other {
            match mine.binary_search_by_key(&i, |(j, _)| *j) {
                Ok(at) => mine[at].1 = mine[at].1.saturating_add(count),
                Err(at) => mine.insert(at, (i, count)),
            }
        }
        return;
    }
    // The union's length first, then a merge from the back in place: no new vector once
    // `mine` has grown to a window's size.
    let (mut a, mut b, mut union) = (0, 0, 0);
    while a < mine.len() && b < other.len() {
        match mine[a].0.cmp(&other[b].0) {
            std::cmp::Ordering::Less => a += 1,
            std::cmp::Ordering::Greater => b += 1,
            std::cmp::Ordering::Equal => {
                a += 1;
                b += 1;
            }
        }
        union += 1;
    }
    union += (mine.len() - a) + (other.len() - b);
    let (mut a, mut b) = (mine.len(), other.len());
    mine.resize(union, (0, 0));
    for slot in (0..union).rev() {
        let next = match (a.checked_sub(1), b.checked_sub(1)) {
            (Some(x), Some(y)) if mine[x].0 == other[y].0 => {
                a = x;
                b = y;
                (mine[x].0, mine[x].1.saturating_add(other[y].1))
            }
            (Some(x), Some(y)) if mine[x].0 > other[y].0 => {
                a = x;
                mine[x]
            }
            (Some(x), None) => {
                a = x;
                mine[x]
            }
            (_, Some(y)) => {
                b = y;
                other[y]
            }
            (None, None) => break,
        };
        mine[slot] = next;
    }
}

/// Σv and Σv² over the first `k` values the buckets yield.
fn tail_sums(buckets: impl Iterator<Item = (f64, u64)>, k: u64) -> (f64, f64) {
    let (mut left, mut sum, mut squares) = (k, 0.0, 0.0);
    for (v, count) in buckets {
        if left == 0 {
            break;
        }
        let take = count.min(left);
        left -= take;
        sum += v * take as f64;
        squares += v * v * take as f64;
    }
    (sum, squares)
}

fn zigzag(i: i32) -> u64 {
    u64::from(((i << 1) ^ (i >> 31)) as u32)
}

fn unzigzag(raw: u64) -> i64 {
    let raw = raw as i64;
    (raw >> 1) ^ -(raw & 1)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: f64) -> Percentile {
        Percentile::new(v).expect("valid percentile")
    }

    fn exact_rank(sorted: &[f64], p: f64) -> f64 {
        let k = (p / 100.0 * sorted.len() as f64).round() as usize;
        sorted[k - 1]
    }

    #[test]
    fn every_rank_reads_back_within_the_relative_error() {
        let mut values: Vec<f64> = (1..=5000).map(|i| (i as f64).powf(1.7) / 3.0).collect();
        values.sort_by(f64::total_cmp);
        let sketch = LogSketch::from_sorted(&values);
        let (lo, hi) = (values[0], values[values.len() - 1]);
        for (rank, &v) in values.iter().enumerate() {
            let got = sketch.value_at(rank as u64, lo, hi).expect("in range");
            assert!(
                (got - v).abs() <= v * RELATIVE_ERROR * 1.0001,
                "{rank}: {got} {v}"
            );
        }
    }

    #[test]
    fn merged_sketches_equal_the_sketch_of_all_values() {
        let a: Vec<f64> = (0..300).map(|i| f64::from(i) - 100.0).collect();
        let b: Vec<f64> = (0..300).map(|i| f64::from(i) * 7.5).collect();
        let mut merged = LogSketch::from_sorted(&a);
        merged.merge(&LogSketch::from_sorted(&b));
        let mut all = [a, b].concat();
        all.sort_by(f64::total_cmp);
        assert_eq!(merged, LogSketch::from_sorted(&all));
        assert_eq!(merged.len(), 600);
    }

    #[test]
    fn negatives_zeros_and_positives_keep_their_order() {
        let values = [-50.0, -2.0, 0.0, 0.0, 3.0, 1000.0];
        let sketch = LogSketch::from_sorted(&values);
        let read: Vec<f64> = (0..6)
            .map(|r| sketch.value_at(r, -50.0, 1000.0).expect("rank"))
            .collect();
        for (got, want) in read.iter().zip(values) {
            assert!((got - want).abs() <= want.abs() * RELATIVE_ERROR * 1.0001);
        }
        assert_eq!(sketch.median(-50.0, 1000.0), Some(0.0));
    }

    #[test]
    fn tails_follow_the_spec_ranks() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let sketch = LogSketch::from_sorted(&values);
        let [count, _, bound, sum, _] = sketch.tail(&p(95.0), 1.0, 100.0).expect("covered");
        assert_eq!(count, 95.0);
        assert!((bound - exact_rank(&values, 95.0)).abs() <= 95.0 * RELATIVE_ERROR);
        assert!((sum - 4560.0).abs() <= 4560.0 * RELATIVE_ERROR);
        let [_, _, top, _, _] = sketch.tail(&p(-10.0), 1.0, 100.0).expect("covered");
        assert!((top - 91.0).abs() <= 91.0 * RELATIVE_ERROR);
        assert!(LogSketch::default().tail(&p(50.0), 0.0, 0.0).is_none());
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let sketch = LogSketch::from_sorted(&[-3.0, 0.0, 0.5, 1.0, 1.0, 250.0, 1e12]);
        let bytes = sketch.encode();
        assert_eq!(LogSketch::decode(&bytes), Some(sketch));
        assert_eq!(LogSketch::decode(&[0xff]), None);
        assert_eq!(LogSketch::decode(&[0, 1, 2]), None);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(LogSketch::decode(&trailing), None);
    }

    #[test]
    fn close_buckets_take_the_dense_form_and_round_trip() {
        let values: Vec<f64> = (0..3600)
            .map(|i| 40.0 + f64::from(i % 600) / 10.0)
            .collect();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let sketch = LogSketch::from_sorted(&sorted);
        let bytes = sketch.encode();
        assert_eq!(bytes[1], 1, "dense");
        assert!(
            bytes.len() < 2 * sketch.positive.len(),
            "{} bytes",
            bytes.len()
        );
        assert_eq!(LogSketch::decode(&bytes), Some(sketch));
    }

    #[test]
    fn weighted_buckets_build_the_same_sketch_as_values() {
        let sorted = [1.0, 1.0, 2.0, 5.0, 5.0, 5.0];
        let weighted = LogSketch::from_weighted([(5.0, 3), (1.0, 2), (2.0, 1)].into_iter());
        assert_eq!(weighted, LogSketch::from_sorted(&sorted));
    }

    #[test]
    fn buckets_stay_bounded_across_the_whole_range() {
        let values: Vec<f64> = (-300..300).map(|e| 10f64.powi(e)).collect();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let sketch = LogSketch::from_sorted(&sorted);
        assert!(sketch.positive.len() <= MAX_BUCKETS);
        assert_eq!(sketch.len(), 600);
    }
}
