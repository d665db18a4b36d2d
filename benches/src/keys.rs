//! Which key each request touches: uniform, or zipfian with hot keys
//! scattered over the key space.
//!
//! Real key-value traffic is skewed: a few keys take most requests. YCSB
//! models this with a zipfian distribution, where the key of popularity
//! rank `i` (0 = hottest) is chosen with probability proportional to
//! `1 / (i + 1)^θ`; its default θ = 0.99 gives the hottest key of a 100 000
//! key space about 8% of all requests, and the hottest 1% of keys about
//! 60%. Skew is what exposes hot partitions, lock contention on one key
//! and, for ringkv, siblings from concurrent writes to the same key.
//!
//! [`Zipfian`] is the generator of Gray et al., "Quickly Generating
//! Billion-Record Synthetic Databases" (SIGMOD 1994), which YCSB uses too:
//! after an O(n) precomputation of the generalised harmonic number
//! ζ(n, θ) = Σ 1/i^θ, each draw costs one `powf`. For large key spaces the
//! sum is taken exactly over the first [`ZETA_EXACT_TERMS`] terms and the
//! rest by the Euler–Maclaurin formula, so `--keys 1e9` does not spend
//! seconds before the first request.
//!
//! Ranks are then **scrambled** by [`Scramble`], a seeded permutation of
//! `0..n`, so the hottest keys are not keys 0, 1, 2, … (the first keys a
//! load phase wrote, neighbours in any ordered store such as etcd's B-tree)
//! but keys spread evenly over the whole space. ringkv hashes keys onto its
//! partitions anyway, so for ringkv the scramble only keeps hot keys
//! independent of insertion order. Unlike YCSB's scrambled zipfian, which
//! hashes the rank modulo n (merging some ranks and leaving some keys never
//! chosen), this is a bijection: every key keeps exactly its rank's
//! probability.

use rand::Rng;

/// Terms of ζ(n, θ) summed one by one; beyond this the tail is
/// approximated (relative error far below 1e-9, see the tests). A million
/// `powf` calls take a few milliseconds.
const ZETA_EXACT_TERMS: u64 = 1 << 20;

/// Rounds of the mixing function in [`Scramble`]: three multiply-xorshift
/// rounds leave no visible structure between consecutive ranks.
const SCRAMBLE_ROUNDS: usize = 3;

/// How keys are chosen; the `--distribution` flag.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every key equally likely.
    Uniform { keys: u64 },
    /// Zipfian ranks, scrambled over the key space.
    Zipfian { zipf: Zipfian, scramble: Scramble },
}

impl KeyChooser {
    pub fn uniform(keys: u64) -> Self {
        KeyChooser::Uniform { keys }
    }

    /// A zipfian chooser over `keys` keys with skew `theta` (0 < θ < 1);
    /// `seed` fixes which keys are hot, so runs with one seed agree.
    pub fn zipfian(keys: u64, theta: f64, seed: u64) -> Self {
        KeyChooser::Zipfian {
            zipf: Zipfian::new(keys, theta),
            scramble: Scramble::new(keys, seed),
        }
    }

    /// The index of the next key, in `0..keys`.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyChooser::Uniform { keys } => rng.random_range(0..*keys),
            KeyChooser::Zipfian { zipf, scramble } => scramble.apply(zipf.rank(rng)),
        }
    }
}

/// Gray et al.'s zipfian generator over ranks `0..n`.
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    /// ζ(n, θ): the normalising constant.
    zeta_n: f64,
    /// 1 / (1 − θ).
    alpha: f64,
    /// Gray et al.'s η, which maps a uniform draw past the first two ranks
    /// onto the rest.
    eta: f64,
}

impl Zipfian {
    /// `n` ≥ 1 ranks, skew `theta` in (0, 1).
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2, theta);
        // With n ≤ 2 the first two branches of `rank` cover every draw and
        // η would be 0/0.
        let eta = if n > 2 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        } else {
            0.0
        };
        Zipfian {
            n,
            theta,
            zeta_n,
            alpha: 1.0 / (1.0 - theta),
            eta,
        }
    }

    /// The next rank: 0 is the most popular.
    pub fn rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let rank = self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        // `as` saturates; rounding at the top end can reach n.
        (rank as u64).min(self.n - 1)
    }

    /// Probability of rank `rank`, to check draws against.
    #[cfg(test)]
    pub fn probability(&self, rank: u64) -> f64 {
        1.0 / ((rank + 1) as f64).powf(self.theta) / self.zeta_n
    }
}

/// ζ(n, θ) = Σ_{i=1..n} i^−θ: exact up to [`ZETA_EXACT_TERMS`], then the
/// Euler–Maclaurin formula for the tail Σ_{i=m+1..n}:
/// ∫_m^n x^−θ dx + (f(n) − f(m))/2 + (f′(n) − f′(m))/12, with f(x) = x^−θ.
fn zeta(n: u64, theta: f64) -> f64 {
    let exact_terms = n.min(ZETA_EXACT_TERMS);
    let exact: f64 = (1..=exact_terms).map(|i| (i as f64).powf(-theta)).sum();
    if n <= ZETA_EXACT_TERMS {
        return exact;
    }
    let (m, nf) = (exact_terms as f64, n as f64);
    let f = |x: f64| x.powf(-theta);
    let df = |x: f64| -theta * x.powf(-theta - 1.0);
    let integral = (nf.powf(1.0 - theta) - m.powf(1.0 - theta)) / (1.0 - theta);
    exact + integral + (f(nf) - f(m)) / 2.0 + (df(nf) - df(m)) / 12.0
}

