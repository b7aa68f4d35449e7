//! The sender's pure parts: the bounded queue of pending payloads, which drops the
//! oldest when full (by count or by bytes), and the retry delay (exponential backoff with
//! jitter). No threads, no clock: the sender in the parent module drives them.

use std::collections::VecDeque;
use std::time::Duration;

/// Records waiting to be sent, oldest first: at most `max_records` of them, holding at most
/// `max_bytes` together. The sender takes the oldest out for an attempt and gives it back
/// when the attempt fails, so the record on the wire is never dropped mid-request (nor
/// counted against the limits) and the order of delivery stays the order of arrival.
///
/// The newest record is always kept: one larger than the whole byte budget waits alone,
/// every older record dropped to make room. Its memory was spent when it was serialized;
/// dropping it would save nothing and would keep a healthy endpoint from hearing anything.
#[derive(Debug)]
pub struct PendingQueue<T> {
    items: VecDeque<T>,
    max_records: usize,
    max_bytes: u64,
    /// The waiting records' bytes, together.
    bytes: u64,
}

impl<T: AsRef<[u8]>> PendingQueue<T> {
    /// An empty queue holding at most `max_records` (at least 1) records and `max_bytes`.
    pub fn new(max_records: usize, max_bytes: u64) -> PendingQueue<T> {
        let max_records = max_records.max(1);
        PendingQueue {
            items: VecDeque::with_capacity(max_records.min(1024)),
            max_records,
            max_bytes,
            bytes: 0,
        }
    }

    /// Adds the newest record; while the queue would then hold too many records or too many
    /// bytes, the oldest waiting record is dropped. Returns the dropped ones, oldest first.
    pub fn push(&mut self, item: T) -> Vec<T> {
        let size = weight(&item);
        let mut dropped = Vec::new();
        while !self.fits(size) {
            match self.take() {
                Some(oldest) => dropped.push(oldest),
                None => break,
            }
        }
        self.bytes += size;
        self.items.push_back(item);
        dropped
    }

    /// Takes the oldest record out, for an attempt.
    pub fn take(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        self.bytes -= weight(&item);
        Some(item)
    }

    /// Puts back a record whose attempt failed, as the oldest again. When newer records
    /// filled the queue meanwhile (by count or by bytes) it is the oldest of all, so it is
    /// the one dropped, and returned. Into an empty queue it always goes back.
    pub fn give_back(&mut self, item: T) -> Option<T> {
        let size = weight(&item);
        if !self.items.is_empty() && !self.fits(size) {
            return Some(item);
        }
        self.bytes += size;
        self.items.push_front(item);
        None
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The waiting records' bytes, together.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether one more record of `size` bytes keeps the queue within both limits.
    fn fits(&self, size: u64) -> bool {
        self.items.len() < self.max_records && self.bytes.saturating_add(size) <= self.max_bytes
    }
}

fn weight(item: &impl AsRef<[u8]>) -> u64 {
    item.as_ref().len() as u64
}

/// The delay before the next attempt after `failures` consecutive failed ones (at least 1):
/// `initial · 2^(failures-1)`, capped at `max`, then jittered down by up to half, so
/// agents that lost the same endpoint do not retry in step. `jitter` is in [0, 1).
pub fn backoff_delay(initial: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let full = initial.saturating_mul(1u32 << doublings).min(max);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// No byte budget to speak of: only the count bounds the queue.
    const UNLIMITED: u64 = u64::MAX;

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut queue = PendingQueue::new(2, UNLIMITED);
        assert!(queue.push("1").is_empty());
        assert!(queue.push("2").is_empty());
        assert_eq!(queue.push("3"), ["1"]);
        assert_eq!(queue.push("4"), ["2"]);
        assert_eq!(queue.take(), Some("3"));
        assert_eq!(queue.take(), Some("4"));
        assert_eq!(queue.take(), None);
    }

    #[test]
    fn a_failed_record_goes_back_to_the_front() {
        let mut queue = PendingQueue::new(3, UNLIMITED);
        queue.push("1");
        queue.push("2");
        let first = queue.take().expect("one waits");
        queue.push("3");
        assert_eq!(queue.give_back(first), None);
        assert_eq!(queue.take(), Some("1"));
        assert_eq!(queue.take(), Some("2"));
        assert_eq!(queue.take(), Some("3"));
    }

