//! Reconnect delays: exponential with full jitter, capped, so a fleet that lost its relay
//! does not reconnect in lockstep.

use std::time::Duration;

use rand::Rng;

pub(crate) const CAP: Duration = Duration::from_secs(30);
const BASE: Duration = Duration::from_millis(200);

/// Delay before reconnect attempt `attempt` (0-based): uniform in [d/2, d] where
/// d = min(CAP, BASE * 2^attempt).
pub(crate) fn delay(attempt: u32) -> Duration {
    let ceiling = BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP);
    let half = ceiling / 2;
    half + half.mul_f64(rand::thread_rng().gen::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps_with_jitter() {
        for attempt in 0..40 {
            let d = delay(attempt);
            let ceiling = BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        assert!(delay(100) <= CAP);
        let samples: std::collections::HashSet<_> = (0..20).map(|_| delay(10)).collect();
        assert!(samples.len() > 1, "jittered");
    }
}
