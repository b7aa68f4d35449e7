//! The HTTP backend's pure parts: the bounded queue of pending records, which drops the
//! oldest when full, and the retry delay (exponential backoff with jitter). No threads, no
//! clock: the sender in the parent module drives them.

use std::collections::VecDeque;
use std::time::Duration;

/// Records waiting to be sent, oldest first, at most `capacity` of them. The sender takes
/// the oldest out for an attempt and gives it back when the attempt fails, so the record on
/// the wire is never dropped mid-request and the order of delivery stays the order of
/// arrival.
#[derive(Debug)]
pub struct PendingQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> PendingQueue<T> {
    /// An empty queue holding at most `capacity` (at least 1) records.
    pub fn new(capacity: usize) -> PendingQueue<T> {
        let capacity = capacity.max(1);
        PendingQueue {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    /// Adds the newest record; when the queue is full, the oldest waiting record is dropped
    /// and returned.
    pub fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    /// Takes the oldest record out, for an attempt.
    pub fn take(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Puts back a record whose attempt failed, as the oldest again. When newer records
    /// filled the queue meanwhile it is the oldest of all, so it is the one dropped, and
    /// returned.
    pub fn give_back(&mut self, item: T) -> Option<T> {
        if self.items.len() >= self.capacity {
            return Some(item);
        }
        self.items.push_front(item);
        None
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }
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

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut queue = PendingQueue::new(2);
        assert_eq!(queue.push(1), None);
        assert_eq!(queue.push(2), None);
        assert_eq!(queue.push(3), Some(1));
        assert_eq!(queue.push(4), Some(2));
        assert_eq!(queue.take(), Some(3));
        assert_eq!(queue.take(), Some(4));
        assert_eq!(queue.take(), None);
    }

    #[test]
    fn a_failed_record_goes_back_to_the_front() {
        let mut queue = PendingQueue::new(3);
        queue.push(1);
        queue.push(2);
        let first = queue.take().expect("one waits");
        queue.push(3);
        assert_eq!(queue.give_back(first), None);
        assert_eq!(queue.take(), Some(1));
        assert_eq!(queue.take(), Some(2));
        assert_eq!(queue.take(), Some(3));
    }

    #[test]
    fn a_failed_record_is_dropped_when_newer_ones_filled_the_queue() {
        let mut queue = PendingQueue::new(2);
        queue.push(1);
        let on_the_wire = queue.take().expect("one waits");
        queue.push(2);
        queue.push(3);
        assert_eq!(queue.give_back(on_the_wire), Some(1));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.take(), Some(2));
    }

    #[test]
    fn capacity_one_keeps_only_the_newest() {
        let mut queue = PendingQueue::new(1);
        for n in 1..=5 {
            queue.push(n);
        }
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take(), Some(5));
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn zero_capacity_is_read_as_one() {
        let mut queue = PendingQueue::new(0);
        assert_eq!(queue.push('a'), None);
        assert_eq!(queue.push('b'), Some('a'));
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
