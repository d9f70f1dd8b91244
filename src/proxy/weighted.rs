//! Weighted choice of a replica among the read set. Pure: the random number is an argument,
//! so the choice is testable and the caller decides where randomness comes from.

/// A backend a session could open its replica connection to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Share of the reads; members of the read set have a weight > 0, but a zero weight
    /// still counts as 1 so a misconfigured backend is used rather than silently skipped.
    pub weight: u32,
}

impl Candidate {
    fn share(&self) -> u64 {
        u64::from(self.weight.max(1))
    }
}

/// Index of the candidate chosen by `r` (any u64, e.g. `rand::random()`), each candidate
/// being chosen for a share of the range of `r` proportional to its weight. `None` only for
/// an empty list.
pub fn pick(candidates: &[Candidate], r: u64) -> Option<usize> {
    let total: u64 = candidates.iter().map(Candidate::share).sum();
    if total == 0 {
        return None;
    }
    let mut r = r % total;
    for (i, c) in candidates.iter().enumerate() {
        let w = c.share();
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    // Unreachable: r < total is the sum of the shares.
    Some(candidates.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate {
                name: format!("r{i}"),
                host: "127.0.0.1".into(),
                port: 5432 + i as u16,
                weight: *w,
            })
            .collect()
    }

    /// How often each candidate is picked when r walks `n` consecutive values from `start`.
    fn counts(c: &[Candidate], start: u64, n: u64) -> Vec<u64> {
        let mut out = vec![0; c.len()];
        for r in start..=start + (n - 1) {
            out[pick(c, r).unwrap()] += 1;
        }
        out
    }

    #[test]
    fn empty_list_picks_nothing() {
        assert_eq!(pick(&[], 0), None);
        assert_eq!(pick(&[], u64::MAX), None);
    }

    #[test]
    fn one_candidate_is_always_picked() {
        let c = cands(&[7]);
        for r in [0, 1, 6, 7, 12345, u64::MAX - 1, u64::MAX] {
            assert_eq!(pick(&c, r), Some(0), "r={r}");
        }
    }

    #[test]
    fn weights_are_respected_over_the_range_of_r() {
        let c = cands(&[1, 3, 6]);
        // Any window of `total` consecutive values of r gives each candidate its weight.
        assert_eq!(counts(&c, 0, 10), vec![1, 3, 6]);
        assert_eq!(counts(&c, 1_000_003, 10), vec![1, 3, 6]);
        assert_eq!(counts(&c, u64::MAX - 9, 10), vec![1, 3, 6]);
        assert_eq!(counts(&c, 0, 1000), vec![100, 300, 600]);
        // The boundaries: the first value of each share.
        assert_eq!(pick(&c, 0), Some(0));
        assert_eq!(pick(&c, 1), Some(1));
        assert_eq!(pick(&c, 3), Some(1));
        assert_eq!(pick(&c, 4), Some(2));
        assert_eq!(pick(&c, 9), Some(2));
        assert_eq!(pick(&c, 10), Some(0));
        // u64::MAX % 10 == 5, in the third share.
        assert_eq!(pick(&c, u64::MAX), Some(2));
    }

    #[test]
    fn zero_weights_count_as_one() {
        let c = cands(&[0, 0]);
        assert_eq!(counts(&c, 0, 100), vec![50, 50]);
        let c = cands(&[0, 2]);
        assert_eq!(counts(&c, 0, 3), vec![1, 2]);
    }

    #[test]
    fn large_weights_do_not_overflow() {
        let c = cands(&[u32::MAX, u32::MAX, 1]);
        let total = 2 * u64::from(u32::MAX) + 1;
        assert_eq!(pick(&c, total - 1), Some(2));
        assert_eq!(pick(&c, u64::from(u32::MAX)), Some(1));
        assert_eq!(pick(&c, u64::MAX).map(|i| i < 3), Some(true));
    }
}
