//! Retry math, a pure function of the failure count and the policy, shared
//! by mailman's hand-off and postoffice's delivery.

use std::time::Duration;

/// A doubling backoff: `first` after the first failure, twice that after the
/// second, and so on, never more than `max`. Both retry policies (mailman's
/// hand-off and postoffice's delivery) are one of these.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let s = Duration::from_secs(1);
/// let b = hedwig::retry::Backoff { first: s, max: 60 * s };
/// let waits: Vec<u64> = (1..=8).map(|n| b.wait(n).as_secs()).collect();
/// assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (0 counts as 1).
    pub fn wait(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overflows() {
        let s = Duration::from_secs(1);
        let b = Backoff {
            first: s,
            max: 60 * s,
        };
        assert_eq!(b.wait(0), s);
        assert_eq!(b.wait(1000), 60 * s);
        let huge = Backoff {
            first: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(huge.wait(40), Duration::MAX);
    }
}
