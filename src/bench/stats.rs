//! Accounting: which notifications were accepted and received (a bitmap per run, so lost and
//! duplicated ones are exact), and latency percentiles from HDR histograms.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest value a histogram holds, in microseconds (one hour); larger values are clamped.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// How many lost sequence numbers a report lists by name.
pub const LOST_SAMPLE: usize = 20;

/// A histogram of microseconds, 1 µs to one hour, three significant figures.
pub fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
}

/// A set of sequence numbers as a growable bitmap (one bit per notification of the run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(seq: u64) -> (usize, u64) {
        (
            usize::try_from(seq / 64).unwrap_or(usize::MAX),
            1 << (seq % 64),
        )
    }

    /// Adds `seq`; true if it was not there yet (false: a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = Self::position(seq);
        if word >= self.words.len() {
            self.words.resize(word.saturating_add(1), 0);
        }
        let Some(slot) = self.words.get_mut(word) else {
            return false;
        };
        if *slot & bit != 0 {
            return false;
        }
        *slot |= bit;
        self.len += 1;
        true
    }

    /// Adds every number of `range`.
    pub fn insert_range(&mut self, range: std::ops::Range<u64>) {
        for seq in range {
            self.insert(seq);
        }
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        let (word, bit) = Self::position(seq);
        self.words.get(word).is_some_and(|w| w & bit != 0)
    }

    /// How many numbers the set holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds every number of `other`; returns how many were already here (overlaps).
    pub fn union_with(&mut self, other: &SeqSet) -> u64 {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        let mut overlap = 0;
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            overlap += u64::from((*mine & theirs).count_ones());
            *mine |= theirs;
        }
        self.len = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
        overlap
    }

    /// The numbers in `self` that are not in `other`: how many, and the first `sample` of them.
    pub fn difference(&self, other: &SeqSet, sample: usize) -> (u64, Vec<u64>) {
        let mut count = 0;
        let mut first = Vec::new();
        for (i, mine) in self.words.iter().enumerate() {
            let theirs = other.words.get(i).copied().unwrap_or(0);
            let mut missing = mine & !theirs;
            count += u64::from(missing.count_ones());
            while missing != 0 && first.len() < sample {
                let bit = u64::from(missing.trailing_zeros());
                first.push(i as u64 * 64 + bit);
                missing &= missing - 1;
            }
        }
        (count, first)
    }
}

/// What was published against what arrived.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconciled {
    /// Accepted (202) but never received.
    pub lost: u64,
    /// The first lost sequence numbers.
    pub lost_sample: Vec<u64>,
    /// Received although the publish did not get its 202 (a timeout, say): stored anyway.
    pub unconfirmed: u64,
}

/// Compares the accepted and the received sets of a run.
pub fn reconcile(accepted: &SeqSet, received: &SeqSet) -> Reconciled {
    let (lost, lost_sample) = accepted.difference(received, LOST_SAMPLE);
    let (unconfirmed, _) = received.difference(accepted, 0);
    Reconciled {
        lost,
        lost_sample,
        unconfirmed,
    }
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles of `histogram` (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            min: histogram.min(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// Receptions by the second of their intended send time: how many, how many late, the worst.
/// A tail that comes from one stall shows up as a few bad seconds; a tail spread over the run
/// as many.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerSecond {
    seconds: Vec<SecondStats>,
}

/// One second of a [`PerSecond`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SecondStats {
    /// Notifications received whose intended send time fell in this second.
    pub received: u64,
    /// Of those, received more than [`PerSecond::LATE_US`] after it.
    pub late: u64,
    /// The largest latency among them, µs.
    pub max_us: u64,
}

impl PerSecond {
    /// What counts as late: the p99 target, 5 ms.
    pub const LATE_US: u64 = 5_000;

    /// Records a reception `latency_us` after its intended send at `intended_us` (µs since the
    /// bench's start).
    pub fn record(&mut self, intended_us: u64, latency_us: u64) {
        let Ok(second) = usize::try_from(intended_us / 1_000_000) else {
            return;
        };
        if second >= self.seconds.len() {
            self.seconds.resize(second + 1, SecondStats::default());
        }
        if let Some(s) = self.seconds.get_mut(second) {
            s.received += 1;
            s.late += u64::from(latency_us > Self::LATE_US);
            s.max_us = s.max_us.max(latency_us);
        }
    }

    /// Adds `other`'s receptions.
    pub fn merge(&mut self, other: &PerSecond) {
        if other.seconds.len() > self.seconds.len() {
            self.seconds
                .resize(other.seconds.len(), SecondStats::default());
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.received += theirs.received;
            mine.late += theirs.late;
            mine.max_us = mine.max_us.max(theirs.max_us);
        }
    }

    /// The seconds from `from_us` on (µs since the bench's start, rounded down to its second),
    /// each with its offset in seconds from there; seconds without receptions are left out.
    pub fn since(&self, from_us: u64) -> Vec<(u64, SecondStats)> {
        let first = from_us / 1_000_000;
        self.seconds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64, *s))
            .filter(|(i, s)| *i >= first && s.received > 0)
            .map(|(i, s)| (i - first, s))
            .collect()
    }
}

