//! A token bucket, pure: the caller passes the time.

use std::time::Duration;

/// Allows `rate` events per second on average with bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now` (any fixed origin).
    pub fn new(rate: u32, burst: u32, now: Duration) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(rate), burst, tokens: burst, last: now }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Duration::from_secs(100);
        let mut b = TokenBucket::new(1000, 2000, t0);
        let burst = (0..5000).filter(|_| b.try_take(t0)).count();
        assert_eq!(burst, 2000);
        // Half a second later, 500 more tokens have accrued.
        let t1 = t0 + Duration::from_millis(500);
        let later = (0..5000).filter(|_| b.try_take(t1)).count();
        assert_eq!(later, 500);
    }

    #[test]
    fn never_exceeds_burst_after_idle() {
        let mut b = TokenBucket::new(2, 2, Duration::ZERO);
        let t = Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.try_take(t)).count(), 2);
    }
}
