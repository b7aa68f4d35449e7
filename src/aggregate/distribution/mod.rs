//! Timer, histogram and distribution arithmetic (SPEC §2, etsy statsd 0.10 to the letter).
//!
//! A shard owns one [`DistState`] per series and feeds it with [`DistState::add`] on the hot
//! path. At flush it [`take`](DistState::take)s a [`DistSnapshot`] (the raw samples, moved, not
//! copied) and sends it to the flush thread, which sorts and turns it into [`DistFigures`].
//! Config hands in [`Percentile`]s and [`Bins`], validated once; nothing here re-validates.
//!
//! # Exact and histogram mode
//!
//! While a series holds at most `exact_samples` values in the interval, the raw `f64`s are kept
//! and every figure is computed from the sorted values exactly as SPEC §2 says (sums in
//! ascending order, two-pass standard deviation). When one more value arrives, the values move
//! into a bounded-memory [`hdrhistogram`] sketch and the `Vec` is freed. From then on `count`,
//! `sum`, `sum_squares`, `lower`, `upper` and `mean` come from exact running totals
//! (compensated sums), `std` from Welford's running variance, and the median and every
//! percentile figure from the sketch. Bin counts are always taken at `add` time, so they stay
//! exact in both modes.
//!
//! # The sketch mapping (f64 onto hdrhistogram's u64)
//!
//! - Zeros are a plain counter. Positive values and the magnitudes of negative values each get
//!   their own `Histogram<u32>` (3 significant figures, auto-resizing), created lazily.
//! - A magnitude `m` with binary exponent `e` (`2^e <= m < 2^(e+1)`) is recorded as the integer
//!   `round(m * 2^shift)`. Each histogram keeps one power-of-two `shift`, chosen from the
//!   smallest and largest exponents it has seen: `shift = min(11 - e_min, 60 - e_max)`. So the
//!   smallest magnitude scales to at least 2048 (rounding costs at most 1/4096 relative, and
//!   every hdrhistogram bucket there is at most 1/1024 of its value wide) and the largest stays
//!   below 2^61, inside hdrhistogram's range.
//! - When a later value widens the exponent range, the histogram is rebuilt with the new
//!   shift: each bucket's midpoint is re-recorded scaled by the power-of-two difference. Moving
//!   up is lossless (buckets map onto buckets); moving down only happens when a larger value
//!   needs the room.
//! - A bucket reads back as its midpoint scaled by `2^-shift`, clamped into `[lower, upper]`:
//!   within 1/2048 + 1/4096 (< 0.08 %) of every value recorded in it.
//! - The ranks of SPEC §2 are walked over negatives (largest magnitude first), zeros, then
//!   positives. `mean_P`, `sum_P` and `sum_squares_P` sum bucket midpoints, so they carry the
//!   same per-value error (relative to the sum of magnitudes when signs mix).
//! - Memory: at most 1024 `u32` counters per binary order of magnitude a histogram spans, and
//!   at most 50 orders (about 210 KiB per sign), whatever the values. The 0.1 % bound holds for
//!   every value within 2^49 (about 5.6e14) of the largest magnitude of its sign; smaller ones
//!   in such a wide series degrade gracefully (still ordered, clamped to `[lower, upper]`).
//!   Each bucket counts up to `u32::MAX` samples in an interval and saturates beyond.
//! - The even-n median averages two read-backs: within 0.1 % of the larger middle magnitude.

mod bins;
mod exact;
mod figures;
mod logsketch;
mod magnitude;
mod observe;
mod percentile;
mod sketch;
mod state;

#[cfg(test)]
mod reference_tests;

pub use bins::Bins;
pub use figures::{DistFigures, Values};
pub use logsketch::{LogSketch, RELATIVE_ERROR as LOG_SKETCH_ERROR};
pub use observe::{Observe, Observed, Shape};
pub use percentile::Percentile;
pub use state::{DistSnapshot, DistState, LocalDist};

/// What the arithmetic needs from the config.
#[derive(Debug, Clone)]
pub struct DistributionConfig {
    /// The configured percentiles, in config order (their figures are emitted in this order).
    pub percentiles: Vec<Percentile>,
    /// How many values a series keeps raw in an interval before it switches to the sketch.
    pub exact_samples: usize,
    /// Keep each interval's values in its figures for a `statsd` output to forward
    /// ([`DistFigures::values`]).
    pub keep_values: bool,
    /// Build each interval's [`LogSketch`] for the history store (`[history]` is on).
    pub history_sketch: bool,
}