    #[test]
    fn a_failed_record_is_dropped_when_newer_ones_filled_the_queue() {
        let mut queue = PendingQueue::new(2, UNLIMITED);
        queue.push("1");
        let on_the_wire = queue.take().expect("one waits");
        queue.push("2");
        queue.push("3");
        assert_eq!(queue.give_back(on_the_wire), Some("1"));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.take(), Some("2"));
    }

    #[test]
    fn capacity_one_keeps_only_the_newest() {
        let mut queue = PendingQueue::new(1, UNLIMITED);
        for n in ["1", "2", "3", "4", "5"] {
            queue.push(n);
        }
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take(), Some("5"));
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn zero_capacity_is_read_as_one() {
        let mut queue = PendingQueue::new(0, UNLIMITED);
        assert!(queue.push("a").is_empty());
        assert_eq!(queue.push("b"), ["a"]);
    }

    #[test]
    fn the_queue_counts_the_bytes_that_wait() {
        let mut queue = PendingQueue::new(10, UNLIMITED);
        queue.push("aaa");
        queue.push("bb");
        assert_eq!(queue.bytes(), 5);
        let on_the_wire = queue.take().expect("one waits");
        assert_eq!(queue.bytes(), 2, "the record on the wire is not counted");
        assert_eq!(queue.give_back(on_the_wire), None);
        assert_eq!(queue.bytes(), 5);
    }

    #[test]
    fn a_record_that_fills_the_byte_budget_exactly_drops_nothing() {
        let mut queue = PendingQueue::new(10, 10);
        queue.push("aaaa");
        queue.push("bbbb");
        assert!(queue.push("cc").is_empty());
        assert_eq!((queue.len(), queue.bytes()), (3, 10));
    }

    #[test]
    fn over_the_byte_budget_the_oldest_are_dropped_until_the_newest_fits() {
        let mut queue = PendingQueue::new(10, 10);
        queue.push("aa");
        queue.push("bbb");
        queue.push("cccc");
        assert_eq!(queue.push("dddddd"), ["aa", "bbb"]);
        assert_eq!((queue.len(), queue.bytes()), (2, 10));
        assert_eq!(queue.take(), Some("cccc"));
        assert_eq!(queue.take(), Some("dddddd"));
    }

    #[test]
    fn the_count_and_the_byte_budget_both_bound_the_queue() {
        let mut queue = PendingQueue::new(2, 6);
        queue.push("a");
        queue.push("b");
        assert_eq!(queue.push("c"), ["a"], "the count bound");
        assert_eq!(queue.push("dddddd"), ["b", "c"], "the byte budget");
    }

    #[test]
    fn a_record_larger_than_the_whole_budget_waits_alone() {
        let mut queue = PendingQueue::new(10, 4);
        queue.push("ab");
        queue.push("cd");
        assert_eq!(queue.push("0123456789"), ["ab", "cd"]);
        assert_eq!((queue.len(), queue.bytes()), (1, 10));
        // The next record, however small, drops it in turn.
        assert_eq!(queue.push("x"), ["0123456789"]);
        assert_eq!(queue.take(), Some("x"));
    }

    #[test]
    fn a_failed_record_larger_than_the_budget_goes_back_into_an_empty_queue() {
        let mut queue = PendingQueue::new(10, 4);
        queue.push("0123456789");
        let on_the_wire = queue.take().expect("it waits");
        assert_eq!(queue.give_back(on_the_wire), None);
        assert_eq!(queue.take(), Some("0123456789"));
    }

    #[test]
    fn a_failed_record_is_dropped_when_newer_ones_filled_the_byte_budget() {
        let mut queue = PendingQueue::new(10, 6);
        queue.push("aaaa");
        let on_the_wire = queue.take().expect("one waits");
        queue.push("bbb");
        queue.push("cc");
        assert_eq!(queue.give_back(on_the_wire), Some("aaaa"));
        assert_eq!((queue.len(), queue.bytes()), (2, 5));
        assert_eq!(queue.take(), Some("bbb"));
    }

    #[test]
    fn backoff_doubles_from_initial() {
        let delays: Vec<_> = (1..=5)
            .map(|n| backoff_delay(500 * MS, 30_000 * MS, n, 0.0))
            .collect();
        assert_eq!(
            delays,
            [500 * MS, 1000 * MS, 2000 * MS, 4000 * MS, 8000 * MS]
        );
    }

    #[test]
    fn backoff_is_capped_at_max() {
        assert_eq!(backoff_delay(500 * MS, 30_000 * MS, 7, 0.0), 30_000 * MS);
        assert_eq!(
            backoff_delay(500 * MS, 30_000 * MS, u32::MAX, 0.0),
            30_000 * MS
        );
    }

    #[test]
    fn jitter_takes_off_at_most_half() {
        assert_eq!(backoff_delay(1000 * MS, 30_000 * MS, 1, 0.5), 750 * MS);
        let almost_all = backoff_delay(1000 * MS, 30_000 * MS, 1, 0.999_999);
        assert!(
            almost_all >= 500 * MS && almost_all < 501 * MS,
            "{almost_all:?}"
        );
        // Out-of-range jitter is clamped.
        assert_eq!(backoff_delay(1000 * MS, 30_000 * MS, 1, 7.0), 500 * MS);
    }

    #[test]
    fn the_first_failure_waits_initial() {
        assert_eq!(backoff_delay(200 * MS, 100 * MS, 1, 0.0), 100 * MS);
        assert_eq!(backoff_delay(200 * MS, 30_000 * MS, 0, 0.0), 200 * MS);
    }
}
