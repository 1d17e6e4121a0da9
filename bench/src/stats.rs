//! Percentiles and distributions of latency samples (nanoseconds in,
//! microseconds out). Nearest-rank percentiles over the sorted samples: no
//! interpolation, so every figure reported is a latency that was measured.

use serde::Serialize;

/// The percentiles kept for the plot: every whole percent, then the tail.
pub const DISTRIBUTION_POINTS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0,
    70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 97.0, 98.0, 99.0, 99.5, 99.9, 99.99, 100.0,
];

/// Latency figures of one set of calls, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub samples: usize,
    pub mean_us: f64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// The sample at percentile `p` (0-100) of `sorted`, nearest rank: the
/// smallest sample with at least p% of the samples at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite float rounding.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(ns: u64) -> f64 {
    // One decimal: sub-microsecond digits are noise on loopback.
    (ns as f64 / 100.0).round() / 10.0
}

/// Sorts `samples` in place and summarises them.
pub fn summarize(samples: &mut [u64]) -> Summary {
    samples.sort_unstable();
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    let mean = if samples.is_empty() {
        0
    } else {
        (sum / samples.len() as u128) as u64
    };
    Summary {
        samples: samples.len(),
        mean_us: us(mean),
        min_us: us(samples.first().copied().unwrap_or(0)),
        p50_us: us(percentile(samples, 50.0)),
        p90_us: us(percentile(samples, 90.0)),
        p99_us: us(percentile(samples, 99.0)),
        p999_us: us(percentile(samples, 99.9)),
        max_us: us(samples.last().copied().unwrap_or(0)),
    }
}

/// `[percentile, microseconds]` at each of [`DISTRIBUTION_POINTS`], from
/// sorted samples.
pub fn distribution(sorted: &[u64]) -> Vec<[f64; 2]> {
    DISTRIBUTION_POINTS
        .iter()
        .map(|&p| [p, us(percentile(sorted, p))])
        .collect()
}

/// The median of some figures (for the ratios over several runs).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&sorted, 50.0), 50_000);
        assert_eq!(percentile(&sorted, 90.0), 90_000);
        assert_eq!(percentile(&sorted, 99.0), 99_000);
        assert_eq!(percentile(&sorted, 100.0), 100_000);
        // p0 is the minimum, not an index underflow.
        assert_eq!(percentile(&sorted, 0.0), 1_000);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 99.0), 10);
        assert_eq!(percentile(&ten, 50.0), 5);
    }

    #[test]
    fn summary_in_microseconds() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|i| i * 1_000).collect();
        let s = summarize(&mut samples);
        assert_eq!(s.samples, 1000);
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p90_us, 900.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(s.mean_us, 500.5);
        let d = distribution(&samples);
        assert_eq!(d.len(), DISTRIBUTION_POINTS.len());
        assert_eq!(d.first(), Some(&[0.0, 1.0]));
        assert_eq!(d.last(), Some(&[100.0, 1000.0]));
        assert!(d.windows(2).all(|w| w[0][1] <= w[1][1]), "monotonic");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