/// Microseconds from `sent_us` to `received_us` (zero if the clock readings cross).
pub fn latency_us(sent_us: u64, received_us: u64) -> u64 {
    received_us.saturating_sub(sent_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_counts_late_receptions_in_the_second_they_were_meant_for() {
        let mut a = PerSecond::default();
        a.record(1_200_000, 800);
        a.record(1_900_000, 9_000);
        a.record(3_000_000, 5_000);
        let mut b = PerSecond::default();
        b.record(3_999_999, 5_001);
        b.record(500_000, 100);
        a.merge(&b);
        let late = |received, late, max_us| SecondStats {
            received,
            late,
            max_us,
        };
        assert_eq!(
            a.since(1_000_000),
            vec![(0, late(2, 1, 9_000)), (2, late(2, 1, 5_001))],
            "second 1 and 3 from the start, second 0 before it, second 2 empty"
        );
        assert_eq!(a.since(0).first(), Some(&(0, late(1, 0, 100))));
    }

    #[test]
    fn seq_set_detects_duplicates_and_grows() {
        let mut set = SeqSet::new();
        assert!(set.is_empty());
        assert!(set.insert(0));
        assert!(set.insert(63));
        assert!(set.insert(64));
        assert!(set.insert(100_000));
        assert!(!set.insert(64), "second insert is a duplicate");
        assert_eq!(set.len(), 4);
        assert!(set.contains(100_000));
        assert!(!set.contains(99_999));
        assert!(
            !set.contains(u64::MAX / 2),
            "far beyond the end is simply absent"
        );
    }

    #[test]
    fn reconcile_finds_lost_and_unconfirmed() {
        let mut accepted = SeqSet::new();
        accepted.insert_range(0..200);
        let mut received = SeqSet::new();
        received.insert_range(0..200);
        assert_eq!(
            reconcile(&accepted, &received),
            Reconciled {
                lost: 0,
                lost_sample: vec![],
                unconfirmed: 0
            }
        );
        let mut received = SeqSet::new();
        for seq in (0..200).filter(|s| *s != 5 && *s != 130) {
            received.insert(seq);
        }
        received.insert(250); // arrived, but its publish timed out
        let r = reconcile(&accepted, &received);
        assert_eq!(r.lost, 2);
        assert_eq!(r.lost_sample, vec![5, 130]);
        assert_eq!(r.unconfirmed, 1);
    }

    #[test]
    fn lost_sample_is_capped() {
        let mut accepted = SeqSet::new();
        accepted.insert_range(0..1_000);
        let r = reconcile(&accepted, &SeqSet::new());
        assert_eq!(r.lost, 1_000);
        assert_eq!(r.lost_sample.len(), LOST_SAMPLE);
        assert_eq!(r.lost_sample[..3], [0, 1, 2]);
    }

    #[test]
    fn union_counts_overlaps() {
        let mut a = SeqSet::new();
        a.insert_range(0..10);
        let mut b = SeqSet::new();
        b.insert_range(5..300);
        assert_eq!(a.union_with(&b), 5);
        assert_eq!(a.len(), 300);
        let mut empty = SeqSet::new();
        assert_eq!(empty.union_with(&a), 0);
        assert_eq!(empty, a);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_histogram().unwrap();
        assert_eq!(Percentiles::of(&h), Percentiles::default());
        for v in 1..=1_000u64 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1_000);
        assert_eq!(p.min, 1);
        assert_eq!(p.p50, 500);
        assert_eq!(p.p90, 900);
        assert_eq!(p.p99, 990);
        assert_eq!(p.p999, 999);
        assert_eq!(p.max, 1_000);
        assert!((p.mean - 500.5).abs() < 1.0);
    }

    #[test]
    fn histograms_clamp_and_merge() {
        let mut a = new_histogram().unwrap();
        a.saturating_record(HISTOGRAM_MAX_US * 10);
        let mut b = new_histogram().unwrap();
        b.saturating_record(latency_us(1_000, 1_250));
        b.saturating_record(latency_us(2_000, 1_000)); // clocks crossed: zero
        a.add(&b).unwrap();
        assert_eq!(a.len(), 3);
        assert!(a.max() >= HISTOGRAM_MAX_US);
        assert_eq!(latency_us(5, 3), 0);
    }
}
