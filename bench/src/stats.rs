//! Statistics: HdrHistogram percentiles and medians over repeats.
//!
//! Every latency is recorded in nanoseconds in a histogram with three
//! significant digits (0.1 % relative error), from 1 ns to one hour, so no
//! sample is ever dropped or clamped silently: values beyond the range are
//! clamped to it and counted in `clamped`.

use hdrhistogram::Histogram;

/// Largest value a histogram holds: one hour, in nanoseconds.
const MAX_NS: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds.
#[derive(Clone)]
pub struct Hist {
    h: Histogram<u64>,
    /// Samples clamped into the range (0 or beyond an hour).
    pub clamped: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Hist(n={}, p50={}ns, p99={}ns)",
            self.len(),
            self.p(50.0),
            self.p(99.0)
        )
    }
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            // Bounds are constants within hdrhistogram's limits.
            h: Histogram::new_with_bounds(1, MAX_NS, 3).unwrap_or_else(|_| unreachable!()),
            clamped: 0,
        }
    }

    /// Record one sample (ns).
    pub fn record(&mut self, ns: u64) {
        let v = if ns == 0 || ns > MAX_NS {
            self.clamped += 1;
            ns.clamp(1, MAX_NS)
        } else {
            ns
        };
        // In range by construction.
        let _ = self.h.record(v);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// The `q`-th percentile (0-100) in ns; 0 when empty.
    pub fn p(&self, q: f64) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.h.value_at_percentile(q)
        }
    }

    /// Largest sample in ns.
    pub fn max(&self) -> u64 {
        self.h.max()
    }
}

/// The median of `xs` (mean of the middle two for an even count); NaN when
/// empty. NaNs sort last.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q`-th percentile (0-100) of a small sample by nearest rank; NaN when
/// empty. Used for per-node figures (50 nodes x a few repeats), where a
/// histogram would be overkill.
pub fn percentile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn histogram_percentiles_are_within_a_tenth_of_a_percent() {
        let mut h = Hist::new();
        for v in 1..=10_000u64 {
            h.record(v * 1_000);
        }
        let p50 = h.p(50.0) as f64;
        let p99 = h.p(99.0) as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.001, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.001, "{p99}");
        assert_eq!(h.len(), 10_000);
        assert_eq!(h.clamped, 0);
        h.record(0);
        assert_eq!(h.clamped, 1);
        assert_eq!(h.len(), 10_001);
        assert!(Hist::new().is_empty());
    }
}
