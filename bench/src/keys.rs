//! Which circuit each simulated call uses: a small deterministic PRNG and
//! uniform, Zipf and single-hot-key distributions over circuit indices.

/// SplitMix64: tiny, fast and good enough to pick keys; deterministic per
/// seed so runs are repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (n > 0), by multiply-shift (bias < n / 2^64).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Zipf over ranks 0..n: P(k) proportional to 1 / (k+1)^s, sampled by
/// binary search in a precomputed cumulative table.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` (> 0) ranks with exponent `s` (>= 0).
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 0..n {
            acc += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    /// Probability of rank `k`.
    #[cfg(test)]
    pub fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf[0],
            _ => self.cdf[k] - self.cdf[k - 1],
        }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// How calls spread over the circuits of a fleet workload.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Every circuit equally likely.
    Uniform(usize),
    /// Zipf(s = 1) over the circuits: circuit 0 gets ~13 % of 1,000.
    Zipf(Zipf),
    /// Every call on circuit 0 (W7).
    Hot,
}

impl Keys {
    /// A short label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Keys::Uniform(_) => "uniform",
            Keys::Zipf(_) => "zipf",
            Keys::Hot => "hot",
        }
    }

    /// The circuit of the next call.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        match self {
            Keys::Uniform(n) => rng.below(*n),
            Keys::Zipf(z) => z.sample(rng),
            Keys::Hot => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_uniform_enough() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[a.below(10)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        for _ in 0..1000 {
            let f = a.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn zipf_matches_its_probabilities() {
        let z = Zipf::new(1000, 1.0);
        // 1 / H(1000) = 0.1336...
        assert!(
            (z.probability(0) - 0.13361).abs() < 1e-4,
            "{}",
            z.probability(0)
        );
        assert!((z.probability(1) * 2.0 - z.probability(0)).abs() < 1e-12);
        let mut rng = Rng::new(1);
        let n = 200_000;
        let mut hits = vec![0u32; 1000];
        for _ in 0..n {
            let k = z.sample(&mut rng);
            hits[k] += 1;
        }
        let share0 = f64::from(hits[0]) / f64::from(n);
        assert!((share0 - z.probability(0)).abs() < 0.005, "{share0}");
        assert!(hits[0] > hits[9] && hits[9] > hits[99]);
        assert!(hits[999] > 0);
    }

    #[test]
    fn zipf_with_exponent_zero_is_uniform() {
        let z = Zipf::new(4, 0.0);
        for k in 0..4 {
            assert!((z.probability(k) - 0.25).abs() < 1e-12);
        }
        let mut rng = Rng::new(3);
        assert!((0..1000).all(|_| z.sample(&mut rng) < 4));
    }

    #[test]
    fn hot_always_picks_circuit_zero() {
        let mut rng = Rng::new(5);
        assert!((0..100).all(|_| Keys::Hot.sample(&mut rng) == 0));
        assert_eq!(Keys::Uniform(3).label(), "uniform");
    }
}
