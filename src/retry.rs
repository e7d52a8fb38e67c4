//! Retry math, a pure function of the attempt count and the policy, shared
//! by mailman's hand-off and postoffice's delivery.

use std::time::Duration;

/// The wait after the `failures`-th failed attempt: doubling from `first`,
/// capped at `max`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let s = Duration::from_secs(1);
/// let waits: Vec<u64> = (1..=8).map(|n| hedwig::retry::backoff(s, 60 * s, n).as_secs()).collect();
/// assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
/// ```
pub fn backoff(first: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overflows() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(s, 60 * s, 0), s);
        assert_eq!(backoff(s, 60 * s, 1000), 60 * s);
        assert_eq!(backoff(Duration::MAX, Duration::MAX, 40), Duration::MAX);
    }
}
