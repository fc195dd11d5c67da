//! Token bucket per connection. When empty, the connection's reader waits: TCP backpressure
//! slows that one sender and nobody else, and no frame is lost to rate limiting.

use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate_per_sec: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        Self { rate: rate_per_sec.max(1) as f64, burst, tokens: burst, last: Instant::now() }
    }

    /// Takes `cost` tokens; returns how long to wait before the next frame may be read.
    pub(crate) fn take(&mut self, cost: usize) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= cost as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_throttles_past_the_burst() {
        let mut b = TokenBucket::new(1000, 500);
        assert_eq!(b.take(500), Duration::ZERO);
        let wait = b.take(250);
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.take(400), Duration::ZERO, "refilled, capped at the burst");
    }
}
