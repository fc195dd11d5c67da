//! Reconnect delays: exponential with full jitter, capped, so a fleet that lost its relay
//! does not reconnect in lockstep.

use std::time::Duration;

use rand::Rng;

pub(crate) const CAP: Duration = Duration::from_secs(30);
/// The cap while nothing answers at the relay's address (connection refused or reset): such
/// a probe costs the relay's host a packet, and a node must be back in the room within
/// seconds of the relay returning, however long it was gone.
pub(crate) const PROBE_CAP: Duration = Duration::from_secs(2);
const BASE: Duration = Duration::from_millis(200);

/// Delay before reconnect attempt `attempt` (0-based) to a relay that answered and refused
/// (or failed the handshake): uniform in [d/2, d] where d = min(CAP, BASE * 2^attempt).
pub(crate) fn delay(attempt: u32) -> Duration {
    capped(attempt, CAP)
}

/// Delay before attempt `attempt` when nothing answered at the relay's address.
pub(crate) fn probe_delay(attempt: u32) -> Duration {
    capped(attempt, PROBE_CAP)
}

fn capped(attempt: u32, cap: Duration) -> Duration {
    let ceiling = BASE.saturating_mul(1u32 << attempt.min(16)).min(cap);
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
        assert!((0..40).all(|a| probe_delay(a) <= PROBE_CAP));
        assert!(probe_delay(30) >= PROBE_CAP / 2, "probes still back off to the cap");
        let samples: std::collections::HashSet<_> = (0..20).map(|_| delay(10)).collect();
        assert!(samples.len() > 1, "jittered");
    }
}