/// A seeded bijection of `0..n`, so that popularity ranks land on keys
/// scattered over the space.
///
/// It mixes values of `bits` bits (the smallest power of two ≥ n) with
/// rounds of multiply-by-odd and xorshift, each a bijection on `bits`-bit
/// values, and walks the cycle until the result falls below `n` ("cycle
/// walking"): since the mix permutes `0..2^bits`, the walk returns to the
/// set `0..n` within the cycle, fewer than two steps on average.
#[derive(Clone, Debug)]
pub struct Scramble {
    n: u64,
    bits: u32,
    mask: u64,
    /// Odd multipliers, one per round.
    multipliers: [u64; SCRAMBLE_ROUNDS],
    /// Values XORed in, one per round.
    offsets: [u64; SCRAMBLE_ROUNDS],
}

impl Scramble {
    pub fn new(n: u64, seed: u64) -> Self {
        let n = n.max(1);
        let bits = 64 - (n - 1).leading_zeros();
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let mut state = seed;
        let mut draw = || {
            // splitmix64: a well-spread stream from any seed.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut multipliers = [0; SCRAMBLE_ROUNDS];
        let mut offsets = [0; SCRAMBLE_ROUNDS];
        for round in 0..SCRAMBLE_ROUNDS {
            multipliers[round] = draw() | 1;
            offsets[round] = draw();
        }
        Scramble {
            n,
            bits,
            mask,
            multipliers,
            offsets,
        }
    }

    /// The key index of popularity rank `rank` (< n).
    pub fn apply(&self, rank: u64) -> u64 {
        let mut x = rank;
        loop {
            x = self.mix(x);
            if x < self.n {
                return x;
            }
        }
    }

    fn mix(&self, mut x: u64) -> u64 {
        if self.bits == 0 {
            return 0;
        }
        let shift = (self.bits / 2).max(1);
        for round in 0..SCRAMBLE_ROUNDS {
            x = (x ^ self.offsets[round]) & self.mask;
            x = x.wrapping_mul(self.multipliers[round]) & self.mask;
            x ^= x >> shift;
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn zeta_tail_approximation_matches_the_exact_sum() {
        let n = 3 * ZETA_EXACT_TERMS + 12_345;
        for theta in [0.5, 0.99] {
            let exact: f64 = (1..=n).map(|i| (i as f64).powf(-theta)).sum();
            let approx = zeta(n, theta);
            let error = (approx - exact).abs() / exact;
            assert!(error < 1e-9, "theta {theta}: {approx} vs {exact}");
        }
    }

    #[test]
    fn zipfian_draws_follow_the_distribution() {
        let n = 1_000;
        let zipf = Zipfian::new(n, 0.99);
        let mut rng = SmallRng::seed_from_u64(7);
        let draws = 200_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[zipf.rank(&mut rng) as usize] += 1;
        }
        let share = |ranks: std::ops::Range<u64>| -> (f64, f64) {
            let got: u64 = ranks.clone().map(|r| counts[r as usize]).sum();
            let expected: f64 = ranks.map(|r| zipf.probability(r)).sum();
            (got as f64 / draws as f64, expected)
        };
        // Ranks 0 and 1 are exact (binomial noise here is under 1%).
        for rank in [0u64, 1] {
            let (got, expected) = share(rank..rank + 1);
            assert!(
                (got - expected).abs() < 0.03 * expected,
                "rank {rank}: share {got}, expected {expected}"
            );
        }
        // The rest follow Gray et al.'s continuous approximation: rank 2
        // gets about 17% more than its share, and the error shrinks with
        // rank (top 10 ranks about 4% over, top 100 under 2%).
        let (got, expected) = share(2..3);
        assert!(
            got > expected && got < 1.25 * expected,
            "rank 2: share {got}, expected {expected}"
        );
        for (top, tolerance) in [(10, 0.07), (100, 0.04)] {
            let (got, expected) = share(0..top);
            assert!(
                (got - expected).abs() < tolerance * expected,
                "top {top}: share {got}, expected {expected}"
            );
        }
        // Popularity falls with rank, and the last rank is reachable.
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        let tail: u64 = counts[900..].iter().sum();
        assert!(tail > 0, "no draw in the last 100 ranks");
    }

    #[test]
    fn zipfian_handles_tiny_key_spaces() {
        let mut rng = SmallRng::seed_from_u64(1);
        for n in [1u64, 2, 3] {
            let chooser = KeyChooser::zipfian(n, 0.99, 5);
            for _ in 0..1_000 {
                assert!(chooser.next(&mut rng) < n);
            }
        }
    }

    #[test]
    fn scramble_is_a_permutation() {
        for n in [1u64, 2, 3, 5, 64, 1_000, 4_097] {
            let scramble = Scramble::new(n, 42);
            let mut seen = vec![false; n as usize];
            for rank in 0..n {
                let key = scramble.apply(rank);
                assert!(key < n, "n {n}: rank {rank} gave {key}");
                assert!(!seen[key as usize], "n {n}: key {key} given twice");
                seen[key as usize] = true;
            }
        }
    }

    #[test]
    fn scramble_spreads_the_hottest_ranks() {
        let n = 100_000;
        let scramble = Scramble::new(n, 42);
        let hot: Vec<u64> = (0..10).map(|r| scramble.apply(r)).collect();
        // The ten hottest keys are not bunched in one tenth of the space.
        let tenths: std::collections::BTreeSet<u64> = hot.iter().map(|k| k * 10 / n).collect();
        assert!(tenths.len() >= 4, "hot keys bunched: {hot:?}");
        // Another seed picks other hot keys.
        assert_ne!(Scramble::new(n, 43).apply(0), hot[0]);
    }
}
